"""Costs the provider did not report at call time are filled in later, and charged once."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from lunogen.billing.reconcile import reconcile_costs
from lunogen.llm.models import UsageRecord
from lunogen.llm.worker_parts import MODEL_CLIENT
from lunogen.worker.broker import runtime
from tests.agent.support import create_agent, new_dev
from tests.billing.stripe_support import STARTER, balance, entries, verified
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter)


async def test_a_cost_reported_later_replaces_the_catalog_estimate(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    # OpenRouter's /generation knows a call only a while after it: 404 until then.
    openrouter.generation_delay = 0.3
    openrouter.reply(
        "No cost in this answer",
        cost=None,
        final_cost=Decimal("0.00121"),  # US$0.001 more than the estimate: 0.1 credits
        prompt_tokens=1000,
        completion_tokens=100,
    )
    said = await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": "Hi"})
    assert said.status_code == 200
    async with api.app.state.sessionmaker() as session:
        usage = (await session.execute(select(UsageRecord))).scalar_one()
    assert usage.cost_source == "catalog"  # 1000 x 0.15e-6 + 100 x 0.6e-6 = US$0.00021
    assert await balance(api, dev.id) == STARTER - 21_000

    rt = runtime()
    sm, settings, client = api.app.state.sessionmaker, rt.settings, rt.get(MODEL_CLIENT)
    now = timedelta(0)
    lookups_before = len(openrouter.requests)
    assert await reconcile_costs(sm, settings, client, settle_delay=now) == 0  # not known yet
    assert len(openrouter.requests) == lookups_before + 1  # it asked, and got a 404
    deadline = time.monotonic() + 10
    while (done := await reconcile_costs(sm, settings, client, settle_delay=now)) == 0:
        assert time.monotonic() < deadline, "the generation never became known"
        await asyncio.sleep(0.05)  # the next sweep; the fake's delay is a fraction of a second
    assert done == 1
    assert await reconcile_costs(sm, settings, client, settle_delay=now) == 0  # once only
    async with api.app.state.sessionmaker() as session:
        usage = (await session.execute(select(UsageRecord))).scalar_one()
    assert (usage.cost_source, usage.cost_nano_usd) == ("provider", 1_210_000)
    assert await balance(api, dev.id) == STARTER - 121_000
    [adjustment] = await entries(api, dev.id, "adjustment")
    assert adjustment.amount == -100_000 and adjustment.reference == usage.id
    await verified(api)


async def test_a_final_cost_equal_to_the_estimate_changes_no_balance(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    openrouter.generation_delay = 0
    openrouter.reply("ok", cost=None, prompt_tokens=1000, completion_tokens=100)
    said = await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": "Hi"})
    assert said.status_code == 200
    rt = runtime()
    sm = api.app.state.sessionmaker
    assert (
        await reconcile_costs(sm, rt.settings, rt.get(MODEL_CLIENT), settle_delay=timedelta(0)) == 1
    )
    async with api.app.state.sessionmaker() as session:
        usage = (await session.execute(select(UsageRecord))).scalar_one()
    assert (usage.cost_source, usage.cost_nano_usd) == ("provider", 210_000)
    assert await balance(api, dev.id) == STARTER - 21_000
    assert await entries(api, dev.id, "adjustment") == []
    await verified(api)
