"""proactive schedules: a schedule may answer a chosen contact on one of the agent's channels

`schedules.channel_id` (no foreign key: a channel removed later makes the run skip with a
reason, not the schedule vanish) and `schedules.contact` name where a run's message goes;
`messages.source` marks a message that is not the contact's own words (`schedule`: an owner's
scheduled task written into a contact's thread), so the turn labels it.

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-07 17:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0025"
down_revision = "0024"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("channel_id", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("contact", sa.String(length=255), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("source", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("source")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("contact")
        batch.drop_column("channel_id")
