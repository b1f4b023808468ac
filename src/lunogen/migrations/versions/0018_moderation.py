"""moderation: acceptable-use rules, flags with their evidence, classifier checks, suspensions

`moderation_rules` are the installation's blocked terms and patterns (admins manage them).
`moderation_flags` record each message a rule or the classifier flagged, with the flagged text
encrypted (`evidence`) and the review (open, dismissed, upheld). `moderation_checks` are the
classifier's durable queue (one row per message sent to `LUNOGEN_MODERATION_URL`).
`moderation_suspensions` record the agents the flag threshold suspended and the appeal ticket.
Rows of an agent or a person go with them (ON DELETE CASCADE); staff ids are cleared.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "moderation_rules",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("value", sa.String(200), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("note", sa.String(200), nullable=False),
        sa.Column("created_by", sa.String(36), nullable=True),
        _fk("moderation_rules", "created_by", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_rules")),
    )
    op.create_table(
        "moderation_flags",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("rule", sa.String(36), nullable=True),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("scores", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("reviewer_id", sa.String(36), nullable=True),
        sa.Column("reviewed_at", _WHEN, nullable=True),
        sa.Column("review_note", sa.String(500), nullable=True),
        _fk("moderation_flags", "agent_id", "agents", "CASCADE"),
        _fk("moderation_flags", "owner_id", "users", "CASCADE"),
        _fk("moderation_flags", "message_id", "messages", "CASCADE"),
        _fk("moderation_flags", "reviewer_id", "users", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_flags")),
    )
    op.create_index(
        "ix_moderation_flags_status_created_at", "moderation_flags", ["status", "created_at"]
    )
    op.create_index(
        "ix_moderation_flags_agent_id_created_at", "moderation_flags", ["agent_id", "created_at"]
    )
    op.create_index(op.f("ix_moderation_flags_owner_id"), "moderation_flags", ["owner_id"])
    op.create_index(op.f("ix_moderation_flags_message_id"), "moderation_flags", ["message_id"])

    op.create_table(
        "moderation_checks",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("message_id", sa.String(36), nullable=False),
        sa.Column("direction", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _WHEN, nullable=True),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.Column("checked_at", _WHEN, nullable=True),
        _fk("moderation_checks", "agent_id", "agents", "CASCADE"),
        _fk("moderation_checks", "owner_id", "users", "CASCADE"),
        _fk("moderation_checks", "message_id", "messages", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_checks")),
    )
    op.create_index(
        "ix_moderation_checks_status_next_attempt_at",
        "moderation_checks",
        ["status", "next_attempt_at"],
    )
    op.create_index(op.f("ix_moderation_checks_agent_id"), "moderation_checks", ["agent_id"])
    op.create_index(op.f("ix_moderation_checks_owner_id"), "moderation_checks", ["owner_id"])

    op.create_table(
        "moderation_suspensions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("owner_id", sa.String(36), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("flags", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=True),
        sa.Column("appealed_at", _WHEN, nullable=True),
        _fk("moderation_suspensions", "agent_id", "agents", "CASCADE"),
        _fk("moderation_suspensions", "owner_id", "users", "CASCADE"),
        _fk("moderation_suspensions", "ticket_id", "tickets", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_moderation_suspensions")),
    )
    op.create_index(
        op.f("ix_moderation_suspensions_agent_id"), "moderation_suspensions", ["agent_id"]
    )
    op.create_index(
        op.f("ix_moderation_suspensions_owner_id"), "moderation_suspensions", ["owner_id"]
    )


def downgrade() -> None:
    for table in (
        "moderation_suspensions",
        "moderation_checks",
        "moderation_flags",
        "moderation_rules",
    ):
        op.drop_table(table)
