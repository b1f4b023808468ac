"""A turn re-run after its worker died reuses the model calls the dead attempt paid for."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from lunogen.agent.models import Agent
from lunogen.billing.models import CreditEntry
from lunogen.billing.verify import verify_all
from lunogen.llm.models import UsageRecord
from lunogen.runtime.models import MemoryNote, Message, RecordedCall
from lunogen.runtime.tasks import sweep_once
from lunogen.runtime.turn import loop, run_turn
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api
from tests.runtime.support import DEAD_WORKER, pending_under_a_lease, set_lease, turn_deps


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    """The tests sweep by hand: no background sweeper racing them."""
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


class _Killed(BaseException):
    """The worker dies (a BaseException, like the CancelledError of a killed task)."""


async def _pending_message_leased_to_us(api: Api) -> tuple[str, str, str]:
    return await pending_under_a_lease(
        api, text="Remember that I like tea", left=timedelta(minutes=5), tools=["remember"]
    )


async def _die_in_the_first_tool(monkeypatch: pytest.MonkeyPatch, message_id: str) -> None:
    """Run the turn as the worker that holds the lease; it dies after its first model call was
    recorded and charged, while running the tool the model asked for."""

    async def killed(*args: Any) -> str:
        raise _Killed

    monkeypatch.setattr(loop, "run_tool", killed)
    with pytest.raises(_Killed):
        await run_turn(turn_deps(), inbound_id=message_id, lease_token=DEAD_WORKER)
    monkeypatch.undo()


async def _take_over(api: Api, thread_id: str) -> None:
    """The dead worker's lease runs out; the sweeper hands the thread to a live worker."""
    async with api.app.state.sessionmaker() as session:
        await set_lease(session, thread_id, timedelta(seconds=-1))
    assert await sweep_once(api.app.state.sessionmaker) == 1
    await enqueue.drain()
    await wait_idle()


async def _count(api: Api, query: Any) -> int:
    async with api.app.state.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())


async def test_a_rerun_after_a_crash_reuses_the_paid_call_and_charges_each_step_once(
    api: Api, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, thread_id, message_id = await _pending_message_leased_to_us(api)
    openrouter.call_tool("remember", {"note": "likes tea"})
    await _die_in_the_first_tool(monkeypatch, message_id)
    assert len(openrouter.chat_requests) == 1
    assert await _count(api, select(func.count()).select_from(RecordedCall)) == 1
    async with api.app.state.sessionmaker() as session:
        stored = (await session.execute(select(RecordedCall.result))).scalar_one()
    assert "likes tea" not in stored  # encrypted like other message text

    openrouter.reply("Noted.")
    await _take_over(api, thread_id)

    # One more call (step 1); step 0 came from the record: no request, no hold, no charge.
    assert len(openrouter.chat_requests) == 2
    second = openrouter.chat_requests[1].messages
    assert [m["role"] for m in second][-2:] == ["assistant", "tool"]
    async with api.app.state.sessionmaker() as session:
        inbound = await session.get(Message, message_id)
        assert inbound is not None and inbound.status == "done"
        replies = await session.execute(
            select(Message.content).where(Message.reply_to_id == message_id)
        )
        assert api.app.state.keyring.decrypt(replies.scalar_one()) == "Noted."
        usage = (await session.execute(select(func.count()).select_from(UsageRecord))).scalar_one()
        charges = await session.execute(
            select(CreditEntry.idempotency_key).where(CreditEntry.kind == "usage")
        )
        keys = sorted(charges.scalars())
        holds = await session.execute(
            select(func.count()).select_from(CreditEntry).where(CreditEntry.kind == "hold")
        )
        notes = (await session.execute(select(func.count()).select_from(MemoryNote))).scalar_one()
        assert await verify_all(session) == []
    assert usage == 2
    assert [key.split(":")[2] for key in keys] == ["0", "1"]  # one charge per step
    assert holds.scalar_one() == 2
    assert notes == 1  # the tool ran again; its staged write was applied once, with the reply
    assert await _count(api, select(func.count()).select_from(RecordedCall)) == 0


async def test_a_recorded_call_for_another_request_is_not_reused(
    api: Api, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent changed between the attempts: the record answers another request, so the
    re-run calls anew (and that call, a real one, is charged)."""
    agent_id, thread_id, message_id = await _pending_message_leased_to_us(api)
    openrouter.call_tool("remember", {"note": "likes tea"})
    await _die_in_the_first_tool(monkeypatch, message_id)
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(Agent).where(Agent.id == agent_id).values(max_output_tokens=77)
        )
        await session.commit()

    openrouter.reply("Noted.")
    await _take_over(api, thread_id)

    assert len(openrouter.chat_requests) == 2
    assert openrouter.chat_requests[1].body["max_tokens"] == 77
    assert "tool" not in [m["role"] for m in openrouter.chat_requests[1].messages]
    charges = select(func.count()).select_from(CreditEntry).where(CreditEntry.kind == "usage")
    assert await _count(api, charges) == 2
    async with api.app.state.sessionmaker() as session:
        assert await verify_all(session) == []
        inbound = await session.get(Message, message_id)
        assert inbound is not None and inbound.status == "done"
    assert await _count(api, select(func.count()).select_from(RecordedCall)) == 0
