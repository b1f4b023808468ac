"""email delivery: outbound emails get a retry schedule the sweeper follows

`next_attempt_at` is when a queued email is due. Emails left `queued` by older code (a send
that failed, or a job lost in transport) become due at once, so the sweeper sends them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbound_emails") as batch:
        batch.add_column(
            sa.Column("next_attempt_at", lunogen.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch.create_index(
            "ix_outbound_emails_status_next_attempt_at", ["status", "next_attempt_at"]
        )
    emails = sa.table(
        "outbound_emails",
        sa.column("status", sa.String()),
        sa.column("created_at", lunogen.db.UTCDateTime(timezone=True)),
        sa.column("next_attempt_at", lunogen.db.UTCDateTime(timezone=True)),
    )
    op.execute(
        emails.update()
        .where(emails.c.status == "queued")
        .values(next_attempt_at=emails.c.created_at)
    )


def downgrade() -> None:
    with op.batch_alter_table("outbound_emails") as batch:
        batch.drop_index("ix_outbound_emails_status_next_attempt_at")
        batch.drop_column("next_attempt_at")
