"""The scheduler loop of a job process, registered with the worker when imported.

Each process that runs jobs runs one loop: fire what is due (`firing.fire_due`), read the
soonest `next_run_at` (one indexed MIN), then sleep until then, at most `MAX_SLEEP_SECONDS`,
woken early when a schedule changes (`wake`: in this process, and through Redis pub/sub from
the other processes of the scaled shape). Between runs it costs one query per wake-up and no
polling; several processes fire the same rows safely (a firing is claimed in the database).

The housekeeping step `schedules` starts the loop at the process's first tick and starts it
again should it ever have ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.config import Settings
from lunogen.kit.time import utcnow
from lunogen.schedule import wake
from lunogen.schedule.firing import earliest, fire_due
from lunogen.worker.broker import JobRuntime
from lunogen.worker.maintenance import register_periodic
from lunogen.worker.resources import Resource, provide

log = structlog.get_logger(__name__)

MAX_SLEEP_SECONDS = 60.0
RETRY_SECONDS = 1.0
EARLY_WAKE_SECONDS = 0.002  # asyncio timers may fire a hair early: look again after that
CHANNEL = "lunogen:schedule-wakeups"


class Scheduler:
    """One process's loop and its cross-process wake-ups (Redis pub/sub, scaled shape)."""

    def __init__(self, redis_url: str | None) -> None:
        self.event = asyncio.Event()
        self.loop_task: asyncio.Task[None] | None = None
        self.listener: asyncio.Task[None] | None = None
        self._redis: Any = None
        if redis_url:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(redis_url)

    async def start(self) -> None:
        if self._redis is not None:
            wake.set_publisher(self._publish)
            self.listener = asyncio.create_task(self._listen())

    async def _publish(self) -> None:
        await self._redis.publish(CHANNEL, b"1")

    async def _listen(self) -> None:
        """Wake this process's loop on every message of the channel (a blocking read)."""
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self.event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("schedule_wakeup_listen_failed", error=str(exc))
                await asyncio.sleep(RETRY_SECONDS)

    def ensure_running(self, rt: JobRuntime) -> None:
        if self.loop_task is None or self.loop_task.done():
            self.loop_task = asyncio.create_task(self._loop(rt))

    async def _loop(self, rt: JobRuntime) -> None:
        wake.listen(self.event)
        try:
            while True:
                self.event.clear()
                delay = await self._fire_and_measure(rt.sessionmaker, rt)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.event.wait(), timeout=delay)
        finally:
            wake.unlisten(self.event)

    async def _fire_and_measure(
        self, sessionmaker: async_sessionmaker[AsyncSession], rt: JobRuntime
    ) -> float:
        """Fire what is due; the seconds until the next schedule is due (capped)."""
        try:
            await fire_due(sessionmaker, rt.keyring)
            async with sessionmaker() as session:
                soonest = await earliest(session)
        except Exception:
            log.exception("scheduler_pass_failed")
            return RETRY_SECONDS
        if soonest is None:
            return MAX_SLEEP_SECONDS
        seconds = (soonest - utcnow()).total_seconds() + EARLY_WAKE_SECONDS
        return min(max(seconds, 0.0), MAX_SLEEP_SECONDS)

    async def stop(self) -> None:
        for task in (self.loop_task, self.listener):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])
        wake.set_publisher(None)
        if self._redis is not None:
            await self._redis.aclose()


SCHEDULER: Resource[Scheduler] = Resource("scheduler")


async def _open(settings: Settings, _sessionmaker: async_sessionmaker[AsyncSession]) -> Scheduler:
    scheduler = Scheduler(settings.redis_url if settings.uses_redis_jobs else None)
    await scheduler.start()
    return scheduler


async def _close(scheduler: Scheduler) -> None:
    await scheduler.stop()


provide(SCHEDULER, open=_open, close=_close)


@register_periodic("schedules", every=30.0)
async def _keep_loop(rt: JobRuntime) -> None:
    rt.get(SCHEDULER).ensure_running(rt)
