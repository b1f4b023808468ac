"""The privacy domain's tables: published policy versions, the Stripe subscription
cancellations owed to deleted accounts, and personal data exports."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow


class StripeCancellation(IdMixin, CreatedMixin, Base):
    """A subscription to cancel at Stripe (`DELETE /v1/subscriptions/{id}`) because its account
    was deleted, done by a job outside any transaction.

    `status`: queued → sending (claimed) → done | failed, back to queued for a retry with
    backoff, or superseded (the owner cancelled the deletion before the job ran). `outcome`
    says what Stripe answered (`canceled`, `already canceled`). Purged with the account.
    """

    __tablename__ = "stripe_cancellations"
    __table_args__ = (Index("ix_stripe_cancellations_status", "status", "next_attempt_at"),)

    account_id: Mapped[str] = mapped_column(String(36), index=True)
    subscription_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(100), default="")
    completed_at: Mapped[datetime | None]


class PolicyVersion(IdMixin, Base):
    """One published version of the Terms (`terms`) or the Privacy Policy (`privacy`).

    `notify_*` track the notice of a material change: `pending` until every active user has
    an in-app notification and an email (`notify_cursor`: the last user id done, the job
    goes on in id order), then `done`; `none` for a change that tells nobody.
    """

    __tablename__ = "policy_versions"
    __table_args__ = (UniqueConstraint("kind", "version"),)

    kind: Mapped[str] = mapped_column(String(20))
    version: Mapped[str] = mapped_column(String(40))
    effective_at: Mapped[datetime]
    material: Mapped[bool] = mapped_column(Boolean)
    text: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    published_at: Mapped[datetime]
    published_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    notify_status: Mapped[str] = mapped_column(String(20), default="none")
    notify_cursor: Mapped[str | None] = mapped_column(String(36))
    notify_next_at: Mapped[datetime | None] = mapped_column(index=True)
    notified: Mapped[int] = mapped_column(Integer, default=0)


class DataExport(IdMixin, CreatedMixin, Base):
    """An archive of everything held about a person (`privacy.export`).

    `status`: queued → building (claimed by a worker until `claim_expires_at`; a worker that
    dies leaves it to be claimed again) → ready (the zip is at `path`, relative to the data
    dir, until `expires_at`) → expired (file deleted); or failed (`error` says why, nothing on
    disk). `sections_done` of `sections_total` is the progress. Deleted with the person (and
    their files by the expiry step's sweep of `exports/`).
    """

    __tablename__ = "data_exports"
    __table_args__ = (
        Index("ix_data_exports_user_id_created_at", "user_id", "created_at"),
        Index("ix_data_exports_status", "status"),
    )

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    sections_done: Mapped[int] = mapped_column(default=0)
    sections_total: Mapped[int] = mapped_column(default=0)
    current_section: Mapped[str | None] = mapped_column(String(60))
    attempts: Mapped[int] = mapped_column(default=0)
    claimed_worker: Mapped[str | None] = mapped_column(String(64))
    claim_expires_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    path: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    downloads: Mapped[int] = mapped_column(default=0)
    last_downloaded_at: Mapped[datetime | None]
