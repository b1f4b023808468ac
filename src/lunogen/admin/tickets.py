"""Support tickets: a person opens one, support staff answer it in its thread, assign it and
change its status; the person is told (in the app and by email) of every reply and status change.

Tenancy: a person reaches only their own tickets (`get_own_ticket`, another's id is 404); the
staff functions take a ticket found by `get_any_ticket` and are called only behind the
support-or-admin check of the console. A ticket is also where its owner grants staff read access
to their conversations for a few hours (`grant_access`, `revoke_access`, `live_grant`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.admin.letters import tell
from lunogen.admin.models import ContentGrant, Ticket, TicketMessage
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.errors import ConflictError, NotFoundError, ValidationFailedError
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow

TicketStatus = Literal["open", "waiting", "closed"]
STATUSES: tuple[TicketStatus, ...] = ("open", "waiting", "closed")
STAFF_ROLES = frozenset({"support", "admin"})
MAX_GRANT_HOURS = 72
STATUS_WORDS = {
    "open": "open (support's turn to answer)",
    "waiting": "waiting for your answer",
    "closed": "closed",
}


def is_staff(user: User) -> bool:
    return user.role in STAFF_ROLES


def _ticket_not_found() -> NotFoundError:
    return NotFoundError(error="Ticket not found")


def _path(ticket: Ticket) -> str:
    return f"/help/tickets/{ticket.id}"


def _touch(ticket: Ticket, now: datetime | None = None) -> None:
    ticket.updated_at = now or utcnow()


def _message(
    session: AsyncSession, effects: Effects, ticket: Ticket, author: User, role: str, body: str
) -> TicketMessage:
    message = TicketMessage(
        ticket_id=ticket.id,
        author_id=author.id,
        author_role=role,
        body=effects.keyring.encrypt(body),
    )
    session.add(message)
    return message


# The person's side ------------------------------------------------------------------------------


async def open_ticket(
    session: AsyncSession, effects: Effects, *, principal: Principal, subject: str, body: str
) -> Ticket:
    """A new open ticket with its first message."""
    ticket = Ticket(user_id=principal.user.id, subject=subject, status="open")
    session.add(ticket)
    await session.flush()
    _message(session, effects, ticket, principal.user, "user", body)
    await session.flush()
    return ticket


async def list_own_tickets(
    session: AsyncSession, *, user_id: str, limit: int, offset: int
) -> tuple[list[Ticket], int]:
    """The person's tickets, most recently changed first, and the total."""
    query = select(Ticket).where(Ticket.user_id == user_id)
    return await _page(session, query, limit=limit, offset=offset)


async def get_own_ticket(session: AsyncSession, *, user_id: str, ticket_id: str) -> Ticket:
    """One of the person's tickets, else `404 Ticket not found` (whoever owns the id)."""
    ticket = await session.get(Ticket, ticket_id) if len(ticket_id) <= 36 else None
    if ticket is None or ticket.user_id != user_id:
        raise _ticket_not_found()
    return ticket


async def thread(session: AsyncSession, *, ticket: Ticket) -> list[TicketMessage]:
    """The ticket's messages, oldest first (a ticket's thread is short: it is read whole)."""
    rows = await session.execute(
        select(TicketMessage)
        .where(TicketMessage.ticket_id == ticket.id)
        .order_by(TicketMessage.created_at, TicketMessage.id)
    )
    return list(rows.scalars())


async def user_reply(
    session: AsyncSession, effects: Effects, *, principal: Principal, ticket: Ticket, body: str
) -> TicketMessage:
    """The owner answers in the thread: the ticket becomes `open` (support's turn). A closed
    ticket takes no more messages (409): the person opens a new one."""
    if ticket.status == "closed":
        raise ConflictError("This ticket is closed: open a new ticket to ask again")
    message = _message(session, effects, ticket, principal.user, "user", body)
    ticket.status = "open"
    _touch(ticket)
    await session.flush()
    return message


