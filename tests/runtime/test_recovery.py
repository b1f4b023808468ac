"""Work left by a dead worker is found again by the sweeper and answered exactly once."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from lunogen.agent.models import Agent
from lunogen.billing import metering
from lunogen.billing.models import CreditHold
from lunogen.billing.verify import verify_all
from lunogen.kit.time import utcnow
from lunogen.llm.models import UsageRecord
from lunogen.runlog.models import AgentLogEvent
from lunogen.runtime.models import Message, RecordedCall, Thread
from lunogen.runtime.service import FRESH_WORK_GRACE
from lunogen.runtime.tasks import run_thread, sweep_once
from lunogen.runtime.turn import TurnOutcome, run_turn
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api
from tests.runtime.support import pending_under_a_lease, set_lease, turn_deps


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    """The tests sweep by hand: no background sweeper racing them."""
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


async def _pending_message_under_a_dead_lease(api: Api, *, expired: bool) -> tuple[str, str]:
    # A worker took the thread and died: its lease outlives it (or has run out).
    left = timedelta(seconds=-1) if expired else timedelta(minutes=5)
    _, thread_id, message_id = await pending_under_a_lease(api, text="Are you there?", left=left)
    return thread_id, message_id


async def _replies(api: Api, message_id: str) -> tuple[int, int, str]:
    async with api.app.state.sessionmaker() as session:
        replies = await session.execute(
            select(func.count()).where(Message.reply_to_id == message_id)
        )
        usage = await session.execute(select(func.count()).select_from(UsageRecord))
        inbound = await session.get(Message, message_id)
        assert inbound is not None
        return int(replies.scalar_one()), int(usage.scalar_one()), inbound.status


async def test_a_live_lease_keeps_other_jobs_out(api: Api, openrouter: FakeOpenRouter) -> None:
    thread_id, message_id = await _pending_message_under_a_dead_lease(api, expired=False)
    await run_thread(thread_id)  # a duplicate delivery while the lease is held
    assert await sweep_once(api.app.state.sessionmaker) == 0
    assert await _replies(api, message_id) == (0, 0, "pending")
    assert openrouter.chat_requests == []


async def test_the_sweeper_takes_over_an_expired_lease_and_answers_once(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    thread_id, message_id = await _pending_message_under_a_dead_lease(api, expired=True)
    assert await sweep_once(api.app.state.sessionmaker) == 1
    await enqueue.drain()
    await wait_idle()
    assert await _replies(api, message_id) == (1, 1, "done")
    # Sweeping again, or a late duplicate job, changes nothing.
    assert await sweep_once(api.app.state.sessionmaker) == 0
    await run_thread(thread_id)
    assert await _replies(api, message_id) == (1, 1, "done")
    assert len(openrouter.chat_requests) == 1


async def test_a_worker_whose_lease_was_taken_makes_no_call(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """A stale worker (another holds the thread) gives up when it tries to take the lease,
    before any hold or call."""
    thread_id, message_id = await _pending_message_under_a_dead_lease(api, expired=False)
    openrouter.reply("A late answer")
    outcome = await run_turn(turn_deps(), inbound_id=message_id, lease_token="stale-worker:2")
    assert outcome == TurnOutcome.SUPERSEDED
    assert openrouter.chat_requests == []
    assert await _replies(api, message_id) == (0, 0, "pending")
    async with api.app.state.sessionmaker() as session:
        thread = await session.get(Thread, thread_id)
        assert thread is not None and thread.lease_owner == "dead-worker:1"


async def test_a_run_that_lost_its_lease_records_its_calls_but_not_its_answer(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """A worker that stalled past its lease while another took over must not reply too: the
    lease changes hands while its model call is in flight."""
    thread_id, message_id = await _pending_message_under_a_dead_lease(api, expired=True)
    openrouter.reply("A late answer")
    openrouter.latency = 0.5
    turn = asyncio.create_task(
        run_turn(turn_deps(), inbound_id=message_id, lease_token="stalled-worker:2")
    )
    while not openrouter.chat_requests:
        await asyncio.sleep(0.01)
    async with api.app.state.sessionmaker() as session:  # the lease ran out; another took it
        await set_lease(session, thread_id, timedelta(minutes=5))
    assert await turn == TurnOutcome.SUPERSEDED
    assert await _replies(api, message_id) == (0, 1, "pending")  # the call was real: metered
    async with api.app.state.sessionmaker() as session:
        thread = await session.get(Thread, thread_id)
        assert thread is not None and thread.lease_owner == "dead-worker:1"
        recorded = await session.get(RecordedCall, (message_id, 0))
        assert recorded is not None  # the worker that holds the lease reuses it
        events = list((await session.execute(select(AgentLogEvent.event))).scalars())
    assert "turn.superseded" in events
    async with api.app.state.sessionmaker() as session:
        assert await verify_all(session) == []


async def test_a_message_just_accepted_is_left_to_the_process_that_accepted_it(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """A sweeper in another process must not race the accepting process for fresh work; once
    the message has waited past the grace, the sweeper takes it."""
    _, thread_id, message_id = await pending_under_a_lease(
        api, text="Hello?", left=timedelta(minutes=5)
    )
    async with api.app.state.sessionmaker() as session:  # nobody holds it: as just accepted
        await session.execute(update(Thread).where(Thread.id == thread_id).values(lease_owner=None))
        await session.commit()
    assert await sweep_once(api.app.state.sessionmaker) == 0
    async with api.app.state.sessionmaker() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        message.created_at = message.created_at - FRESH_WORK_GRACE
        await session.commit()
    assert await sweep_once(api.app.state.sessionmaker) == 1
    await enqueue.drain()
    await wait_idle()
    assert await _replies(api, message_id) == (1, 1, "done")


async def test_a_lease_of_a_dead_process_of_this_host_is_given_back_at_the_next_sweep(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """`lunogen serve` killed and started again: its threads are answered at the next sweep,
    not when their leases run out; a live process's lease is left alone."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    _, dead_thread, dead_message = await pending_under_a_lease(
        api, text="Anyone?", left=timedelta(minutes=5)
    )
    _, live_thread, _ = await pending_under_a_lease(api, text="Busy?", left=timedelta(minutes=5))
    async with api.app.state.sessionmaker() as session:
        for thread_id, pid in ((dead_thread, gone.pid), (live_thread, os.getpid())):
            await session.execute(
                update(Thread)
                .where(Thread.id == thread_id)
                .values(lease_owner=f"{host}:{pid}:ab:c")
            )
        await session.execute(  # as if accepted a while ago
            update(Message).values(created_at=utcnow() - FRESH_WORK_GRACE)
        )
        await session.commit()
    assert await sweep_once(api.app.state.sessionmaker) == 1
    await enqueue.drain()
    await wait_idle()
    assert await _replies(api, dead_message) == (1, 1, "done")
    async with api.app.state.sessionmaker() as session:
        live = await session.get(Thread, live_thread)
        assert live is not None and live.lease_owner == f"{host}:{os.getpid()}:ab:c"


