"""The threshold: an agent whose open and upheld flags within the window reach the setting (3
here) is suspended with a reason naming the policy; its owner is told in the app and by email
with the appeal page; the appeal opens a support ticket that the support console sees."""

from __future__ import annotations

from sqlalchemy import select

from lunogen.admin.models import Ticket
from lunogen.agent.models import Agent
from lunogen.audit.models import AuditEvent
from lunogen.moderation.models import ModerationSuspension
from lunogen.notification.models import Notification
from tests.account.support import rows
from tests.admin.support import staff
from tests.agent.support import Dev, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.moderation.support import add_rule, admin, flags, running_agent, say


async def _suspended_agent(api: Api, openrouter: FakeOpenRouter) -> tuple[Dev, str]:
    boss = await admin(api)
    await add_rule(boss, value="spam", direction="inbound", action="flag")
    dev, agent_id = await running_agent(api, name="Deal bot")
    for n in range(3):
        openrouter.reply(f"Reply {n}")
        body = await say(dev, agent_id, f"buy spam number {n}")
        assert body["status"] == "answered"  # flagged messages are still answered
    return dev, agent_id


async def test_the_threshold_suspends_the_agent_and_tells_the_owner(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _suspended_agent(api, openrouter)
    assert len(await flags(api)) == 3
    [agent] = await rows(api, select(Agent).where(Agent.id == agent_id))
    assert agent.status == "suspended"
    assert agent.suspended_reason == (
        "acceptable-use policy: 3 of its messages were flagged within 24 hours"
    )
    [record] = await rows(api, select(ModerationSuspension))
    assert (record.agent_id, record.flags, record.ticket_id) == (agent_id, 3, None)
    [note] = await rows(api, select(Notification).where(Notification.kind == "agent.suspended"))
    assert note.user_id == dev.id
    assert "acceptable-use policy" in note.body
    assert f"/agents/{agent_id}/appeal" in note.body
    mails = [body for _row, body in await api.emails(dev.person.email)]
    assert any(f"/agents/{agent_id}/appeal" in body and "acceptable-use" in body for body in mails)
    [event] = await rows(
        api, select(AuditEvent).where(AuditEvent.action == "moderation.agent_suspended")
    )
    assert (event.actor_user_id, event.target_id) == (None, agent_id)
    refused = await say(dev, agent_id, "hello again")
    assert refused["status_code"] == 409
    started = await dev.http.post(f"/api/v1/agents/{agent_id}/start")
    assert started.status_code == 409


async def test_dismissed_flags_do_not_count(api: Api, openrouter: FakeOpenRouter) -> None:
    boss = await admin(api)
    await add_rule(boss, value="spam", direction="inbound", action="flag")
    dev, agent_id = await running_agent(api)
    for n in range(2):
        openrouter.reply("ok")
        await say(dev, agent_id, f"spam {n}")
    for flag in await flags(api):
        dismissed = await boss.client.post(
            f"/api/v1/admin/moderation/flags/{flag.id}/dismiss",
            json={"note": "a joke"},
            headers=boss.headers,
        )
        assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    openrouter.reply("ok")
    await say(dev, agent_id, "spam again")
    [agent] = await rows(api, select(Agent).where(Agent.id == agent_id))
    assert agent.status == "running"


async def test_the_owner_appeals_through_a_ticket_once(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _suspended_agent(api, openrouter)
    other = await new_dev(api)
    foreign = await other.http.post(
        f"/api/v1/agents/{agent_id}/appeal", json={"text": "Not mine, but lift it"}
    )
    assert foreign.status_code == 404
    empty = await dev.http.post(f"/api/v1/agents/{agent_id}/appeal", json={"text": " "})
    assert empty.status_code == 422
    appealed = await dev.http.post(
        f"/api/v1/agents/{agent_id}/appeal", json={"text": "Spam was the name of a product"}
    )
    assert appealed.status_code == 201, appealed.text
    ticket_id = appealed.json()["ticket_id"]
    [ticket] = await rows(api, select(Ticket).where(Ticket.id == ticket_id))
    assert ticket.user_id == dev.id and ticket.subject == "Appeal: agent Deal bot suspended"
    [record] = await rows(api, select(ModerationSuspension))
    assert record.ticket_id == ticket_id and record.appealed_at is not None
    again = await dev.http.post(f"/api/v1/agents/{agent_id}/appeal", json={"text": "Please"})
    assert again.status_code == 409 and again.json()["ticket_id"] == ticket_id
    helper = await staff(api, "support")
    queue = await helper.client.get("/api/v1/admin/support/tickets")
    assert ticket_id in [t["id"] for t in queue.json()["data"]]
    shown = await helper.client.get(f"/api/v1/admin/support/tickets/{ticket_id}")
    assert "Spam was the name of a product" in shown.text
    assert "acceptable-use policy" in shown.text


async def test_an_agent_that_is_running_cannot_be_appealed(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await running_agent(api)
    response = await dev.http.post(f"/api/v1/agents/{agent_id}/appeal", json={"text": "Hm"})
    assert response.status_code == 409
    assert response.json()["error"] == "Agent not suspended"


async def test_after_reinstatement_only_new_flags_count(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _suspended_agent(api, openrouter)
    boss = await admin(api)
    lifted = await boss.client.post(
        f"/api/v1/admin/agents/{agent_id}/reinstate",
        json={"reason": "appeal accepted"},
        headers=boss.headers,
    )
    assert lifted.status_code == 200, lifted.text
    assert (await dev.http.post(f"/api/v1/agents/{agent_id}/start")).status_code == 200
    openrouter.reply("ok")
    assert (await say(dev, agent_id, "spam once more"))["status"] == "answered"
    [agent] = await rows(api, select(Agent).where(Agent.id == agent_id))
    assert agent.status == "running"  # 4 flags in 24 h, but 1 since the suspension
