"""In-app notifications: one per change, readable and markable only by their owner."""

from __future__ import annotations

from lunogen.account.models import User
from lunogen.notification.service import notify
from tests.helpers import Api


async def _notify(api: Api, user_id: str, key: str) -> bool:
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, user_id)
        assert user is not None
        row = await notify(
            session,
            user=user,
            kind="agent.paused",
            title="Agent paused",
            body="Your agent was paused: credits exhausted.",
            dedupe_key=key,
            settings=api.app.state.settings,
            keyring=api.app.state.keyring,
        )
        await session.commit()
        return row is not None


async def test_one_notification_per_change(api: Api) -> None:
    person = await api.sign_up()
    assert await _notify(api, person.id, "agent:x:paused:1") is True
    for _ in range(4):
        assert await _notify(api, person.id, "agent:x:paused:1") is False
    page = (await person.client.get("/api/v1/notifications")).json()
    assert page["total"] == 1 and page["unread"] == 1
    emails = [row for row, _ in await api.emails(person.email) if "paused" in row.subject]
    assert len(emails) == 1


async def test_mark_read_and_read_all(api: Api) -> None:
    person = await api.sign_up()
    for n in range(3):
        await _notify(api, person.id, f"k{n}")
    page = (await person.client.get("/api/v1/notifications")).json()
    first = page["data"][0]["id"]
    marked = await person.client.post(f"/api/v1/notifications/{first}/read", headers=person.headers)
    assert marked.status_code == 200 and marked.json()["read_at"] is not None
    unread = (await person.client.get("/api/v1/notifications", params={"unread": True})).json()
    assert unread["total"] == 2 and first not in [n["id"] for n in unread["data"]]
    all_read = await person.client.post("/api/v1/notifications/read-all", headers=person.headers)
    assert all_read.json() == {"marked": 2}
    assert (await person.client.get("/api/v1/notifications")).json()["unread"] == 0


async def test_another_users_notification_is_404(api: Api) -> None:
    owner = await api.sign_up()
    stranger = await api.sign_up()
    await _notify(api, owner.id, "mine")
    note = (await owner.client.get("/api/v1/notifications")).json()["data"][0]
    response = await stranger.client.post(
        f"/api/v1/notifications/{note['id']}/read", headers=stranger.headers
    )
    assert response.status_code == 404
    assert response.json() == {"error": "Notification not found"}
    assert (await stranger.client.get("/api/v1/notifications")).json()["total"] == 0
    assert (await owner.client.get("/api/v1/notifications")).json()["unread"] == 1
