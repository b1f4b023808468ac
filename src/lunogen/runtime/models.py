from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String, Text, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow


class Thread(IdMixin, CreatedMixin, Base):
    """A conversation: one agent, one channel, one contact.

    `lease_owner`/`lease_expires_at` make a turn exclusive per thread across processes: a worker
    claims the lease with a conditional UPDATE, processes the pending messages in `seq` order and
    releases it. `next_seq` numbers the thread's messages in arrival order.
    """

    __tablename__ = "threads"
    __table_args__ = (UniqueConstraint("agent_id", "channel_key", "contact"),)

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(String(36), index=True)
    channel_key: Mapped[str] = mapped_column(String(60))
    contact: Mapped[str] = mapped_column(String(255))
    next_seq: Mapped[int] = mapped_column(default=1)
    last_message_at: Mapped[datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    # A person answers this contact instead of the agent until then (`runtime.takeover`).
    taken_over_until: Mapped[datetime | None]
    taken_over_by: Mapped[str | None] = mapped_column(String(36))


class Message(IdMixin, CreatedMixin, Base):
    """A message of a thread; `content` is AES-GCM ciphertext.

    Inbound (`role == "user"`) messages carry the work state of their turn: `pending` until a
    turn answers them, then `done` (or `failed` after the last attempt). An assistant reply
    points at the inbound message it answers, uniquely, so a turn can reply only once.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("thread_id", "seq"),
        UniqueConstraint("reply_to_id"),
        UniqueConstraint("dedupe_key"),
        Index("ix_messages_status_next_attempt_at", "status", "next_attempt_at"),
    )

    thread_id: Mapped[str] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(36), index=True)
    seq: Mapped[int]
    role: Mapped[str] = mapped_column(String(20))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="done")
    dedupe_key: Mapped[str | None] = mapped_column(String(300))
    # The provider's id of an inbound message (a Telegram message id, a WhatsApp wamid), and
    # when the provider says it was written (it may differ from `created_at`, our arrival time).
    external_id: Mapped[str | None] = mapped_column(String(200))
    sent_at: Mapped[datetime | None]
    reply_to_id: Mapped[str | None] = mapped_column(String(36))
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None]
    # The sender asked to see the reply as it is written (API channel, SSE).
    stream: Mapped[bool] = mapped_column(default=False, server_default=false())
    # Why a turn ended unanswered, for machines: {"code": "insufficient_credits", ...}.
    failure: Mapped[dict[str, Any] | None]
    # The most the turn answering this message may spend, in micro-credits (a schedule's
    # per-run cap); the agent's own per-turn cap applies as well. NULL: no cap of its own.
    turn_cap_micro: Mapped[int | None] = mapped_column(BigInteger)
    # Who wrote an inbound message when it is not the thread's contact: `schedule` (the agent's
    # owner, through a proactive schedule). The turn labels it as such. NULL: the contact.
    source: Mapped[str | None] = mapped_column(String(20))


class MemoryNote(IdMixin, CreatedMixin, Base):
    """A note an agent keeps: about one contact, or agent-wide when `contact` is None."""

    __tablename__ = "memory_notes"
    __table_args__ = (Index("ix_memory_notes_agent_id_contact", "agent_id", "contact"),)

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(String(36), index=True)
    contact: Mapped[str | None] = mapped_column(String(255))
    content: Mapped[str] = mapped_column(Text)


class RecordedCall(CreatedMixin, Base):
    """A model call a turn completed and paid for, kept until the turn's message is answered.

    Written in the transaction that stores the call's usage row and settles its hold, so a call
    is recorded exactly when it is charged. A turn re-run after a crash reuses the call of step
    `step` instead of calling (and charging) again when it would send the same request
    (`fingerprint`). `result` is the call's outcome as AES-GCM ciphertext of its JSON.
    """

    __tablename__ = "recorded_calls"

    message_id: Mapped[str] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    step: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(Text)
