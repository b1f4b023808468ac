"""spend caps: per-agent and per-account caps, and a per-message cap for a turn

`messages.turn_cap_micro`: the most the turn answering the message may spend (micro-credits);
a schedule's run sets it from its per-run cap.
`spend_caps`: an agent's daily, monthly and per-turn caps and its over-cap reply, or an
account's monthly cap over all its agents. `spend_counters`: credits settled per subject and UTC
period, with the 80 % and 100 % notices sent. `capped_holds`: the holds placed under a cap, so
calls in flight count against it. Rows go with their person or agent (ON DELETE CASCADE).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07 16:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete="CASCADE"
    )


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("turn_cap_micro", sa.BigInteger(), nullable=True))
    op.create_table(
        "spend_caps",
        sa.Column("subject", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=True),
        sa.Column("daily_micro", sa.BigInteger(), nullable=True),
        sa.Column("monthly_micro", sa.BigInteger(), nullable=True),
        sa.Column("turn_micro", sa.BigInteger(), nullable=True),
        sa.Column("turn_tokens", sa.Integer(), nullable=True),
        sa.Column("reply_text", sa.String(1000), nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
        _fk("spend_caps", "owner_id", "users"),
        _fk("spend_caps", "agent_id", "agents"),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_spend_caps")),
    )
    op.create_index(op.f("ix_spend_caps_owner_id"), "spend_caps", ["owner_id"])
    op.create_table(
        "spend_counters",
        sa.Column("subject", sa.String(36), nullable=False),
        sa.Column("period", sa.String(10), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("warned", sa.Boolean(), nullable=False),
        sa.Column("reached", sa.Boolean(), nullable=False),
        sa.Column("updated_at", _WHEN, nullable=False),
        _fk("spend_counters", "owner_id", "users"),
        sa.PrimaryKeyConstraint("subject", "period", name=op.f("pk_spend_counters")),
    )
    op.create_index(op.f("ix_spend_counters_owner_id"), "spend_counters", ["owner_id"])
    op.create_table(
        "capped_holds",
        sa.Column("hold_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        _fk("capped_holds", "hold_id", "credit_holds"),
        _fk("capped_holds", "owner_id", "users"),
        _fk("capped_holds", "agent_id", "agents"),
        sa.PrimaryKeyConstraint("hold_id", name=op.f("pk_capped_holds")),
    )
    op.create_index("ix_capped_holds_agent_id_day", "capped_holds", ["agent_id", "day"])
    op.create_index("ix_capped_holds_agent_id_month", "capped_holds", ["agent_id", "month"])
    op.create_index("ix_capped_holds_owner_id_month", "capped_holds", ["owner_id", "month"])


def downgrade() -> None:
    for table in ("capped_holds", "spend_counters", "spend_caps"):
        op.drop_table(table)
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("turn_cap_micro")
