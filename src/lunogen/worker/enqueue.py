"""Enqueue-after-commit: jobs added during a transaction are sent only once it commits.

"Commits" means the outermost transaction: a released SAVEPOINT only hands its jobs to the
transaction around it, and a rolled-back one drops just the jobs added inside it
(`worker.after_commit`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from taskiq import AsyncTaskiqDecoratedTask

from lunogen.worker import after_commit

log = structlog.get_logger(__name__)

_KIND = "jobs"
_background: set[asyncio.Task[Any]] = set()

Job = tuple[AsyncTaskiqDecoratedTask[Any, Any], tuple[Any, ...]]


def enqueue(session: AsyncSession, task: AsyncTaskiqDecoratedTask[Any, Any], *args: Any) -> None:
    """Send `task(*args)` after `session` commits; drop it if the transaction rolls back."""
    after_commit.defer(session, _KIND, (task, args))


async def _send(task: AsyncTaskiqDecoratedTask[Any, Any], args: tuple[Any, ...]) -> None:
    try:
        await task.kiq(*args)
    except Exception:
        log.exception("enqueue_failed", task=task.task_name)


def _send_all(jobs: list[Job]) -> None:
    loop = asyncio.get_running_loop()
    for task, args in jobs:
        sending = loop.create_task(_send(task, args))
        _background.add(sending)
        sending.add_done_callback(_background.discard)


after_commit.register(_KIND, _send_all)


async def drain() -> None:
    """Wait for the sends started by recent commits (tests and shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
