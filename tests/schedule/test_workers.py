"""Exactly once from any worker: two `lunogen worker` processes on PostgreSQL + Redis fire the
same schedules, and a worker killed in the middle of a run leaves one run and one answer.

This process serves the API with no worker (it fires nothing); the workers' scheduler loops
are woken through Redis when a schedule is created here. Needs LUNOGEN_TEST_DATABASE_URL
(PostgreSQL) and LUNOGEN_TEST_REDIS_URL.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from lunogen.config import Settings
from lunogen.kit.time import utcnow
from lunogen.runtime.models import Message, Thread
from lunogen.schedule.models import ScheduleRun
from tests.conftest import PG_URL, REDIS_URL
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.schedule.support import create, running_agent
from tests.worker.test_scaled import LEASE_SECONDS, Workers, clean_queue, queue_name  # noqa: F401

pytestmark = pytest.mark.skipif(
    not (PG_URL and REDIS_URL),
    reason="two workers need LUNOGEN_TEST_DATABASE_URL and LUNOGEN_TEST_REDIS_URL",
)


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter, queue_name: str) -> dict[str, object]:  # noqa: F811
    from tests.fakes.openrouter import openrouter_settings

    return openrouter_settings(
        openrouter,
        job_broker="redis",
        job_queue=queue_name,
        embedded_worker=False,
        turn_lease_seconds=LEASE_SECONDS,
    )


@pytest.fixture
def workers(settings: Settings, openrouter: FakeOpenRouter, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(settings, openrouter, tmp_path)
    yield pool
    pool.stop_all()


async def _wait_until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _ready(workers: Workers, count: int) -> None:
    async def started() -> bool:
        return all("job_consumer_started" in workers.output(i) for i in range(count))

    await _wait_until(started, 30, "the workers to start")
    await asyncio.sleep(0.5)  # their scheduler loops start at the first housekeeping tick


async def _scalar(api: Api, query: Any) -> int:
    async with api.app.state.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())


async def test_two_workers_fire_each_run_exactly_once(
    api: Api,
    workers: Workers,
    openrouter: FakeOpenRouter,
    clean_queue: None,  # noqa: F811
) -> None:
    workers.start()
    workers.start()
    await _ready(workers, 2)
    dev, agent = await running_agent(api)
    when = utcnow() + timedelta(seconds=3)
    ids = [
        (await create(dev, agent["id"], name=f"s{i}", kind="once", run_at=when.isoformat()))["id"]
        for i in range(20)
    ]

    async def all_answered() -> bool:
        done = await _scalar(
            api,
            select(func.count())
            .select_from(Message)
            .where(Message.agent_id == agent["id"], Message.role == "assistant"),
        )
        return done >= len(ids)

    await _wait_until(all_answered, 60, "every run to be answered")
    await asyncio.sleep(1.5)  # anything fired twice would show up by now
    for schedule_id in ids:
        runs = await _scalar(
            api,
            select(func.count())
            .select_from(ScheduleRun)
            .where(ScheduleRun.schedule_id == schedule_id),
        )
        assert runs == 1, schedule_id
    inbound = await _scalar(
        api,
        select(func.count())
        .select_from(Message)
        .where(Message.agent_id == agent["id"], Message.role == "user"),
    )
    replies = await _scalar(
        api,
        select(func.count())
        .select_from(Message)
        .where(Message.agent_id == agent["id"], Message.role == "assistant"),
    )
    assert (inbound, replies) == (20, 20)
    logs = workers.output(0) + workers.output(1)
    assert logs.count('"schedule_fired"') == 20


async def test_a_worker_killed_during_a_run_leaves_one_run_and_one_answer(
    api: Api,
    workers: Workers,
    openrouter: FakeOpenRouter,
    clean_queue: None,  # noqa: F811
) -> None:
    processes = [workers.start(), workers.start()]
    await _ready(workers, 2)
    dev, agent = await running_agent(api)
    openrouter.stall(60)  # the run's model call hangs: its worker is mid-turn
    first = await create(
        dev, agent["id"], kind="once", run_at=(utcnow() + timedelta(seconds=2)).isoformat()
    )

    async def holder() -> str | None:
        async with api.app.state.sessionmaker() as session:
            return await session.scalar(
                select(Thread.lease_owner).where(
                    Thread.agent_id == agent["id"], Thread.contact == first["id"]
                )
            )

    async def leased() -> bool:
        return bool(await holder()) and len(openrouter.chat_requests) == 1

    await _wait_until(leased, 30, "a worker to start the run's turn")
    owner = await holder()
    assert owner is not None
    pid = int(owner.split(":")[1])
    [victim] = [p for p in processes if p.pid == pid]
    [survivor] = [p for p in processes if p.pid != pid]
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)

    async def answered() -> bool:
        return (
            await _scalar(
                api,
                select(func.count())
                .select_from(Message)
                .where(Message.agent_id == agent["id"], Message.role == "assistant"),
            )
            == 1
        )

    await _wait_until(answered, 60, "the surviving worker to answer the run")
    assert len(openrouter.chat_requests) == 2  # the killed call, and the survivor's

    # The survivor alone fires what comes next, woken through Redis by this process.
    second = await create(
        dev, agent["id"], kind="once", run_at=(utcnow() + timedelta(seconds=1)).isoformat()
    )

    async def second_ran() -> bool:
        return (
            await _scalar(
                api,
                select(func.count())
                .select_from(ScheduleRun)
                .where(ScheduleRun.schedule_id == second["id"]),
            )
            == 1
        )

    await _wait_until(second_ran, 30, "the survivor to fire the next schedule")
    await asyncio.sleep(LEASE_SECONDS + 1)
    for schedule_id in (first["id"], second["id"]):
        runs = await _scalar(
            api,
            select(func.count())
            .select_from(ScheduleRun)
            .where(ScheduleRun.schedule_id == schedule_id),
        )
        assert runs == 1
    replies = await _scalar(
        api,
        select(func.count())
        .select_from(Message)
        .where(Message.agent_id == agent["id"], Message.role == "assistant"),
    )
    assert replies == 2
    assert survivor.poll() is None
