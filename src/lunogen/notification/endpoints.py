from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict

from lunogen.auth.dependencies import FullAccess
from lunogen.db import DbSession
from lunogen.kit.pagination import PageParams, page_params
from lunogen.notification import service

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    title: str
    body: str
    agent_id: str | None
    created_at: datetime
    read_at: datetime | None


class NotificationPage(BaseModel):
    data: list[NotificationOut]
    total: int
    unread: int
    limit: int
    offset: int


class MarkedRead(BaseModel):
    marked: int


@router.get("", response_model=NotificationPage)
async def list_notifications(
    principal: FullAccess,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    unread: Annotated[bool, Query(description="Only unread notifications")] = False,
) -> NotificationPage:
    """Your notifications (agent failures, pauses, suspensions), newest first."""
    rows, total, unread_count = await service.list_notifications(
        db, user_id=principal.user.id, unread_only=unread, limit=page.limit, offset=page.offset
    )
    return NotificationPage(
        data=[NotificationOut.model_validate(r) for r in rows],
        total=total,
        unread=unread_count,
        **page.model_dump(),
    )


@router.post("/{notification_id}/read", response_model=NotificationOut)
async def mark_notification_read(
    notification_id: str, principal: FullAccess, db: DbSession
) -> NotificationOut:
    """Mark one notification as read."""
    row = await service.mark_read(db, user_id=principal.user.id, notification_id=notification_id)
    return NotificationOut.model_validate(row)


@router.post("/read-all", response_model=MarkedRead)
async def mark_all_notifications_read(principal: FullAccess, db: DbSession) -> MarkedRead:
    """Mark every notification as read."""
    return MarkedRead(marked=await service.mark_all_read(db, user_id=principal.user.id))
