"""Helpers for the schedule tests: a running agent, schedule bodies, firing with a chosen clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from lunogen.schedule.firing import Fired, fire_due
from lunogen.schedule.models import Schedule, ScheduleRun
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.agent.support import Dev, create_agent, new_dev
from tests.helpers import Api


async def running_agent(api: Api, **overrides: Any) -> tuple[Dev, dict[str, Any]]:
    dev = await new_dev(api)
    agent = await create_agent(dev, **overrides)
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    return dev, agent


async def create(dev: Dev, agent_id: str, **body: Any) -> dict[str, Any]:
    values = {"name": "Morning digest", "prompt": "Summarise the news.", **body}
    response = await dev.http.post(f"/api/v1/agents/{agent_id}/schedules", json=values)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def fire_at(api: Api, now: datetime) -> list[Fired]:
    """Fire what is due at `now` (a clock the test chooses), then let the turns finish."""
    fired = await fire_due(api.app.state.sessionmaker, api.app.state.keyring, now=now)
    await enqueue.drain()
    await wait_idle()
    return fired


async def runs_of(api: Api, schedule_id: str) -> list[ScheduleRun]:
    async with api.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(ScheduleRun)
            .where(ScheduleRun.schedule_id == schedule_id)
            .order_by(ScheduleRun.planned_at)
        )
        return list(rows.scalars())


async def schedule_row(api: Api, schedule_id: str) -> Schedule:
    async with api.app.state.sessionmaker() as session:
        row = await session.get(Schedule, schedule_id)
        assert row is not None
        return row
