"""schedules: cron, one-off and interval runs of an agent, and their history

The schedule tables are added by the schedules work.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 16:20:00
"""

from __future__ import annotations

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    return None


def downgrade() -> None:
    return None
