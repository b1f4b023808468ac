"""`lunogen worker`: a process that runs jobs from the shared queue until told to stop."""

from __future__ import annotations

import asyncio
import signal

import structlog

from lunogen.config import Settings
from lunogen.kit.crypto import load_keyring
from lunogen.kit.logging import configure_logging
from lunogen.worker.process import JobProcess

log = structlog.get_logger(__name__)


async def run_worker(settings: Settings, *, concurrency: int | None = None) -> None:
    configure_logging(settings.log_level, json=settings.log_json)
    keyring = load_keyring(settings.secret_keys, settings.data_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    jobs = JobProcess(
        settings,
        keyring,
        consume=True,
        concurrency=concurrency,
        grace_seconds=settings.shutdown_grace_seconds,
    )
    async with jobs.running() as runtime:
        log.info(
            "worker_started",
            worker_id=runtime.worker_id,
            queue=settings.job_queue,
            concurrency=concurrency or settings.worker_concurrency,
        )
        await stop.wait()
        log.info("worker_stopping", grace_seconds=settings.shutdown_grace_seconds)
    log.info("worker_stopped")
