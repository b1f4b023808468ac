"""Credit ledger tables. Amounts are integer micro-credits (see `billing.units`).

`credit_accounts.user_id` is a plain indexed string, not a foreign key: ledger rows are
financial records that outlive the account they belong to (like `usage_records.owner_id`), so
deleting or purging a user must neither cascade into them nor be blocked by them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow

DEFAULT_LOW_CREDIT_THRESHOLD = 10_000_000  # 10 credits


class EntryKind(StrEnum):
    GRANT = "grant"  # free credits given by the platform (sign-up, support)
    TOPUP = "topup"  # credits bought
    PLAN = "plan"  # credits included in a plan
    REFUND = "refund"  # a top-up paid back: takes credits away, may go below zero
    ADJUSTMENT = "adjustment"  # an operator's correction, either sign
    HOLD = "hold"  # credits reserved for a model call (changes `held` only)
    RELEASE = "release"  # a reservation ended unused (changes `held` only)
    USAGE = "usage"  # a settled model call: the charge, and the end of its reservation


POSTABLE_KINDS = frozenset(
    {EntryKind.GRANT, EntryKind.TOPUP, EntryKind.PLAN, EntryKind.REFUND, EntryKind.ADJUSTMENT}
)


class HoldStatus(StrEnum):
    ACTIVE = "active"
    SETTLED = "settled"
    RELEASED = "released"
    EXPIRED = "expired"


class CreditAccount(Base):
    """One per user. `balance` == sum of its entries' `amount`; `held` == sum of `held_delta`."""

    __tablename__ = "credit_accounts"
    __table_args__ = (CheckConstraint("held >= 0", name="held_not_negative"),)

    user_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    low_credit_threshold: Mapped[int] = mapped_column(
        BigInteger, default=DEFAULT_LOW_CREDIT_THRESHOLD
    )
    low_alert_sent: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def available(self) -> int:
        return self.balance - self.held


class CreditHold(IdMixin, CreatedMixin, Base):
    """Credits reserved for one model call until it is settled, released or expires."""

    __tablename__ = "credit_holds"
    __table_args__ = (
        Index("ix_credit_holds_account_id_status", "account_id", "status"),
        Index("ix_credit_holds_status_expires_at", "status", "expires_at"),
    )

    account_id: Mapped[str] = mapped_column(ForeignKey("credit_accounts.user_id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(20), default=HoldStatus.ACTIVE)
    reference: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]


class CreditEntry(Base):
    """Append-only: database triggers refuse UPDATE and DELETE. The integer id is the cursor."""

    __tablename__ = "credit_entries"
    __table_args__ = (Index("ix_credit_entries_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    account_id: Mapped[str] = mapped_column(ForeignKey("credit_accounts.user_id"))
    kind: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int] = mapped_column(BigInteger)
    held_delta: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    held_after: Mapped[int] = mapped_column(BigInteger)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    hold_id: Mapped[str | None] = mapped_column(ForeignKey("credit_holds.id"), index=True)
    reference: Mapped[str | None] = mapped_column(String(255), index=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CreditPause(Base):
    """An agent paused for lack of credits; a top-up resumes exactly these."""

    __tablename__ = "credit_pauses"

    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(ForeignKey("credit_accounts.user_id"), index=True)
    paused_at: Mapped[datetime] = mapped_column(default=utcnow)
