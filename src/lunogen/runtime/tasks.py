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
from lunogen.kit.time import utcnow
from lunogen.runtime import service
from lunogen.runtime.models import Message
from lunogen.runtime.turn import TurnDeps, TurnOutcome, run_turn
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
    sessionmaker = deps.sessionmaker
    while True:
        async with sessionmaker() as session:
            if not await service.claim_thread(
                session, thread_id=thread_id, worker_id=token, lease=lease
            ):
                return
        heartbeat = asyncio.create_task(_keep_lease(sessionmaker, thread_id, token, lease))
        try:
            await _answer_pending(deps, thread_id, token, budget_end=started + _budget())
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            async with sessionmaker() as session:
                await service.release_thread(session, thread_id=thread_id, worker_id=token)
        # A message that arrived while we held the lease had its job refused: look again.
        async with sessionmaker() as session:
            pending = await service.next_pending(session, thread_id=thread_id)
            if pending is None or not _due(pending):
                return
        if time.monotonic() - started > _budget():
            await run_thread.kiq(thread_id)  # hand over: a job stays shorter than its budget
            return


def _budget() -> float:
    return float(HANDLER_BUDGET_SECONDS)


def _due(message: Message) -> bool:
    return message.next_attempt_at is None or message.next_attempt_at <= utcnow()


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


async def _answer_pending(deps: TurnDeps, thread_id: str, token: str, *, budget_end: float) -> None:
    while time.monotonic() < budget_end:
        async with deps.sessionmaker() as session:
            inbound = await service.next_pending(session, thread_id=thread_id)
        if inbound is None or not _due(inbound):
            return  # a message waiting for its retry holds back the later ones
        try:
            outcome = await run_turn(deps, inbound_id=inbound.id, lease_token=token)
        except IntegrityError:
            # Our lease had run out and another worker answered this message: the unique
            # reply per inbound message kept it to one reply. Leave the thread to them.
            log.warning("turn_already_answered", message_id=inbound.id)
            return
        if outcome in (TurnOutcome.RETRY_LATER, TurnOutcome.SUPERSEDED):
            return  # later messages wait: a thread is answered in arrival order


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
