"""Moderation tables: the installation's rules, the flags raised on messages, the classifier's
checks (its durable queue) and the suspensions moderation decided.

A flag's `evidence` (the text that was flagged) is AES-GCM ciphertext, like the message it
comes from: a withheld reply exists nowhere else. Every row of an agent goes with the agent and
every row of a person with their account (ON DELETE CASCADE, and the retention purge reads
these foreign keys); a reviewer's or rule author's id is cleared when their account goes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow


class ModerationRule(IdMixin, CreatedMixin, Base):
    """A blocked term (`kind` term: case-insensitive, whole words) or regular expression
    (`kind` pattern), checked on `direction` inbound, outbound or both; `action` flag or block."""

    __tablename__ = "moderation_rules"

    kind: Mapped[str] = mapped_column(String(10))
    value: Mapped[str] = mapped_column(String(200))
    direction: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(10))
    note: Mapped[str] = mapped_column(String(200), default="")
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class ModerationFlag(IdMixin, CreatedMixin, Base):
    """A message that met a rule or the classifier. `source`: `rule` (`rule` names it) or
    `classifier`; `action`: what it did (flag, block, withheld); `status`: open, dismissed or
    upheld by `reviewer_id`."""

    __tablename__ = "moderation_flags"
    __table_args__ = (
        Index("ix_moderation_flags_status_created_at", "status", "created_at"),
        Index("ix_moderation_flags_agent_id_created_at", "agent_id", "created_at"),
    )

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    direction: Mapped[str] = mapped_column(String(10))
    source: Mapped[str] = mapped_column(String(20))
    rule: Mapped[str | None] = mapped_column(String(36))
    action: Mapped[str] = mapped_column(String(10))
    categories: Mapped[list[str]]
    scores: Mapped[dict[str, Any]]
    evidence: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(10), default="open")
    reviewer_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reviewed_at: Mapped[datetime | None]
    review_note: Mapped[str | None] = mapped_column(String(500))


class ModerationCheck(IdMixin, CreatedMixin, Base):
    """One message to send to the classifier: the `moderation.classify` job's row. `status`:
    queued, checked (not flagged), flagged, failed (gave up after its retries)."""

    __tablename__ = "moderation_checks"
    __table_args__ = (
        Index("ix_moderation_checks_status_next_attempt_at", "status", "next_attempt_at"),
    )

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    checked_at: Mapped[datetime | None]


class ModerationSuspension(IdMixin, CreatedMixin, Base):
    """An agent suspended by the flag threshold, and the owner's appeal (a support ticket)."""

    __tablename__ = "moderation_suspensions"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    reason: Mapped[str] = mapped_column(Text)
    flags: Mapped[int]
    ticket_id: Mapped[str | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    appealed_at: Mapped[datetime | None]
