"""[right-objection] You can object to any use of your data, or ask us a question about it, with
a privacy request; we answer it and email you when its status changes.

Filing an objection and a question, both emailed on receipt, and the status change emailed
when support answers. The whole flow and its refusals: `tests/admin/test_privacy_requests.py`.
"""

from __future__ import annotations

from tests.admin.support import staff
from tests.helpers import Api
from tests.privacy.promises import sentence

TAG = "right-objection"
SENTENCE = sentence(TAG)
URL = "/api/v1/privacy/requests"


async def test_objections_and_questions_are_answered_and_emailed(api: Api) -> None:
    person = await api.sign_up()
    ids = []
    for kind in ("objection", "access_question"):
        filed = await person.client.post(
            URL, json={"kind": kind, "body": f"My {kind}."}, headers=person.headers
        )
        assert filed.status_code == 201, filed.text
        ids.append(filed.json()["id"])
    received = [m for m, _ in await api.emails(person.email) if "privacy request" in m.subject]
    assert len(received) == 2
    member = await staff(api)
    handled = await member.client.post(
        f"/api/v1/admin/support/privacy-requests/{ids[0]}",
        json={"status": "answered", "response": "We stopped it."},
        headers=member.headers,
    )
    assert handled.status_code == 200, handled.text
    letters = [b for m, b in await api.emails(person.email) if "privacy request" in m.subject]
    assert len(letters) == 3 and "We stopped it." in letters[-1]
    mine = (await person.client.get(f"{URL}/{ids[0]}")).json()
    assert mine["status"] == "answered"
