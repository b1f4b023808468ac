"""Jobs of the runtime: answer a thread's pending messages; sweep up work that was lost."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import timedelta

import structlog
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.kit.ids import new_id
from lunogen.llm.worker_parts import MODEL_CLIENT
from lunogen.runtime import service
from lunogen.runtime.events import TURN_EVENTS
from lunogen.runtime.models import Message
from lunogen.runtime.turn import TurnDeps, answer_next
from lunogen.worker.broker import HANDLER_BUDGET_SECONDS, job, runtime, tracked_job
from lunogen.worker.enqueue import enqueue
from lunogen.worker.queues import Queue, register_queue
from lunogen.worker.sweeps import register_sweep

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
        model_client=rt.get(MODEL_CLIENT),
        events=rt.get(TURN_EVENTS),
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
    """Answer the thread's oldest due message, again while one is due and time is left.

    Each turn takes the lease in its first transaction and gives it back in its last, which
    also looks for the next pending message (one whose job was refused while we held the lease
    is seen there), so the loop needs no transaction of its own.
    """

    async def keep_lease() -> None:
        await _keep_lease(deps.sessionmaker, thread_id, token, lease)

    while True:
        try:
            finished = await answer_next(
                deps, thread_id=thread_id, lease_token=token, lease=lease, keep_lease=keep_lease
            )
        except IntegrityError:
            # Our lease had run out and another worker answered this message: the unique
            # reply per inbound message kept it to one reply. Leave the thread to them.
            log.warning("turn_already_answered", thread_id=thread_id)
            finished = None
        except BaseException:
            async with deps.sessionmaker() as session:
                await service.release_thread(session, thread_id=thread_id, worker_id=token)
            raise
        if finished is None or finished.next is None or not finished.next.due:
            return
        if time.monotonic() - started > _budget():
            await run_thread.kiq(thread_id)  # hand over: a job stays shorter than its budget
            return


def _budget() -> float:
    return float(HANDLER_BUDGET_SECONDS)


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


register_queue(
    Queue("turns", "Inbound messages waiting for their agent's reply", Message, ("pending",))
)


@register_sweep("threads")
async def sweep_once(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Re-enqueue every thread with due pending work and no live lease (a lease held by a dead
    process of this host is given back first, and the holds its dead attempts left released)."""
    async with sessionmaker() as session:
        released = await service.release_dead_leases(session, host=socket.gethostname())
        thread_ids = await service.threads_needing_work(session)
        holds = (
            await service.release_orphan_holds(session, thread_ids=thread_ids) if thread_ids else 0
        )
    if released:
        log.warning("dead_leases_released", threads=released)
    if holds:
        log.info("orphan_holds_released", holds=holds)
    for thread_id in thread_ids:
        await run_thread.kiq(thread_id)
    return len(thread_ids)
