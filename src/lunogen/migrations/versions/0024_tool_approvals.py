"""tool approvals and human takeover

`tool_approvals`: one row per gated tool call of a turn (unique per message and call id), its
decision, and the output of its one run. `agents.approval_tools`: per tool, whether its calls
need approval (NULL or absent: the tool's default); `agents.approval_wait_minutes`: how long
a request waits before it counts as denied (NULL: the default). `threads.taken_over_until` /
`taken_over_by`: a person answers the thread's contact instead of the agent until then.

Revision ID: 0024
Revises: 0023
Create Date: 2026-12-07 16:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tool_approvals",
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("thread_id", sa.String(length=36), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("tool_call_id", sa.String(length=200), nullable=False),
        sa.Column("tool_name", sa.String(length=200), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("decided_at", _WHEN, nullable=True),
        sa.Column("decided_by", sa.String(length=36), nullable=True),
        sa.Column("executed_at", _WHEN, nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_tool_approvals_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_tool_approvals_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_approvals")),
        sa.UniqueConstraint(
            "message_id", "tool_call_id", name=op.f("uq_tool_approvals_message_id_tool_call_id")
        ),
    )
    op.create_index(
        "ix_tool_approvals_agent_id_status", "tool_approvals", ["agent_id", "status"], unique=False
    )
    op.create_index(
        op.f("ix_tool_approvals_owner_id"), "tool_approvals", ["owner_id"], unique=False
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("approval_tools", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("approval_wait_minutes", sa.Integer(), nullable=True))
    with op.batch_alter_table("threads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("taken_over_until", _WHEN, nullable=True))
        batch_op.add_column(sa.Column("taken_over_by", sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("threads", schema=None) as batch_op:
        batch_op.drop_column("taken_over_by")
        batch_op.drop_column("taken_over_until")
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("approval_wait_minutes")
        batch_op.drop_column("approval_tools")
    op.drop_index(op.f("ix_tool_approvals_owner_id"), table_name="tool_approvals")
    op.drop_index("ix_tool_approvals_agent_id_status", table_name="tool_approvals")
    op.drop_table("tool_approvals")
