"""The channels' tables: outbound deliveries and their receipts, contacts (access policy,
blocks), pairing codes, and the provider unregistrations still to do."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow


class Delivery(IdMixin, CreatedMixin, Base):
    """An outbound send of a reply (or failure notice) through a channel.

    Keyed by the inbound message it answers, so a reply is sent at most once per message and
    channel. `id` is the idempotency key sent to receivers that take one (`webhook-id`),
    stable across retries. `parts_sent` counts the parts of a split reply the provider already
    accepted: a retry resumes after them.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("message_id", "channel_id"),
        Index("ix_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_deliveries_channel_id_created_at", "channel_id", "created_at"),
    )

    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(36), index=True)
    channel_id: Mapped[str] = mapped_column(String(36))
    # waiting → queued → delivered | failed | disabled | held | blocked
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None]
    parts_sent: Mapped[int] = mapped_column(default=0, server_default="0")


class DeliveryReceipt(IdMixin, CreatedMixin, Base):
    """One provider message a delivery became, and the provider's latest news about it.

    Statuses may arrive out of order: `status` only moves forward (sent → delivered → read),
    and `failed` is kept unless the message was already delivered or read.
    """

    __tablename__ = "delivery_receipts"
    __table_args__ = (
        UniqueConstraint("delivery_id", "part"),
        Index("ix_delivery_receipts_channel_id_external_id", "channel_id", "external_id"),
    )

    delivery_id: Mapped[str] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    channel_id: Mapped[str] = mapped_column(String(36))
    external_id: Mapped[str] = mapped_column(String(200))
    part: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(String(20), default="sent")
    status_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)


class EarlyStatus(IdMixin, CreatedMixin, Base):
    """A provider status that arrived before the receipt it is about (a WhatsApp `delivered`
    can beat the end of the send that made the message): kept until the receipt is written,
    then applied to it; dropped after a day if none is."""

    __tablename__ = "early_statuses"
    __table_args__ = (
        Index("ix_early_statuses_channel_id_external_id", "channel_id", "external_id"),
    )

    channel_id: Mapped[str] = mapped_column(String(36))
    external_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime | None]
    error_code: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    window_closed: Mapped[bool] = mapped_column(default=False)


class ChannelContact(IdMixin, CreatedMixin, Base):
    """What the platform knows about one contact of one channel.

    `paired_at`: the contact redeemed a pairing code. `refused_at`: they were told once that
    the agent does not talk to them (then silence). `blocked_at`: they blocked the agent on the
    provider; nothing is sent to them until they write again.
    """

    __tablename__ = "channel_contacts"
    __table_args__ = (UniqueConstraint("channel_id", "contact"),)

    channel_id: Mapped[str] = mapped_column(ForeignKey("agent_channels.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(36), index=True)
    contact: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    last_inbound_at: Mapped[datetime | None]
    paired_at: Mapped[datetime | None]
    refused_at: Mapped[datetime | None]
    blocked_at: Mapped[datetime | None]


class PairingCode(IdMixin, CreatedMixin, Base):
    """A one-use code the owner hands to a person so that they may talk to a `pairing` channel.

    Only the code's SHA-256 is stored; the code itself is shown once, when it is made.
    """

    __tablename__ = "pairing_codes"

    channel_id: Mapped[str] = mapped_column(
        ForeignKey("agent_channels.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    used_by: Mapped[str | None] = mapped_column(String(255))


class ChannelUnregistration(IdMixin, CreatedMixin, Base):
    """A provider registration to remove (a stopped agent's Telegram webhook), done by a job.

    It keeps what the call needs (the channel's type, public config and sealed secrets), so it
    outlives a channel removed from its agent. `status`: queued → sending (claimed by a job) →
    done | failed, back to queued for a retry, or superseded (the channel was registered again
    before the job ran).
    """

    __tablename__ = "channel_unregistrations"
    __table_args__ = (Index("ix_channel_unregistrations_status", "status", "next_attempt_at"),)

    channel_id: Mapped[str] = mapped_column(String(36), index=True)
    agent_id: Mapped[str] = mapped_column(String(36))
    agent_name: Mapped[str] = mapped_column(String(100))
    type: Mapped[str] = mapped_column(String(20))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets: Mapped[str | None] = mapped_column(Text)
    registration: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[datetime | None]
