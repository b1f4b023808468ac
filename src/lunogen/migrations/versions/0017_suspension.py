"""suspension: an admin can suspend an account or one agent, with the reason shown to its owner

`users.suspended_at` / `suspended_reason`: while set, every session and API key of the account
is refused (403 naming the reason). `agents.suspended_at` / `suspended_reason`: while set, the
agent is `suspended` and its owner cannot deploy or start it. Both are cleared on reinstatement.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 11:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    for table in ("users", "agents"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("suspended_at", _WHEN, nullable=True))
            batch_op.add_column(sa.Column("suspended_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    for table in ("agents", "users"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("suspended_reason")
            batch_op.drop_column("suspended_at")
