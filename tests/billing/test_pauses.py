"""Agents paused for lack of credits are remembered per account, and given back on top-up."""

from __future__ import annotations

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


async def test_paused_agents_are_taken_back_once(sm: Sessions) -> None:
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
        assert await ledger.take_paused_agents(session, owner) == [second, first]
        assert await ledger.take_paused_agents(session, owner) == []
    # With credits available again, a turn that failed before the top-up does not pause.
    async with tx(sm) as session:
        assert not await ledger.pause_agent(session, account_id=owner, agent_id=third, required=C)
    assert await _pauses(sm) == 0


async def test_a_pause_goes_with_its_agent(sm: Sessions) -> None:
    owner, (agent_id, other) = await _agents(sm, 2)
    async with tx(sm) as session:
        await ledger.pause_agent(session, account_id=owner, agent_id=agent_id, required=C)
        await ledger.pause_agent(session, account_id=owner, agent_id=other, required=C)
    async with tx(sm) as session:
        await session.execute(delete(Agent).where(Agent.id == agent_id))
        await ledger.forget_pause(session, other)
    assert await _pauses(sm) == 0
