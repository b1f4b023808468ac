"""starter grant claims

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 03:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "starter_grant_claims",
        sa.Column("identity_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("claimed_at", lunogen.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("identity_hash", name=op.f("pk_starter_grant_claims")),
    )
    op.create_index(
        op.f("ix_starter_grant_claims_user_id"), "starter_grant_claims", ["user_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_starter_grant_claims_user_id"), table_name="starter_grant_claims")
    op.drop_table("starter_grant_claims")
