"""[changes] When we change this policy materially we tell every active user in the dashboard
and by email before the change takes effect; your next sign-in after that date shows the new
version, and continuing to use LunoGen records that you accepted it.

The notice, the sign-in page and acceptance by continued use: `tests/privacy/test_consent.py`;
publishing: `tests/privacy/test_policy_versions.py`. Added here: a material change cannot be
published to take effect before its notice can go out (its date must be in the future), and
the in-app and email notices are made before the effective date and shown in the dashboard.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from lunogen.kit.time import utcnow
from lunogen.notification.models import Notification
from tests.account.support import rows
from tests.helpers import Api
from tests.privacy.policy_support import (
    NEW_PRIVACY,
    ensure_seeded,
    publish,
    tomorrow,
    wait_notified,
)
from tests.privacy.promises import sentence

TAG = "changes"
SENTENCE = sentence(TAG)


async def test_a_material_change_cannot_take_effect_today(api: Api) -> None:
    await ensure_seeded(api)
    admin = await api.sign_up()
    await api.make_admin(admin)
    today = datetime.now(UTC).date().isoformat()
    refused = await admin.client.post(
        "/api/v1/admin/policies",
        json={"kind": "privacy", "effective": today, "material": True, "text": NEW_PRIVACY},
        headers=admin.headers,
    )
    assert refused.status_code == 422, refused.text
    listed = (await api.new_client().get("/api/v1/policies")).json()
    assert listed["privacy"]["upcoming"] == []


async def test_the_notices_go_out_before_the_change_takes_effect(api: Api) -> None:
    await ensure_seeded(api)
    admin = await api.sign_up()
    await api.make_admin(admin)
    person = await api.sign_up()
    assert (await publish(admin)).status_code == 201
    row = await wait_notified(api, "privacy", tomorrow())
    assert row.effective_at > utcnow()
    notes = await rows(
        api,
        select(Notification).where(
            Notification.kind == "policy_change", Notification.user_id == person.id
        ),
    )
    assert len(notes) == 1 and notes[0].created_at < row.effective_at
    letters = [m for m, _ in await api.emails(person.email) if "changes on" in m.subject]
    assert len(letters) == 1 and letters[0].created_at < row.effective_at
    shown = (await person.client.get("/notifications")).text
    assert tomorrow() in shown
