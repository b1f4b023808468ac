"""The status page counts today's threads and messages (runtime.activity, composed by the
endpoint with the agent's state from agent.lifecycle)."""

from __future__ import annotations

import pytest

from tests.agent.support import create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


async def test_status_counts_the_threads_and_messages_of_today(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    other = await create_agent(dev)
    for agent_id in (agent["id"], other["id"]):
        assert (await dev.http.post(f"/api/v1/agents/{agent_id}/deploy")).status_code == 200
    for text in ("Hi", "And again"):
        openrouter.reply("Hello!")
        said = await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": text})
        assert said.status_code == 200, said.text
    status = (await dev.http.get(f"/api/v1/agents/{agent['id']}/status")).json()
    # One thread (the caller's conversation goes on), two messages and their two replies.
    assert (status["threads_today"], status["messages_today"]) == (1, 4)
    assert status["status"] == "running" and status["last_error"] is None
    quiet = (await dev.http.get(f"/api/v1/agents/{other['id']}/status")).json()
    assert (quiet["threads_today"], quiet["messages_today"]) == (0, 0)
