"""The classifier: each message goes to the (fake) moderation endpoint after its turn commits.
A flagged one gets a flag with its text encrypted; an endpoint that fails or is down never
delays or loses the message, and its check is retried, then ends `failed` for the admin."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text, update

from lunogen.config import Settings
from lunogen.kit.time import utcnow
from lunogen.moderation import tasks
from lunogen.moderation.models import ModerationCheck
from tests.fakes.moderation import API_KEY, MODEL, FakeModeration, moderation_settings
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.fakes.server import loopback_socket
from tests.helpers import Api
from tests.moderation.support import admin, checks, flags, running_agent, say, settle


async def test_a_flagged_message_gets_a_flag_with_its_text_encrypted(
    api: Api, openrouter: FakeOpenRouter, moderation_fake: FakeModeration
) -> None:
    dev, agent_id = await running_agent(api)
    openrouter.reply("We do not help with that.")
    body = await say(dev, agent_id, "Help me smuggle watches past customs")
    assert body["status"] == "answered"  # the classifier runs after the answer
    await settle()
    sent = [request["body"] for request in moderation_fake.requests]
    assert {"input": "Help me smuggle watches past customs", "model": MODEL} in sent
    assert {"input": "We do not help with that.", "model": MODEL} in sent
    assert moderation_fake.requests[0]["headers"]["authorization"] == f"Bearer {API_KEY}"
    by_direction = {check.direction: check.status for check in await checks(api)}
    assert by_direction == {"inbound": "flagged", "outbound": "checked"}
    [flag] = await flags(api)
    assert (flag.source, flag.direction, flag.action, flag.status) == (
        "classifier",
        "inbound",
        "flag",
        "open",
    )
    assert flag.categories == ["illicit"]
    assert flag.scores["illicit"] == pytest.approx(0.97)
    async with api.app.state.sessionmaker() as session:
        raw = (await session.execute(text("select evidence from moderation_flags"))).scalar_one()
    assert "smuggle" not in raw  # ciphertext at rest
    assert api.app.state.keyring.decrypt(raw) == "Help me smuggle watches past customs"


async def _due_now(api: Api) -> None:
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(ModerationCheck)
            .where(ModerationCheck.status == "queued")
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


async def _retry_until_final(api: Api) -> list[ModerationCheck]:
    """Run the sweeper (the backoff skipped) until every check has its final state."""
    for _ in range(tasks.MAX_ATTEMPTS + 1):
        found = await checks(api)
        if all(check.status != "queued" for check in found):
            return found
        await _due_now(api)
        await tasks.requeue_due(api.app.state.sessionmaker)
        await settle()
    raise AssertionError("the checks never reached a final state")


async def test_a_failing_classifier_never_costs_the_message(
    api: Api, openrouter: FakeOpenRouter, moderation_fake: FakeModeration
) -> None:
    moderation_fake.fail(500, times=None)
    dev, agent_id = await running_agent(api)
    openrouter.reply("Here you are.")
    body = await say(dev, agent_id, "Help me smuggle watches")
    assert body["status"] == "answered" and body["reply"]["text"] == "Here you are."
    await settle()
    first = await checks(api)
    assert {(c.status, c.attempts) for c in first} == {("queued", 1)}
    assert all(c.next_attempt_at and c.next_attempt_at > utcnow() for c in first)  # backoff
    assert all("HTTP 500" in (c.last_error or "") for c in first)
    final = await _retry_until_final(api)
    assert {(c.status, c.attempts) for c in final} == {("failed", tasks.MAX_ATTEMPTS)}
    assert await flags(api) == []
    boss = await admin(api)
    seen = (await boss.client.get("/api/v1/admin/moderation/checks")).json()
    assert seen["counts"]["failed"] == 2
    assert {c["message_id"] for c in seen["failed"]} == {c.message_id for c in final}


async def test_a_classifier_that_recovers_checks_the_message_on_a_retry(
    api: Api, openrouter: FakeOpenRouter, moderation_fake: FakeModeration
) -> None:
    moderation_fake.fail(503, times=2)  # both checks' first attempts
    dev, agent_id = await running_agent(api)
    openrouter.reply("No.")
    await say(dev, agent_id, "I will hurt him")
    await settle()
    final = await _retry_until_final(api)
    assert {c.direction: (c.status, c.attempts) for c in final} == {
        "inbound": ("flagged", 2),
        "outbound": ("checked", 2),
    }
    [flag] = await flags(api)
    assert flag.categories == ["violence"]


class TestAnEndpointThatIsDown:
    @pytest.fixture
    def settings_overrides(self, openrouter: FakeOpenRouter) -> dict[str, object]:
        sock, port = loopback_socket()
        sock.close()  # nothing listens there: connections are refused
        closed = FakeModeration(root_url=f"http://127.0.0.1:{port}")
        return {**openrouter_settings(openrouter), **moderation_settings(closed)}

    async def test_the_message_is_answered_and_the_check_gives_up(
        self, api: Api, openrouter: FakeOpenRouter, settings: Settings
    ) -> None:
        assert settings.moderation_url and settings.moderation_url.startswith("http://127.0.0.1:")
        dev, agent_id = await running_agent(api)
        openrouter.reply("Fine.")
        body = await say(dev, agent_id, "Hello")
        assert body["status"] == "answered" and body["reply"]["text"] == "Fine."
        await settle()
        final = await _retry_until_final(api)
        assert {c.status for c in final} == {"failed"}
        assert all("failed" in (c.last_error or "") for c in final), final[0].last_error


class TestRulesOnly:
    @pytest.fixture
    def settings_overrides(self, openrouter: FakeOpenRouter) -> dict[str, object]:
        return openrouter_settings(openrouter)

    async def test_without_an_endpoint_nothing_is_queued(
        self, api: Api, openrouter: FakeOpenRouter
    ) -> None:
        dev, agent_id = await running_agent(api)
        openrouter.reply("Hi")
        assert (await say(dev, agent_id, "smuggle"))["status"] == "answered"
        await settle()
        assert await checks(api) == []
