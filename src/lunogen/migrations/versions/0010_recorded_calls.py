"""recorded calls: a turn re-run after a crash reuses the model calls already paid for

One row per completed model call of a pending message, keyed by (message, step), written with
the call's usage row and charge; deleted when the message is answered or fails.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 02:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recorded_calls",
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("created_at", lunogen.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_recorded_calls_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", "step", name=op.f("pk_recorded_calls")),
    )


def downgrade() -> None:
    op.drop_table("recorded_calls")
