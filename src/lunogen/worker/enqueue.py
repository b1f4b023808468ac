"""Enqueue-after-commit: jobs added during a transaction are sent only once it commits."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from taskiq import AsyncTaskiqDecoratedTask

log = structlog.get_logger(__name__)

_KEY = "lunogen_pending_jobs"
_background: set[asyncio.Task[Any]] = set()


def enqueue(session: AsyncSession, task: AsyncTaskiqDecoratedTask[Any, Any], *args: Any) -> None:
    """Send `task(*args)` after `session` commits; drop it if the transaction rolls back."""
    pending = session.sync_session.info.setdefault(_KEY, [])
    pending.append((task, args))


async def _send(task: AsyncTaskiqDecoratedTask[Any, Any], args: tuple[Any, ...]) -> None:
    try:
        await task.kiq(*args)
    except Exception:
        log.exception("enqueue_failed", task=task.task_name)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending = session.info.pop(_KEY, [])
    if not pending:
        return
    loop = asyncio.get_running_loop()
    for task, args in pending:
        job = loop.create_task(_send(task, args))
        _background.add(job)
        job.add_done_callback(_background.discard)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_KEY, None)


async def drain() -> None:
    """Wait for the sends started by recent commits (tests and shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
