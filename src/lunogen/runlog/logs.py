"""Agent runtime logs: rows in `agent_log_events`, followed live through a wake-up bus.

The database is the source of truth and the integer id is the cursor. Writers add a row in
their transaction; after commit the bus wakes every follower of that agent (in this process,
or through Redis pub/sub in the scaled shape), which then reads the rows past its cursor.

Importing this module registers with the worker the bus each job process opens (`LOG_BUS`) and
the hourly purge of lines older than `log_retention_days`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, Literal

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.config import Settings
from lunogen.kit.time import utcnow
from lunogen.runlog.models import AgentLogEvent
from lunogen.worker import after_commit
from lunogen.worker.broker import JobRuntime
from lunogen.worker.maintenance import register_periodic
from lunogen.worker.resources import Resource, provide

log = structlog.get_logger(__name__)

Level = Literal["debug", "info", "warning", "error"]
LEVELS: tuple[Level, ...] = ("debug", "info", "warning", "error")
_WAKEUPS = "log_wakeups"
PURGE_EVERY_SECONDS = 3600.0


def log_event(
    session: AsyncSession,
    *,
    agent_id: str,
    event: str,
    message: str,
    level: Level = "info",
    details: dict[str, Any] | None = None,
) -> AgentLogEvent:
    """Add a log line to the caller's transaction; followers see it once it commits."""
    row = AgentLogEvent(
        agent_id=agent_id, event=event, message=message[:4000], level=level, details=details or {}
    )
    session.add(row)
    after_commit.defer(session, _WAKEUPS, agent_id)
    log.info("agent_log", agent_id=agent_id, event_name=event, level=level, message=message[:500])
    return row


async def read_events(
    session: AsyncSession,
    *,
    agent_id: str,
    after_id: int = 0,
    min_level: Level | None = None,
    since: datetime | None = None,
    limit: int = 100,
) -> list[AgentLogEvent]:
    query = (
        select(AgentLogEvent)
        .where(AgentLogEvent.agent_id == agent_id, AgentLogEvent.id > after_id)
        .order_by(AgentLogEvent.id)
        .limit(limit)
    )
    if min_level is not None:
        query = query.where(AgentLogEvent.level.in_(LEVELS[LEVELS.index(min_level) :]))
    if since is not None:
        query = query.where(AgentLogEvent.created_at >= since)
    return list((await session.execute(query)).scalars())


async def recent_events(
    session: AsyncSession,
    *,
    agent_id: str,
    min_level: Level | None = None,
    event: str | None = None,
    limit: int = 100,
) -> list[AgentLogEvent]:
    """The newest `limit` lines at `min_level` or above (and named `event`), oldest first."""
    query = (
        select(AgentLogEvent)
        .where(AgentLogEvent.agent_id == agent_id)
        .order_by(AgentLogEvent.id.desc())
        .limit(limit)
    )
    if min_level is not None:
        query = query.where(AgentLogEvent.level.in_(LEVELS[LEVELS.index(min_level) :]))
    if event is not None:
        query = query.where(AgentLogEvent.event == event)
    return list(reversed((await session.execute(query)).scalars().all()))


async def event_names(session: AsyncSession, *, agent_id: str, scan: int = 2000) -> list[str]:
    """The event names among the agent's newest `scan` lines, sorted (a bounded read)."""
    newest = (
        select(AgentLogEvent.event)
        .where(AgentLogEvent.agent_id == agent_id)
        .order_by(AgentLogEvent.id.desc())
        .limit(scan)
        .subquery()
    )
    rows = await session.execute(select(newest.c.event).distinct().order_by(newest.c.event))
    return [str(name) for name in rows.scalars()]


async def purge_events_before(session: AsyncSession, *, cutoff: datetime, batch: int = 5000) -> int:
    """Delete log lines older than `cutoff`, a batch at a time. Commits each batch."""
    removed = 0
    while True:
        ids = list(
            (
                await session.execute(
                    select(AgentLogEvent.id).where(AgentLogEvent.created_at < cutoff).limit(batch)
                )
            ).scalars()
        )
        if not ids:
            return removed
        await session.execute(delete(AgentLogEvent).where(AgentLogEvent.id.in_(ids)))
        await session.commit()
        removed += len(ids)


