"""The support console's API (role `support` or `admin`): accounts read-only, tickets, privacy
requests. Conversations of an account are readable only while its owner's grant is live.

Every read of another account is audited (`support.account_viewed`, `support.content_viewed`,
`support.accounts_searched`), as is every change (assignment, status, privacy handling).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from lunogen.account.models import User
from lunogen.admin import console, tickets
from lunogen.admin import privacy_requests as requests
from lunogen.admin.models import PrivacyRequest, Ticket
from lunogen.admin.privacy_requests import RequestKind, RequestStatus
from lunogen.admin.schemas import (
    AssignIn,
    GrantOut,
    PrivacyRequestHandle,
    StaffPrivacyRequestOut,
    StaffReply,
    StaffTicketDetail,
    StaffTicketOut,
    StatusIn,
    TicketMessageOut,
    grant_out,
    message_out,
    request_fields,
    ticket_fields,
)
from lunogen.admin.ticket_endpoints import effects_of
from lunogen.admin.tickets import TicketStatus
from lunogen.auth.dependencies import Authenticator
from lunogen.auth.principal import Principal
from lunogen.auth.scopes import Scope
from lunogen.db import DbSession
from lunogen.errors import ForbiddenError
from lunogen.kit.pagination import Page, PageParams, page_params
from lunogen.runtime.schemas import MessageOut
from lunogen.runtime.schemas import message_out as conversation_message_out

router = APIRouter(prefix="/api/v1/admin/support", tags=["support console"])

_FORBIDDEN: dict[int | str, dict[str, Any]] = {
    403: {"description": "Not support or admin; or no live content grant"}
}


def _require_staff(
    principal: Annotated[Principal, Depends(Authenticator(Scope.FULL))],
) -> Principal:
    if not tickets.is_staff(principal.user):
        raise ForbiddenError("This endpoint requires the support or admin role")
    return principal


Staff = Annotated[Principal, Depends(_require_staff)]


class StaffAccountOut(BaseModel):
    id: str
    email: str
    name: str
    role: str
    plan: str
    created_at: datetime
    email_verified: bool


class AgentStatusOut(BaseModel):
    id: str
    name: str
    model: str
    status: str
    status_changed_at: datetime
    created_at: datetime


class StaffAccountDetail(StaffAccountOut):
    agents: list[AgentStatusOut] = Field(description="Status only: no instructions or content.")
    open_tickets: int
    grant: GrantOut | None = Field(description="The live content grant, if any.")


class StaffThreadOut(BaseModel):
    id: str
    agent_id: str
    agent_name: str
    channel: str
    contact: str
    last_message_at: datetime
    messages: int


def _account_out(user: User) -> StaffAccountOut:
    return StaffAccountOut(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        plan=user.plan,
        created_at=user.created_at,
        email_verified=user.email_verified_at is not None,
    )


# Accounts --------------------------------------------------------------------------------------


@router.get("/accounts", response_model=Page[StaffAccountOut], responses=_FORBIDDEN)
async def search_accounts(
    principal: Staff,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    email: Annotated[str, Query(max_length=320)] = "",
) -> Page[StaffAccountOut]:
    """Live accounts whose email contains `email` (all when empty), oldest first. Audited as
    `support.accounts_searched`."""
    found, total, _ = await console.search_accounts(
        db, principal=principal, email=email, limit=page.limit, offset=page.offset
    )
    return Page(data=[_account_out(u) for u in found], total=total, **page.model_dump())


@router.get(
    "/accounts/{user_id}",
    response_model=StaffAccountDetail,
    responses={**_FORBIDDEN, 404: {"description": "No such live account"}},
)
async def view_account(user_id: str, principal: Staff, db: DbSession) -> StaffAccountDetail:
    """An account's profile and its agents' status (never their instructions or messages).
    Audited as `support.account_viewed`; the owner sees it in their security log."""
    view = await console.view_account(db, principal=principal, user_id=user_id)
    return StaffAccountDetail(
        **_account_out(view.user).model_dump(),
        agents=[
            AgentStatusOut(
                id=a.id,
                name=a.name,
                model=a.model,
                status=a.status,
                status_changed_at=a.status_changed_at,
                created_at=a.created_at,
            )
            for a in view.agents
        ],
        open_tickets=view.open_tickets,
        grant=grant_out(view.grant),
    )


@router.get(
    "/accounts/{user_id}/threads",
    response_model=Page[StaffThreadOut],
    responses={**_FORBIDDEN, 404: {"description": "No such live account"}},
)
async def list_account_threads(
    user_id: str,
    principal: Staff,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[StaffThreadOut]:
    """The account's conversations, while its owner's content grant is live (403 otherwise).
    Audited as `support.content_viewed`."""
    lines, total, _ = await console.content_threads(
        db, principal=principal, user_id=user_id, limit=page.limit, offset=page.offset
    )
    return Page(
        data=[
            StaffThreadOut(
                id=line.thread.id,
                agent_id=line.thread.agent_id,
                agent_name=line.agent_name,
                channel=line.thread.channel_key,
                contact=line.thread.contact,
                last_message_at=line.thread.last_message_at,
                messages=line.messages,
            )
            for line in lines
        ],
        total=total,
        **page.model_dump(),
    )


@router.get(
    "/accounts/{user_id}/threads/{thread_id}",
    response_model=Page[MessageOut],
    responses={**_FORBIDDEN, 404: {"description": "No such account, or thread of it"}},
)
async def read_account_thread(
    user_id: str,
    thread_id: str,
    request: Request,
    principal: Staff,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[MessageOut]:
    """A conversation's messages, oldest first, while the owner's content grant is live (403
    otherwise). Audited as `support.content_viewed` naming the thread."""
    _, messages, total, _ = await console.read_thread(
        db,
        principal=principal,
        user_id=user_id,
        thread_id=thread_id,
        limit=page.limit,
        offset=page.offset,
    )
    keyring = request.app.state.keyring
    return Page(
        data=[conversation_message_out(m, keyring) for m in messages],
        total=total,
        **page.model_dump(),
    )


# Tickets ---------------------------------------------------------------------------------------


def _staff_ticket(ticket: Ticket) -> StaffTicketOut:
    return StaffTicketOut(
        **ticket_fields(ticket), user_id=ticket.user_id, assignee_id=ticket.assignee_id
    )


@router.get("/tickets", response_model=Page[StaffTicketOut], responses=_FORBIDDEN)
async def list_tickets(
    principal: Staff,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    status: TicketStatus | None = None,
    assignee: Annotated[
        str | None,
        Query(max_length=36, description="`me`, `none` (unassigned) or a staff member's id"),
    ] = None,
) -> Page[StaffTicketOut]:
    """Every ticket, most recently changed first, filtered by status and assignee."""
    who = principal.user.id if assignee == "me" else assignee
    found, total = await tickets.list_tickets(
        db, status=status, assignee=who, limit=page.limit, offset=page.offset
    )
    return Page(data=[_staff_ticket(t) for t in found], total=total, **page.model_dump())


@router.get(
    "/tickets/{ticket_id}",
    response_model=StaffTicketDetail,
    responses={**_FORBIDDEN, 404: {"description": "No such ticket"}},
)
async def get_ticket(
    ticket_id: str, request: Request, principal: Staff, db: DbSession
) -> StaffTicketDetail:
    """A ticket with its thread and the owner's live content grant, if any."""
    ticket = await tickets.get_any_ticket(db, ticket_id=ticket_id)
    keyring = request.app.state.keyring
    messages = await tickets.thread(db, ticket=ticket)
    grant = await tickets.live_grant(db, user_id=ticket.user_id, ticket_id=ticket.id)
    return StaffTicketDetail(
        **_staff_ticket(ticket).model_dump(),
        messages=[message_out(m, keyring) for m in messages],
        grant=grant_out(grant),
    )


