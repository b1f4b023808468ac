"""What a LunoGen process runs besides HTTP: the job broker, its consumer, sweeper, housekeeping.

`serve` (embedded: everything in one process), `serve --no-worker` (sends jobs, runs none) and
`lunogen worker` (runs jobs, serves no HTTP) all start the same `JobProcess`; only which parts
run differs. Shutdown is bounded: in-flight jobs get a grace period, then are cancelled, which
releases their thread leases so the sweeper hands the work to another worker at once.

What it opens (model client, event buses), sweeps and keeps clean, the domains registered when
they were imported (`worker.resources`, `worker.sweeps`, `worker.maintenance`): this package
imports no domain; `lunogen.composition` imports the domains for `serve` and `worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from taskiq import AsyncBroker, InMemoryBroker
from taskiq.acks import AcknowledgeType

from lunogen.config import Settings
from lunogen.db import create_engine, create_sessionmaker
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.worker import enqueue, resources
from lunogen.worker.broker import (
    JobRuntime,
    build_broker,
    in_flight_jobs,
    set_runtime,
    use_broker,
)
from lunogen.worker.maintenance import maintenance_forever
from lunogen.worker.sweeps import sweep_registered_forever

log = structlog.get_logger(__name__)

RECONNECT_SECONDS = 1.0
STEP_SECONDS = 1.0  # what shutdown waits for a step that should be instant


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[:8]}"


def sdk_modules(settings: Settings) -> tuple[str, ...]:
    """The SDKs this process will call, which the code imports where it uses them (together
    ~0.4 s of imports that a start need not wait for)."""
    modules: list[str] = []
    if settings.llm_configured:
        modules += ["openai", "openai.types.chat"]
    if settings.stripe_secret_key or settings.stripe_webhook_secret:
        modules.append("stripe")
    return tuple(modules)


def _import_all(modules: tuple[str, ...]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # the first real use raises it again, where it is handled
            log.warning("warm_up_import_failed", module=name, error=repr(exc))


async def warm_up(settings: Settings) -> None:
    """Import the SDKs in a thread, so that no first request or job waits for them."""
    await asyncio.to_thread(_import_all, sdk_modules(settings))


@dataclass
class JobProcess:
    """The job side of one process. `consume`: run jobs here (embedded or worker)."""

    settings: Settings
    keyring: KeyRing
    consume: bool = True
    concurrency: int | None = None
    grace_seconds: float = 3.0
    background: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.consume and not self.settings.uses_redis_jobs:
            raise ValueError(
                "a server without a worker needs a shared job queue: set LUNOGEN_REDIS_URL "
                "(and run `lunogen worker` processes)"
            )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobRuntime]:
        settings = self.settings
        engine = create_engine(settings.effective_database_url)
        sessionmaker = create_sessionmaker(engine)
        opened: list[tuple[resources.Provider, object]] = []
        broker: AsyncBroker | None = None
        consumer: _Consumer | None = None
        try:
            for provider in resources.providers():
                opened.append((provider, await provider.open(settings, sessionmaker)))
            runtime = JobRuntime(
                settings=settings,
                sessionmaker=sessionmaker,
                keyring=self.keyring,
                worker_id=worker_id(),
                engine=engine,
                resources={provider.name: value for provider, value in opened},
            )
            set_runtime(runtime)
            broker = build_broker(settings)
            use_broker(broker)
            await broker.startup()
            consumer = _Consumer(broker, self.concurrency or settings.worker_concurrency)
            self.background = [asyncio.create_task(warm_up(settings))]
            if self.consume:
                consumer.start(self.grace_seconds)
                self.background += [
                    asyncio.create_task(
                        sweep_registered_forever(sessionmaker, settings.sweep_interval_seconds)
                    ),
                    asyncio.create_task(maintenance_forever(runtime)),
                ]
            yield runtime
        finally:
            for task in self.background:
                task.cancel()
            await _bounded(
                "background_tasks",
                asyncio.gather(*self.background, return_exceptions=True),
                STEP_SECONDS,
            )
            await _bounded("enqueue_drain", enqueue.drain(), self.grace_seconds)
            if consumer is not None:
                await consumer.stop(self.grace_seconds)
            if broker is not None:
                await _finish_in_flight(broker, self.grace_seconds)
                await _bounded("broker_shutdown", broker.shutdown(), STEP_SECONDS)
                use_broker(InMemoryBroker(await_inplace=False))
            for provider, value in reversed(opened):
                if provider.close is not None:
                    await _bounded(f"close_{provider.name}", provider.close(value), STEP_SECONDS)
            set_runtime(None)
            await engine.dispose()


class _Consumer:
    """Runs jobs from a shared queue (Redis Streams). Nothing to do for the in-process broker."""

    def __init__(self, broker: AsyncBroker, concurrency: int) -> None:
        self.broker = broker
        self.concurrency = concurrency
        self.finish = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.executor: ThreadPoolExecutor | None = None

    def start(self, grace_seconds: float) -> None:
        if isinstance(self.broker, InMemoryBroker):
            return
        self.broker.is_worker_process = True
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.task = asyncio.create_task(self._listen(grace_seconds))
        log.info("job_consumer_started", concurrency=self.concurrency)

    async def _listen(self, grace_seconds: float) -> None:
        """Consume until told to finish; come back after Redis errors (a restarted Redis
        loses the stream and its consumer group: they are declared again)."""
        from taskiq.receiver import Receiver  # with its process pool: only where jobs run

        while not self.finish.is_set():
            receiver = Receiver(
                broker=self.broker,
                executor=self.executor,
                run_startup=False,
                max_async_tasks=self.concurrency,
                ack_type=AcknowledgeType.WHEN_EXECUTED,
                wait_tasks_timeout=grace_seconds,
            )
            try:
                await receiver.listen(self.finish)
            except Exception as exc:
                log.warning("job_consumer_restarting", error=repr(exc))
                await asyncio.sleep(RECONNECT_SECONDS)
                with contextlib.suppress(Exception):
                    await _declare_stream(self.broker)

    async def stop(self, grace_seconds: float) -> None:
        if self.task is None:
            return
        self.finish.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=grace_seconds + 1)
        except TimeoutError:
            self.task.cancel()
        except Exception:
            log.exception("job_consumer_failed")
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        if self.executor is not None:
            self.executor.shutdown(wait=False)


async def _declare_stream(broker: AsyncBroker) -> None:
    declare = getattr(broker, "_declare_consumer_group", None)
    if declare is not None:
        await declare()


async def _bounded(step: str, awaitable: Awaitable[object], seconds: float) -> None:
    """Shutdown waits for `step` at most `seconds`, then goes on (and says which step hung)."""
    task = asyncio.ensure_future(awaitable)
    done, _pending = await asyncio.wait({task}, timeout=seconds)
    if not done:
        log.warning("shutdown_step_slow", step=step, waited_seconds=seconds)
        task.cancel()
    elif not task.cancelled() and task.exception() is not None:
        log.warning("shutdown_step_failed", step=step, error=repr(task.exception()))


async def _finish_in_flight(broker: AsyncBroker, grace_seconds: float) -> None:
    """Give running jobs `grace_seconds`, then cancel them (their `finally` releases leases)."""
    waiting: list[asyncio.Task[object]] = list(in_flight_jobs)
    if isinstance(broker, InMemoryBroker):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(broker.wait_all(), timeout=grace_seconds)
    elif waiting:  # the consumer already gave them the grace period while it stopped
        await asyncio.wait(waiting, timeout=1.0)
    left = [task for task in in_flight_jobs if not task.done()]
    if left:
        log.warning("jobs_cancelled_at_shutdown", jobs=len(left))
        for task in left:
            task.cancel()
        await _bounded(
            "cancelled_jobs", asyncio.gather(*left, return_exceptions=True), STEP_SECONDS
        )
