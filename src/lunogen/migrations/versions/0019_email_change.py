"""email change: a pending change of address rides on the existing link tokens

`email_tokens.new_email`: the address a `change_email` token switches the account to once its
link is opened (NULL for every other purpose). The token row stays what it was: one use, an
expiry, only the token's hash.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 13:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("email_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("new_email", sa.String(length=320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_tokens", schema=None) as batch_op:
        batch_op.drop_column("new_email")
