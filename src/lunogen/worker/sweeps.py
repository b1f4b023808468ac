"""The sweeper's registry: domains register what to re-enqueue; the worker runs them all.

A sweep finds work whose job was lost (a crashed worker, a dropped message) or whose retry is
due, and sends its job again. Each returns how many jobs it sent. Sweeps must be idempotent:
every process that runs jobs sweeps, and a job that arrives twice finds its row claimed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = structlog.get_logger(__name__)

Sweep = Callable[[async_sessionmaker[AsyncSession]], Awaitable[int]]

_sweeps: dict[str, Sweep] = {}


def register_sweep(name: str) -> Callable[[Sweep], Sweep]:
    """Run the decorated function on every sweeper pass, as `name` in logs."""

    def register(sweep: Sweep) -> Sweep:
        _sweeps[name] = sweep
        return sweep

    return register


async def sweep_registered(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """One pass of every registered sweep: the jobs each sent. A failing sweep is logged and
    does not stop the others."""
    sent: dict[str, int] = {}
    for name, sweep in list(_sweeps.items()):
        try:
            sent[name] = await sweep(sessionmaker)
        except Exception:
            log.exception("sweep_failed", sweep=name)
            continue
        if sent[name]:
            log.info("sweeper_requeued", sweep=name, jobs=sent[name])
    return sent


async def sweep_registered_forever(
    sessionmaker: async_sessionmaker[AsyncSession], interval_seconds: float
) -> None:
    """Sweep every `interval_seconds` (0: never, e.g. in tests that sweep by hand)."""
    if interval_seconds <= 0:
        return
    while True:
        await sweep_registered(sessionmaker)
        await asyncio.sleep(interval_seconds)
