"""Housekeeping: old runtime logs are purged; the catalog refreshes on its timer."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from lunogen.kit.time import utcnow
from lunogen.llm.models import CatalogModel
from lunogen.runlog.logs import purge_old_logs
from lunogen.runlog.models import AgentLogEvent
from lunogen.worker.broker import JobRuntime
from lunogen.worker.maintenance import maintenance_forever
from tests.agent.support import create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api


async def test_logs_older_than_the_retention_are_purged(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    for _ in range(3):
        await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
        await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")
    sessionmaker = api.app.state.sessionmaker
    async with sessionmaker() as session:
        ids = list((await session.execute(select(AgentLogEvent.id))).scalars())
        assert len(ids) == 10  # 3 deploys and 3 stops; the first deploy pins version 1
        old = ids[:5]
        await session.execute(
            update(AgentLogEvent)
            .where(AgentLogEvent.id.in_(old))
            .values(created_at=utcnow() - timedelta(days=31))
        )
        await session.commit()
    settings = api.app.state.settings
    assert await purge_old_logs(sessionmaker, settings) == 5
    async with sessionmaker() as session:
        left = list((await session.execute(select(AgentLogEvent.id))).scalars())
    assert sorted(left) == sorted(ids[5:])
    assert await purge_old_logs(sessionmaker, settings) == 0


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter)


async def test_the_catalog_refreshes_on_its_timer(api: Api, openrouter: FakeOpenRouter) -> None:
    openrouter.models[0]["pricing"]["prompt"] = "0.00000099"
    model_id = openrouter.models[0]["id"]
    settings = api.app.state.settings.model_copy(update={"catalog_refresh_hours": 0.0001})
    rt = JobRuntime(settings, api.app.state.sessionmaker, api.app.state.keyring)
    task = asyncio.create_task(maintenance_forever(rt, tick_seconds=0.05))
    try:
        for _ in range(400):  # until the refreshed price is stored, not a fixed wait
            async with api.app.state.sessionmaker() as session:
                model = await session.get(CatalogModel, model_id)
            if model is not None and model.prompt_price == "0.00000099":
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert any(r.path.endswith("/models") for r in openrouter.requests)
    assert model is not None and model.prompt_price == "0.00000099"
