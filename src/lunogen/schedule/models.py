"""Schedules of an agent and the history of their runs.

A schedule fires when `next_run_at` comes: the process that advances it with a conditional
UPDATE (`next_run_at` still equal to what it read) owns that firing, and in the same
transaction writes the run row (unique per schedule and planned time) and the run's inbound
message. `next_run_at` is NULL while the schedule is off or has nothing left to run (a one-off
that ran), so the earliest due time is one indexed MIN over the column.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, false, true
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow


class Schedule(IdMixin, CreatedMixin, Base):
    """When an agent runs unattended, with what prompt, and what a run may spend.

    `kind` is `cron` (`cron` in `timezone`), `once` (`run_at`) or `interval`
    (`interval_seconds`, counted from `run_at`, its first run). Caps are micro-credits.
    """

    __tablename__ = "schedules"
    __table_args__ = (Index("ix_schedules_agent_id_created_at", "agent_id", "created_at"),)

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(10))
    cron: Mapped[str | None] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    run_at: Mapped[datetime | None]
    interval_seconds: Mapped[int | None]
    prompt: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(default=True, server_default=true())
    next_run_at: Mapped[datetime | None] = mapped_column(index=True)
    run_cap_micro: Mapped[int | None] = mapped_column(BigInteger)
    day_cap_micro: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A proactive schedule: runs go to `contact` on the agent's channel `channel_id` (no foreign
    # key: a channel removed later makes its runs skip with a reason). Both NULL: the
    # schedule's own thread.
    channel_id: Mapped[str | None] = mapped_column(String(36))
    contact: Mapped[str | None] = mapped_column(String(255))


class ScheduleRun(IdMixin, CreatedMixin, Base):
    """One firing of a schedule: `started` (its inbound message is `message_id`) or `skipped`
    (`reason` says why; no message). `catch_up`: planned while no process was firing."""

    __tablename__ = "schedule_runs"
    __table_args__ = (
        UniqueConstraint("schedule_id", "planned_at"),
        Index("ix_schedule_runs_schedule_id_created_at", "schedule_id", "created_at"),
    )

    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    planned_at: Mapped[datetime]
    status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(String(300), default="")
    message_id: Mapped[str | None] = mapped_column(String(36), index=True)
    cap_micro: Mapped[int | None] = mapped_column(BigInteger)
    catch_up: Mapped[bool] = mapped_column(default=False, server_default=false())