async def _hold_left_by_a_killed_attempt(api: Api, message_id: str) -> str:
    """The hold a killed attempt placed for its call, as `store.start` places it."""
    async with api.app.state.sessionmaker() as session:
        message = await session.get(Message, message_id)
        assert message is not None
        agent = await session.get(Agent, message.agent_id)
        assert agent is not None
        hold_id = await metering.reserve(
            session,
            api.app.state.settings,
            owner_id=agent.owner_id,
            amount=5_000,
            key=f"hold:{message_id}:killed-run:0",
            message_id=message_id,
        )
        await session.commit()
        return hold_id


async def _hold_status(api: Api, hold_id: str) -> str:
    async with api.app.state.sessionmaker() as session:
        hold = await session.get(CreditHold, hold_id)
        assert hold is not None
        return hold.status


async def test_the_sweep_releases_the_holds_of_attempts_that_died(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """A killed attempt's hold would keep the owner's credits for `credit_hold_seconds`: the
    sweep that hands its thread on releases it; a thread someone holds keeps its hold."""
    _, dead_message = await _pending_message_under_a_dead_lease(api, expired=True)
    _, _, live_message = await pending_under_a_lease(
        api, text="Still working", left=timedelta(minutes=5)
    )
    orphan = await _hold_left_by_a_killed_attempt(api, dead_message)
    in_use = await _hold_left_by_a_killed_attempt(api, live_message)
    openrouter.reply("Here now")
    assert await sweep_once(api.app.state.sessionmaker) == 1
    await enqueue.drain()
    await wait_idle()
    assert await _hold_status(api, orphan) == "released"
    assert await _hold_status(api, in_use) == "active"
    assert await _replies(api, dead_message) == (1, 1, "done")
    async with api.app.state.sessionmaker() as session:
        assert await verify_all(session) == []
