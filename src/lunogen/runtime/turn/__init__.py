"""One agent turn: answer the oldest pending message of a thread, exactly once.

A turn is three steps (`plan` → `loop` → `store`): read what it needs without writing, run the
model/tool loop with no transaction open, and store what it produced. `store` is the only place
that commits, and its docstring says what is committed when. A worker that dies mid-turn leaves
its paid calls recorded and nothing else: its lease expires, the sweeper re-enqueues the
thread, and another worker answers it from the start, reusing the recorded calls (no new hold,
call or charge) as long as it would send the same requests; tools run again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from lunogen.runtime import replies
from lunogen.runtime.turn import plan as planning
from lunogen.runtime.turn import store
from lunogen.runtime.turn.deps import (
    CRASH_AFTER_FAILURES,
    MAX_TOOL_STEPS,
    TurnDeps,
    TurnOutcome,
)
from lunogen.runtime.turn.loop import ModelLoop
from lunogen.runtime.turn.store import Finished

__all__ = [
    "CRASH_AFTER_FAILURES",
    "MAX_TOOL_STEPS",
    "Finished",
    "TurnDeps",
    "TurnOutcome",
    "answer_next",
    "run_turn",
]

# A plan goes stale when the thread moves on between reading it and taking the lease; it is
# read again, a few times at most (each time means another worker answered a message).
PLAN_ATTEMPTS = 5

KeepLease = Callable[[], Coroutine[Any, Any, None]]  # renews the lease until cancelled


class _PlanChanged(Exception):
    """The planned message is no longer the thread's one to answer."""


async def answer_next(
    deps: TurnDeps,
    *,
    thread_id: str,
    lease_token: str,
    lease: timedelta,
    keep_lease: KeepLease | None = None,
) -> Finished | None:
    """Answer the oldest pending message of `thread_id` if it is due and its lease can be
    taken. None when there was nothing to answer or another worker holds the thread."""
    for _ in range(PLAN_ATTEMPTS):
        target = await planning.read(deps, thread_id=thread_id)
        if target is None:
            return None
        with contextlib.suppress(_PlanChanged):
            return await _answer(deps, target, lease_token, lease, keep_lease)
    return None


async def run_turn(
    deps: TurnDeps, *, inbound_id: str, lease_token: str, lease: timedelta | None = None
) -> str:
    """Answer `inbound_id` under the lease `lease_token` (held, or free to take). Returns a
    `TurnOutcome` value; `SUPERSEDED` when another worker holds the thread."""
    target = await planning.read(deps, inbound_id=inbound_id)
    if target is None:
        return TurnOutcome.SKIPPED
    lease = lease or timedelta(seconds=deps.settings.turn_lease_seconds)
    try:
        finished = await _answer(deps, target, lease_token, lease, None)
    except _PlanChanged:
        return TurnOutcome.SKIPPED
    return TurnOutcome.SUPERSEDED if finished is None else finished.outcome


async def _answer(
    deps: TurnDeps,
    target: planning.Plan | planning.Unanswerable,
    lease_token: str,
    lease: timedelta,
    keep_lease: KeepLease | None,
) -> Finished | None:
    loop = ModelLoop(deps, target) if isinstance(target, planning.Plan) else None
    first_hold = None if loop is None else loop.first_hold()
    if loop is not None and first_hold is not None and loop.turn_capped(first_hold, 0):
        first_hold = None  # the turn's own cap refuses the first call: nothing to hold
    started = await store.start(deps, target, lease_token=lease_token, lease=lease, hold=first_hold)
    if started.state == "not_ours":
        return None
    if started.state == "changed":
        raise _PlanChanged
    if started.finished is not None:
        await _publish(deps, target.inbound_id, started.finished)
        return started.finished
    assert loop is not None and isinstance(target, planning.Plan)
    heartbeat = asyncio.create_task(keep_lease()) if keep_lease is not None else None
    try:
        if started.refused is not None:
            loop.work.refused = started.refused
            work = loop.work
        elif started.capped is not None or loop.work.capped is not None:
            if started.capped is not None:
                loop.capped(started.capped)
            work = loop.work
        else:
            turn = replies.TurnInProgress(
                target.inbound_id,
                target.thread_id,
                target.channel_key,
                target.contact,
                target.stream,
            )
            async with replies.answering(turn):  # typing indicators, streamed drafts
                work = await loop.run(started.hold_id)
    finally:
        if heartbeat is not None:  # stopped before the store: a late renewal would retake it
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
    finished = await store.finish(deps, target, work, lease_token=lease_token)
    await _publish(deps, target.inbound_id, finished)
    return finished


async def _publish(deps: TurnDeps, inbound_id: str, finished: Finished) -> None:
    if deps.events is not None and finished.event is not None:  # wakes whoever waits
        await deps.events.publish(inbound_id, finished.event[0], finished.event[1])
