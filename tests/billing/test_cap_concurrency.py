"""30 turns at once against a daily cap that covers only some of them (PostgreSQL): the period
never spends more than its cap (a call's hold covers its charge, so not even one call over)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from lunogen.billing import ledger
from lunogen.billing.models_caps import CappedHold, SpendCounter
from lunogen.llm.models import UsageRecord
from tests.billing.caps_support import C, put_caps, running_agent
from tests.billing.stripe_support import balance, verified
from tests.conftest import PG_URL
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api

pytestmark = pytest.mark.skipif(not PG_URL, reason="concurrent writers need PostgreSQL")

CAP = C // 2  # 0.5 credits: ten calls at 0.05, fewer when holds of about 0.062 are in flight
CHARGE = 50_000


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


async def test_concurrent_turns_at_the_edge_of_a_cap_never_pass_it(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await running_agent(api, credits=40)
    start = await balance(api, dev.id)
    await put_caps(dev, agent_id, daily_credits="0.5", reply_text="Capped.")
    for _ in range(30):
        openrouter.reply("ok", cost=Decimal("0.0005"))

    async def say(n: int) -> str:
        response = await dev.http.post(
            f"/api/v1/agents/{agent_id}/messages",
            json={"text": f"Message {n}", "contact": f"contact-{n}", "wait_seconds": 60},
        )
        assert response.status_code == 200, response.text
        text: str = response.json()["reply"]["text"]
        return text

    replies = await asyncio.gather(*(say(n) for n in range(30)))
    answered, capped = replies.count("ok"), replies.count("Capped.")
    assert answered + capped == 30, replies
    assert 0 < answered <= CAP // CHARGE and capped >= 20
    assert len(openrouter.chat_requests) == answered  # a capped turn never called the model
    spent = start - await balance(api, dev.id)
    assert spent == answered * CHARGE <= CAP
    async with api.app.state.sessionmaker() as session:
        calls = await session.execute(
            select(func.count()).select_from(UsageRecord).where(UsageRecord.agent_id == agent_id)
        )
        assert calls.scalar_one() == answered
        counters = list((await session.execute(select(SpendCounter))).scalars())
        assert {c.spent for c in counters if c.subject == agent_id} == {spent}
        assert (await session.execute(select(CappedHold))).first() is None
        account = await ledger.get_account(session, dev.id)
        assert account is not None and account.held == 0
    await verified(api)


async def test_concurrent_turns_of_two_agents_never_pass_the_account_cap(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, first = await running_agent(api, credits=40)
    made = await dev.http.post("/api/v1/agents", json={"name": "B", "model": "openai/gpt-4o-mini"})
    second = made.json()["id"]
    assert (await dev.http.post(f"/api/v1/agents/{second}/deploy")).status_code == 200
    start = await balance(api, dev.id)
    response = await dev.http.put("/api/v1/billing/cap", json={"monthly_credits": "0.5"})
    assert response.status_code == 200, response.text
    for _ in range(30):
        openrouter.reply("ok", cost=Decimal("0.0005"))

    async def say(n: int) -> str:
        agent_id = first if n % 2 else second
        response = await dev.http.post(
            f"/api/v1/agents/{agent_id}/messages",
            json={"text": f"Message {n}", "contact": f"contact-{n}", "wait_seconds": 60},
        )
        assert response.status_code == 200, response.text
        text: str = response.json()["reply"]["text"]
        return text

    replies = await asyncio.gather(*(say(n) for n in range(30)))
    answered = replies.count("ok")
    assert 0 < answered <= CAP // CHARGE
    assert len(openrouter.chat_requests) == answered
    spent = start - await balance(api, dev.id)
    assert spent == answered * CHARGE <= CAP
    cap = (await dev.http.get("/api/v1/billing/cap")).json()
    assert cap["this_month"]["held"] == "0"
    assert cap["this_month"]["spent"] == str(Decimal(spent) / C)
    await verified(api)
