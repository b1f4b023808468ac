"""The support console at `/support` (roles `support` and `admin`): the tickets queue and each
ticket's thread (reply, assign, status), the privacy requests queue (status and response), and
accounts (search, a read-only view with the agents' status, and the account's conversations only
while its owner's content grant is live).

Every page starts with `viewer.require_role("support", "admin")` (the `ConsoleViewer`
dependency, resolved before a form's CSRF check): for anyone else each URL is the 404 page.
Pages call the services the console API calls (`admin.tickets`, `admin.privacy_requests`,
`admin.console`), which audit each read of an account and each change in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.account.models import User
from lunogen.admin import console, tickets
from lunogen.admin import privacy_requests as requests
from lunogen.admin.models import PrivacyRequest, Ticket
from lunogen.admin.privacy_requests import RequestKind, RequestStatus
from lunogen.admin.schemas import AssignIn, PrivacyRequestHandle, StaffReply, StatusIn
from lunogen.admin.tickets import TicketStatus
from lunogen.auth.dependencies import FullAccess
from lunogen.dashboard.account_pages import Pages, page_number
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.dashboard.ticket_pages import problem_of, request_view
from lunogen.db import DbSession
from lunogen.errors import LunogenError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.effects import Effects
from lunogen.kit.forms import form_fields

router = page_router()

PAGE_SIZE = 25
MESSAGES_PER_PAGE = 100
OUTCOMES = {
    "replied": "Reply sent: the person was notified and emailed it.",
    "assigned": "Assignment saved.",
    "status": "Status changed: the person was notified and emailed.",
    "handled": "Request updated: the person was notified and emailed.",
}
WORDS = {
    "body": "Reply: 1 to 10,000 characters.",
    "status": "Status: choose one from the list.",
    "assignee_id": "Assignee: choose a support or admin member from the list.",
    "response": "Response: at most 10,000 characters; an answered request needs one.",
}


async def _console_viewer(viewer: SignedIn) -> Viewer:
    """The signed-in support or admin member; anyone else gets the 404 page (before any CSRF
    check, so a form post from anyone else is the 404 page too)."""
    viewer.require_role("support", "admin")
    return viewer


ConsoleViewer = Annotated[Viewer, Depends(_console_viewer)]


@dataclass(frozen=True)
class Pager:
    pages: Pages
    newer: str | None
    older: str | None


def _link(path: str, **query: str | int | None) -> str:
    kept = {key: value for key, value in query.items() if value not in (None, "", 1)}
    return f"{path}?{urlencode(kept)}" if kept else path


def _pager(path: str, number: int, total: int, **filters: str | None) -> Pager:
    pages = Pages(number=number, count=max(1, -(-total // PAGE_SIZE)), size=PAGE_SIZE)
    return Pager(
        pages=pages,
        newer=_link(path, **filters, page=pages.newer) if pages.newer else None,
        older=_link(path, **filters, page=pages.older) if pages.older else None,
    )


def _effects(request: Request) -> Effects:
    return Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


def _keyring(request: Request) -> KeyRing:
    keyring: KeyRing = request.app.state.keyring
    return keyring


def _flash(request: Request) -> str | None:
    return OUTCOMES.get(request.query_params.get("outcome", ""))


async def _people(db: AsyncSession, ids: Sequence[str | None]) -> dict[str, User]:
    """The accounts named on a page (owners, assignees), by id."""
    found: dict[str, User] = {}
    for user_id in dict.fromkeys(i for i in ids if i):
        user = await db.get(User, user_id)
        if user is not None:
            found[user_id] = user
    return found


# Tickets ---------------------------------------------------------------------------------------


@router.get("/support")
async def queue(
    request: Request,
    viewer: ConsoleViewer,
    db: DbSession,
    status: TicketStatus | None = None,
    assignee: Annotated[str, Query(max_length=36)] = "",
) -> Response:
    number = page_number(request.query_params.get("page"))
    who = viewer.user.id if assignee == "me" else assignee or None
    found, total = await tickets.list_tickets(
        db, status=status, assignee=who, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
    )
    people = await _people(db, [t.user_id for t in found] + [t.assignee_id for t in found])
    return page(
        request,
        viewer,
        "support/index.html",
        section="support",
        tickets=found,
        people=people,
        total=total,
        status=status or "",
        assignee=assignee,
        statuses=tickets.STATUSES,
        staff=await tickets.staff_members(db),
        pager=_pager("/support", number, total, status=status, assignee=assignee),
    )


async def _ticket_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    ticket: Ticket,
    *,
    status_code: int = 200,
    error: str | None = None,
    body: str = "",
) -> Response:
    keyring = _keyring(request)
    messages = await tickets.thread(db, ticket=ticket)
    people = await _people(db, [ticket.user_id, ticket.assignee_id])
    return page(
        request,
        viewer,
        "support/ticket.html",
        section="support",
        status_code=status_code,
        ticket=ticket,
        owner=people.get(ticket.user_id),
        messages=[(m, keyring.decrypt(m.body)) for m in messages],
        grant=await tickets.live_grant(db, user_id=ticket.user_id, ticket_id=ticket.id),
        staff=await tickets.staff_members(db),
        statuses=tickets.STATUSES,
        error=error,
        body=body,
        flash=_flash(request),
    )


@router.get("/support/tickets/{ticket_id}")
async def ticket_page(
    ticket_id: str, request: Request, viewer: ConsoleViewer, db: DbSession
) -> Response:
    ticket = await tickets.get_any_ticket(db, ticket_id=ticket_id)
    return await _ticket_page(request, viewer, db, ticket)


async def _refused(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    ticket: Ticket,
    exc: ValidationError | LunogenError,
    body: str = "",
) -> Response:
    message, status = problem_of(exc, WORDS)
    response = await _ticket_page(
        request, viewer, db, ticket, status_code=status, error=message, body=body
    )
    await db.rollback()
    return response


@router.post("/support/tickets/{ticket_id}/reply")
async def reply(
    ticket_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/support/tickets/{id}/messages`: emails the person."""
    ticket = await tickets.get_any_ticket(db, ticket_id=ticket_id)
    form = await form_fields(request)
    body = form.get("body", "")[:12_000]
    try:
        data = StaffReply.model_validate({"body": body, "status": form.get("status", "")[:20]})
        await tickets.staff_reply(
            db,
            _effects(request),
            principal=principal,
            ticket=ticket,
            body=data.body,
            status=data.status,
        )
    except (ValidationError, LunogenError) as exc:
        return await _refused(request, viewer, db, ticket, exc, body)
    return RedirectResponse(f"/support/tickets/{ticket.id}?outcome=replied", status_code=303)


