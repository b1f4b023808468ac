"""Stripe webhook events, each stored once by Stripe's event id (duplicates are no-ops)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base
from lunogen.kit.time import utcnow


class StripeEvent(Base):
    """One row per Stripe event id, written in the transaction that applies the event.

    `outcome` says what it did (`topup`, `refund`, `plan:pro`, `ignored:<why>`...), so support can
    answer "did that payment land?" from the table alone. No card data is ever stored: only ids.
    """

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)  # Stripe's evt_...
    type: Mapped[str] = mapped_column(String(100))
    object_id: Mapped[str | None] = mapped_column(String(255))  # cs_..., ch_..., sub_..., in_...
    account_id: Mapped[str | None] = mapped_column(String(36), index=True)
    outcome: Mapped[str] = mapped_column(String(100), default="")
    stripe_created_at: Mapped[datetime]  # the event's `created`: orders plan changes
    livemode: Mapped[bool] = mapped_column(default=False)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None]
