"""The person's help pages: support tickets (`/help`: open one, read and answer its thread,
grant or revoke support's read access to conversations) and privacy requests
(`/privacy-requests`: file one, follow it; linked from Settings → Your data).

Forms call the services the API calls (`admin.tickets`, `admin.privacy_requests`) and validate
with the API's own shapes. A refused form re-renders its page with the status code, the
message in `role="alert"` and the values kept, after rolling back; success is a 303 to the page
with a fixed `?outcome=` word. Another person's ticket or request is the 404 page.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.admin import privacy_requests as requests
from lunogen.admin import tickets
from lunogen.admin.models import PrivacyRequest, Ticket
from lunogen.admin.schemas import GrantIn, PrivacyRequestIn, TicketCreate, TicketReply
from lunogen.auth.dependencies import FullAccess
from lunogen.config import Settings
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.effects import Effects
from lunogen.kit.forms import form_fields

router = page_router()

LIST_SIZE = 50  # tickets or requests listed on a page (people have a handful)
GRANT_HOURS = (1, 4, 24, 72)
OUTCOMES = {
    "opened": "Ticket opened: support will answer here, and we email you each reply.",
    "replied": "Your answer was added to the thread.",
    "granted": "Support may now read your conversations until the time shown.",
    "revoked": "Access ended: support can no longer read your conversations.",
    "filed": "Request received: we email you whenever its status changes.",
}


def _effects(request: Request) -> Effects:
    return Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


def _keyring(request: Request) -> KeyRing:
    keyring: KeyRing = request.app.state.keyring
    return keyring


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _flash(request: Request) -> str | None:
    return OUTCOMES.get(request.query_params.get("outcome", ""))


def problem_of(exc: ValidationError | LunogenError, words: dict[str, str]) -> tuple[str, int]:
    """A refused form's message and status: the fields' own words for a validation error."""
    if isinstance(exc, LunogenError):
        return exc.message or exc.error, exc.status_code
    fields = [str(e["loc"][0]) if e["loc"] else "" for e in exc.errors()]
    return " ".join(dict.fromkeys(words.get(f, f"{f}: not valid.") for f in fields)), 422


# Tickets ---------------------------------------------------------------------------------------

TICKET_WORDS = {
    "subject": "Subject: 1 to 200 characters.",
    "body": "Message: 1 to 10,000 characters.",
    "hours": "Hours: choose from the list (1 to 72).",
}


async def _help_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    *,
    status_code: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    found, total = await tickets.list_own_tickets(
        db, user_id=viewer.user.id, limit=LIST_SIZE, offset=0
    )
    return page(
        request,
        viewer,
        "tickets/index.html",
        section="help",
        status_code=status_code,
        tickets=found,
        total=total,
        ticket_error=error,
        values=values or {},
        flash=_flash(request),
    )


@router.get("/help")
async def help_page(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    return await _help_page(request, viewer, db)


@router.post("/help/tickets")
async def open_ticket(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/support/tickets`."""
    form = await form_fields(request)
    values = {"subject": form.get("subject", "")[:300], "body": form.get("body", "")[:12_000]}
    try:
        data = TicketCreate.model_validate(values)
        ticket = await tickets.open_ticket(
            db, _effects(request), principal=principal, subject=data.subject, body=data.body
        )
    except (ValidationError, LunogenError) as exc:
        message, status = problem_of(exc, TICKET_WORDS)
        response = await _help_page(
            request, viewer, db, status_code=status, error=message, values=values
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/help/tickets/{ticket.id}?outcome=opened", status_code=303)


async def _ticket_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    ticket: Ticket,
    *,
    status_code: int = 200,
    reply_error: str | None = None,
    grant_error: str | None = None,
    body: str = "",
) -> Response:
    keyring = _keyring(request)
    messages = await tickets.thread(db, ticket=ticket)
    return page(
        request,
        viewer,
        "tickets/ticket.html",
        section="help",
        status_code=status_code,
        ticket=ticket,
        messages=[(m, keyring.decrypt(m.body)) for m in messages],
        grant=await tickets.live_grant(db, user_id=ticket.user_id, ticket_id=ticket.id),
        grant_hours=GRANT_HOURS,
        reply_error=reply_error,
        grant_error=grant_error,
        body=body,
        flash=_flash(request),
    )


async def _own_ticket(db: AsyncSession, viewer: Viewer, ticket_id: str) -> Ticket:
    return await tickets.get_own_ticket(db, user_id=viewer.user.id, ticket_id=ticket_id)


