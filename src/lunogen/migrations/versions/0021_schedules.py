"""schedules: cron, one-off and interval runs of an agent, and their history

`schedules` hold each schedule's rule, prompt, caps (micro-credits) and `next_run_at` (NULL
while off or finished; indexed: the scheduler sleeps until its MIN). `schedule_runs` record
every firing, unique on `(schedule_id, planned_at)` so a firing is written once; a started run
names its inbound message. Rows of an agent or a person go with them (ON DELETE CASCADE).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("cron", sa.String(120), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("run_at", _WHEN, nullable=True),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("next_run_at", _WHEN, nullable=True),
        sa.Column("run_cap_micro", sa.BigInteger(), nullable=True),
        sa.Column("day_cap_micro", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
        _fk("schedules", "agent_id", "agents"),
        _fk("schedules", "owner_id", "users"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    op.create_index("ix_schedules_agent_id_created_at", "schedules", ["agent_id", "created_at"])
    op.create_index(op.f("ix_schedules_owner_id"), "schedules", ["owner_id"])
    op.create_index(op.f("ix_schedules_next_run_at"), "schedules", ["next_run_at"])
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("schedule_id", sa.String(36), nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("planned_at", _WHEN, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(40), nullable=True),
        sa.Column("detail", sa.String(300), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=True),
        sa.Column("cap_micro", sa.BigInteger(), nullable=True),
        sa.Column("catch_up", sa.Boolean(), nullable=False, server_default=sa.false()),
        _fk("schedule_runs", "schedule_id", "schedules"),
        _fk("schedule_runs", "agent_id", "agents"),
        _fk("schedule_runs", "owner_id", "users"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_runs")),
        sa.UniqueConstraint(
            "schedule_id", "planned_at", name=op.f("uq_schedule_runs_schedule_id_planned_at")
        ),
    )
    op.create_index(
        "ix_schedule_runs_schedule_id_created_at",
        "schedule_runs",
        ["schedule_id", "created_at"],
    )
    op.create_index(op.f("ix_schedule_runs_agent_id"), "schedule_runs", ["agent_id"])
    op.create_index(op.f("ix_schedule_runs_owner_id"), "schedule_runs", ["owner_id"])
    op.create_index(op.f("ix_schedule_runs_message_id"), "schedule_runs", ["message_id"])


def downgrade() -> None:
    op.drop_table("schedule_runs")
    op.drop_table("schedules")
