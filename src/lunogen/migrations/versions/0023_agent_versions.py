"""agent versions: numbered configurations, the pinned one, rollback

`agent_versions` holds each agent's numbered, immutable configurations (no secrets; unique per
`(agent_id, number)`); `agents.latest_version` is the newest (the working configuration) and
`agents.deployed_version` the one the runtime serves while the agent runs. Every existing agent
gets version 1 from its current configuration, deployed unless it is a draft.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-07 16:20:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

import lunogen.db
from lunogen.kit.ids import new_id

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)
_BATCH = 500

# The versioned fields as this migration knows them (`agent.versions.VERSIONED` then).
_FIELDS = (
    "name",
    "description",
    "model",
    "fallback_models",
    "instructions",
    "tools",
    "skills",
    "max_output_tokens",
)


def upgrade() -> None:
    op.create_table(
        "agent_versions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("summary", sa.String(300), nullable=False),
        sa.Column("created_by", sa.String(36), nullable=True),
        sa.Column("created_by_key_id", sa.String(36), nullable=True),
        sa.Column("restored_from", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_agent_versions_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_agent_versions_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_versions")),
        sa.UniqueConstraint("agent_id", "number", name=op.f("uq_agent_versions_agent_id_number")),
    )
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("latest_version", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("deployed_version", sa.Integer(), nullable=True))
    _backfill()


def _backfill() -> None:
    """Version 1 of every agent: its configuration as it is now."""
    bind = op.get_bind()
    agents = sa.table(
        "agents",
        sa.column("id", sa.String()),
        sa.column("owner_id", sa.String()),
        sa.column("status", sa.String()),
        sa.column("updated_at", _WHEN),
        sa.column("latest_version", sa.Integer()),
        sa.column("deployed_version", sa.Integer()),
        sa.column("name", sa.String()),
        sa.column("description", sa.Text()),
        sa.column("model", sa.String()),
        sa.column("fallback_models", sa.JSON()),
        sa.column("instructions", sa.Text()),
        sa.column("tools", sa.JSON()),
        sa.column("skills", sa.JSON()),
        sa.column("max_output_tokens", sa.Integer()),
    )
    versions = sa.table(
        "agent_versions",
        sa.column("id", sa.String()),
        sa.column("created_at", _WHEN),
        sa.column("agent_id", sa.String()),
        sa.column("number", sa.Integer()),
        sa.column("config", sa.JSON()),
        sa.column("summary", sa.String()),
        sa.column("created_by", sa.String()),
    )
    after = ""
    while True:
        rows = bind.execute(
            sa.select(agents).where(agents.c.id > after).order_by(agents.c.id).limit(_BATCH)
        ).all()
        if not rows:
            return
        inserts: list[dict[str, Any]] = []
        for row in rows:
            config = {name: getattr(row, name) for name in _FIELDS}
            config["fallback_models"] = list(config["fallback_models"] or [])
            config["tools"] = list(config["tools"] or [])
            config["skills"] = list(config["skills"] or [])
            inserts.append(
                {
                    "id": new_id(),
                    "created_at": row.updated_at,
                    "agent_id": row.id,
                    "number": 1,
                    "config": config,
                    "summary": "The configuration when versions were introduced",
                    "created_by": row.owner_id,
                }
            )
        bind.execute(sa.insert(versions), inserts)
        ids = [row.id for row in rows]
        bind.execute(sa.update(agents).where(agents.c.id.in_(ids)).values(latest_version=1))
        bind.execute(
            sa.update(agents)
            .where(agents.c.id.in_(ids), agents.c.status != "draft")
            .values(deployed_version=1)
        )
        after = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_column("deployed_version")
        batch_op.drop_column("latest_version")
    op.drop_table("agent_versions")
