"""user pictures: the Google profile picture copied at sign-in, served from our own origin

One row per user (keyed on it, removed with it): the image bytes, their checked content type,
size and SHA-256, and the URL they came from (a sign-in naming another URL downloads again).
`users.picture_url` keeps the URL Google names.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "user_pictures",
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("content_type", sa.String(40), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("source_url", sa.Text(), nullable=False),
        sa.Column("fetched_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_pictures_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_pictures")),
    )


def downgrade() -> None:
    op.drop_table("user_pictures")
