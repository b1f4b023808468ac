from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow


class CatalogModel(Base):
    """A model the platform can call. Prices are USD per token as exact decimal strings."""

    __tablename__ = "llm_models"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    context_length: Mapped[int]
    prompt_price: Mapped[str] = mapped_column(String(40))
    completion_price: Mapped[str] = mapped_column(String(40))
    supported_parameters: Mapped[list[str]] = mapped_column(default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRecord(IdMixin, CreatedMixin, Base):
    """One model call. Cost is integer nano-USD (1e-9 USD): exact, and never a float.

    Billing turns these rows into credit debits; a failed call has `outcome != "ok"` and no cost.
    """

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_owner_id_created_at", "owner_id", "created_at"),
        UniqueConstraint("generation_id"),
    )

    owner_id: Mapped[str] = mapped_column(String(36))
    agent_id: Mapped[str] = mapped_column(String(36), index=True)
    thread_id: Mapped[str | None] = mapped_column(String(36))
    message_id: Mapped[str | None] = mapped_column(String(36), index=True)
    requested_model: Mapped[str] = mapped_column(String(200))
    answered_model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    cached_tokens: Mapped[int] = mapped_column(default=0)
    reasoning_tokens: Mapped[int] = mapped_column(default=0)
    cost_nano_usd: Mapped[int | None] = mapped_column(BigInteger)
    cost_source: Mapped[str | None] = mapped_column(String(20))
    generation_id: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[int] = mapped_column(default=0)
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
