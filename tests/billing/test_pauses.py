"""Agents paused for lack of credits are remembered per account, and given back on top-up."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select

from lunogen.account.models import User
from lunogen.agent.models import Agent
from lunogen.billing import ledger
from lunogen.billing.models import CreditPause
from tests.billing.support import Sessions, tx

C = 1_000_000


async def _agents(sm: Sessions, count: int) -> tuple[str, list[str]]:
    async with tx(sm) as session:
        user = User(email="owner@example.com", name="Owner")
        session.add(user)
        await session.flush()
        agents = [Agent(owner_id=user.id, name=f"a{n}", model="m") for n in range(count)]
        session.add_all(agents)
        await session.flush()
        return user.id, [a.id for a in agents]


async def _pauses(sm: Sessions) -> int:
    async with sm() as session:
        return int((await session.execute(select(func.count(CreditPause.agent_id)))).scalar_one())


async def test_paused_agents_are_listed_once_in_pause_order(sm: Sessions) -> None:
    owner, (first, second, third) = await _agents(sm, 3)
    async with tx(sm) as session:
        for agent_id in (second, first, second):
            paused = await ledger.pause_agent(
                session, account_id=owner, agent_id=agent_id, required=C
            )
            assert paused
    assert await _pauses(sm) == 2
    async with tx(sm) as session:
        await ledger.post(session, account_id=owner, kind="topup", amount=5 * C, key="t")
        assert await ledger.paused_agents(session, owner) == [second, first]
        assert await ledger.is_paused_for_credits(session, first)
        for agent_id in (second, first):
            await ledger.forget_pause(session, agent_id)
        assert await ledger.paused_agents(session, owner) == []
    # With credits available again, a turn that failed before the top-up does not pause.
    async with tx(sm) as session:
        assert not await ledger.pause_agent(session, account_id=owner, agent_id=third, required=C)
    assert await _pauses(sm) == 0


async def test_credits_held_by_calls_in_flight_never_pause(sm: Sessions) -> None:
    """Only the settled balance decides: held credits come back when their calls end."""
    owner, (agent_id,) = await _agents(sm, 1)
    async with tx(sm) as session:
        await ledger.post(session, account_id=owner, kind="topup", amount=2 * C, key="t")
        for n in range(3):  # 1.8 of the 2 credits held: 0.2 available
            await ledger.place_hold(
                session,
                account_id=owner,
                amount=6 * C // 10,
                key=f"h{n}",
                reference=None,
                ttl=timedelta(minutes=5),
            )
    async with tx(sm) as session:
        assert not await ledger.pause_agent(
            session, account_id=owner, agent_id=agent_id, required=C
        )
        assert await ledger.pause_agent(
            session, account_id=owner, agent_id=agent_id, required=2 * C + 1
        )
    assert await _pauses(sm) == 1


async def test_a_pause_goes_with_its_agent(sm: Sessions) -> None:
    owner, (agent_id, other) = await _agents(sm, 2)
    async with tx(sm) as session:
        await ledger.pause_agent(session, account_id=owner, agent_id=agent_id, required=C)
        await ledger.pause_agent(session, account_id=owner, agent_id=other, required=C)
    async with tx(sm) as session:
        await session.execute(delete(Agent).where(Agent.id == agent_id))
        await ledger.forget_pause(session, other)
    assert await _pauses(sm) == 0
