"""Rules through the admin API (validation, audit, who may), and what they do to turns: an
inbound block keeps the message unanswered, an outbound block withholds the reply, a flag lets
both through and queues a flag for review with the text encrypted."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from lunogen.audit.models import AuditEvent
from lunogen.moderation.models import ModerationRule
from lunogen.moderation.rules import RuleSet, pattern_problem
from lunogen.runtime.models import Message
from lunogen.runtime.screening import WITHHELD
from tests.account.support import rows
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.moderation.support import add_rule, admin, flags, running_agent, say


async def test_an_admin_manages_rules_and_each_change_is_audited(api: Api) -> None:
    boss = await admin(api)
    created = await add_rule(boss, value="Casino", action="block", note="gambling ads")
    assert created.status_code == 201, created.text
    rule = created.json()
    assert (rule["kind"], rule["value"], rule["direction"], rule["action"]) == (
        "term",
        "Casino",
        "both",
        "block",
    )
    listed = await boss.client.get("/api/v1/admin/moderation/rules")
    assert [r["id"] for r in listed.json()] == [rule["id"]]
    duplicate = await add_rule(boss, value="casino", action="flag")
    assert duplicate.status_code == 409
    deleted = await boss.client.delete(
        f"/api/v1/admin/moderation/rules/{rule['id']}", headers=boss.headers
    )
    assert deleted.status_code == 204
    again = await boss.client.delete(
        f"/api/v1/admin/moderation/rules/{rule['id']}", headers=boss.headers
    )
    assert again.status_code == 404
    assert (await boss.client.get("/api/v1/admin/moderation/rules")).json() == []
    actions = await rows(
        api, select(AuditEvent.action).where(AuditEvent.action.like("moderation.%"))
    )
    assert sorted(actions) == ["moderation.rule_created", "moderation.rule_deleted"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"kind": "pattern", "value": "(a+)+$"}, "exponential"),
        ({"kind": "pattern", "value": "(x)\\1"}, "back-references"),
        ({"kind": "pattern", "value": "[unclosed"}, "not a valid regular expression"),
        ({"kind": "pattern", "value": "a*"}, "matches an empty text"),
        ({"kind": "pattern", "value": "x" * 201}, "String should have at most 200"),
        ({"kind": "term", "value": "!!!"}, "at least one letter or digit"),
        ({"kind": "word", "value": "casino"}, "kind"),
        ({"kind": "term", "value": "casino", "direction": "sideways"}, "direction"),
        ({"kind": "term", "value": "casino", "action": "delete"}, "action"),
    ],
)
async def test_a_bad_rule_is_refused_naming_the_problem(
    api: Api, body: dict[str, str], problem: str
) -> None:
    boss = await admin(api)
    response = await add_rule(boss, **body)
    assert response.status_code == 422, response.text
    assert problem in response.text
    assert await rows(api, select(ModerationRule)) == []


async def test_only_admins_reach_the_rules(api: Api) -> None:
    person = await api.sign_up()
    assert (await add_rule(person, value="casino")).status_code == 403
    listed = await person.client.get("/api/v1/admin/moderation/rules")
    assert listed.status_code == 403
    flagged = await person.client.get("/api/v1/admin/moderation/flags")
    assert flagged.status_code == 403


def test_terms_match_whole_words_in_any_case_and_patterns_as_written() -> None:
    rules = RuleSet(
        [
            ModerationRule(id="t1", kind="term", value="casino", direction="both", action="block"),
            ModerationRule(id="t2", kind="term", value="c++", direction="inbound", action="flag"),
            ModerationRule(
                id="p1",
                kind="pattern",
                value=r"\b\d{4}-\d{4}\b",
                direction="outbound",
                action="flag",
            ),
        ]
    )
    assert [h.rule for h in rules.check("inbound", "Best CASINO in town").hits] == ["t1"]
    assert rules.check("inbound", "casinos and casinoroyale").hits == ()
    assert [h.rule for h in rules.check("inbound", "I write C++ daily").hits] == ["t2"]
    assert rules.check("outbound", "I write C++ daily").hits == ()  # inbound only
    assert [h.rule for h in rules.check("outbound", "card 1234-5678 ok").hits] == ["p1"]
    assert rules.check("inbound", "card 1234-5678 ok").hits == ()
    assert rules.check("inbound", "casino").blocked
    assert pattern_problem(r"(?i)free\s+(money|cash)") is None


async def test_a_blocked_inbound_message_is_kept_and_not_answered(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    boss = await admin(api)
    rule = (await add_rule(boss, value="casino", direction="inbound", action="block")).json()
    dev, agent_id = await running_agent(api)
    body = await say(dev, agent_id, "Join the best Casino tonight")
    assert body["status_code"] == 422
    assert (body["error"], body["code"]) == ("Message blocked", "moderation_blocked")
    assert "acceptable-use policy" in body["message"]
    assert openrouter.requests == []  # the model was never called
    async with api.app.state.sessionmaker() as session:
        message = (
            await session.execute(select(Message).where(Message.agent_id == agent_id))
        ).scalar_one()  # kept, and no reply stored
        assert message.status == "skipped"
        assert message.failure == {"code": "moderation_blocked", "rules": [rule["id"]]}
        assert api.app.state.keyring.decrypt(message.content) == "Join the best Casino tonight"
    [flag] = await flags(api)
    assert (flag.direction, flag.source, flag.rule, flag.action, flag.status) == (
        "inbound",
        "rule",
        rule["id"],
        "block",
        "open",
    )
    assert flag.message_id == message.id
    assert "Casino" not in flag.evidence  # encrypted at rest
    assert api.app.state.keyring.decrypt(flag.evidence) == "Join the best Casino tonight"


async def test_a_flagged_inbound_message_is_answered_and_queued_for_review(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    boss = await admin(api)
    await add_rule(boss, value="crypto", direction="inbound", action="flag")
    dev, agent_id = await running_agent(api)
    openrouter.reply("We only sell bikes.")
    body = await say(dev, agent_id, "Do you take crypto?")
    assert body["status"] == "answered"
    assert body["reply"]["text"] == "We only sell bikes."
    [flag] = await flags(api)
    assert (flag.direction, flag.action) == ("inbound", "flag")


async def test_a_blocked_reply_is_withheld_and_its_text_kept_only_as_evidence(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    boss = await admin(api)
    await add_rule(
        boss, kind="pattern", value=r"\b\d{3}-\d{2}-\d{4}\b", direction="outbound", action="block"
    )
    dev, agent_id = await running_agent(api)
    openrouter.reply("Sure, the number is 123-45-6789.")
    body = await say(dev, agent_id, "What is the number?")
    assert body["status"] == "answered"
    assert body["reply"]["text"] == WITHHELD
    async with api.app.state.sessionmaker() as session:
        stored = list(
            (
                await session.execute(
                    select(Message).where(Message.agent_id == agent_id, Message.role == "assistant")
                )
            ).scalars()
        )
        raw = (await session.execute(text("select evidence from moderation_flags"))).scalar_one()
    assert [api.app.state.keyring.decrypt(m.content) for m in stored] == [WITHHELD]
    [flag] = await flags(api)
    assert (flag.direction, flag.action, flag.message_id) == ("outbound", "block", stored[0].id)
    assert "123-45-6789" not in raw
    assert api.app.state.keyring.decrypt(raw) == "Sure, the number is 123-45-6789."
    logs = (await dev.http.get(f"/api/v1/agents/{agent_id}/logs")).json()["data"]
    assert "moderation.withheld" in [line["event"] for line in logs]


async def test_a_new_rule_applies_to_the_next_turn_at_once(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    boss = await admin(api)
    dev, agent_id = await running_agent(api)
    openrouter.reply("Hello")
    assert (await say(dev, agent_id, "lottery tickets?"))["status"] == "answered"
    await add_rule(boss, value="lottery", action="block")
    assert (await say(dev, agent_id, "lottery tickets again?"))["status_code"] == 422
