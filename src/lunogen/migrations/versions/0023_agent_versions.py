"""agent versions: numbered configurations, the pinned one, rollback

The version tables are added by the versions work.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 16:20:00
"""

from __future__ import annotations

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    return None


def downgrade() -> None:
    return None
