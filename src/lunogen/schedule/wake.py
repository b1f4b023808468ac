"""Wake the scheduler when a schedule's next run changes, in this process and in others.

A change defers a wake-up to its transaction's commit: every scheduler loop of this process is
woken at once, and, when a publisher is set (the scaled shape, Redis pub/sub), the loops of the
other processes too. A lost wake-up only delays a new schedule until a loop's next look.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.worker import after_commit

log = structlog.get_logger(__name__)

_KIND = "schedule_wakeups"
# Each loop's event with the event loop it belongs to (a process runs one; tests may run an
# app in a thread of its own beside another): set from its own loop's thread only.
_events: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}
_background: set[asyncio.Task[None]] = set()
Publisher = Callable[[], Awaitable[None]]
_publisher: Publisher | None = None


def changed(session: AsyncSession) -> None:
    """Wake the scheduler loops once `session` commits."""
    after_commit.defer(session, _KIND, None)


def wake_local() -> None:
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for event, loop in list(_events.items()):
        if loop is running:
            event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(event.set)


def listen(event: asyncio.Event) -> None:
    """Wake `event` (of the running event loop) on every change."""
    _events[event] = asyncio.get_running_loop()


def unlisten(event: asyncio.Event) -> None:
    _events.pop(event, None)


def set_publisher(publisher: Publisher | None) -> None:
    global _publisher
    _publisher = publisher


async def _publish(publisher: Publisher) -> None:
    try:
        await publisher()
    except Exception as exc:  # the other loops still look again on their own
        log.warning("schedule_wakeup_publish_failed", error=str(exc))


def _after_commit(_items: list[Any]) -> None:
    wake_local()
    if _publisher is not None:
        task = asyncio.get_running_loop().create_task(_publish(_publisher))
        _background.add(task)
        task.add_done_callback(_background.discard)


after_commit.register(_KIND, _after_commit)
