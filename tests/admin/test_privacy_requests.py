"""Privacy requests over the API: filed by a person, handled in the console, emailed."""

from __future__ import annotations

from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from lunogen.notification.models import Notification
from tests.account.support import rows
from tests.admin.support import staff
from tests.helpers import Api

URL = "/api/v1/privacy/requests"
CONSOLE = "/api/v1/admin/support/privacy-requests"


async def test_an_objection_is_received_handled_and_answered_by_email(api: Api) -> None:
    person = await api.sign_up()
    member = await staff(api)
    filed = await person.client.post(
        URL,
        json={"kind": "objection", "body": "Do not keep my logs for 30 days."},
        headers=person.headers,
    )
    assert filed.status_code == 201, filed.text
    request = filed.json()
    assert (request["kind"], request["status"], request["response"]) == (
        "objection",
        "received",
        None,
    )
    row, body = (await api.emails(person.email))[-1]
    assert row.subject == "LunoGen: We received your privacy request"
    assert f"/privacy-requests/{request['id']}" in body

    queue = (await member.client.get(f"{CONSOLE}?status=received")).json()
    assert [r["id"] for r in queue["data"]] == [request["id"]]
    assert queue["data"][0]["body"] == "Do not keep my logs for 30 days."
    assert (await member.client.get(f"{CONSOLE}?kind=correction")).json()["total"] == 0

    working = await member.client.post(
        f"{CONSOLE}/{request['id']}", json={"status": "in_progress"}, headers=member.headers
    )
    assert working.status_code == 200 and working.json()["handled_by"] == member.id
    row, body = (await api.emails(person.email))[-1]
    assert row.subject == "LunoGen: Your privacy request is in progress"

    unanswered = await member.client.post(
        f"{CONSOLE}/{request['id']}", json={"status": "answered"}, headers=member.headers
    )
    assert unanswered.status_code == 422
    assert unanswered.json()["details"] == [
        {"field": "response", "message": "An answered request needs a response"}
    ]
    answered = await member.client.post(
        f"{CONSOLE}/{request['id']}",
        json={"status": "answered", "response": "Logs are now kept 7 days for you."},
        headers=member.headers,
    )
    assert answered.status_code == 200
    row, body = (await api.emails(person.email))[-1]
    assert row.subject == "LunoGen: Your privacy request is answered"
    assert "> Logs are now kept 7 days for you." in body

    mine = (await person.client.get(f"{URL}/{request['id']}")).json()
    assert (mine["status"], mine["response"]) == ("answered", "Logs are now kept 7 days for you.")
    assert (await person.client.get(URL)).json()["total"] == 1

    same = await member.client.post(
        f"{CONSOLE}/{request['id']}", json={"status": "answered"}, headers=member.headers
    )
    assert same.status_code == 409
    notes = await rows(api, select(Notification).where(Notification.kind == "privacy.request"))
    assert len(notes) == 3 and all("7 days" not in n.body for n in notes)
    handled = await rows(
        api,
        select(AuditEvent)
        .where(AuditEvent.action == "privacy.request_handled")
        .order_by(AuditEvent.created_at),
    )
    assert [(e.details["from"], e.details["to"]) for e in handled] == [
        ("received", "in_progress"),
        ("in_progress", "answered"),
    ]
    assert all(e.subject_user_id == person.id for e in handled)


async def test_another_persons_request_is_404(api: Api) -> None:
    owner = await api.sign_up()
    other = await api.sign_up()
    filed = await owner.client.post(
        URL, json={"kind": "access_question", "body": "What do you hold?"}, headers=owner.headers
    )
    request_id = filed.json()["id"]
    response = await other.client.get(f"{URL}/{request_id}")
    assert response.status_code == 404
    assert response.json() == {"error": "Privacy request not found"}
    assert (await other.client.get(URL)).json()["total"] == 0
    assert (await owner.client.get(f"{URL}/{'z' * 500}")).status_code == 404


async def test_bad_input_and_plain_users_in_the_console(api: Api) -> None:
    person = await api.sign_up()
    for body, field in (
        ({"kind": "complaint", "body": "x"}, "kind"),
        ({"kind": "other", "body": "  "}, "body"),
        ({"kind": "other", "body": "x" * 10_001}, "body"),
        ({"kind": "other"}, "body"),
    ):
        response = await person.client.post(URL, json=body, headers=person.headers)
        assert response.status_code == 422, body
        assert field in {d["field"] for d in response.json()["details"]}
    assert (await person.client.get(URL)).json()["total"] == 0

    filed = await person.client.post(
        URL, json={"kind": "correction", "body": "Fix my name"}, headers=person.headers
    )
    request_id = filed.json()["id"]
    assert (await person.client.get(CONSOLE)).status_code == 403
    handle = await person.client.post(
        f"{CONSOLE}/{request_id}", json={"status": "closed"}, headers=person.headers
    )
    assert handle.status_code == 403
    member = await staff(api)
    bad = await member.client.post(
        f"{CONSOLE}/{request_id}", json={"status": "done"}, headers=member.headers
    )
    assert bad.status_code == 422
    assert (await member.client.get(f"{CONSOLE}/{'0' * 36}")).status_code == 404
    assert (await person.client.get(f"{URL}/{request_id}")).json()["status"] == "received"
