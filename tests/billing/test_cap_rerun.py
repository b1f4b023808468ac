"""A turn re-run after its worker died reuses its recorded calls without a new hold: they were
counted against the caps once, when the dead attempt settled them, and never again."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from lunogen.agent.models import Agent
from lunogen.billing.models_caps import CappedHold, SpendCap, SpendCounter
from lunogen.runtime.models import Message
from lunogen.runtime.tasks import sweep_once
from lunogen.runtime.turn import loop, run_turn
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.billing.caps_support import C
from tests.billing.stripe_support import balance, verified
from tests.billing.support import set_available
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api
from tests.runtime.support import DEAD_WORKER, pending_under_a_lease, set_lease, turn_deps

COST = Decimal("0.0005")  # 0.05 credits a call
CHARGE = 50_000


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


class _Killed(BaseException):
    """The worker dies (a BaseException, like the CancelledError of a killed task)."""


async def test_recorded_calls_count_once_against_the_cap(
    api: Api, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent_id, thread_id, message_id = await pending_under_a_lease(
        api, text="Remember that I like tea", left=timedelta(minutes=5), tools=["remember"]
    )
    sessionmaker = api.app.state.sessionmaker
    async with sessionmaker() as session:
        agent = await session.get(Agent, agent_id)
        assert agent is not None
        owner_id = agent.owner_id
        session.add(SpendCap(subject=agent_id, owner_id=owner_id, agent_id=agent_id, daily_micro=C))
        await session.commit()
    await set_available(sessionmaker, owner_id, 40 * C)
    start = await balance(api, owner_id)
    openrouter.call_tool("remember", {"note": "likes tea"}, cost=COST)

    async def killed(*args: Any) -> str:
        raise _Killed

    monkeypatch.setattr(loop, "run_tool", killed)  # dies in the tool, its call recorded
    with pytest.raises(_Killed):
        await run_turn(turn_deps(), inbound_id=message_id, lease_token=DEAD_WORKER)
    monkeypatch.undo()
    assert len(openrouter.chat_requests) == 1

    openrouter.reply("Noted.", cost=COST)
    async with sessionmaker() as session:
        await set_lease(session, thread_id, timedelta(seconds=-1))
    assert await sweep_once(sessionmaker) == 1
    await enqueue.drain()
    await wait_idle()

    assert len(openrouter.chat_requests) == 2  # step 0 came from its record: no new hold
    assert await balance(api, owner_id) == start - 2 * CHARGE
    async with sessionmaker() as session:
        inbound = await session.get(Message, message_id)
        assert inbound is not None and inbound.status == "done"
        counters = (
            await session.execute(select(SpendCounter).where(SpendCounter.subject == agent_id))
        ).scalars()
        assert {counter.spent for counter in counters} == {2 * CHARGE}
        assert (await session.execute(select(CappedHold))).first() is None
    await verified(api)
