"""Tables of remote MCP servers and of the calls turns made to them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow


class McpServer(IdMixin, CreatedMixin, Base):
    """One remote MCP server of an agent.

    `credentials` is AES-GCM ciphertext of a JSON object: `{"token": ...}` for a static bearer
    token; for OAuth the tokens, their expiry, the registered client and the discovered
    metadata. `oauth_pending` is the ciphertext of an authorization in progress (PKCE verifier,
    state), found again by `oauth_state_hash` (SHA-256 of the state). `tools` is the server's
    last tool listing (names, descriptions, input schemas, annotations); `allowed_tools` the
    names the owner allowed, a subset of it.
    """

    __tablename__ = "mcp_servers"
    __table_args__ = (UniqueConstraint("agent_id", "name"),)

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"), index=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    auth: Mapped[str] = mapped_column(String(10), default="none")
    credentials: Mapped[str | None] = mapped_column(Text)
    oauth_pending: Mapped[str | None] = mapped_column(Text)
    oauth_state_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    oauth_pending_until: Mapped[datetime | None]
    tools: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    allowed_tools: Mapped[list[str]] = mapped_column(default=list)
    tools_listed_at: Mapped[datetime | None]
    timeout_seconds: Mapped[int] = mapped_column(default=30)
    max_result_chars: Mapped[int] = mapped_column(default=20_000)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class McpToolCall(IdMixin, CreatedMixin, Base):
    """One call of a remote MCP tool by a turn: the meter owners see (MCP calls cost no credits).

    `server_id` is cleared when the server is removed; the row stays with the agent.
    """

    __tablename__ = "mcp_tool_calls"
    __table_args__ = (Index("ix_mcp_tool_calls_agent_id_created_at", "agent_id", "created_at"),)

    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    server_id: Mapped[str | None] = mapped_column(
        ForeignKey("mcp_servers.id", ondelete="SET NULL"), index=True
    )
    server_name: Mapped[str] = mapped_column(String(40))
    tool: Mapped[str] = mapped_column(String(200))
    duration_ms: Mapped[int] = mapped_column(default=0)
    result_chars: Mapped[int] = mapped_column(default=0)
    outcome: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
