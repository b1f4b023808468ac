"""Admin API: every owner's skills, for review, and blocking them.

Admin only (anyone else: 403). Blocks and unblocks are audited with the reason; every read of
other owners' skills is audited as `admin.viewed`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from lunogen.admin.suspension import record_view
from lunogen.auth.dependencies import Admin
from lunogen.db import DbSession
from lunogen.errors import error_responses
from lunogen.kit.pagination import Page, PageParams, page_params
from lunogen.skill import schemas, service
from lunogen.skill.endpoints import NOT_FOUND, StatusFilter
from lunogen.skill.views import admin_summary_out, detail_out

router = APIRouter(prefix="/api/v1/admin/skills", tags=["admin"])


@router.get("", response_model=Page[schemas.AdminSkillSummary])
async def admin_list_skills(
    principal: Admin,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    status: StatusFilter = None,
) -> Page[schemas.AdminSkillSummary]:
    """Every owner's skills, newest first, for review. Admin only; the read is audited
    (`admin.viewed`)."""
    skills, total = await service.list_skills(
        db, owner_id=None, status=status, limit=page.limit, offset=page.offset
    )
    record_view(
        db,
        actor=principal.user,
        client=principal.client,
        actor_key_id=principal.key_id,
        target_type="skills",
        target_id=None,
        subject_user_id=None,
        details={
            "status": status.value if status else None,
            "offset": page.offset,
            "shown": len(skills),
        },
    )
    return Page(data=[admin_summary_out(s) for s in skills], total=total, **page.model_dump())


@router.get("/{skill_id}", response_model=schemas.Skill, responses=NOT_FOUND)
async def admin_get_skill(skill_id: str, principal: Admin, db: DbSession) -> schemas.Skill:
    """Any owner's skill with its body, files and findings, for review. Admin only; the read
    of another owner's skill is audited (`admin.viewed`, with the owner as its subject)."""
    skill = await service.get_any_skill(db, skill_id=skill_id)
    if skill.owner_id != principal.user.id:
        record_view(
            db,
            actor=principal.user,
            client=principal.client,
            actor_key_id=principal.key_id,
            target_type="skill",
            target_id=skill.id,
            subject_user_id=skill.owner_id,
            details={"name": skill.name},
        )
    return await detail_out(db, skill)


@router.post(
    "/{skill_id}/block",
    response_model=schemas.Skill,
    responses={**NOT_FOUND, **error_responses(409)},
)
async def block_skill(
    skill_id: str, data: schemas.SkillBlock, principal: Admin, db: DbSession
) -> schemas.Skill:
    """Block a skill: no agent can deploy with it or load it, whatever its owner does, until
    it is unblocked. Audited with the reason. Admin only."""
    skill = await service.block_skill(db, admin=principal, skill_id=skill_id, reason=data.reason)
    return await detail_out(db, skill)


@router.post(
    "/{skill_id}/unblock",
    response_model=schemas.Skill,
    responses={**NOT_FOUND, **error_responses(409)},
)
async def unblock_skill(skill_id: str, principal: Admin, db: DbSession) -> schemas.Skill:
    """Lift a block: the skill is `clean`, `approved` or `flagged` again as its current version's
    scan and approval say. Audited. Admin only."""
    skill = await service.unblock_skill(db, admin=principal, skill_id=skill_id)
    return await detail_out(db, skill)
