from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from lunogen.skill import package


class SkillStatus(StrEnum):
    CLEAN = "clean"
    FLAGGED = "flagged"
    APPROVED = "approved"
    BLOCKED = "blocked"


class SkillIn(BaseModel):
    """A skill package as JSON. Binary files need a zip upload instead."""

    model_config = ConfigDict(extra="forbid")

    skill_md: str = Field(
        min_length=1,
        max_length=package.MAX_SKILL_MD_BYTES,
        description="The whole SKILL.md: YAML front matter between `---` lines, then Markdown.",
    )
    files: dict[str, str] = Field(
        default_factory=dict,
        max_length=package.MAX_FILES,
        description="Optional UTF-8 text files by path, under `scripts/`, `references/` or "
        "`assets/`.",
    )


class SkillApprove(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(
        default=None,
        ge=1,
        description="The version you reviewed; refused with 409 if it is no longer current.",
    )


class SkillBlock(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)
    ] = Field(description="Shown to the owner and in deploy errors' audit trail.")


class Finding(BaseModel):
    rule: str
    severity: str
    file: str
    line: int
    excerpt: str
    message: str


class SkillFileInfo(BaseModel):
    path: str
    size: int


class SkillVersionInfo(BaseModel):
    version: int
    sha256: str
    size: int = Field(description="Bytes of SKILL.md and every file, uncompressed")
    file_count: int
    findings: int = Field(description="How many findings the scanner reported for it")
    created_at: datetime


class SkillSummary(BaseModel):
    id: str
    name: str
    description: str
    status: SkillStatus
    version: int
    findings: int = Field(description="Findings of the current version")
    created_at: datetime
    updated_at: datetime


class Skill(BaseModel):
    id: str
    name: str
    description: str
    status: SkillStatus
    version: int
    front_matter: dict[str, Any]
    body: str
    files: list[SkillFileInfo]
    sha256: str
    size: int
    findings: list[Finding]
    approved_at: datetime | None
    approved_version: int | None
    blocked_at: datetime | None
    blocked_reason: str | None
    versions: list[SkillVersionInfo]
    created_at: datetime
    updated_at: datetime


class AdminSkillSummary(SkillSummary):
    owner_id: str
