"""The process's own scheduler loop fires on the real clock, woken by a new schedule."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from lunogen.kit.time import utcnow
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.schedule.support import create, running_agent, runs_of


async def test_a_new_schedule_fires_on_time_without_a_manual_step(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await running_agent(api)
    await asyncio.sleep(0.2)  # the loop has started and sleeps (no schedule yet)
    openrouter.reply("On time.")
    # Far enough ahead that a slow request still creates it in the future (a loaded CI run
    # once took over 1.5 s to answer the POST).
    when = utcnow() + timedelta(seconds=5)
    schedule = await create(dev, agent["id"], kind="once", run_at=when.isoformat())
    deadline = time.monotonic() + 20
    runs = []
    while time.monotonic() < deadline and not runs:
        await asyncio.sleep(0.1)
        runs = await runs_of(api, schedule["id"])
    assert runs, "the loop never fired the schedule"
    [run] = runs
    assert run.status == "started" and run.planned_at == when
    late = run.created_at - run.planned_at
    assert timedelta(0) <= late < timedelta(seconds=5), late
    history_path = f"/api/v1/agents/{agent['id']}/schedules/{schedule['id']}/runs"
    while time.monotonic() < deadline:
        [shown] = (await dev.http.get(history_path)).json()["data"]
        if shown["outcome"] == "done":
            break
        await asyncio.sleep(0.1)
    assert shown["outcome"] == "done"
