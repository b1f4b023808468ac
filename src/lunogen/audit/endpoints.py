from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select

from lunogen.audit.models import AuditEvent
from lunogen.audit.service import visible_events
from lunogen.auth.dependencies import FullAccess
from lunogen.db import DbSession
from lunogen.kit.pagination import Page, PageParams, page_params

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime
    action: str
    actor_user_id: str | None
    actor_key_id: str | None
    subject_user_id: str | None
    target_type: str | None
    target_id: str | None
    ip: str | None
    user_agent: str | None
    details: dict[str, Any]


@router.get("", response_model=Page[AuditEventOut])
async def list_audit_events(
    principal: FullAccess,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    action: Annotated[str | None, Query(max_length=60)] = None,
) -> Page[AuditEventOut]:
    """Security events on your account, newest first. Admins see every account's events."""
    query = visible_events(user_id=principal.user.id, see_all=principal.is_admin)
    if action:
        query = query.where(AuditEvent.action == action)
    total = int((await db.execute(select(func.count()).select_from(query.subquery()))).scalar_one())
    rows = await db.execute(
        query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
        .limit(page.limit)
        .offset(page.offset)
    )
    return Page(
        data=[AuditEventOut.model_validate(e) for e in rows.scalars()],
        total=total,
        **page.model_dump(),
    )
