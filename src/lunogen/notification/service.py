"""Notifications for things an owner must act on: in-app rows, plus an email for each.

`dedupe_key` is unique, so one change produces one notification however often it is reported.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.config import Settings
from lunogen.errors import NotFoundError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.notification.email import queue_email
from lunogen.notification.models import Notification


async def notify(
    session: AsyncSession,
    *,
    user: User,
    kind: str,
    title: str,
    body: str,
    dedupe_key: str,
    settings: Settings,
    keyring: KeyRing,
    agent_id: str | None = None,
    email: bool = True,
) -> Notification | None:
    """Record a notification (and queue its email) unless one with `dedupe_key` exists."""
    exists = await session.execute(
        select(Notification.id).where(Notification.dedupe_key == dedupe_key)
    )
    if exists.first() is not None:
        return None
    row = Notification(
        id=new_id(),
        user_id=user.id,
        kind=kind,
        title=title,
        body=body,
        agent_id=agent_id,
        dedupe_key=dedupe_key,
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:  # a concurrent writer recorded the same change first
        return None
    if email:
        queue_email(
            session,
            keyring,
            to=user.email,
            subject=f"LunoGen: {title}",
            body=f"Hello {user.name},\n\n{body}\n\n{settings.public_url}/notifications\n",
        )
    return row


async def list_notifications(
    session: AsyncSession, *, user_id: str, unread_only: bool, limit: int, offset: int
) -> tuple[list[Notification], int, int]:
    """A page of the user's notifications, newest first, with the total and the unread count."""
    query = select(Notification).where(Notification.user_id == user_id)
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    total = int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )
    unread = int(
        (
            await session.execute(
                select(func.count()).where(
                    Notification.user_id == user_id, Notification.read_at.is_(None)
                )
            )
        ).scalar_one()
    )
    rows = await session.execute(
        query.order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars()), total, unread


async def mark_read(session: AsyncSession, *, user_id: str, notification_id: str) -> Notification:
    row = await session.get(Notification, notification_id)
    if row is None or row.user_id != user_id:
        raise NotFoundError(error="Notification not found")
    row.read_at = row.read_at or utcnow()
    return row


async def mark_all_read(session: AsyncSession, *, user_id: str) -> int:
    result = await session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)
