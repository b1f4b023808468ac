"""streamed turns and channel state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 02:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column("stream", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("failure", sa.JSON(), nullable=True))
    with op.batch_alter_table("agent_channels") as batch:
        batch.add_column(
            sa.Column("disabled_at", lunogen.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("disabled_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agent_channels") as batch:
        batch.drop_column("disabled_reason")
        batch.drop_column("disabled_at")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("failure")
        batch.drop_column("stream")
