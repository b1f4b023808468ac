"""The pages about the person rather than their agents: notifications, the security log and
settings (profile, password, sessions, their data). API keys live in `key_pages`.

Forms call the services the API calls (`notification.service`, `audit.service`,
`account.service`, `auth.sessions`). Outcomes are shown after a redirect by a fixed word in
the query (`?outcome=`), never by text taken from the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.account import picture as pictures
from lunogen.account import service as accounts
from lunogen.account.schemas import EmailChangeIn, PasswordChangeIn, ProfileIn
from lunogen.audit.models import AuditEvent
from lunogen.audit.service import list_events
from lunogen.auth.dependencies import FullAccess
from lunogen.auth.sessions import list_active_sessions, revoke_other_session
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import BadRequestError, LunogenError, validation_details
from lunogen.kit.effects import Effects
from lunogen.kit.forms import parse_body
from lunogen.notification import service as notifications
from lunogen.privacy import deletion, email_change

router = page_router()

PAGE_SIZE = 20
MAX_PAGE = 50_000

OUTCOMES = {
    "read": "Marked as read.",
    "all-read": "Every notification is marked as read.",
    "password": "Password changed. Your other sessions are signed out.",
    "session": "That session is signed out.",
    "name": "Name saved.",
    "email-sent": "We sent a link to the new address: open it to finish the change.",
    "email": "Email address changed.",
}

# Audit actions in plain words; others are shown from their code ("skill.created" → "Skill
# created").
ACTIONS = {
    "account.registered": "Account created",
    "account.created_by_operator": "Account created by an operator",
    "account.registration_for_existing_address": "Someone tried to register with your address",
    "account.email_verified": "Email address verified",
    "account.consent_given": "Terms and Privacy Policy accepted",
    "account.password_changed": "Password changed",
    "account.password_reset": "Password reset by email link",
    "account.google_linked": "Google account linked",
    "account.email_change_requested": "Email address change requested",
    "account.email_changed": "Email address changed",
    "account.role_changed": "Role changed",
    "account.plan_changed": "Plan changed",
    "auth.sign_in": "Signed in",
    "auth.sign_in_failed": "Failed sign-in",
    "auth.sign_out": "Signed out",
    "auth.sign_out_everywhere": "Signed out everywhere",
    "auth.session_revoked": "Another session signed out",
    "api_key.created": "API key created",
    "api_key.revoked": "API key revoked",
    "billing.credits_adjusted": "Credits adjusted by an operator",
    "account.deleted": "Account deleted",
    "account.restored": "Account deletion cancelled",
    "account.restore_failed": "Failed attempt to cancel the account's deletion",
    "account.policy_accepted": "New version of the Terms or Privacy Policy accepted",
    "privacy.export_requested": "Data export requested",
    "privacy.export_downloaded": "Data export downloaded",
    "agent.exported": "Agent exported",
    "agent.imported": "Agent imported",
}

# Detail fields in plain words; fields not listed are shown by their name.
DETAIL_LABELS = {
    "method": "method",
    "name": "name",
    "scopes": "scopes",
    "prefix": "key",
    "sessions": "sessions ended",
    "from": "from",
    "to": "to",
    "email": "address",
    "terms": "terms version",
    "privacy": "privacy version",
    "ip": "that session's IP",
    "user_agent": "that session's browser",
}


@dataclass(frozen=True)
class Pages:
    """Where a paginated list is: `number` of `count` pages of `size` items."""

    number: int
    count: int
    size: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def newer(self) -> int | None:
        return self.number - 1 if self.number > 1 else None

    @property
    def older(self) -> int | None:
        return self.number + 1 if self.number < self.count else None


def page_number(raw: str | None) -> int:
    """The `?page=` of a list: a whole number from 1 (absent: 1)."""
    if raw is None or raw == "":
        return 1
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequestError(f"The page must be a whole number from 1 to {MAX_PAGE}")
    return int(raw)


def _pages(number: int, total: int) -> Pages:
    return Pages(number=number, count=max(1, -(-total // PAGE_SIZE)), size=PAGE_SIZE)


def describe_action(action: str) -> str:
    if action in ACTIONS:
        return ACTIONS[action]
    words = action.replace(".", " ").replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _plain(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_plain(v) for v in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k.replace('_', ' ')} {_plain(v)}" for k, v in value.items())
    return "—" if value is None else str(value)


def describe_details(details: dict[str, Any]) -> str:
    """An event's details as one line: `name CI; scopes agents:read, logs:read`."""
    parts = [
        f"{DETAIL_LABELS.get(key, key.replace('_', ' '))} {_plain(value)}"
        for key, value in details.items()
    ]
    return "; ".join(parts)


