"""`lunogen serve` with Redis and its own worker: jobs go through the stream and come back to the
same process (one process, scaled transport)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.agent.support import create_agent, new_dev
from tests.conftest import PG_URL, REDIS_URL
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api

pytestmark = pytest.mark.skipif(
    not (PG_URL and REDIS_URL),
    reason="needs LUNOGEN_TEST_DATABASE_URL and LUNOGEN_TEST_REDIS_URL",
)


@pytest.fixture
async def queue_name() -> AsyncIterator[str]:
    name = f"test-jobs:{secrets.token_hex(6)}"
    yield name
    redis = Redis.from_url(str(REDIS_URL))
    await redis.delete(name)
    await redis.aclose()


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter, queue_name: str) -> dict[str, object]:
    return openrouter_settings(openrouter, job_broker="redis", job_queue=queue_name)


async def test_turns_go_through_the_stream_and_are_answered_here(
    api: Api, openrouter: FakeOpenRouter, queue_name: str
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    for n in range(3):
        openrouter.reply(f"Answer {n}")
        response = await dev.http.post(
            f"/api/v1/agents/{agent['id']}/messages", json={"text": f"Q{n}", "wait_seconds": 20}
        )
        assert response.status_code == 200, response.text
        assert response.json()["reply"]["text"] == f"Answer {n}"
    redis = Redis.from_url(str(REDIS_URL))
    try:
        assert await redis.xlen(queue_name) >= 3  # the jobs really went through Redis
        for _ in range(100):  # a job is acknowledged once it has run (just after the reply)
            groups = await redis.xinfo_groups(queue_name)
            if groups[0]["pending"] == 0:
                break
            await asyncio.sleep(0.05)
        assert [g["name"] for g in groups] == [b"lunogen-workers"]
        assert groups[0]["pending"] == 0
    finally:
        await redis.aclose()


async def test_the_consumer_comes_back_when_redis_loses_the_stream(
    api: Api, openrouter: FakeOpenRouter, queue_name: str
) -> None:
    """A Redis restarted without persistence has neither the stream nor the consumer group."""
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    redis = Redis.from_url(str(REDIS_URL))
    try:
        assert await redis.delete(queue_name) == 1
    finally:
        await redis.aclose()
    openrouter.reply("Still here")
    response = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/messages", json={"text": "Hello?", "wait_seconds": 20}
    )
    assert response.status_code == 200, response.text
    assert response.json()["reply"]["text"] == "Still here"
