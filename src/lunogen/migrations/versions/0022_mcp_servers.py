"""remote MCP servers: per-agent connections, allowlists and encrypted credentials

`mcp_servers` holds each agent's remote MCP servers (URL, auth kind, encrypted credentials, an
OAuth authorization in progress, the last tool listing and the allowlist). `mcp_tool_calls`
meters every call a turn made (server, tool, duration, size, outcome). Rows go with their agent
or owner (ON DELETE CASCADE); a removed server's calls keep their counts (SET NULL).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "mcp_servers",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(40), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("auth", sa.String(10), nullable=False),
        sa.Column("credentials", sa.Text(), nullable=True),
        sa.Column("oauth_pending", sa.Text(), nullable=True),
        sa.Column("oauth_state_hash", sa.String(64), nullable=True),
        sa.Column("oauth_pending_until", _WHEN, nullable=True),
        sa.Column("tools", sa.JSON(), nullable=False),
        sa.Column("allowed_tools", sa.JSON(), nullable=False),
        sa.Column("tools_listed_at", _WHEN, nullable=True),
        sa.Column("timeout_seconds", sa.Integer(), nullable=False),
        sa.Column("max_result_chars", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
        _fk("mcp_servers", "agent_id", "agents", "CASCADE"),
        _fk("mcp_servers", "owner_id", "users", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_servers")),
        sa.UniqueConstraint("agent_id", "name", name=op.f("uq_mcp_servers_agent_id_name")),
        sa.UniqueConstraint("oauth_state_hash", name=op.f("uq_mcp_servers_oauth_state_hash")),
    )
    op.create_index(op.f("ix_mcp_servers_agent_id"), "mcp_servers", ["agent_id"])
    op.create_index(op.f("ix_mcp_servers_owner_id"), "mcp_servers", ["owner_id"])
    op.create_table(
        "mcp_tool_calls",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("server_id", sa.String(36), nullable=True),
        sa.Column("server_name", sa.String(40), nullable=False),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("result_chars", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        _fk("mcp_tool_calls", "owner_id", "users", "CASCADE"),
        _fk("mcp_tool_calls", "agent_id", "agents", "CASCADE"),
        _fk("mcp_tool_calls", "server_id", "mcp_servers", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_tool_calls")),
    )
    op.create_index(op.f("ix_mcp_tool_calls_owner_id"), "mcp_tool_calls", ["owner_id"])
    op.create_index(op.f("ix_mcp_tool_calls_server_id"), "mcp_tool_calls", ["server_id"])
    op.create_index(
        "ix_mcp_tool_calls_agent_id_created_at", "mcp_tool_calls", ["agent_id", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("mcp_tool_calls")
    op.drop_table("mcp_servers")
