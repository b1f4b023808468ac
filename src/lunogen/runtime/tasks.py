"""Jobs of the runtime: answer a thread's pending messages; sweep up work that was lost."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.channel import webhook
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.runtime import service
from lunogen.runtime.models import Message
from lunogen.runtime.turn import TurnDeps, TurnOutcome, run_turn
from lunogen.worker.broker import broker, runtime
from lunogen.worker.enqueue import enqueue

log = structlog.get_logger(__name__)


def enqueue_thread(session: AsyncSession, thread_id: str) -> None:
    """Answer the thread's pending messages once `session` commits."""
    enqueue(session, run_thread, thread_id)


@broker.task("runtime.run_thread")
async def run_thread(thread_id: str) -> None:
    """Hold the thread's lease and answer its pending messages in order.

    A duplicate delivery finds the lease taken and returns. Messages whose turn must be retried
    later stay pending with a `next_attempt_at`; the sweeper brings them back.
    """
    rt = runtime()
    deps = TurnDeps(
        keyring=rt.keyring,
        model_client=rt.model_client,
        allow_private_urls=rt.settings.allow_private_urls,
    )
    sessionmaker = rt.sessionmaker
    # Each run holds the lease under its own token: two jobs for one thread in the same
    # process must exclude each other as much as jobs in two processes.
    lease_token = f"{rt.worker_id}:{new_id()}"
    while True:
        async with sessionmaker() as session:
            if not await service.claim_thread(session, thread_id=thread_id, worker_id=lease_token):
                return
        try:
            await _answer_pending(sessionmaker, deps, thread_id, lease_token)
        finally:
            async with sessionmaker() as session:
                await service.release_thread(session, thread_id=thread_id, worker_id=lease_token)
        # A message that arrived while we held the lease had its job refused: look again.
        async with sessionmaker() as session:
            pending = await service.next_pending(session, thread_id=thread_id)
            if pending is None or not _due(pending):
                return


def _due(message: Message) -> bool:
    return message.next_attempt_at is None or message.next_attempt_at <= utcnow()


async def _answer_pending(
    sessionmaker: async_sessionmaker[AsyncSession], deps: TurnDeps, thread_id: str, worker_id: str
) -> None:
    while True:
        async with sessionmaker() as session:
            inbound = await service.next_pending(session, thread_id=thread_id)
            if inbound is None or not _due(inbound):
                return  # a message waiting for its retry holds back the later ones
            try:
                outcome = await run_turn(session, deps, inbound=inbound)
            except IntegrityError:
                # Our lease had expired and another worker answered this message: the unique
                # reply per inbound message kept it to one reply. Leave the thread to them.
                log.warning("turn_already_answered", message_id=inbound.id)
                return
        if outcome == TurnOutcome.RETRY_LATER:
            return  # later messages wait: a thread is answered in arrival order
        async with sessionmaker() as session:
            if not await service.claim_thread(session, thread_id=thread_id, worker_id=worker_id):
                return  # the lease was lost to another worker


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