@router.post(
    "/tickets/{ticket_id}/messages",
    response_model=TicketMessageOut,
    status_code=201,
    responses={
        **_FORBIDDEN,
        404: {"description": "No such ticket"},
        409: {"description": "The ticket is closed"},
    },
)
async def reply_to_ticket(
    ticket_id: str, data: StaffReply, request: Request, principal: Staff, db: DbSession
) -> TicketMessageOut:
    """Reply in the ticket's thread (the ticket then has `status`, by default `waiting`); the
    owner is notified and emailed the reply. An unassigned ticket is assigned to you."""
    ticket = await tickets.get_any_ticket(db, ticket_id=ticket_id)
    message = await tickets.staff_reply(
        db,
        effects_of(request),
        principal=principal,
        ticket=ticket,
        body=data.body,
        status=data.status,
    )
    return message_out(message, request.app.state.keyring)


@router.post(
    "/tickets/{ticket_id}/assign",
    response_model=StaffTicketOut,
    responses={**_FORBIDDEN, 404: {"description": "No such ticket"}},
)
async def assign_ticket(
    ticket_id: str, data: AssignIn, principal: Staff, db: DbSession
) -> StaffTicketOut:
    """Assign the ticket to a support or admin member, or unassign it (`null`). Audited."""
    ticket = await tickets.get_any_ticket(db, ticket_id=ticket_id)
    await tickets.assign(db, principal=principal, ticket=ticket, assignee_id=data.assignee_id)
    return _staff_ticket(ticket)


