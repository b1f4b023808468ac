"""remote MCP servers: per-agent connections, allowlists and encrypted credentials

The MCP tables are added by the remote MCP work.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-07 16:20:00
"""

from __future__ import annotations

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    return None


def downgrade() -> None:
    return None