@router.get("/help/tickets/{ticket_id}")
async def ticket_page(
    ticket_id: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    return await _ticket_page(request, viewer, db, await _own_ticket(db, viewer, ticket_id))


@router.post("/help/tickets/{ticket_id}/reply")
async def reply(
    ticket_id: str, request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/support/tickets/{id}/messages`."""
    ticket = await _own_ticket(db, viewer, ticket_id)
    body = (await form_fields(request)).get("body", "")[:12_000]
    try:
        data = TicketReply.model_validate({"body": body})
        await tickets.user_reply(
            db, _effects(request), principal=principal, ticket=ticket, body=data.body
        )
    except (ValidationError, LunogenError) as exc:
        message, status = problem_of(exc, TICKET_WORDS)
        response = await _ticket_page(
            request, viewer, db, ticket, status_code=status, reply_error=message, body=body
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/help/tickets/{ticket.id}?outcome=replied", status_code=303)


@router.post("/help/tickets/{ticket_id}/grant")
async def grant(
    ticket_id: str, request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/support/tickets/{id}/grant`."""
    ticket = await _own_ticket(db, viewer, ticket_id)
    hours = (await form_fields(request)).get("hours", "")[:10]
    try:
        data = GrantIn.model_validate({"hours": hours})
        await tickets.grant_access(db, principal=principal, ticket=ticket, hours=data.hours)
    except (ValidationError, LunogenError) as exc:
        message, status = problem_of(exc, TICKET_WORDS)
        response = await _ticket_page(
            request, viewer, db, ticket, status_code=status, grant_error=message
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/help/tickets/{ticket.id}?outcome=granted", status_code=303)


@router.post("/help/tickets/{ticket_id}/revoke")
async def revoke(
    ticket_id: str, request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `DELETE /api/v1/support/tickets/{id}/grant`."""
    ticket = await _own_ticket(db, viewer, ticket_id)
    try:
        await tickets.revoke_access(db, principal=principal, ticket=ticket)
    except LunogenError as exc:
        message, status = problem_of(exc, TICKET_WORDS)
        response = await _ticket_page(
            request, viewer, db, ticket, status_code=status, grant_error=message
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/help/tickets/{ticket.id}?outcome=revoked", status_code=303)


# Privacy requests ------------------------------------------------------------------------------

REQUEST_WORDS = {
    "kind": "Kind: choose one from the list.",
    "body": "Your request: 1 to 10,000 characters.",
}


def request_view(row: PrivacyRequest, keyring: KeyRing) -> dict[str, Any]:
    return {
        "row": row,
        "kind": requests.KIND_WORDS.get(row.kind, row.kind),
        "status": requests.STATUS_WORDS.get(row.status, row.status),
        "body": keyring.decrypt(row.body),
        "response": keyring.decrypt(row.response) if row.response else None,
    }


async def _requests_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    *,
    status_code: int = 200,
    error: str | None = None,
    values: dict[str, str] | None = None,
) -> Response:
    found, total = await requests.list_own_requests(
        db, user_id=viewer.user.id, limit=LIST_SIZE, offset=0
    )
    keyring = _keyring(request)
    return page(
        request,
        viewer,
        "tickets/privacy_requests.html",
        section="settings",
        status_code=status_code,
        requests=[request_view(row, keyring) for row in found],
        total=total,
        kinds=requests.KIND_WORDS,
        contact=requests.privacy_contact(_settings(request)),
        request_error=error,
        values=values or {},
        flash=_flash(request),
    )


@router.get("/privacy-requests")
async def privacy_requests_page(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    return await _requests_page(request, viewer, db)


@router.post("/privacy-requests")
async def file_privacy_request(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/privacy/requests`."""
    form = await form_fields(request)
    values = {"kind": form.get("kind", "")[:30], "body": form.get("body", "")[:12_000]}
    try:
        data = PrivacyRequestIn.model_validate(values)
        row = await requests.create_request(
            db, _effects(request), principal=principal, kind=data.kind, body=data.body
        )
    except (ValidationError, LunogenError) as exc:
        message, status = problem_of(exc, REQUEST_WORDS)
        response = await _requests_page(
            request, viewer, db, status_code=status, error=message, values=values
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/privacy-requests/{row.id}?outcome=filed", status_code=303)


@router.get("/privacy-requests/{request_id}")
async def privacy_request_page(
    request_id: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    row = await requests.get_own_request(db, user_id=viewer.user.id, request_id=request_id)
    return page(
        request,
        viewer,
        "tickets/privacy_request.html",
        section="settings",
        item=request_view(row, _keyring(request)),
        contact=requests.privacy_contact(_settings(request)),
        flash=_flash(request),
    )
