"""Your support tickets: open one, follow its thread, answer, and grant support read access to
your conversations for a few hours. Account-level: a browser session, or a key with `full`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.admin import tickets
from lunogen.admin.models import Ticket
from lunogen.admin.schemas import (
    GrantIn,
    GrantOut,
    TicketCreate,
    TicketDetail,
    TicketMessageOut,
    TicketOut,
    TicketReply,
    grant_out,
    message_out,
    ticket_fields,
)
from lunogen.auth.dependencies import FullAccess
from lunogen.db import DbSession
from lunogen.kit.effects import Effects
from lunogen.kit.pagination import Page, PageParams, page_params

router = APIRouter(prefix="/api/v1/support/tickets", tags=["support"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such ticket of yours"}}


def effects_of(request: Request) -> Effects:
    return Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


async def ticket_detail(db: AsyncSession, request: Request, ticket: Ticket) -> TicketDetail:
    keyring = request.app.state.keyring
    messages = await tickets.thread(db, ticket=ticket)
    grant = await tickets.live_grant(db, user_id=ticket.user_id, ticket_id=ticket.id)
    return TicketDetail(
        **ticket_fields(ticket),
        messages=[message_out(m, keyring) for m in messages],
        grant=grant_out(grant),
    )


@router.post("", response_model=TicketDetail, status_code=201)
async def open_ticket(
    data: TicketCreate, request: Request, principal: FullAccess, db: DbSession
) -> TicketDetail:
    """Open a ticket with its first message. Support answers in its thread; you are emailed
    each reply and status change."""
    ticket = await tickets.open_ticket(
        db, effects_of(request), principal=principal, subject=data.subject, body=data.body
    )
    return await ticket_detail(db, request, ticket)


@router.get("", response_model=Page[TicketOut])
async def list_tickets(
    principal: FullAccess, db: DbSession, page: Annotated[PageParams, Depends(page_params)]
) -> Page[TicketOut]:
    """Your tickets, most recently changed first."""
    found, total = await tickets.list_own_tickets(
        db, user_id=principal.user.id, limit=page.limit, offset=page.offset
    )
    return Page(
        data=[TicketOut(**ticket_fields(t)) for t in found],
        total=total,
        **page.model_dump(),
    )


@router.get("/{ticket_id}", response_model=TicketDetail, responses=_NOT_FOUND)
async def get_ticket(
    ticket_id: str, request: Request, principal: FullAccess, db: DbSession
) -> TicketDetail:
    """One of your tickets with its whole thread and the live content grant, if any."""
    ticket = await tickets.get_own_ticket(db, user_id=principal.user.id, ticket_id=ticket_id)
    return await ticket_detail(db, request, ticket)


@router.post(
    "/{ticket_id}/messages",
    response_model=TicketMessageOut,
    status_code=201,
    responses={**_NOT_FOUND, 409: {"description": "The ticket is closed"}},
)
async def reply_to_ticket(
    ticket_id: str, data: TicketReply, request: Request, principal: FullAccess, db: DbSession
) -> TicketMessageOut:
    """Answer in the ticket's thread; the ticket becomes `open` (support's turn)."""
    ticket = await tickets.get_own_ticket(db, user_id=principal.user.id, ticket_id=ticket_id)
    message = await tickets.user_reply(
        db, effects_of(request), principal=principal, ticket=ticket, body=data.body
    )
    return message_out(message, request.app.state.keyring)


@router.post(
    "/{ticket_id}/grant",
    response_model=GrantOut,
    status_code=201,
    responses={**_NOT_FOUND, 409: {"description": "The ticket is closed"}},
)
async def grant_content_access(
    ticket_id: str, data: GrantIn, principal: FullAccess, db: DbSession
) -> GrantOut:
    """Let support staff read your agents' conversations for `hours` (1 to 72) from now, to
    help with this ticket; it replaces an earlier grant of the ticket. Every read they make is
    in your security log. Closing the ticket ends the grant."""
    ticket = await tickets.get_own_ticket(db, user_id=principal.user.id, ticket_id=ticket_id)
    grant = await tickets.grant_access(db, principal=principal, ticket=ticket, hours=data.hours)
    out = grant_out(grant)
    assert out is not None
    return out


@router.delete(
    "/{ticket_id}/grant",
    status_code=204,
    response_class=Response,
    responses={404: {"description": "No such ticket of yours, or no live grant on it"}},
)
async def revoke_content_access(ticket_id: str, principal: FullAccess, db: DbSession) -> Response:
    """End the ticket's content grant now."""
    ticket = await tickets.get_own_ticket(db, user_id=principal.user.id, ticket_id=ticket_id)
    await tickets.revoke_access(db, principal=principal, ticket=ticket)
    return Response(status_code=204)
