"""When a schedule runs: parse and check its rule, and compute its next times.

Cron expressions are read by `cronsim` in the schedule's IANA time zone, with Debian cron's
rules at daylight-saving changes: a time that falls in the skipped hour runs at the first
minute after it, a time in the repeated hour runs once. Every time leaves here in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

Kind = Literal["cron", "once", "interval"]

MIN_INTERVAL_SECONDS = 60
MAX_INTERVAL_SECONDS = 366 * 24 * 3600
MAX_AHEAD = timedelta(days=5 * 366)


class RuleError(ValueError):
    """A rule that cannot run: `field` is the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Rule:
    kind: Kind
    timezone: str = "UTC"
    cron: str | None = None
    run_at: datetime | None = None  # once: the time; interval: the first run
    interval_seconds: int | None = None


def zone(name: str) -> ZoneInfo:
    """The IANA zone `name`, else `RuleError` on `timezone`."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise RuleError("timezone", f"{name!r} is not an IANA time zone such as Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise RuleError(
            "timezone", f"Unknown time zone {name!r}: use an IANA name such as Europe/Berlin"
        ) from None


def check(rule: Rule, *, now: datetime) -> None:
    """Raise `RuleError` unless `rule` is well formed and has a time after `now`."""
    tz = zone(rule.timezone)
    if rule.kind == "cron":
        expression = (rule.cron or "").strip()
        if len(expression.split()) != 5:
            raise RuleError(
                "cron",
                "A cron expression has five fields: minute hour day-of-month month day-of-week",
            )
        try:
            iterator = CronSim(expression, now.astimezone(tz))
            first = next(iterator)
        except CronSimError as exc:
            raise RuleError("cron", f"Invalid cron expression {expression!r}: {exc}") from None
        except StopIteration:
            raise RuleError("cron", f"{expression!r} never runs") from None
        if first.astimezone(UTC) - now > MAX_AHEAD:
            raise RuleError("cron", f"{expression!r} does not run in the next five years")
    elif rule.kind == "once":
        if rule.run_at is None:
            raise RuleError("run_at", "A one-off schedule needs run_at")
        if rule.run_at <= now:
            raise RuleError("run_at", "run_at is in the past: a one-off run must be in the future")
        if rule.run_at - now > MAX_AHEAD:
            raise RuleError("run_at", "run_at must be within five years")
    else:
        seconds = rule.interval_seconds
        if seconds is None:
            raise RuleError("interval_seconds", "An interval schedule needs interval_seconds")
        if seconds < MIN_INTERVAL_SECONDS:
            raise RuleError(
                "interval_seconds", f"The shortest interval is {MIN_INTERVAL_SECONDS} seconds"
            )
        if seconds > MAX_INTERVAL_SECONDS:
            raise RuleError("interval_seconds", "The longest interval is 366 days")
        if rule.run_at is not None and rule.run_at - now > MAX_AHEAD:
            raise RuleError("run_at", "run_at must be within five years")


def next_after(rule: Rule, after: datetime, *, first: bool = False) -> datetime | None:
    """The first time of `rule` strictly after `after` (UTC); None when nothing is left.

    `first`: the schedule has not run yet, so a one-off's time (and an interval's first run)
    still counts even when `after` has passed it: that is the one catch-up run.
    """
    if rule.kind == "cron":
        assert rule.cron is not None
        try:
            found = next(CronSim(rule.cron.strip(), after.astimezone(zone(rule.timezone))))
        except StopIteration:
            return None
        return found.astimezone(UTC)
    if rule.kind == "once":
        return rule.run_at if first else None
    assert rule.interval_seconds is not None
    step = timedelta(seconds=rule.interval_seconds)
    start = rule.run_at
    if start is None:
        return after + step
    if first or after < start:
        return start
    return start + step * ((after - start) // step + 1)


def upcoming(rule: Rule, start: datetime | None, *, count: int) -> list[datetime]:
    """`start` (the next run) and the `count - 1` times after it."""
    times: list[datetime] = []
    current = start
    while current is not None and len(times) < count:
        times.append(current)
        current = next_after(rule, current)
    return times
