"""Jobs of the runtime: answer a thread's pending messages; sweep up work that was lost."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.channel import webhook
from lunogen.kit.ids import new_id
from lunogen.runtime import service
from lunogen.runtime.turn import TurnDeps, run_turn
from lunogen.worker.broker import HANDLER_BUDGET_SECONDS, job, runtime, tracked_job
from lunogen.worker.enqueue import enqueue

log = structlog.get_logger(__name__)


def enqueue_thread(session: AsyncSession, thread_id: str) -> None:
    """Answer the thread's pending messages once `session` commits."""
    enqueue(session, run_thread, thread_id)


@job("runtime.run_thread")
async def run_thread(thread_id: str) -> None:
    """Hold the thread's lease and answer its pending messages in order.

    A duplicate delivery finds the lease taken and returns. Messages whose turn must be retried
    later stay pending with a `next_attempt_at`; the sweeper brings them back. The lease is
    renewed while we work, so it runs out only when this worker stops (crash, kill, hang).
    """
    rt = runtime()
    deps = TurnDeps(
        settings=rt.settings,
        sessionmaker=rt.sessionmaker,
        keyring=rt.keyring,
        model_client=rt.model_client,
        events=rt.turn_events,
    )
    lease = timedelta(seconds=rt.settings.turn_lease_seconds)
    # Each run holds the lease under its own token: two jobs for one thread in the same
    # process must exclude each other as much as jobs in two processes.
    token = f"{rt.worker_id}:{new_id()}"
    started = time.monotonic()
    with tracked_job():
        await _run_thread(deps, thread_id, token, lease, started)


async def _run_thread(
    deps: TurnDeps, thread_id: str, token: str, lease: timedelta, started: float
) -> None:
    """Claim, answer one message, release; again while messages are due and time is left.

    Two transactions around each turn: claiming the lease finds the oldest pending message,
    and releasing it looks for the next one (a message that arrived while we held the lease
    had its own job refused) and takes the lease straight back when there is one.
    """
    sessionmaker = deps.sessionmaker
    async with sessionmaker() as session:
        claim = await service.claim_next(session, thread_id=thread_id, worker_id=token, lease=lease)
    while claim.held:
        assert claim.pending is not None
        heartbeat = asyncio.create_task(_keep_lease(sessionmaker, thread_id, token, lease))
        try:
            await _answer(deps, claim.pending.id, token)
        except BaseException:
            await _stop(heartbeat)
            async with sessionmaker() as session:
                await service.release_thread(session, thread_id=thread_id, worker_id=token)
            raise
        await _stop(heartbeat)  # before the release: a late renewal would take the lease again
        in_budget = time.monotonic() - started <= _budget()
        async with sessionmaker() as session:
            claim = await service.release_and_next(
                session, thread_id=thread_id, worker_id=token, lease=lease, reclaim=in_budget
            )
        if not in_budget and claim.pending is not None and claim.pending.due:
            await run_thread.kiq(thread_id)  # hand over: a job stays shorter than its budget
            return


def _budget() -> float:
    return float(HANDLER_BUDGET_SECONDS)


async def _stop(heartbeat: asyncio.Task[None]) -> None:
    heartbeat.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await heartbeat


async def _keep_lease(
    sessionmaker: async_sessionmaker[AsyncSession], thread_id: str, token: str, lease: timedelta
) -> None:
    while True:
        await asyncio.sleep(lease.total_seconds() / 3)
        try:
            async with sessionmaker() as session:
                kept = await service.claim_thread(
                    session, thread_id=thread_id, worker_id=token, lease=lease
                )
        except Exception as exc:  # a missed renewal is survivable; the turn re-checks at store
            log.warning("lease_renewal_failed", thread_id=thread_id, error=str(exc))
            continue
        if not kept:
            log.warning("lease_lost", thread_id=thread_id)
            return


async def _answer(deps: TurnDeps, inbound_id: str, token: str) -> None:
    """One turn. Whatever its outcome, the release that follows decides what comes next: a
    message to retry later is not due, and a thread another worker took is not ours to claim."""
    try:
        await run_turn(deps, inbound_id=inbound_id, lease_token=token)
    except IntegrityError:
        # Our lease had run out and another worker answered this message: the unique
        # reply per inbound message kept it to one reply. Leave the thread to them.
        log.warning("turn_already_answered", message_id=inbound_id)


async def sweep_once(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Re-enqueue every thread with due pending work and no live lease."""
    async with sessionmaker() as session:
        thread_ids = await service.threads_needing_work(session)
    for thread_id in thread_ids:
        await run_thread.kiq(thread_id)
    if thread_ids:
        log.info("sweeper_requeued", threads=len(thread_ids))
    # Webhook callbacks: retries that are due, and senders that died (separate from turns).
    deliveries = await webhook.requeue_due(sessionmaker)
    if deliveries:
        log.info("sweeper_requeued_deliveries", deliveries=deliveries)
    return len(thread_ids)


async def sweep_forever(
    sessionmaker: async_sessionmaker[AsyncSession], interval_seconds: float
) -> None:
    """Sweep every `interval_seconds` (0: never, e.g. in tests that sweep by hand)."""
    if interval_seconds <= 0:
        return
    while True:
        try:
            await sweep_once(sessionmaker)
        except Exception:
            log.exception("sweeper_failed")
        await asyncio.sleep(interval_seconds)
