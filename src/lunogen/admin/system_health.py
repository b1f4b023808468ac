"""What an admin needs to see that the platform works: the work waiting in each durable queue
and what gave up, the sandbox backend, and whether the database and Redis answer.

Each queue is a table whose rows are claimed by jobs, registered by its domain
(`worker.queues`), so the rows *are* the queue depth: `pending` counts what still waits or
is being worked on, `failed` what gave up after its retries. Read-only; no tenant's content.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.workspace import edge_for
from lunogen.auth.ratelimit import RateLimiter
from lunogen.config import Settings
from lunogen.worker.queues import registered_queues

CHECK_TIMEOUT_SECONDS = 5.0  # as /readyz: a check that takes longer counts as failed


@dataclass(frozen=True)
class QueueCount:
    name: str
    description: str
    pending: int
    failed: int


@dataclass(frozen=True)
class SystemHealth:
    status: str  # ok | degraded
    database: str
    redis: str
    job_broker: str
    sandbox_backend: str | None
    sandbox_problem: str | None
    queues: list[QueueCount]


async def _timed(check: Awaitable[bool]) -> str:
    """`ok`, or the failure in a few words (never raised: health must answer)."""
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            ok = await check
        return "ok" if ok else "error"
    except TimeoutError:
        return "error: timeout"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


async def queue_counts(session: AsyncSession) -> list[QueueCount]:
    """Per queue, the rows waiting or in work and the rows that gave up (one GROUP BY each)."""
    counts: list[QueueCount] = []
    for spec in registered_queues():
        status = spec.model.__table__.c.status
        rows = await session.execute(
            select(status, func.count())
            .where(status.in_(spec.pending + spec.failed))
            .group_by(status)
        )
        by_status = {name: int(count) for name, count in rows.all()}
        counts.append(
            QueueCount(
                name=spec.name,
                description=spec.description,
                pending=sum(by_status.get(s, 0) for s in spec.pending),
                failed=sum(by_status.get(s, 0) for s in spec.failed),
            )
        )
    return counts


async def system_health(
    session: AsyncSession, *, settings: Settings, rate_limiter: RateLimiter
) -> SystemHealth:
    async def database() -> bool:
        await session.execute(text("SELECT 1"))
        return True

    database_status = await _timed(database())
    if settings.redis_url:
        redis_status = await _timed(rate_limiter.check_ready())
    else:
        redis_status = "not configured"
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            edge, problem = await asyncio.to_thread(edge_for, settings)
    except TimeoutError:
        edge, problem = None, "the sandbox probe is still running"
    queues = await queue_counts(session) if database_status == "ok" else []
    healthy = (
        database_status == "ok"
        and redis_status in ("ok", "not configured")
        and edge is not None
        and not any(queue.failed for queue in queues)
    )
    return SystemHealth(
        status="ok" if healthy else "degraded",
        database=database_status,
        redis=redis_status,
        job_broker="redis streams" if settings.uses_redis_jobs else "in-process",
        sandbox_backend=edge.backend_name if edge is not None else None,
        sandbox_problem=problem,
        queues=queues,
    )
