"""Housekeeping on a timer: the domains register their periodic steps, the worker runs them.

Billing expires dead credit holds and reconciles costs, runlog purges old log lines, llm
refreshes the model catalog: each registers its step with `register_periodic` when imported
(`lunogen.composition` imports them all). Every process that runs jobs runs housekeeping; each
step must be idempotent, so a second process running it too only repeats work, never corrupts it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from lunogen.config import Settings
from lunogen.worker.broker import JobRuntime

log = structlog.get_logger(__name__)

Step = Callable[[JobRuntime], Awaitable[object]]
Interval = Callable[[Settings], float]


@dataclass(frozen=True)
class Periodic:
    name: str
    step: Step
    every: Interval  # seconds between runs; 0 or less: never
    at_start: bool  # run on the first tick, else one interval after start


_periodic: dict[str, Periodic] = {}


def register_periodic(
    name: str, *, every: float | Interval, at_start: bool = True
) -> Callable[[Step], Step]:
    """Run the decorated `step(runtime)` every `every` seconds (a number, or a function of the
    settings), as `name` in logs."""
    interval: Interval = every if callable(every) else (lambda _settings: float(every))

    def register(step: Step) -> Step:
        _periodic[name] = Periodic(name, step, interval, at_start)
        return step

    return register


def registered() -> list[Periodic]:
    return list(_periodic.values())


async def maintenance_forever(rt: JobRuntime, *, tick_seconds: float = 1.0) -> None:
    """Run each registered step when it is due. A failing step is logged and does not stop
    the others, nor its own next run."""
    started = time.monotonic()
    due: dict[str, float] = {}
    for periodic in registered():
        every = periodic.every(rt.settings)
        if every > 0:
            due[periodic.name] = started if periodic.at_start else started + every
    while True:
        now = time.monotonic()
        for periodic in registered():
            if periodic.name not in due or now < due[periodic.name]:
                continue
            due[periodic.name] = now + periodic.every(rt.settings)
            try:
                await periodic.step(rt)
            except Exception:
                log.exception("maintenance_failed", step=periodic.name)
        await asyncio.sleep(tick_seconds)
