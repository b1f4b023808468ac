"""account hardening: starter grant claims keyed on the mailbox, not the exact address

Every account that claimed the starter grant also claims its mailbox identity (`+tag` dropped;
Gmail dots dropped, googlemail.com as gmail.com), so an alias registered after the upgrade
gets nothing either. Data only; the added rows are harmless to older code, so downgrade keeps
them.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _mailbox_identity(email: str) -> str:
    """A frozen copy of `lunogen.account.addresses.mailbox_identity` as of this revision."""
    local, _, domain = email.strip().casefold().rpartition("@")
    local = local.split("+", 1)[0]
    if domain in ("gmail.com", "googlemail.com"):
        local, domain = local.replace(".", ""), "gmail.com"
    return f"{local}@{domain}"


def upgrade() -> None:
    users = sa.table("users", sa.column("id", sa.String), sa.column("email", sa.String))
    claims = sa.table(
        "starter_grant_claims",
        sa.column("identity_hash", sa.String),
        sa.column("user_id", sa.String),
        sa.column("claimed_at", lunogen.db.UTCDateTime(timezone=True)),
    )
    bind = op.get_bind()
    known = set(bind.execute(sa.select(claims.c.identity_hash)).scalars())
    claimed = bind.execute(
        sa.select(users.c.id, users.c.email, sa.func.min(claims.c.claimed_at))
        .join(claims, claims.c.user_id == users.c.id)
        .group_by(users.c.id, users.c.email)
        .order_by(sa.func.min(claims.c.claimed_at), users.c.id)
    ).all()
    for user_id, email, claimed_at in claimed:
        identity = f"email:{_mailbox_identity(email)}"
        digest = hashlib.sha256(identity.encode()).hexdigest()
        if digest not in known:
            known.add(digest)
            bind.execute(
                claims.insert().values(identity_hash=digest, user_id=user_id, claimed_at=claimed_at)
            )


def downgrade() -> None:
    """Nothing to undo: the mailbox claims are rows older code never looks up."""
