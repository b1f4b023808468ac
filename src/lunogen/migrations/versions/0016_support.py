"""support: tickets with threads, content grants, privacy requests

`tickets` and `ticket_messages` hold support conversations (message bodies encrypted);
`content_grants` record an owner's time-limited permission for support staff to read their
agents' conversations; `privacy_requests` hold objections, questions and correction requests
(body and response encrypted). Every row of a person goes with their account (ON DELETE
CASCADE); a staff member's id is cleared if their account goes.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 12:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)


def _user_fk(table: str, column: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["users.id"], name=op.f(f"fk_{table}_{column}_users"), ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "tickets",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("assignee_id", sa.String(36), nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
        _user_fk("tickets", "user_id", "CASCADE"),
        _user_fk("tickets", "assignee_id", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tickets")),
    )
    op.create_index("ix_tickets_user_id_updated_at", "tickets", ["user_id", "updated_at"])
    op.create_index("ix_tickets_status_updated_at", "tickets", ["status", "updated_at"])
    op.create_index(op.f("ix_tickets_assignee_id"), "tickets", ["assignee_id"])

    op.create_table(
        "ticket_messages",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("author_id", sa.String(36), nullable=True),
        sa.Column("author_role", sa.String(10), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_ticket_messages_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        _user_fk("ticket_messages", "author_id", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_messages")),
    )
    op.create_index(
        "ix_ticket_messages_ticket_id_created_at", "ticket_messages", ["ticket_id", "created_at"]
    )

    op.create_table(
        "content_grants",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("ticket_id", sa.String(36), nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("granted_at", _WHEN, nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("revoked_at", _WHEN, nullable=True),
        sa.ForeignKeyConstraint(
            ["ticket_id"],
            ["tickets.id"],
            name=op.f("fk_content_grants_ticket_id_tickets"),
            ondelete="CASCADE",
        ),
        _user_fk("content_grants", "user_id", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_content_grants")),
    )
    op.create_index(op.f("ix_content_grants_ticket_id"), "content_grants", ["ticket_id"])
    op.create_index(
        "ix_content_grants_user_id_expires_at", "content_grants", ["user_id", "expires_at"]
    )

    op.create_table(
        "privacy_requests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("handled_by", sa.String(36), nullable=True),
        sa.Column("updated_at", _WHEN, nullable=False),
        _user_fk("privacy_requests", "user_id", "CASCADE"),
        _user_fk("privacy_requests", "handled_by", "SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_requests")),
    )
    op.create_index(
        "ix_privacy_requests_user_id_created_at", "privacy_requests", ["user_id", "created_at"]
    )
    op.create_index(
        "ix_privacy_requests_status_created_at", "privacy_requests", ["status", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("privacy_requests")
    op.drop_table("content_grants")
    op.drop_table("ticket_messages")
    op.drop_table("tickets")
