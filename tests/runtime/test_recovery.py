"""Work left by a dead worker is found again by the sweeper and answered exactly once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from lunogen.agent.models import AgentLogEvent
from lunogen.llm.models import UsageRecord
from lunogen.runtime.models import Message, Thread
from lunogen.runtime.tasks import run_thread, sweep_once
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api
from tests.runtime.support import pending_under_a_lease


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


async def test_a_run_that_lost_its_lease_records_its_calls_but_not_its_answer(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """A worker that stalled past its lease while another took over must not reply too."""
    from lunogen.runtime.turn import TurnDeps, TurnOutcome, run_turn
    from lunogen.worker.broker import runtime

    thread_id, message_id = await _pending_message_under_a_dead_lease(api, expired=False)
    rt = runtime()
    deps = TurnDeps(
        settings=rt.settings,
        sessionmaker=rt.sessionmaker,
        keyring=rt.keyring,
        model_client=rt.model_client,
    )
    openrouter.reply("A late answer")
    outcome = await run_turn(deps, inbound_id=message_id, lease_token="stale-worker:2")
    assert outcome == TurnOutcome.SUPERSEDED
    assert await _replies(api, message_id) == (0, 1, "pending")  # the call was real: metered
    async with api.app.state.sessionmaker() as session:
        thread = await session.get(Thread, thread_id)
        assert thread is not None and thread.lease_owner == "dead-worker:1"
    async with api.app.state.sessionmaker() as session:
        events = list((await session.execute(select(AgentLogEvent.event))).scalars())
    assert "turn.superseded" in events
