"""the channel contract: provider registrations, receipts, contacts, pairing codes

Deliveries resume split replies (`parts_sent`) and keep one receipt per provider message;
channels remember their provider registration; contacts carry the access policy's state
(paired, refused once, blocked); pairing codes are stored hashed; unregistrations are jobs.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_WHEN = lunogen.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_index("ix_agents_status_status_changed_at", "agents", ["status", "status_changed_at"])
    _give_old_channels_a_policy()
    op.create_index(
        "ix_deliveries_channel_id_created_at", "deliveries", ["channel_id", "created_at"]
    )
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("parts_sent", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("agent_channels") as batch:
        batch.add_column(sa.Column("registered_at", _WHEN, nullable=True))
        batch.add_column(sa.Column("registration", sa.JSON(), nullable=True))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("external_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("sent_at", _WHEN, nullable=True))

    op.create_table(
        "delivery_receipts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("delivery_id", sa.String(36), nullable=False),
        sa.Column("channel_id", sa.String(36), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("status_at", _WHEN, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_receipts_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_receipts")),
        sa.UniqueConstraint(
            "delivery_id", "part", name=op.f("uq_delivery_receipts_delivery_id_part")
        ),
    )
    op.create_index(
        "ix_delivery_receipts_channel_id_external_id",
        "delivery_receipts",
        ["channel_id", "external_id"],
    )

    op.create_table(
        "early_statuses",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("channel_id", sa.String(36), nullable=False),
        sa.Column("external_id", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("at", _WHEN, nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("window_closed", sa.Boolean(), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_early_statuses")),
    )
    op.create_index(
        "ix_early_statuses_channel_id_external_id", "early_statuses", ["channel_id", "external_id"]
    )

    op.create_table(
        "channel_contacts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("channel_id", sa.String(36), nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("contact", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("last_inbound_at", _WHEN, nullable=True),
        sa.Column("paired_at", _WHEN, nullable=True),
        sa.Column("refused_at", _WHEN, nullable=True),
        sa.Column("blocked_at", _WHEN, nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["agent_channels.id"],
            name=op.f("fk_channel_contacts_channel_id_agent_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_contacts")),
        sa.UniqueConstraint(
            "channel_id", "contact", name=op.f("uq_channel_contacts_channel_id_contact")
        ),
    )
    op.create_index(op.f("ix_channel_contacts_agent_id"), "channel_contacts", ["agent_id"])

    op.create_table(
        "pairing_codes",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("channel_id", sa.String(36), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", _WHEN, nullable=False),
        sa.Column("used_at", _WHEN, nullable=True),
        sa.Column("used_by", sa.String(255), nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["agent_channels.id"],
            name=op.f("fk_pairing_codes_channel_id_agent_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairing_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_pairing_codes_code_hash")),
    )
    op.create_index(op.f("ix_pairing_codes_channel_id"), "pairing_codes", ["channel_id"])

    op.create_table(
        "channel_unregistrations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("channel_id", sa.String(36), nullable=False),
        sa.Column("agent_id", sa.String(36), nullable=False),
        sa.Column("agent_name", sa.String(100), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("secrets", sa.Text(), nullable=True),
        sa.Column("registration", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _WHEN, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("completed_at", _WHEN, nullable=True),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channel_unregistrations")),
    )
    op.create_index(
        op.f("ix_channel_unregistrations_channel_id"), "channel_unregistrations", ["channel_id"]
    )
    op.create_index(
        "ix_channel_unregistrations_status",
        "channel_unregistrations",
        ["status", "next_attempt_at"],
    )


def _give_old_channels_a_policy() -> None:
    """Telegram and WhatsApp channels saved before access policies get the defaults a new one
    gets: Telegram `pairing` (a bot anyone can find), WhatsApp `open` (a business number)."""
    channels = sa.table(
        "agent_channels",
        sa.column("id", sa.String),
        sa.column("type", sa.String),
        sa.column("config", sa.JSON),
    )
    defaults = {"telegram": "pairing", "whatsapp": "open"}
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(channels.c.id, channels.c.type, channels.c.config).where(
            channels.c.type.in_(list(defaults))
        )
    ).all()
    for row in rows:
        config = dict(row.config or {})
        if "access" in config:
            continue
        config["access"] = {"policy": defaults[row.type], "allowlist": []}
        bind.execute(channels.update().where(channels.c.id == row.id).values(config=config))


def downgrade() -> None:
    op.drop_index("ix_agents_status_status_changed_at", table_name="agents")
    op.drop_table("channel_unregistrations")
    op.drop_table("pairing_codes")
    op.drop_table("channel_contacts")
    op.drop_table("early_statuses")
    op.drop_table("delivery_receipts")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("sent_at")
        batch.drop_column("external_id")
    with op.batch_alter_table("agent_channels") as batch:
        batch.drop_column("registration")
        batch.drop_column("registered_at")
    op.drop_index("ix_deliveries_channel_id_created_at", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("parts_sent")