async def live_grant(
    session: AsyncSession, *, user_id: str, ticket_id: str | None = None
) -> ContentGrant | None:
    """The grant (on `ticket_id`, or on any of the person's tickets) that lets staff read the
    person's conversations now: not revoked and not expired. The latest-expiring one."""
    query = select(ContentGrant).where(
        ContentGrant.user_id == user_id,
        ContentGrant.revoked_at.is_(None),
        ContentGrant.expires_at > utcnow(),
    )
    if ticket_id is not None:
        query = query.where(ContentGrant.ticket_id == ticket_id)
    rows = await session.execute(query.order_by(ContentGrant.expires_at.desc()).limit(1))
    return rows.scalar_one_or_none()


async def _end_grants(session: AsyncSession, *, ticket_id: str, now: datetime) -> int:
    result = await session.execute(
        update(ContentGrant)
        .where(
            ContentGrant.ticket_id == ticket_id,
            ContentGrant.revoked_at.is_(None),
            ContentGrant.expires_at > now,
        )
        .values(revoked_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def grant_access(
    session: AsyncSession, *, principal: Principal, ticket: Ticket, hours: int
) -> ContentGrant:
    """The owner lets support staff read their conversations for `hours` (1 to 72) from now,
    replacing any live grant of this ticket. Audited (`support.content_granted`)."""
    if not 1 <= hours <= MAX_GRANT_HOURS:
        raise ValidationFailedError(
            f"hours must be a whole number from 1 to {MAX_GRANT_HOURS}", field="hours"
        )
    if ticket.status == "closed":
        raise ConflictError("This ticket is closed: access can be granted on an open ticket")
    now = utcnow()
    await _end_grants(session, ticket_id=ticket.id, now=now)
    grant = ContentGrant(
        ticket_id=ticket.id,
        user_id=ticket.user_id,
        granted_at=now,
        expires_at=now + timedelta(hours=hours),
    )
    session.add(grant)
    await session.flush()
    audit.record(
        session,
        action="support.content_granted",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="ticket",
        target_id=ticket.id,
        details={"hours": hours, "expires_at": grant.expires_at.isoformat()},
    )
    return grant


async def revoke_access(session: AsyncSession, *, principal: Principal, ticket: Ticket) -> None:
    """The owner ends the live grant of this ticket now (404 when there is none). Audited."""
    if not await _end_grants(session, ticket_id=ticket.id, now=utcnow()):
        raise NotFoundError("No access is granted on this ticket now", error="Grant not found")
    audit.record(
        session,
        action="support.content_revoked",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="ticket",
        target_id=ticket.id,
    )


# The console's side -----------------------------------------------------------------------------


async def _page(
    session: AsyncSession, query: Select[Ticket], *, limit: int, offset: int
) -> tuple[list[Ticket], int]:
    total = int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )
    rows = await session.execute(
        query.order_by(Ticket.updated_at.desc(), Ticket.id.desc()).limit(limit).offset(offset)
    )
    return list(rows.scalars()), total


async def list_tickets(
    session: AsyncSession,
    *,
    status: TicketStatus | None,
    assignee: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Ticket], int]:
    """Every ticket for the console, most recently changed first. `assignee`: a staff user id,
    `none` for unassigned tickets, or None for all."""
    query = select(Ticket)
    if status is not None:
        query = query.where(Ticket.status == status)
    if assignee == "none":
        query = query.where(Ticket.assignee_id.is_(None))
    elif assignee is not None:
        query = query.where(Ticket.assignee_id == assignee)
    return await _page(session, query, limit=limit, offset=offset)


async def get_any_ticket(session: AsyncSession, *, ticket_id: str) -> Ticket:
    ticket = await session.get(Ticket, ticket_id) if len(ticket_id) <= 36 else None
    if ticket is None:
        raise _ticket_not_found()
    return ticket


async def _owner(session: AsyncSession, ticket: Ticket) -> User:
    owner = await session.get(User, ticket.user_id)
    if owner is None:  # the row goes with its owner (ON DELETE CASCADE)
        raise _ticket_not_found()
    return owner


