"""The scaled shape: this process serves HTTP with no worker; `lunogen worker` processes run the
jobs, sharing PostgreSQL and Redis. Includes killing a worker in the middle of a turn.

Needs LUNOGEN_TEST_DATABASE_URL (PostgreSQL) and LUNOGEN_TEST_REDIS_URL; `.ci/run` sets both.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import func, select

from lunogen.billing.models import CreditEntry
from lunogen.billing.verify import verify_all
from lunogen.config import Settings
from lunogen.llm.models import UsageRecord
from lunogen.runtime.models import Message, Thread
from tests.agent.support import Dev, create_agent, new_dev
from tests.conftest import PG_URL, REDIS_URL
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api, sse_events
from tests.runtime.crash_support import (
    CALLS_PER_TURN,
    IN_FLIGHT,
    assert_answered_once_and_charged_once,
    midway,
    outcome,
    script_turns,
    send_in_flight,
    settled,
    wait_until,
)

pytestmark = pytest.mark.skipif(
    not (PG_URL and REDIS_URL),
    reason="the scaled shape needs LUNOGEN_TEST_DATABASE_URL and LUNOGEN_TEST_REDIS_URL",
)

LUNOGEN = str(Path(sys.executable).with_name("lunogen"))
LEASE_SECONDS = 2


@pytest.fixture
def queue_name() -> str:
    return f"test-jobs:{secrets.token_hex(6)}"


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter, queue_name: str) -> dict[str, object]:
    return openrouter_settings(
        openrouter,
        job_broker="redis",
        job_queue=queue_name,
        embedded_worker=False,
        turn_lease_seconds=LEASE_SECONDS,
    )


class Workers:
    """`lunogen worker` processes started with this test's settings."""

    def __init__(self, settings: Settings, openrouter: FakeOpenRouter, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env = {
            **os.environ,
            "LUNOGEN_DATA_DIR": str(settings.data_dir),  # the same key file as the server
            "LUNOGEN_DATABASE_URL": str(settings.database_url),
            "LUNOGEN_REDIS_URL": str(settings.redis_url),
            "LUNOGEN_JOB_QUEUE": settings.job_queue,
            "LUNOGEN_TURN_LEASE_SECONDS": str(LEASE_SECONDS),
            "LUNOGEN_SWEEP_INTERVAL_SECONDS": "0.5",
            "LUNOGEN_SHUTDOWN_GRACE_SECONDS": "1",
            "LUNOGEN_CATALOG_REFRESH_HOURS": "0",
            "LUNOGEN_PUBLIC_URL": settings.public_url,
            "LUNOGEN_LLM_BASE_URL": openrouter.base_url,
            "LUNOGEN_OPENROUTER_API_KEY": str(openrouter.api_key),
            "LUNOGEN_LLM_API_STYLE": "openrouter",
            "LUNOGEN_LLM_TIMEOUT_SECONDS": "60",
            "LUNOGEN_LOG_JSON": "true",
        }
        self.env.pop("LUNOGEN_SECRET_KEYS", None)

    def start(self, concurrency: int = 4) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"worker-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [LUNOGEN, "worker", "--concurrency", str(concurrency)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def output(self, index: int) -> str:
        return (self.log_dir / f"worker-{index}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


@pytest.fixture
def workers(settings: Settings, openrouter: FakeOpenRouter, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(settings, openrouter, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
async def clean_queue(queue_name: str) -> AsyncIterator[None]:
    yield
    redis = Redis.from_url(str(REDIS_URL))
    await redis.delete(queue_name)
    await redis.aclose()


async def _running_agent(api: Api) -> tuple[Dev, str]:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    return dev, agent["id"]


async def _counts(api: Api, message_id: str) -> tuple[int, int, str]:
    async with api.app.state.sessionmaker() as session:
        replies = await session.execute(
            select(func.count()).where(Message.reply_to_id == message_id)
        )
        usage = await session.execute(
            select(func.count()).select_from(UsageRecord).where(UsageRecord.outcome == "ok")
        )
        inbound = await session.get(Message, message_id)
        assert inbound is not None
        return int(replies.scalar_one()), int(usage.scalar_one()), inbound.status


async def _wait_until(predicate: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_separate_worker_answers_and_streams(
    api: Api, workers: Workers, openrouter: FakeOpenRouter, clean_queue: None
) -> None:
    workers.start()
    dev, agent_id = await _running_agent(api)
    openrouter.reply("Hello from a worker process")
    answered = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages", json={"text": "Hi", "wait_seconds": 30}
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["reply"]["text"] == "Hello from a worker process"

    # Streaming: the worker process writes the reply; this process relays its deltas.
    openrouter.reply("Streamed across processes")
    streamed = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages",
        json={"text": "Stream it", "stream": True, "wait_seconds": 30},
    )
    assert streamed.status_code == 200
    events = sse_events(streamed.text)
    deltas = "".join(data["text"] for name, data in events if name == "delta")
    assert deltas == "Streamed across processes"
    assert events[-1][0] == "done"
    assert events[-1][1]["text"] == "Streamed across processes"
    assert openrouter.last_chat.body["stream"] is True


async def test_a_worker_killed_mid_turn_leaves_exactly_one_reply(
    api: Api, workers: Workers, openrouter: FakeOpenRouter, clean_queue: None
) -> None:
    first = workers.start()
    dev, agent_id = await _running_agent(api)
    openrouter.stall(60)  # the first model call hangs, as if the model were thinking
    sent = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages", json={"text": "Are you there?", "wait_seconds": 0}
    )
    assert sent.status_code == 202
    message_id = sent.json()["message"]["id"]

    async def first_call_started() -> bool:
        return len(openrouter.chat_requests) == 1

    await _wait_until(first_call_started, 30, "the first worker to call the model")
    first.send_signal(signal.SIGKILL)  # no chance to clean up: the lease stays behind
    first.wait(timeout=10)
    assert await _counts(api, message_id) == (0, 0, "pending")

    workers.start()  # its sweeper finds the thread once the dead worker's lease runs out

    async def answered() -> bool:
        return (await _counts(api, message_id))[2] != "pending"

    await _wait_until(answered, 60, "the second worker to answer")
    assert await _counts(api, message_id) == (1, 1, "done")
    assert len(openrouter.chat_requests) == 2
    # Nothing more happens later: no second reply, no second charge.
    await asyncio.sleep(LEASE_SECONDS + 1)
    assert await _counts(api, message_id) == (1, 1, "done")
    thread = await dev.http.get(f"/api/v1/agents/{agent_id}/threads")
    [only] = thread.json()["data"]
    messages = await dev.http.get(f"/api/v1/agents/{agent_id}/threads/{only['id']}/messages")
    roles = [m["role"] for m in messages.json()["data"]]
    assert roles == ["user", "assistant"]


async def test_a_worker_killed_between_model_calls_is_not_charged_again_for_the_first(
    api: Api, workers: Workers, openrouter: FakeOpenRouter, clean_queue: None
) -> None:
    """The first call completed (recorded and charged), the second hangs when the worker is
    killed: the next worker reuses the first call, so the message is charged once per call."""
    first = workers.start()
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["remember"])
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    openrouter.call_tool("remember", {"note": "likes tea"})
    openrouter.stall(60)  # the second call hangs
    sent = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/messages",
        json={"text": "Remember that I like tea", "wait_seconds": 0},
    )
    assert sent.status_code == 202
    message_id = sent.json()["message"]["id"]

    async def second_call_started() -> bool:
        return len(openrouter.chat_requests) == 2

    await _wait_until(second_call_started, 30, "the first worker's second model call")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    assert await _counts(api, message_id) == (0, 1, "pending")  # the first call is paid for
    openrouter.reply("Noted.")
    workers.start()

    async def answered() -> bool:
        return (await _counts(api, message_id))[2] != "pending"

    await _wait_until(answered, 60, "the second worker to answer")
    assert await _counts(api, message_id) == (1, 2, "done")
    assert len(openrouter.chat_requests) == 3  # the first call was not made again
    roles = [m["role"] for m in openrouter.chat_requests[2].messages]
    assert roles[-2:] == ["assistant", "tool"]  # the re-run went on from the recorded call
    async with api.app.state.sessionmaker() as session:
        charges = await session.execute(
            select(CreditEntry.idempotency_key).where(CreditEntry.kind == "usage")
        )
        assert sorted(key.split(":")[2] for key in charges.scalars()) == ["0", "1"]
        assert await verify_all(session) == []


async def test_a_worker_killed_with_20_messages_in_flight_answers_each_once_and_charges_once(
    api: Api, workers: Workers, openrouter: FakeOpenRouter, clean_queue: None
) -> None:
    """20 turns of three model calls each run in one worker when it is SIGKILLed, half of
    their calls made; the next worker answers each message once and pays each call once."""
    first = workers.start(concurrency=IN_FLIGHT)
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["remember"])
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    script_turns(openrouter)
    message_ids = await send_in_flight(dev.http, agent["id"])
    sessionmaker = api.app.state.sessionmaker
    half = IN_FLIGHT * CALLS_PER_TURN // 2

    async def half_the_calls_arrived() -> bool:
        return len(openrouter.chat_requests) >= half

    await wait_until(half_the_calls_arrived, 30, f"{half} model calls")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    calls_at_kill = len(openrouter.chat_requests)
    assert calls_at_kill < IN_FLIGHT * CALLS_PER_TURN
    assert await midway(sessionmaker, message_ids) > 0  # turns cut in the middle

    workers.start(concurrency=IN_FLIGHT)

    async def all_settled() -> bool:
        return await settled(sessionmaker, message_ids)

    await wait_until(all_settled, 60, "every message to be answered by the next worker")
    await asyncio.sleep(LEASE_SECONDS + 1)  # nothing more happens later
    assert_answered_once_and_charged_once(await outcome(sessionmaker, message_ids), message_ids)
    assert len(openrouter.chat_requests) > calls_at_kill


async def test_a_stopped_worker_releases_its_thread_for_the_next(
    api: Api, workers: Workers, openrouter: FakeOpenRouter, clean_queue: None
) -> None:
    first = workers.start()
    dev, agent_id = await _running_agent(api)
    openrouter.stall(60)
    sent = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages", json={"text": "Slow one", "wait_seconds": 0}
    )
    message_id = sent.json()["message"]["id"]

    async def first_call_started() -> bool:
        return len(openrouter.chat_requests) == 1

    await _wait_until(first_call_started, 30, "the first worker to call the model")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=15) == 0, workers.output(0)
    async with api.app.state.sessionmaker() as session:
        inbound = await session.get(Message, message_id)
        assert inbound is not None
        thread = await session.get(Thread, inbound.thread_id)
        assert thread is not None
        assert thread.lease_owner is None  # released on shutdown, not left to expire
    assert "jobs_cancelled_at_shutdown" in workers.output(0)

    workers.start()

    async def answered() -> bool:
        return (await _counts(api, message_id))[2] == "done"

    await _wait_until(answered, 30, "the next worker to answer")
    assert await _counts(api, message_id) == (1, 1, "done")
