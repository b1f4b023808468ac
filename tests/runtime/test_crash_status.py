"""An agent that cannot answer any more goes to `error` and its owner is told, once."""

from __future__ import annotations

from typing import Any

from tests.agent.support import Dev, create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api


async def _running_agent(api: Api) -> tuple[Dev, str]:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    return dev, agent["id"]


async def _say(dev: Dev, agent_id: str, text: str) -> Any:
    return await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": text})


async def _status(dev: Dev, agent_id: str) -> dict[str, Any]:
    body: dict[str, Any] = (await dev.http.get(f"/api/v1/agents/{agent_id}/status")).json()
    return body


async def _error_notes(dev: Dev) -> list[dict[str, Any]]:
    notes = (await dev.person.client.get("/api/v1/notifications")).json()["data"]
    return [n for n in notes if n["kind"] == "agent.error"]


async def test_a_model_the_provider_no_longer_knows_puts_the_agent_in_error(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    openrouter.fail(404, "No endpoints found for openai/gpt-4o-mini")
    assert (await _say(dev, agent_id, "Hello")).status_code == 502
    status = await _status(dev, agent_id)
    assert status["status"] == "error"
    assert "does not know the model 'openai/gpt-4o-mini'" in status["last_error"]
    [note] = await _error_notes(dev)
    assert "openai/gpt-4o-mini" in note["body"]
    refused = await _say(dev, agent_id, "Still there?")
    assert (refused.status_code, refused.json()["status"]) == (409, "error")
    # Redeploying (after fixing the cause) brings it back.
    assert (await dev.http.post(f"/api/v1/agents/{agent_id}/deploy")).status_code == 200
    assert (await _status(dev, agent_id))["status"] == "running"


async def test_repeated_failures_put_the_agent_in_error_once(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    from lunogen.runtime.turn import CRASH_AFTER_FAILURES

    dev, agent_id = await _running_agent(api)
    openrouter.reply("Fine")
    assert (await _say(dev, agent_id, "A good one")).status_code == 200
    for n in range(CRASH_AFTER_FAILURES - 1):
        openrouter.fail(400, f"Bad request number {n}")
        assert (await _say(dev, agent_id, f"Bad {n}")).status_code == 502
    assert (await _status(dev, agent_id))["status"] == "running"  # not yet
    assert await _error_notes(dev) == []
    openrouter.fail(400, "Bad request, the last straw")
    assert (await _say(dev, agent_id, "Bad again")).status_code == 502
    status = await _status(dev, agent_id)
    assert status["status"] == "error"
    assert f"last {CRASH_AFTER_FAILURES} messages could not be answered" in status["last_error"]
    assert "the last straw" in status["last_error"]
    assert len(await _error_notes(dev)) == 1


async def test_a_success_between_failures_keeps_the_agent_running(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    from lunogen.runtime.turn import CRASH_AFTER_FAILURES

    dev, agent_id = await _running_agent(api)
    for n in range(CRASH_AFTER_FAILURES * 2):
        if n % CRASH_AFTER_FAILURES == 0:
            openrouter.reply("ok")
            expected = 200
        else:
            openrouter.fail(400, "bad")
            expected = 502
        assert (await _say(dev, agent_id, f"message {n}")).status_code == expected
    assert (await _status(dev, agent_id))["status"] == "running"
    assert await _error_notes(dev) == []
