"""50 turns at once against credits that cover only some of them (PostgreSQL)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from lunogen.billing import ledger
from lunogen.llm.models import UsageRecord
from tests.agent.support import create_agent, new_dev
from tests.billing.stripe_support import balance, verified
from tests.conftest import PG_URL
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api

pytestmark = pytest.mark.skipif(not PG_URL, reason="concurrent writers need PostgreSQL")

C = 1_000_000


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


async def test_fifty_concurrent_turns_never_overdraw(api: Api, openrouter: FakeOpenRouter) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    # Worst case per call: about 1024 output tokens x US$0.6/M = 0.06 credits: room for
    # about a third of the 50 holds at once.
    async with api.app.state.sessionmaker() as session:
        account = await ledger.ensure_account(session, dev.id)
        await ledger.post(
            session,
            account_id=dev.id,
            kind="adjustment",
            amount=1 * C - account.balance,
            key="test:leave-one-credit",
        )
        await session.commit()
    for _ in range(50):
        openrouter.reply("ok", cost=Decimal("0.000001"))  # charged 0.0001 credits each

    async def say(n: int) -> int:
        response = await dev.http.post(
            f"/api/v1/agents/{agent['id']}/messages",
            json={"text": f"Message {n}", "contact": f"contact-{n}", "wait_seconds": 60},
        )
        return response.status_code

    codes = await asyncio.gather(*(say(n) for n in range(50)))
    answered, refused = codes.count(200), codes.count(402)
    # Refused calls are 402s and nothing more: the credits left pay for many more calls, so
    # the agent is not paused and no accepted message is skipped (409) or left pending (202).
    assert answered + refused == 50, codes
    assert 0 < answered < 50 and refused >= 1
    status = await dev.http.get(f"/api/v1/agents/{agent['id']}/status")
    assert status.json()["status"] == "running"
    async with api.app.state.sessionmaker() as session:
        calls = await session.execute(
            select(func.count()).select_from(UsageRecord).where(UsageRecord.outcome == "ok")
        )
        assert calls.scalar_one() == answered  # every answer metered, nothing else called
    assert len(openrouter.chat_requests) == answered
    assert await balance(api, dev.id) == 1 * C - answered * 100
    async with api.app.state.sessionmaker() as session:
        account = await ledger.get_account(session, dev.id)
        assert account is not None and account.held == 0
    await verified(api)
