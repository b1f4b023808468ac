"""spend caps: per-agent and per-account caps, and a per-message cap for a turn

`messages.turn_cap_micro`: the most the turn answering the message may spend (micro-credits);
a schedule's run sets it from its per-run cap.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("turn_cap_micro", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("turn_cap_micro")