async def purge_old_logs(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """Delete the log lines older than the retention (`log_retention_days`)."""
    cutoff = utcnow() - timedelta(days=settings.log_retention_days)
    async with sessionmaker() as session:
        removed = await purge_events_before(session, cutoff=cutoff)
    if removed:
        log.info("agent_logs_purged", removed=removed, retention_days=settings.log_retention_days)
    return removed


@register_periodic("log_purge", every=PURGE_EVERY_SECONDS)
async def _purge_periodically(rt: JobRuntime) -> None:
    await purge_old_logs(rt.sessionmaker, rt.settings)


async def latest_event_id(session: AsyncSession, *, agent_id: str) -> int:
    query = select(func.max(AgentLogEvent.id)).where(AgentLogEvent.agent_id == agent_id)
    return int((await session.execute(query)).scalar_one() or 0)


class LogBus:
    """Wakes followers of an agent's log. In memory; `RedisLogBus` spans processes."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def wake_local(self, agent_id: str) -> None:
        for waiter in self._waiters.get(agent_id, ()):
            waiter.set()

    async def publish(self, agent_id: str) -> None:
        self.wake_local(agent_id)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def follow(self, agent_id: str, *, poll_seconds: float) -> AsyncIterator[None]:
        """Yield whenever the agent's log may have new rows (and at least every poll_seconds)."""
        waiter = asyncio.Event()
        self._waiters[agent_id].add(waiter)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.wait(), timeout=poll_seconds)
                waiter.clear()
                yield
        finally:
            self._waiters[agent_id].discard(waiter)
            if not self._waiters[agent_id]:
                self._waiters.pop(agent_id, None)


class RedisLogBus(LogBus):
    CHANNEL = "lunogen:agent-log"

    def __init__(self, redis_url: str, *, poll_seconds: float = 0.5) -> None:
        super().__init__()
        from redis.asyncio import Redis

        self._redis = Redis.from_url(redis_url)
        self._poll_seconds = poll_seconds
        self._listener: asyncio.Task[None] | None = None

    async def publish(self, agent_id: str) -> None:
        try:
            await self._redis.publish(self.CHANNEL, agent_id)
        except Exception as exc:  # followers still poll; a lost wake-up only delays them
            log.warning("log_bus_publish_failed", error=str(exc))
            self.wake_local(agent_id)

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.CHANNEL)
                    while True:
                        message = await pubsub.get_message(timeout=self._poll_seconds)
                        if message and message.get("type") == "message":
                            self.wake_local(message["data"].decode())
            except Exception as exc:
                log.warning("log_bus_listen_failed", error=str(exc))
                await asyncio.sleep(1)

    async def stop(self) -> None:
        """Cancel the listener where it waits (no poll is waited out), then disconnect."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.wait([listener])  # its CancelledError stays in the task
        await self._redis.aclose()


_bus: LogBus = LogBus()
_background: set[asyncio.Task[None]] = set()


def set_bus(bus: LogBus) -> None:
    global _bus
    _bus = bus


def bus() -> LogBus:
    return _bus


def _publish_all(agent_ids: list[str]) -> None:
    loop = asyncio.get_running_loop()
    for agent_id in dict.fromkeys(agent_ids):
        task = loop.create_task(_bus.publish(agent_id))
        _background.add(task)
        task.add_done_callback(_background.discard)


after_commit.register(_WAKEUPS, _publish_all)


async def drain() -> None:
    """Wait for the wake-ups started by recent commits (tests and shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


LOG_BUS: Resource[LogBus] = Resource("log_bus")


async def _open_bus(settings: Settings, _sessionmaker: async_sessionmaker[AsyncSession]) -> LogBus:
    """Each job process follows logs through Redis when it has one, in memory otherwise."""
    opened = RedisLogBus(settings.redis_url) if settings.redis_url else LogBus()
    set_bus(opened)
    await opened.start()
    return opened


async def _close_bus(opened: LogBus) -> None:
    try:
        await opened.stop()
    finally:
        set_bus(LogBus())


provide(LOG_BUS, open=_open_bus, close=_close_bus)
