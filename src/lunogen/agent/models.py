from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow


class Agent(IdMixin, CreatedMixin, Base):
    __tablename__ = "agents"
    __table_args__ = (
        Index("ix_agents_owner_id_created_at", "owner_id", "created_at"),
        # Finds deploys left `deploying` by a process that died while calling a provider.
        Index("ix_agents_status_status_changed_at", "status", "status_changed_at"),
    )

    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(200))
    instructions: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20), default="draft")
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    skills: Mapped[list[str]] = mapped_column(default=list)
    tools: Mapped[list[str]] = mapped_column(default=list)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    deleted_at: Mapped[datetime | None]
    purge_after: Mapped[datetime | None]
    fallback_models: Mapped[list[str]] = mapped_column(default=list)
    max_output_tokens: Mapped[int] = mapped_column(default=1024)
    started_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    suspended_at: Mapped[datetime | None]  # by an admin: its owner cannot deploy or start it
    suspended_reason: Mapped[str | None] = mapped_column(Text)
    # Per tool, whether its calls wait for the owner's approval (absent: the tool's default),
    # and how long a request waits before it counts as denied (None: the default).
    approval_tools: Mapped[dict[str, Any] | None]
    approval_wait_minutes: Mapped[int | None]
    # The newest version (the working configuration) and the one the runtime serves while the
    # agent runs (None until the first deploy); see `agent.versions`.
    latest_version: Mapped[int] = mapped_column(default=0, server_default="0")
    deployed_version: Mapped[int | None]

    channels: Mapped[list[AgentChannel]] = relationship(
        back_populates="agent",
        order_by="AgentChannel.position",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class AgentChannel(IdMixin, CreatedMixin, Base):
    """A channel of an agent. `config` holds public fields; `secrets` is AES-GCM ciphertext."""

    __tablename__ = "agent_channels"

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(default=0)
    type: Mapped[str] = mapped_column(String(20))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets: Mapped[str | None] = mapped_column(Text)
    # Set when the channel's receiver said it is gone (HTTP 410); no more sends until re-enabled.
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # Set while the provider knows this channel (deploy registered it; stop unregisters it),
    # with what the registration told the owner (the bot's username, the phone's name).
    registered_at: Mapped[datetime | None]
    registration: Mapped[dict[str, Any] | None]

    agent: Mapped[Agent] = relationship(back_populates="channels")


class AgentVersion(IdMixin, CreatedMixin, Base):
    """One numbered, immutable configuration of an agent (`agent.versions.VERSIONED` fields).

    Numbers count from 1 per agent without gaps; `(agent_id, number)` is unique, so two
    concurrent edits can never both become version N. No secret is ever in `config`.
    """

    __tablename__ = "agent_versions"
    __table_args__ = (UniqueConstraint("agent_id", "number"),)

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    number: Mapped[int]
    config: Mapped[dict[str, Any]]
    summary: Mapped[str] = mapped_column(String(300), default="")
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_by_key_id: Mapped[str | None] = mapped_column(String(36))  # None: the dashboard
    restored_from: Mapped[int | None]  # a rollback's source version
