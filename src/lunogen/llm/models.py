from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base
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
