"""stripe events

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 03:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column("account_id", sa.String(length=36), nullable=True),
        sa.Column("outcome", sa.String(length=100), nullable=False),
        sa.Column("stripe_created_at", lunogen.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("received_at", lunogen.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("processed_at", lunogen.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    op.create_index(
        op.f("ix_stripe_events_account_id"), "stripe_events", ["account_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_stripe_events_account_id"), table_name="stripe_events")
    op.drop_table("stripe_events")
