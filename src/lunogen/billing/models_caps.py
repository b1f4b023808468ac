"""Spend caps: the limits an owner sets, and what each period has spent against them.

`spend_caps` holds one row per capped agent (`subject` = the agent's id) and one per account
with a monthly cap over all its agents (`subject` = the owner's user id). `spend_counters`
keep, per subject and period ("2026-12-07" for a UTC day, "2026-12" for a UTC month), the
credits settled by calls whose hold was placed in that period. `capped_holds` ties each hold
placed under a cap to its agent and periods, so the credits held by calls in flight count
against the caps until they settle, are released or expire (an expired hold stops counting by
itself: only holds still `active` in `credit_holds` are summed).

Every row of these tables changes only under the owner's credit account lock (the one the
ledger takes), so concurrent turns see each other's holds.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base
from lunogen.kit.time import utcnow


class SpendCap(Base):
    """An agent's caps (`agent_id` set) or an account's monthly cap (`agent_id` NULL)."""

    __tablename__ = "spend_caps"

    subject: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    daily_micro: Mapped[int | None] = mapped_column(BigInteger)
    monthly_micro: Mapped[int | None] = mapped_column(BigInteger)
    turn_micro: Mapped[int | None] = mapped_column(BigInteger)
    turn_tokens: Mapped[int | None] = mapped_column(Integer)
    reply_text: Mapped[str | None] = mapped_column(String(1000))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SpendCounter(Base):
    """Credits settled in one period by one subject's capped calls, and the alerts sent."""

    __tablename__ = "spend_counters"

    subject: Mapped[str] = mapped_column(String(36), primary_key=True)
    period: Mapped[str] = mapped_column(String(10), primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    spent: Mapped[int] = mapped_column(BigInteger, default=0)
    warned: Mapped[bool] = mapped_column(default=False)  # the 80 % notice went out
    reached: Mapped[bool] = mapped_column(default=False)  # the 100 % notice went out
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class CappedHold(Base):
    """A credit hold placed under a cap: whose call it pays for, and in which periods."""

    __tablename__ = "capped_holds"
    __table_args__ = (
        Index("ix_capped_holds_agent_id_day", "agent_id", "day"),
        Index("ix_capped_holds_agent_id_month", "agent_id", "month"),
        Index("ix_capped_holds_owner_id_month", "owner_id", "month"),
    )

    hold_id: Mapped[str] = mapped_column(
        ForeignKey("credit_holds.id", ondelete="CASCADE"), primary_key=True
    )
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    day: Mapped[str] = mapped_column(String(10))
    month: Mapped[str] = mapped_column(String(7))
    amount: Mapped[int] = mapped_column(BigInteger)
