"""Schedules and their runs are the owner's data: in the data export, gone with the agent and
with the account."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import func, select

from lunogen.account.models import User
from lunogen.kit.time import utcnow
from lunogen.privacy.retention import purge_due, purge_user_rows
from lunogen.schedule.models import Schedule, ScheduleRun
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.schedule.support import create, fire_at, running_agent


async def _count(api: Api, model: type, **where: str) -> int:
    async with api.app.state.sessionmaker() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return int((await session.execute(query)).scalar_one())


async def test_the_export_holds_the_schedules_and_their_runs(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await running_agent(api)
    start = (utcnow() + timedelta(hours=2)).replace(microsecond=0)
    schedule = await create(
        dev,
        agent["id"],
        kind="interval",
        interval_seconds=3600,
        run_at=start.isoformat(),
        prompt="Export me, marker-7731",
        day_cap_credits="3",
    )
    other, their_agent = await running_agent(api)
    await create(other, their_agent["id"], kind="cron", cron="0 9 * * *", prompt="not-mine-4410")
    openrouter.reply("ok", prompt_tokens=50, completion_tokens=5, cost=Decimal("0.001"))
    await fire_at(api, start)

    started = await dev.http.post("/api/v1/account/export")
    assert started.status_code == 202, started.text
    for _ in range(3):
        await enqueue.drain()
        await wait_idle()
    export_id = started.json()["id"]
    got = await dev.http.get(f"/api/v1/account/exports/{export_id}")
    assert got.json()["status"] == "ready", got.json()
    raw = await dev.http.get(f"/api/v1/account/exports/{export_id}/download")
    archive = zipfile.ZipFile(io.BytesIO(raw.content))
    assert "schedules.json" in archive.read("README.md").decode()
    data = json.loads(archive.read("schedules.json"))
    [exported] = data["schedules"]
    assert exported["id"] == schedule["id"] and exported["prompt"] == "Export me, marker-7731"
    assert exported["day_cap_credits"] == "3"
    [run] = data["runs"]
    assert run["schedule_id"] == schedule["id"] and run["status"] == "started"
    assert Decimal(run["cost_credits"]) > 0
    assert b"not-mine-4410" not in raw.content


async def test_schedules_go_with_the_agent_and_with_the_account(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await running_agent(api)
    start = (utcnow() + timedelta(hours=2)).replace(microsecond=0)
    first = await create(
        dev, agent["id"], kind="interval", interval_seconds=3600, run_at=start.isoformat()
    )
    openrouter.reply("ok")
    await fire_at(api, start)
    assert await _count(api, ScheduleRun, schedule_id=first["id"]) == 1
    deleted = await dev.http.delete(f"/api/v1/agents/{agent['id']}")
    assert deleted.status_code == 204
    settings = api.app.state.settings
    await purge_due(
        api.app.state.sessionmaker,
        settings,
        now=utcnow() + timedelta(days=settings.purge_after_days + 1),
    )
    assert await _count(api, Schedule, agent_id=agent["id"]) == 0
    assert await _count(api, ScheduleRun, agent_id=agent["id"]) == 0

    kept_dev, kept_agent = await running_agent(api)  # another person's schedule stays
    kept = await create(kept_dev, kept_agent["id"], kind="cron", cron="0 9 * * *")
    second_dev, second_agent = await running_agent(api)
    await create(second_dev, second_agent["id"], kind="cron", cron="0 9 * * *")
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, second_dev.id)
        assert user is not None
        await purge_user_rows(session, user)
        await session.commit()
    assert await _count(api, Schedule, owner_id=second_dev.id) == 0
    assert await _count(api, Schedule, agent_id=second_agent["id"]) == 0
    assert await _count(api, Schedule, id=kept["id"]) == 1