@router.post(
    "/tickets/{ticket_id}/status",
    response_model=StaffTicketOut,
    responses={
        **_FORBIDDEN,
        404: {"description": "No such ticket"},
        409: {"description": "Already in that status"},
    },
)
async def change_ticket_status(
    ticket_id: str, data: StatusIn, request: Request, principal: Staff, db: DbSession
) -> StaffTicketOut:
    """Change the ticket's status; the owner is notified and emailed. Closing ends the
    ticket's content grant. Audited."""
    ticket = await tickets.get_any_ticket(db, ticket_id=ticket_id)
    await tickets.set_status(
        db, effects_of(request), principal=principal, ticket=ticket, status=data.status
    )
    return _staff_ticket(ticket)


# Privacy requests ------------------------------------------------------------------------------


def _staff_request(row: PrivacyRequest, request: Request) -> StaffPrivacyRequestOut:
    return StaffPrivacyRequestOut(
        **request_fields(row, request.app.state.keyring),
        user_id=row.user_id,
        handled_by=row.handled_by,
    )


@router.get("/privacy-requests", response_model=Page[StaffPrivacyRequestOut], responses=_FORBIDDEN)
async def list_privacy_requests(
    request: Request,
    principal: Staff,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    status: RequestStatus | None = None,
    kind: RequestKind | None = None,
) -> Page[StaffPrivacyRequestOut]:
    """Every privacy request, newest first, filtered by status and kind."""
    found, total = await requests.list_requests(
        db, status=status, kind=kind, limit=page.limit, offset=page.offset
    )
    return Page(
        data=[_staff_request(row, request) for row in found], total=total, **page.model_dump()
    )


@router.get(
    "/privacy-requests/{request_id}",
    response_model=StaffPrivacyRequestOut,
    responses={**_FORBIDDEN, 404: {"description": "No such privacy request"}},
)
async def get_privacy_request(
    request_id: str, request: Request, principal: Staff, db: DbSession
) -> StaffPrivacyRequestOut:
    """One privacy request with its body and response."""
    row = await requests.get_any_request(db, request_id=request_id)
    return _staff_request(row, request)


@router.post(
    "/privacy-requests/{request_id}",
    response_model=StaffPrivacyRequestOut,
    responses={
        **_FORBIDDEN,
        404: {"description": "No such privacy request"},
        409: {"description": "Nothing changed"},
    },
)
async def handle_privacy_request(
    request_id: str,
    data: PrivacyRequestHandle,
    request: Request,
    principal: Staff,
    db: DbSession,
) -> StaffPrivacyRequestOut:
    """Set the request's status, with a response (required for `answered`). The person is
    notified and emailed the status and the response. Audited (`privacy.request_handled`)."""
    row = await requests.get_any_request(db, request_id=request_id)
    await requests.handle_request(
        db,
        effects_of(request),
        principal=principal,
        row=row,
        status=data.status,
        response=data.response,
    )
    return _staff_request(row, request)
