"""skills

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 05:55:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import lunogen.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "skills",
        sa.Column("owner_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("approved_at", lunogen.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("approved_version", sa.Integer(), nullable=True),
        sa.Column("approved_by", sa.String(length=36), nullable=True),
        sa.Column("blocked_at", lunogen.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("blocked_reason", sa.Text(), nullable=True),
        sa.Column("blocked_by", sa.String(length=36), nullable=True),
        sa.Column("updated_at", lunogen.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", lunogen.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["approved_by"],
            ["users.id"],
            name=op.f("fk_skills_approved_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["blocked_by"],
            ["users.id"],
            name=op.f("fk_skills_blocked_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_skills_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skills")),
        sa.UniqueConstraint("owner_id", "name", name=op.f("uq_skills_owner_id_name")),
    )
    op.create_index(op.f("ix_skills_approved_by"), "skills", ["approved_by"], unique=False)
    op.create_index(op.f("ix_skills_blocked_by"), "skills", ["blocked_by"], unique=False)
    op.create_index(
        "ix_skills_owner_id_created_at", "skills", ["owner_id", "created_at"], unique=False
    )

    op.create_table(
        "skill_versions",
        sa.Column("skill_id", sa.String(length=36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("front_matter", sa.JSON(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("file_count", sa.Integer(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", lunogen.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_skill_versions_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["skill_id"],
            ["skills.id"],
            name=op.f("fk_skill_versions_skill_id_skills"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skill_versions")),
        sa.UniqueConstraint("skill_id", "version", name=op.f("uq_skill_versions_skill_id_version")),
    )
    op.create_table(
        "skill_files",
        sa.Column("version_id", sa.String(length=36), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["skill_versions.id"],
            name=op.f("fk_skill_files_version_id_skill_versions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("version_id", "path", name=op.f("pk_skill_files")),
    )


def downgrade() -> None:
    op.drop_table("skill_files")
    op.drop_table("skill_versions")
    op.drop_index("ix_skills_owner_id_created_at", table_name="skills")
    op.drop_index(op.f("ix_skills_blocked_by"), table_name="skills")
    op.drop_index(op.f("ix_skills_approved_by"), table_name="skills")
    op.drop_table("skills")