@dataclass(frozen=True)
class EventLine:
    event: AuditEvent
    what: str
    details: str


# Notifications ---------------------------------------------------------------------------------


@router.get("/notifications")
async def notifications_page(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    number = page_number(request.query_params.get("page"))
    rows, total, _unread = await notifications.list_notifications(
        db,
        user_id=viewer.user.id,
        unread_only=False,
        limit=PAGE_SIZE,
        offset=(number - 1) * PAGE_SIZE,
    )
    pages = _pages(number, total)
    return page(
        request,
        viewer,
        "account/notifications.html",
        section="notifications",
        notes=rows,
        total=total,
        pages=pages,
        flash=OUTCOMES.get(request.query_params.get("outcome", "")),
    )


async def _back_to_page(request: Request) -> str:
    """The notifications page the form was on (its hidden `page` field), checked."""
    form = await request.form()
    raw = form.get("page")
    number = page_number(raw if isinstance(raw, str) else None)
    return "" if number == 1 else f"&page={number}"


@router.post("/notifications/{notification_id}/read")
async def mark_notification_read(
    notification_id: str,
    request: Request,
    viewer: SignedIn,
    principal: FullAccess,
    db: DbSession,
) -> Response:
    await notifications.mark_read(db, user_id=principal.user.id, notification_id=notification_id)
    back = await _back_to_page(request)
    return RedirectResponse(f"/notifications?outcome=read{back}", status_code=303)


@router.post("/notifications/read-all")
async def mark_all_notifications_read(
    viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    await notifications.mark_all_read(db, user_id=principal.user.id)
    return RedirectResponse("/notifications?outcome=all-read", status_code=303)


# Security log ----------------------------------------------------------------------------------


@router.get("/security")
async def security_page(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    """The person's own events (an admin sees every account's in the API and the admin
    console, not here)."""
    number = page_number(request.query_params.get("page"))
    events, total = await list_events(
        db,
        user_id=viewer.user.id,
        see_all=False,
        action=None,
        limit=PAGE_SIZE,
        offset=(number - 1) * PAGE_SIZE,
    )
    pages = _pages(number, total)
    lines = [
        EventLine(event=e, what=describe_action(e.action), details=describe_details(e.details))
        for e in events
    ]
    return page(
        request,
        viewer,
        "account/security.html",
        section="security",
        lines=lines,
        total=total,
        pages=pages,
    )


# Settings --------------------------------------------------------------------------------------


async def _settings_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    *,
    status_code: int = 200,
    password_error: str | None = None,
    name_error: str | None = None,
    email_error: str | None = None,
    new_email: str = "",
    delete_error: str | None = None,
    flash: str | None = None,
) -> Response:
    sessions = await list_active_sessions(db, user_id=viewer.user.id)
    pending = await email_change.pending_change(db, user_id=viewer.user.id)
    return page(
        request,
        viewer,
        "account/settings.html",
        section="settings",
        status_code=status_code,
        user=viewer.user,
        sessions=sessions,
        current_session_id=viewer.session.id,
        password_error=password_error,
        name_error=name_error,
        email_error=email_error,
        new_email=new_email,
        pending_email=pending,
        has_password=viewer.user.password_hash is not None,
        has_picture=await pictures.has_picture(db, user_id=viewer.user.id),
        delete_error=delete_error,
        purge_days=request.app.state.settings.purge_after_days,
        flash=flash,
    )


@router.get("/settings")
async def settings_page(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    outcome = request.query_params.get("outcome", "")
    return await _settings_page(request, viewer, db, flash=OUTCOMES.get(outcome))


def _validation_message(exc: RequestValidationError) -> str:
    labels = {"current_password": "Current password", "new_password": "New password"}
    parts = []
    for detail in validation_details(list(exc.errors())):
        field = labels.get(detail["field"], detail["field"])
        parts.append(f"{field}: {detail['message']}")
    return "; ".join(parts)


@router.post("/settings/password")
async def change_password(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/auth/password/change`: argon2 runs outside any transaction, and the
    other sessions are signed out. A refusal shows the form again with the reason."""
    try:
        data = await parse_body(request, PasswordChangeIn)
        await db.commit()  # end the authenticator's transaction before argon2
        await accounts.change_password(
            db,
            user=principal.user,
            current_password=data.current_password,
            new_password=data.new_password,
            client=principal.client,
            keep_session_id=viewer.session.id,
        )
    except (LunogenError, RequestValidationError) as exc:
        if isinstance(exc, RequestValidationError):
            message, status = _validation_message(exc), 422
        else:
            message, status = exc.message or exc.error, exc.status_code
        response = await _settings_page(
            request, viewer, db, status_code=status, password_error=message
        )
        await db.rollback()
        return response
    return RedirectResponse("/settings?outcome=password", status_code=303)


@router.post("/settings/delete")
async def delete_account(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/account/delete`; then the person is signed out, on the sign-in page."""
    form = await request.form()
    password = form.get("password")
    try:
        await db.commit()  # end the authenticator's transaction before argon2
        await deletion.delete_account(
            db,
            principal=principal,
            password=password if isinstance(password, str) else None,
            effects=Effects(settings=request.app.state.settings, keyring=request.app.state.keyring),
        )
    except LunogenError as exc:
        await db.rollback()
        return await _settings_page(
            request,
            viewer,
            db,
            status_code=exc.status_code,
            delete_error=exc.message or exc.error,
        )
    return RedirectResponse("/login?deleted=1", status_code=303)


@router.post("/settings/name")
async def change_name(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `PATCH /api/v1/me`; a refused name shows the form again with the reason."""
    try:
        data = await parse_body(request, ProfileIn)
    except RequestValidationError as exc:
        details = validation_details(list(exc.errors()))
        message = "; ".join(f"Name: {d['message']}" for d in details)
        return await _settings_page(request, viewer, db, status_code=422, name_error=message)
    await accounts.rename(
        db, user=principal.user, name=data.name, client=principal.client, key_id=principal.key_id
    )
    return RedirectResponse("/settings?outcome=name", status_code=303)


def _effects(request: Request) -> Effects:
    return Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


@router.post("/settings/email")
async def change_email(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/me/email`: the link goes to the new address, a notice to the current
    one. A refusal shows the form again with the reason and the address typed."""
    form = await request.form()
    typed = form.get("new_email")
    typed = typed.strip()[:320] if isinstance(typed, str) else ""
    try:
        data = await parse_body(request, EmailChangeIn)
        await email_change.within_budget(request.app.state.rate_limiter, user_id=viewer.user.id)
        await db.commit()  # end the authenticator's transaction before argon2
        await email_change.request_change(
            db,
            principal=principal,
            new_email=data.new_email,
            password=data.password,
            effects=_effects(request),
        )
    except (LunogenError, RequestValidationError) as exc:
        if isinstance(exc, RequestValidationError):
            details = validation_details(list(exc.errors()))
            message = "; ".join(f"New email address: {d['message']}" for d in details)
            status = 422
        else:
            message, status = exc.message or exc.error, exc.status_code
        response = await _settings_page(
            request, viewer, db, status_code=status, email_error=message, new_email=typed
        )
        await db.rollback()  # after rendering: a rollback expires the viewer's rows
        return response
    return RedirectResponse("/settings?outcome=email-sent", status_code=303)


@router.get("/settings/email/confirm/{token}")
async def email_confirm_page(
    token: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    """The page the emailed link opens: what the change is, and the button that makes it.
    Signed out, the sign-in page brings the person back here."""
    change = await email_change.change_for_token(db, user_id=viewer.user.id, token=token)
    return page(
        request,
        viewer,
        "account/email_confirm.html",
        section="settings",
        status_code=200 if change else 400,
        change=change,
        token=token,
    )


@router.post("/settings/email/confirm/{token}")
async def confirm_email(
    token: str, request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/me/email/confirm`; a refusal shows the page again with the reason."""
    try:
        await email_change.confirm_change(
            db, principal=principal, token=token, effects=_effects(request)
        )
    except LunogenError as exc:
        response = page(
            request,
            viewer,
            "account/email_confirm.html",
            section="settings",
            status_code=exc.status_code,
            change=None,
            token=token,
            error=exc.message or exc.error,
        )
        await db.rollback()  # after rendering: a rollback expires the viewer's rows
        return response
    return RedirectResponse("/settings?outcome=email", status_code=303)


@router.post("/settings/sessions/{session_id}/revoke")
async def revoke_session(
    session_id: str, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    await revoke_other_session(
        db,
        user_id=principal.user.id,
        session_id=session_id,
        current_id=viewer.session.id,
        client=principal.client,
    )
    return RedirectResponse("/settings?outcome=session", status_code=303)
