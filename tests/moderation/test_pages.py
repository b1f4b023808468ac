"""The admin console's moderation pages (queue, flag with its evidence, rules) and the owner's
appeal page: admins only (anyone else gets the 404 page), reads audited, forms with CSRF."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from lunogen.agent.models import Agent
from lunogen.audit.models import AuditEvent
from lunogen.moderation.models import ModerationRule
from tests.account.support import rows
from tests.admin.support import staff
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api, Signed
from tests.moderation.support import add_rule, admin, flags, running_agent, say


async def _flagged(api: Api, openrouter: FakeOpenRouter) -> tuple[Signed, str]:
    boss = await admin(api)
    await add_rule(boss, value="pyramid", direction="inbound", action="flag")
    dev, agent_id = await running_agent(api, name="Invest bot")
    openrouter.reply("No.")
    await say(dev, agent_id, "Join my pyramid scheme")
    [flag] = await flags(api)
    return boss, flag.id


async def test_an_admin_reviews_a_flag_from_the_queue(api: Api, openrouter: FakeOpenRouter) -> None:
    boss, flag_id = await _flagged(api, openrouter)
    queue = await boss.client.get("/admin/moderation")
    assert queue.status_code == 200
    assert "Invest bot" in queue.text and f"/admin/moderation/flags/{flag_id}" in queue.text
    assert "Join my pyramid scheme" not in queue.text  # evidence only on the flag's page
    assert 'href="/admin/moderation"' in queue.text  # in the navigation
    shown = await boss.client.get(f"/admin/moderation/flags/{flag_id}")
    assert shown.status_code == 200 and "Join my pyramid scheme" in shown.text
    viewed = await rows(
        api,
        select(AuditEvent.target_type).where(
            AuditEvent.action == "admin.viewed", AuditEvent.actor_user_id == boss.id
        ),
    )
    assert {"moderation_flags", "moderation_flag"} <= set(viewed)
    no_token = await boss.client.post(
        f"/admin/moderation/flags/{flag_id}/uphold", data={"note": "x"}
    )
    assert no_token.status_code == 403
    upheld = await boss.client.post(
        f"/admin/moderation/flags/{flag_id}/uphold",
        data={"note": "clear fraud", "csrf_token": boss.csrf},
    )
    assert upheld.status_code == 303
    [flag] = await flags(api)
    assert (flag.status, flag.reviewer_id, flag.review_note) == ("upheld", boss.id, "clear fraud")
    twice = await boss.client.post(
        f"/admin/moderation/flags/{flag_id}/dismiss", data={"csrf_token": boss.csrf}
    )
    assert twice.status_code == 409 and "already upheld" in twice.text
    missing = await boss.client.get("/admin/moderation/flags/no-such-flag")
    assert missing.status_code == 404


@pytest.mark.parametrize("role", ["user", "support"])
async def test_the_queue_is_the_404_page_for_anyone_but_admins(
    api: Api, openrouter: FakeOpenRouter, role: str
) -> None:
    _boss, flag_id = await _flagged(api, openrouter)
    person = await staff(api, role)
    for path in (
        "/admin/moderation",
        f"/admin/moderation/flags/{flag_id}",
        "/admin/moderation/rules",
    ):
        response = await person.client.get(path)
        assert response.status_code == 404, path
        assert "Join my pyramid scheme" not in response.text
    posted = await person.client.post(
        f"/admin/moderation/flags/{flag_id}/dismiss", data={"csrf_token": person.csrf}
    )
    assert posted.status_code == 404
    assert 'href="/admin/moderation"' not in (await person.client.get("/home")).text
    api_read = await person.client.get(f"/api/v1/admin/moderation/flags/{flag_id}")
    assert api_read.status_code == 403


async def test_rules_page_adds_refuses_and_deletes(api: Api) -> None:
    boss = await admin(api)
    page = await boss.client.get("/admin/moderation/rules")
    assert page.status_code == 200 and "No rules yet" in page.text
    bad = await boss.client.post(
        "/admin/moderation/rules",
        data={
            "kind": "pattern",
            "value": "(a+)+",
            "direction": "both",
            "action": "block",
            "csrf_token": boss.csrf,
        },
    )
    assert bad.status_code == 422 and "exponential time" in bad.text
    assert await rows(api, select(ModerationRule)) == []
    added = await boss.client.post(
        "/admin/moderation/rules",
        data={
            "kind": "term",
            "value": "casino",
            "direction": "inbound",
            "action": "block",
            "note": "ads",
            "csrf_token": boss.csrf,
        },
    )
    assert added.status_code == 303
    [rule] = await rows(api, select(ModerationRule))
    assert (rule.value, rule.direction, rule.action, rule.created_by) == (
        "casino",
        "inbound",
        "block",
        boss.id,
    )
    listed = await boss.client.get("/admin/moderation/rules")
    assert "casino" in listed.text
    deleted = await boss.client.post(
        f"/admin/moderation/rules/{rule.id}/delete", data={"csrf_token": boss.csrf}
    )
    assert deleted.status_code == 303
    assert await rows(api, select(ModerationRule)) == []


async def test_the_owner_appeals_from_the_agent_page(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent_id = await running_agent(api, name="Quiet bot")
    async with api.app.state.sessionmaker() as session:
        agent = await session.get(Agent, agent_id)
        assert agent is not None
        agent.status, agent.suspended_reason = "suspended", "acceptable-use policy: test"
        from lunogen.kit.time import utcnow

        agent.suspended_at = utcnow()
        await session.commit()
    owner = dev.person
    detail = await owner.client.get(f"/agents/{agent_id}")
    assert f'href="/agents/{agent_id}/appeal"' in detail.text
    form = await owner.client.get(f"/agents/{agent_id}/appeal")
    assert form.status_code == 200 and "acceptable-use policy: test" in form.text
    empty = await owner.client.post(
        f"/agents/{agent_id}/appeal", data={"text": "", "csrf_token": owner.csrf}
    )
    assert empty.status_code == 422
    sent = await owner.client.post(
        f"/agents/{agent_id}/appeal", data={"text": "It was a mistake", "csrf_token": owner.csrf}
    )
    assert sent.status_code == 303 and sent.headers["location"].startswith("/help/tickets/")
    other = await api.sign_up()
    assert (await other.client.get(f"/agents/{agent_id}/appeal")).status_code == 404
