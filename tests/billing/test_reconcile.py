"""Costs the provider did not report at call time are filled in later, and charged once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from lunogen.billing.reconcile import reconcile_costs
from lunogen.llm.models import UsageRecord
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
    openrouter.reply("No cost in this answer", cost=None, prompt_tokens=1000, completion_tokens=100)
    said = await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": "Hi"})
    assert said.status_code == 200
    async with api.app.state.sessionmaker() as session:
        usage = (await session.execute(select(UsageRecord))).scalar_one()
    assert usage.cost_source == "catalog"  # 1000 x 0.15e-6 + 100 x 0.6e-6 = US$0.00021
    assert await balance(api, dev.id) == STARTER - 21_000

    rt = runtime()
    sm, settings, client = api.app.state.sessionmaker, rt.settings, rt.model_client
    now = timedelta(0)
    assert await reconcile_costs(sm, settings, client, settle_delay=now) == 0  # not known yet
    openrouter.generations[str(usage.generation_id)] = {
        "id": usage.generation_id,
        "model": "openai/gpt-4o-mini",
        "total_cost": 0.00121,  # US$0.001 more than the estimate: 0.1 credits
    }
    assert await reconcile_costs(sm, settings, client, settle_delay=now) == 1
    assert await reconcile_costs(sm, settings, client, settle_delay=now) == 0  # once only
    async with api.app.state.sessionmaker() as session:
        usage = (await session.execute(select(UsageRecord))).scalar_one()
    assert (usage.cost_source, usage.cost_nano_usd) == ("provider", 1_210_000)
    assert await balance(api, dev.id) == STARTER - 121_000
    [adjustment] = await entries(api, dev.id, "adjustment")
    assert adjustment.amount == -100_000 and adjustment.reference == usage.id
    await verified(api)
