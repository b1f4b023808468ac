"""A skill as the API shows it, to owners (`skill.endpoints`) and to admins
(`admin.skills_endpoints`)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.skill import schemas, service
from lunogen.skill.models import Skill, SkillVersion


def summary_out(skill: Skill) -> schemas.SkillSummary:
    return schemas.SkillSummary(
        id=skill.id,
        name=skill.name,
        description=skill.description,
        status=schemas.SkillStatus(skill.status),
        version=skill.version,
        findings=len(skill.findings),
        created_at=skill.created_at,
        updated_at=skill.updated_at,
    )


def admin_summary_out(skill: Skill) -> schemas.AdminSkillSummary:
    return schemas.AdminSkillSummary(owner_id=skill.owner_id, **summary_out(skill).model_dump())


def version_info(version: SkillVersion) -> schemas.SkillVersionInfo:
    return schemas.SkillVersionInfo(
        version=version.version,
        sha256=version.sha256,
        size=version.size,
        file_count=version.file_count,
        findings=len(version.findings),
        created_at=version.created_at,
    )


async def detail_out(session: AsyncSession, skill: Skill) -> schemas.Skill:
    version = await service.current_version(session, skill)
    files = await service.file_sizes(session, version_id=version.id)
    versions = await service.list_versions(session, skill_id=skill.id)
    return schemas.Skill(
        id=skill.id,
        name=skill.name,
        description=skill.description,
        status=schemas.SkillStatus(skill.status),
        version=skill.version,
        front_matter=version.front_matter,
        body=version.body,
        files=[schemas.SkillFileInfo(path=path, size=size) for path, size in files],
        sha256=version.sha256,
        size=version.size,
        findings=[schemas.Finding(**f) for f in skill.findings],
        approved_at=skill.approved_at,
        approved_version=skill.approved_version,
        blocked_at=skill.blocked_at,
        blocked_reason=skill.blocked_reason,
        versions=[version_info(v) for v in versions],
        created_at=skill.created_at,
        updated_at=skill.updated_at,
    )
