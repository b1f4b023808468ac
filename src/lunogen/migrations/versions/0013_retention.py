"""retention: Stripe cancellations owed to deleted accounts; append-only tables accept a tombstone

`stripe_cancellations` holds the subscription cancellations queued by an account deletion (the
outbound-job shape: status, attempts, next attempt, last error).

`audit_events` and `credit_entries` stay append-only, with one exception: the retention purge
may replace a person's identifiers by a random tombstone id (`tomb-...`). The triggers let an
UPDATE through only when every other column is unchanged (for the ledger: every amount, the
kind, the hold, the time) and the identifier columns change to a tombstone; an audit row may
then also lose its IP address and user agent and have the ids in its details replaced. DELETE
is refused as before.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)
_TOMB = "'tomb-%'"


def _same(dialect: str, column: str) -> str:
    if dialect == "postgresql":
        cast = "::text" if column == "details" else ""
        return f"NEW.{column}{cast} IS NOT DISTINCT FROM OLD.{column}{cast}"
    return f"NEW.{column} IS OLD.{column}"


def _audit_condition(dialect: str) -> str:
    fixed = ["id", "created_at", "action", "target_type", "actor_key_id"]
    tombstoned = " OR ".join(
        f"NEW.{c} LIKE {_TOMB}" for c in ("actor_user_id", "subject_user_id", "target_id")
    )
    parts = [_same(dialect, c) for c in fixed]
    for column in ("actor_user_id", "subject_user_id", "target_id"):
        parts.append(f"({_same(dialect, column)} OR NEW.{column} LIKE {_TOMB})")
    for column in ("ip", "user_agent"):
        parts.append(f"({_same(dialect, column)} OR NEW.{column} IS NULL)")
    scrubbed = " AND ".join(_same(dialect, c) for c in ("ip", "user_agent", "details"))
    parts.append(f"(({scrubbed}) OR {tombstoned})")
    return " AND ".join(parts)


def _entries_condition(dialect: str) -> str:
    fixed = [
        "id",
        "kind",
        "amount",
        "held_delta",
        "balance_after",
        "held_after",
        "hold_id",
        "created_at",
    ]
    parts = [_same(dialect, c) for c in fixed]
    parts.append(f"NEW.account_id LIKE {_TOMB} AND OLD.account_id NOT LIKE {_TOMB}")
    return " AND ".join(parts)


def _install(table: str, condition: str | None) -> None:
    """The append-only trigger of `table`; `condition`: the UPDATE it lets through (None:
    none, as before this revision)."""
    dialect = op.get_bind().dialect.name
    message = f"'{table} is append-only'"
    if dialect == "postgresql":
        allow = ""
        if condition:
            allow = f"IF TG_OP = 'UPDATE' AND {condition} THEN RETURN NEW; END IF; "
        op.execute(
            f"CREATE OR REPLACE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql "
            f"AS $$ BEGIN {allow}RAISE EXCEPTION {message}; END $$"
        )
        return
    op.execute(f"DROP TRIGGER IF EXISTS {table}_no_update")
    # A NULL column can make the condition NULL: only a condition that is true lets it through.
    when = f"WHEN NOT coalesce(({condition}), 0) " if condition else ""
    op.execute(
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} {when}"
        f"BEGIN SELECT RAISE(ABORT, {message}); END"
    )


def upgrade() -> None:
    op.create_table(
        "stripe_cancellations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("account_id", sa.String(36), nullable=False),
        sa.Column("subscription_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _WHEN, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(100), nullable=False),
        sa.Column("completed_at", _WHEN, nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_cancellations")),
    )
    op.create_index(
        op.f("ix_stripe_cancellations_account_id"), "stripe_cancellations", ["account_id"]
    )
    op.create_index(
        "ix_stripe_cancellations_status", "stripe_cancellations", ["status", "next_attempt_at"]
    )
    dialect = op.get_bind().dialect.name
    _install("audit_events", _audit_condition(dialect))
    _install("credit_entries", _entries_condition(dialect))


def downgrade() -> None:
    _install("credit_entries", None)
    _install("audit_events", None)
    op.drop_index("ix_stripe_cancellations_status", table_name="stripe_cancellations")
    op.drop_index(op.f("ix_stripe_cancellations_account_id"), table_name="stripe_cancellations")
    op.drop_table("stripe_cancellations")
