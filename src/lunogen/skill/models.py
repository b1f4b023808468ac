from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow


class Skill(IdMixin, CreatedMixin, Base):
    """A skill of one owner. `version`, `findings` and `status` describe its current version.

    status: `clean` (no findings), `flagged` (findings, not approved), `approved` (the owner
    approved the findings of `approved_version`, which is the current one), `blocked` (by an
    admin; stays blocked across updates until unblocked).
    """

    __tablename__ = "skills"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        Index("ix_skills_owner_id_created_at", "owner_id", "created_at"),
    )

    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    version: Mapped[int] = mapped_column(Integer)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    approved_at: Mapped[datetime | None]
    approved_version: Mapped[int | None]
    approved_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    blocked_at: Mapped[datetime | None]
    blocked_reason: Mapped[str | None] = mapped_column(Text)
    blocked_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    versions: Mapped[list[SkillVersion]] = relationship(
        back_populates="skill",
        order_by="SkillVersion.version",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
    )


class SkillVersion(IdMixin, CreatedMixin, Base):
    """One immutable version of a skill: written once, never updated."""

    __tablename__ = "skill_versions"
    __table_args__ = (UniqueConstraint("skill_id", "version"),)

    skill_id: Mapped[str] = mapped_column(ForeignKey("skills.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    front_matter: Mapped[dict[str, Any]] = mapped_column(default=dict)
    body: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    file_count: Mapped[int] = mapped_column(Integer)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    skill: Mapped[Skill] = relationship(back_populates="versions", lazy="raise")
    files: Mapped[list[SkillFile]] = relationship(
        order_by="SkillFile.path",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",
    )


class SkillFile(Base):
    """A file of a skill version, by its package path (`scripts/…`, `references/…`, `assets/…`)."""

    __tablename__ = "skill_files"

    version_id: Mapped[str] = mapped_column(
        ForeignKey("skill_versions.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(String(255), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