@router.post("/support/tickets/{ticket_id}/assign")
async def assign(
    ticket_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/support/tickets/{id}/assign` (an empty choice unassigns)."""
    ticket = await tickets.get_any_ticket(db, ticket_id=ticket_id)
    chosen = (await form_fields(request)).get("assignee_id", "")[:40]
    try:
        data = AssignIn.model_validate({"assignee_id": chosen or None})
        await tickets.assign(db, principal=principal, ticket=ticket, assignee_id=data.assignee_id)
    except (ValidationError, LunogenError) as exc:
        return await _refused(request, viewer, db, ticket, exc)
    return RedirectResponse(f"/support/tickets/{ticket.id}?outcome=assigned", status_code=303)


@router.post("/support/tickets/{ticket_id}/status")
async def change_status(
    ticket_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/support/tickets/{id}/status`: emails the person."""
    ticket = await tickets.get_any_ticket(db, ticket_id=ticket_id)
    chosen = (await form_fields(request)).get("status", "")[:20]
    try:
        data = StatusIn.model_validate({"status": chosen})
        await tickets.set_status(
            db, _effects(request), principal=principal, ticket=ticket, status=data.status
        )
    except (ValidationError, LunogenError) as exc:
        return await _refused(request, viewer, db, ticket, exc)
    return RedirectResponse(f"/support/tickets/{ticket.id}?outcome=status", status_code=303)


# Accounts --------------------------------------------------------------------------------------


@router.get("/support/accounts")
async def accounts_page(
    request: Request,
    viewer: ConsoleViewer,
    principal: FullAccess,
    db: DbSession,
    email: Annotated[str, Query(max_length=320)] = "",
) -> Response:
    number = page_number(request.query_params.get("page"))
    found, total, search = await console.search_accounts(
        db, principal=principal, email=email, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
    )
    return page(
        request,
        viewer,
        "support/accounts.html",
        section="support",
        users=found,
        total=total,
        email=search,
        pager=_pager("/support/accounts", number, total, email=search),
    )


@router.get("/support/accounts/{user_id}")
async def account_page(
    user_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    view = await console.view_account(db, principal=principal, user_id=user_id)
    return page(request, viewer, "support/account.html", section="support", view=view)


@router.get("/support/accounts/{user_id}/conversations")
async def conversations_page(
    user_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """The account's conversations while its owner's grant is live; otherwise the 403 page."""
    number = page_number(request.query_params.get("page"))
    lines, total, grant = await console.content_threads(
        db, principal=principal, user_id=user_id, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
    )
    path = f"/support/accounts/{user_id}/conversations"
    return page(
        request,
        viewer,
        "support/conversations.html",
        section="support",
        user=await console.get_account(db, user_id=user_id),
        lines=lines,
        total=total,
        grant=grant,
        pager=_pager(path, number, total),
    )


@router.get("/support/accounts/{user_id}/conversations/{thread_id}")
async def conversation_page(
    user_id: str,
    thread_id: str,
    request: Request,
    viewer: ConsoleViewer,
    principal: FullAccess,
    db: DbSession,
) -> Response:
    number = page_number(request.query_params.get("page"))
    thread, messages, total, grant = await console.read_thread(
        db,
        principal=principal,
        user_id=user_id,
        thread_id=thread_id,
        limit=MESSAGES_PER_PAGE,
        offset=(number - 1) * MESSAGES_PER_PAGE,
    )
    keyring = _keyring(request)
    pages = Pages(
        number=number, count=max(1, -(-total // MESSAGES_PER_PAGE)), size=MESSAGES_PER_PAGE
    )
    path = f"/support/accounts/{user_id}/conversations/{thread.id}"
    return page(
        request,
        viewer,
        "support/conversation.html",
        section="support",
        user=await console.get_account(db, user_id=user_id),
        thread=thread,
        messages=[(m, keyring.decrypt(m.content)) for m in messages],
        total=total,
        grant=grant,
        pager=Pager(
            pages=pages,
            newer=_link(path, page=pages.newer) if pages.newer else None,
            older=_link(path, page=pages.older) if pages.older else None,
        ),
    )


# Privacy requests ------------------------------------------------------------------------------


@router.get("/support/privacy")
async def privacy_queue(
    request: Request,
    viewer: ConsoleViewer,
    db: DbSession,
    status: RequestStatus | None = None,
    kind: RequestKind | None = None,
) -> Response:
    number = page_number(request.query_params.get("page"))
    found, total = await requests.list_requests(
        db, status=status, kind=kind, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
    )
    return page(
        request,
        viewer,
        "support/privacy.html",
        section="support",
        rows=found,
        people=await _people(db, [row.user_id for row in found]),
        total=total,
        status=status or "",
        kind=kind or "",
        statuses=requests.STATUS_WORDS,
        kinds=requests.KIND_WORDS,
        pager=_pager("/support/privacy", number, total, status=status, kind=kind),
    )


async def _request_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    row: PrivacyRequest,
    *,
    status_code: int = 200,
    error: str | None = None,
    values: dict[str, Any] | None = None,
) -> Response:
    people = await _people(db, [row.user_id, row.handled_by])
    return page(
        request,
        viewer,
        "support/privacy_request.html",
        section="support",
        status_code=status_code,
        item=request_view(row, _keyring(request)),
        owner=people.get(row.user_id),
        handler=people.get(row.handled_by or ""),
        statuses=requests.STATUS_WORDS,
        error=error,
        values=values or {"status": row.status, "response": ""},
        flash=_flash(request),
    )


@router.get("/support/privacy/{request_id}")
async def privacy_request_page(
    request_id: str, request: Request, viewer: ConsoleViewer, db: DbSession
) -> Response:
    row = await requests.get_any_request(db, request_id=request_id)
    return await _request_page(request, viewer, db, row)


@router.post("/support/privacy/{request_id}")
async def handle_privacy_request(
    request_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/support/privacy-requests/{id}`: emails the person."""
    row = await requests.get_any_request(db, request_id=request_id)
    form = await form_fields(request)
    values = {"status": form.get("status", "")[:20], "response": form.get("response", "")[:12_000]}
    try:
        data = PrivacyRequestHandle.model_validate(
            {"status": values["status"], "response": values["response"].strip() or None}
        )
        await requests.handle_request(
            db,
            _effects(request),
            principal=principal,
            row=row,
            status=data.status,
            response=data.response,
        )
    except (ValidationError, LunogenError) as exc:
        message, status = problem_of(exc, WORDS)
        response = await _request_page(
            request, viewer, db, row, status_code=status, error=message, values=values
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/support/privacy/{row.id}?outcome=handled", status_code=303)
