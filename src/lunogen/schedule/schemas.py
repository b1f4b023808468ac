"""API shapes of schedules. Credits travel as exact decimal strings; times are UTC."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lunogen.billing.units import credits_to_micro
from lunogen.kit.time import UtcDateTimeIn

MAX_CAP_CREDITS = Decimal(1_000_000)
MAX_PROMPT_CHARS = 8000


def _cap(value: Decimal | None) -> Decimal | None:
    if value is None:
        return None
    if not value.is_finite() or value <= 0:
        raise ValueError("must be a positive number of credits")
    if value > MAX_CAP_CREDITS:
        raise ValueError(f"must be at most {MAX_CAP_CREDITS} credits")
    try:
        credits_to_micro(value)
    except ValueError:
        raise ValueError("credits have at most six decimal places") from None
    return value


class _Caps(BaseModel):
    run_cap_credits: Decimal | None = Field(
        default=None,
        description="The most one run may spend, in credits (none: the agent's own caps only)",
        examples=["0.5"],
    )
    day_cap_credits: Decimal | None = Field(
        default=None,
        description="The most this schedule's runs may spend per day (in its time zone); "
        "runs are skipped once it is reached",
        examples=["5"],
    )

    @field_validator("run_cap_credits", "day_cap_credits")
    @classmethod
    def _check_cap(cls, value: Decimal | None) -> Decimal | None:
        return _cap(value)


class ScheduleCreate(_Caps):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["cron", "once", "interval"]
    cron: str | None = Field(
        default=None, max_length=120, description="cron: five fields", examples=["0 9 * * 1-5"]
    )
    timezone: str = Field(
        default="UTC", max_length=64, description="IANA time zone of `cron` and of the day cap"
    )
    run_at: UtcDateTimeIn | None = Field(
        default=None,
        description="once: when it runs; interval: its first run (default: now + one interval)",
    )
    interval_seconds: int | None = Field(default=None, description="interval: at least 60")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    enabled: bool = True
    channel_id: str | None = Field(
        default=None,
        max_length=36,
        description="Proactive: the agent's channel a run writes to (one that sends messages "
        "on its own: Telegram, WhatsApp, webhook); with `contact`. None: the schedule's own "
        "conversation",
    )
    contact: str | None = Field(
        default=None,
        max_length=255,
        description="Proactive: the contact a run writes to, one who wrote to the agent on "
        "`channel_id` before",
    )


class ScheduleUpdate(_Caps):
    """Fields you send replace the stored ones; a changed rule recomputes the next run."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    cron: str | None = Field(default=None, max_length=120)
    timezone: str | None = Field(default=None, max_length=64)
    run_at: UtcDateTimeIn | None = None
    interval_seconds: int | None = None
    prompt: str | None = Field(default=None, min_length=1, max_length=MAX_PROMPT_CHARS)
    enabled: bool | None = None
    channel_id: str | None = Field(
        default=None, max_length=36, description="null with `contact: null`: not proactive"
    )
    contact: str | None = Field(default=None, max_length=255)


class Schedule(BaseModel):
    id: str
    agent_id: str
    name: str
    kind: str
    cron: str | None
    timezone: str
    run_at: datetime | None
    interval_seconds: int | None
    prompt: str
    enabled: bool
    next_run_at: datetime | None = Field(description="None: off, or nothing left to run")
    next_runs: list[datetime] = Field(description="The next three times it runs")
    run_cap_credits: str | None
    day_cap_credits: str | None
    channel_id: str | None = Field(description="Proactive: the channel a run writes to")
    contact: str | None = Field(description="Proactive: the contact a run writes to")
    thread_id: str | None = Field(description="The thread its runs are written to")
    created_at: datetime
    updated_at: datetime


class ScheduleRun(BaseModel):
    id: str
    schedule_id: str
    planned_at: datetime
    started_at: datetime
    status: Literal["started", "skipped"]
    outcome: str = Field(
        description="skipped; or the turn's state: pending (running or queued), done, failed"
    )
    reason: str | None = Field(
        description="Why it was skipped: agent_not_running, agent_over_cap, previous_run_going, "
        "day_cap_reached, agent_deleted, channel_gone, channel_disabled, channel_rules, "
        "contact_blocked"
    )
    detail: str
    catch_up: bool = Field(description="It ran late, once, for times missed while down")
    message_id: str | None
    cap_credits: str | None = Field(description="The most this run was allowed to spend")
    cost_credits: str = Field(description="What the run's model calls were charged")
