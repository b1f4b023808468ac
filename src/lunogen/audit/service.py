from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.audit.models import AuditEvent
from lunogen.kit.web import ClientInfo

_SECRET_WORDS = ("password", "secret", "token", "key_hash", "api_key", "authorization")


def _scrub(details: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in details.items():
        if any(word in key.lower() for word in _SECRET_WORDS):
            continue
        clean[key] = _scrub(value) if isinstance(value, dict) else value
    return clean


def record(
    session: AsyncSession,
    *,
    action: str,
    actor_user_id: str | None,
    client: ClientInfo | None = None,
    actor_key_id: str | None = None,
    subject_user_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Add an audit row to the caller's transaction: it commits or rolls back with the action."""
    event = AuditEvent(
        action=action,
        actor_user_id=actor_user_id,
        actor_key_id=actor_key_id,
        subject_user_id=subject_user_id or actor_user_id,
        target_type=target_type,
        target_id=target_id,
        ip=client.ip if client else None,
        user_agent=client.user_agent if client else None,
        details=_scrub(details or {}),
    )
    session.add(event)
    return event


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


class Actor(Protocol):
    """Who acts, as the audit log records it (`auth.principal.Principal` is one)."""

    @property
    def user(self) -> _HasId: ...

    @property
    def key_id(self) -> str | None: ...

    @property
    def client(self) -> ClientInfo: ...


def record_by(
    session: AsyncSession,
    actor: Actor,
    *,
    action: str,
    target_type: str,
    target_id: str,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """`record` of an action `actor` took on a target of theirs."""
    return record(
        session,
        action=action,
        actor_user_id=actor.user.id,
        actor_key_id=actor.key_id,
        client=actor.client,
        target_type=target_type,
        target_id=target_id,
        details=details,
    )


def visible_events(*, user_id: str, see_all: bool) -> Select[AuditEvent]:
    """What a caller may read: their own events, or every event for admins."""
    query = select(AuditEvent)
    if not see_all:
        query = query.where(
            (AuditEvent.actor_user_id == user_id) | (AuditEvent.subject_user_id == user_id)
        )
    return query


async def list_events(
    session: AsyncSession,
    *,
    user_id: str,
    see_all: bool,
    action: str | None,
    limit: int,
    offset: int,
) -> tuple[list[AuditEvent], int]:
    """A page of the events `user_id` may read (see `visible_events`), newest first, and the
    total."""
    query = visible_events(user_id=user_id, see_all=see_all)
    if action:
        query = query.where(AuditEvent.action == action)
    total = int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )
    rows = await session.execute(
        query.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars()), total
