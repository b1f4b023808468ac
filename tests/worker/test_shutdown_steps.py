"""Shutdown is bounded: a step that hangs is left behind with a warning naming it."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from lunogen.worker.process import _bounded


async def test_a_hanging_step_is_abandoned_and_named() -> None:
    never = asyncio.Event()
    with capture_logs() as logs:
        await asyncio.wait_for(_bounded("log_bus_stop", never.wait(), 0.05), timeout=5)
    assert [e for e in logs if e["event"] == "shutdown_step_slow"] == [
        {
            "event": "shutdown_step_slow",
            "log_level": "warning",
            "step": "log_bus_stop",
            "waited_seconds": 0.05,
        }
    ]


async def test_a_failing_step_is_logged_and_shutdown_goes_on() -> None:
    async def broken() -> None:
        raise ConnectionError("redis went away")

    with capture_logs() as logs:
        await _bounded("turn_events_close", broken(), 1.0)
    [failed] = [e for e in logs if e["event"] == "shutdown_step_failed"]
    assert failed["step"] == "turn_events_close"
    assert "redis went away" in failed["error"]


async def test_a_quick_step_logs_nothing() -> None:
    with capture_logs() as logs:
        await _bounded("enqueue_drain", asyncio.sleep(0), 1.0)
    assert logs == []
