"""The Taskiq brokers. Jobs carry only ids; the database row is the source of truth.

Jobs are declared once with `@job(name)` on Taskiq's shared broker and sent through whichever
broker the process selected at start: in-process (embedded shape) or Redis Streams (scaled
shape, `lunogen worker` processes consuming). A job lost in transport is found again by the
sweeper, so no broker here needs to be more reliable than "usually delivers".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from taskiq import AsyncBroker, InMemoryBroker
from taskiq.brokers.shared_broker import async_shared_broker

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

    from lunogen.config import Settings
    from lunogen.kit.crypto import KeyRing
    from lunogen.worker.resources import Resource

T = TypeVar("T")

job = async_shared_broker.task

# The longest a handler runs before it hands its work back (runtime.tasks bounds run_thread),
# so a stream entry idle for twice that belongs to a dead consumer.
HANDLER_BUDGET_SECONDS = 300


def build_broker(settings: Settings) -> AsyncBroker:
    if not settings.uses_redis_jobs:
        return InMemoryBroker(await_inplace=False)
    if not settings.redis_url:
        raise ValueError("LUNOGEN_JOB_BROKER=redis needs LUNOGEN_REDIS_URL")
    from taskiq_redis import RedisStreamBroker

    return RedisStreamBroker(
        settings.redis_url,
        queue_name=settings.job_queue,
        consumer_group_name="lunogen-workers",
        xread_block=1000,
        xread_count=1,
        maxlen=100_000,
        approximate=True,
        idle_timeout=2 * HANDLER_BUDGET_SECONDS * 1000,
        unacknowledged_lock_timeout=30,
    )


_broker: AsyncBroker = InMemoryBroker(await_inplace=False)


def use_broker(broker: AsyncBroker) -> None:
    """Send every job of this process through `broker` from now on."""
    global _broker
    _broker = broker
    async_shared_broker.default_broker(broker)


def active_broker() -> AsyncBroker:
    return _broker


async def wait_idle() -> None:
    """Wait for the jobs this process runs in-process (the embedded broker) to finish."""
    if isinstance(_broker, InMemoryBroker):
        await _broker.wait_all()


use_broker(_broker)


@dataclass
class JobRuntime:
    """What jobs of this process share: settings, database, keys and the resources that the
    domains registered (`worker.resources`), opened at start."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    worker_id: str = "embedded"
    engine: AsyncEngine | None = None
    resources: dict[str, Any] = field(default_factory=dict)

    def get(self, resource: Resource[T]) -> T:
        if resource.name not in self.resources:
            raise RuntimeError(
                f"no {resource.name!r} in this process: the module that provides it was not "
                "imported (lunogen.composition imports every provider)"
            )
        return cast("T", self.resources[resource.name])


in_flight_jobs: set[asyncio.Task[object]] = set()


@contextlib.contextmanager
def tracked_job() -> Iterator[None]:
    """Mark the running task as an in-flight job, cancelled if it outlives shutdown's grace."""
    task = asyncio.current_task()
    if task is None:
        yield
        return
    in_flight_jobs.add(task)
    try:
        yield
    finally:
        in_flight_jobs.discard(task)


_runtime: JobRuntime | None = None


def set_runtime(runtime: JobRuntime | None) -> None:
    global _runtime
    _runtime = runtime


def runtime() -> JobRuntime:
    if _runtime is None:
        raise RuntimeError("job runtime is not configured; start the app or worker first")
    return _runtime
