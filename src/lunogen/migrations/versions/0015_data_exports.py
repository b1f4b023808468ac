"""data exports: one row per archive of a person's data (queued → building → ready → expired)

The zip lives under the data dir (`path`, relative to it) until `expires_at`, seven days after
it was built; the expiry step deletes the file and marks the row expired. Rows go with their
person (ON DELETE CASCADE).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "data_exports",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("sections_done", sa.Integer(), nullable=False),
        sa.Column("sections_total", sa.Integer(), nullable=False),
        sa.Column("current_section", sa.String(60), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_worker", sa.String(64), nullable=True),
        sa.Column("claim_expires_at", _WHEN, nullable=True),
        sa.Column("started_at", _WHEN, nullable=True),
        sa.Column("finished_at", _WHEN, nullable=True),
        sa.Column("expires_at", _WHEN, nullable=True),
        sa.Column("path", sa.String(255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("downloads", sa.Integer(), nullable=False),
        sa.Column("last_downloaded_at", _WHEN, nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_data_exports_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_data_exports")),
    )
    op.create_index("ix_data_exports_user_id_created_at", "data_exports", ["user_id", "created_at"])
    op.create_index("ix_data_exports_status", "data_exports", ["status"])


def downgrade() -> None:
    op.drop_index("ix_data_exports_status", table_name="data_exports")
    op.drop_index("ix_data_exports_user_id_created_at", table_name="data_exports")
    op.drop_table("data_exports")