async def staff_reply(
    session: AsyncSession,
    effects: Effects,
    *,
    principal: Principal,
    ticket: Ticket,
    body: str,
    status: TicketStatus = "waiting",
) -> TicketMessage:
    """Support answers in the thread and leaves the ticket `status` (by default `waiting`, the
    person's turn). The owner is notified and emailed the reply. 409 on a closed ticket."""
    if ticket.status == "closed":
        raise ConflictError("This ticket is closed: reopen it before replying")
    owner = await _owner(session, ticket)
    message = _message(session, effects, ticket, principal.user, "staff", body)
    previous = ticket.status
    ticket.status = status
    if ticket.assignee_id is None:
        ticket.assignee_id = principal.user.id
    if status == "closed":
        await _end_grants(session, ticket_id=ticket.id, now=utcnow())
    _touch(ticket)
    await session.flush()
    _audit_status(session, principal, ticket, previous, reason="reply")
    note = f"Support replied to your ticket “{ticket.subject}”."
    if status != "waiting":
        note += f" Its status is now {STATUS_WORDS[status]}."
    await tell(
        session,
        effects,
        user=owner,
        kind="support.reply",
        title=f"Reply to your ticket: {ticket.subject}"[:200],
        note=note,
        path=_path(ticket),
        text=body,
    )
    return message


async def assign(
    session: AsyncSession, *, principal: Principal, ticket: Ticket, assignee_id: str | None
) -> Ticket:
    """Give the ticket to a support or admin member (None: nobody). 422 for anyone else."""
    if assignee_id is not None:
        assignee = await session.get(User, assignee_id) if len(assignee_id) <= 36 else None
        if assignee is None or assignee.deleted_at is not None or not is_staff(assignee):
            raise ValidationFailedError(
                "assignee_id must be the id of a support or admin member", field="assignee_id"
            )
    if ticket.assignee_id != assignee_id:
        audit.record(
            session,
            action="support.ticket_assigned",
            actor_user_id=principal.user.id,
            actor_key_id=principal.key_id,
            subject_user_id=ticket.user_id,
            client=principal.client,
            target_type="ticket",
            target_id=ticket.id,
            details={"from": ticket.assignee_id, "to": assignee_id},
        )
        ticket.assignee_id = assignee_id
        _touch(ticket)
        await session.flush()
    return ticket


def _audit_status(
    session: AsyncSession, principal: Principal, ticket: Ticket, previous: str, *, reason: str
) -> None:
    if previous == ticket.status:
        return
    audit.record(
        session,
        action="support.ticket_status_changed",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        subject_user_id=ticket.user_id,
        client=principal.client,
        target_type="ticket",
        target_id=ticket.id,
        details={"from": previous, "to": ticket.status, "by": reason},
    )


async def set_status(
    session: AsyncSession,
    effects: Effects,
    *,
    principal: Principal,
    ticket: Ticket,
    status: TicketStatus,
) -> Ticket:
    """Change the ticket's status; the owner is notified and emailed. Closing ends any content
    grant of the ticket. 409 when it already has that status."""
    if ticket.status == status:
        raise ConflictError(f"The ticket is already {status}")
    owner = await _owner(session, ticket)
    previous = ticket.status
    ticket.status = status
    if status == "closed":
        await _end_grants(session, ticket_id=ticket.id, now=utcnow())
    _touch(ticket)
    await session.flush()
    _audit_status(session, principal, ticket, previous, reason="status")
    await tell(
        session,
        effects,
        user=owner,
        kind="support.status",
        title=f"Ticket {status}: {ticket.subject}"[:200],
        note=f"Your ticket “{ticket.subject}” is now {STATUS_WORDS[status]}.",
        path=_path(ticket),
    )
    return ticket


async def staff_members(session: AsyncSession) -> list[User]:
    """Everyone a ticket can be assigned to (support and admin members), by name."""
    rows = await session.execute(
        select(User)
        .where(User.role.in_(sorted(STAFF_ROLES)), User.deleted_at.is_(None))
        .order_by(User.name, User.id)
    )
    return list(rows.scalars())
