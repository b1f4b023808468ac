"""Plain server-rendered pages: register, sign in, verify, reset, consent.

Forms post to the `/api/v1/auth/...` endpoints, which answer browsers with pages too.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from lunogen.account.models import User
from lunogen.account.service import current_versions, setup_problem
from lunogen.admin.privacy_requests import privacy_contact
from lunogen.auth.models import AuthSession
from lunogen.auth.sessions import CSRF_COOKIE, SESSION_COOKIE, csrf_matches, find_session
from lunogen.config import Settings
from lunogen.dashboard import policy_pages
from lunogen.dashboard.render import render
from lunogen.db import DbSession
from lunogen.errors import ForbiddenError, TooManyRequestsError
from lunogen.kit.web import ClientInfo
from lunogen.privacy import deletion, documents
from lunogen.privacy import endpoints as privacy_endpoints

STATIC_DIR = Path(__file__).parent / "static"
router = APIRouter(include_in_schema=False)


async def _signed_in(request: Request, db: DbSession) -> tuple[User, AuthSession] | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    row = await find_session(db, token)
    if row is None:
        return None
    user = await db.get(User, row.user_id)
    if user is None or user.deleted_at is not None:
        return None
    return user, row


def _google_enabled(request: Request) -> bool:
    settings: Settings = request.app.state.settings
    return settings.google_enabled


@router.get("/")
async def home(request: Request, db: DbSession) -> Response:
    if await _signed_in(request, db):
        return RedirectResponse("/home", status_code=303)
    return render(request, "home.html")


@router.get("/register")
async def register_page(request: Request) -> Response:
    terms_version, privacy_version = current_versions()
    return render(
        request,
        "register.html",
        google=_google_enabled(request),
        terms_version=terms_version,
        privacy_version=privacy_version,
    )


LOGIN_NOTES = {
    "deleted": "Your account is deleted and you are signed out. Changed your mind? Cancel the "
    "deletion below, or with the link we emailed you.",
    "restored": "The deletion is cancelled. Sign in to use your account; your agents are "
    "stopped and your API keys revoked, so start and create what you need again.",
}


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:
    # Only a path on this site is carried through the form (LoginIn checks it again).
    back = next if next.startswith("/") and not next.startswith(("//", "/\\")) else ""
    notes = [text for key, text in LOGIN_NOTES.items() if request.query_params.get(key)]
    note = notes[0] if notes else None
    return render(
        request, "login.html", google=_google_enabled(request), next=back[:300], note=note
    )


async def _anonymous_form(request: Request) -> dict[str, str]:
    """The form's text fields, if it echoes the `lg_csrf` cookie (double submit); else 403."""
    form = await request.form()
    presented = form.get("csrf_token")
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not isinstance(presented, str) or not csrf_matches(cookie, presented):
        raise ForbiddenError("The form expired; reload the page and try again")
    return {k: v for k, v in form.items() if isinstance(v, str)}


@router.post("/login/restore")
async def restore_with_password(request: Request, db: DbSession) -> Response:
    """The sign-in page's "Cancel the deletion": email and password of a deleted account."""
    fields = await _anonymous_form(request)
    try:
        await privacy_endpoints.restore_with_password(
            request,
            db,
            email=fields.get("email", "")[:320],
            password=fields.get("password", "")[:1000],
        )
    except (deletion.NotRestorableError, TooManyRequestsError) as exc:
        await db.commit()  # keep the audit row of the failure
        return render(
            request,
            "login.html",
            status_code=exc.status_code,
            google=_google_enabled(request),
            next="",
            restore_error=exc.message,
        )
    return RedirectResponse("/login?restored=1", status_code=303)


@router.get("/account/restore")
async def restore_page(request: Request, token: str = "") -> Response:
    return render(request, "restore.html", token=token[:200])


@router.post("/account/restore")
async def restore_with_link(request: Request, db: DbSession) -> Response:
    """The emailed link's confirmation: cancel the deletion with its token."""
    fields = await _anonymous_form(request)
    settings: Settings = request.app.state.settings
    token = fields.get("token", "")[:200]
    try:
        await deletion.restore_with_token(
            db, token=token, days=settings.purge_after_days, client=ClientInfo.from_request(request)
        )
    except deletion.NotRestorableError as exc:
        return render(request, "restore.html", status_code=400, token=token, error=exc.message)
    return RedirectResponse("/login?restored=1", status_code=303)


@router.get("/verify")
async def verify_page(request: Request, token: str = "") -> Response:
    return render(request, "verify.html", token=token)


@router.get("/forgot")
async def forgot_page(request: Request) -> Response:
    return render(request, "forgot.html")


@router.get("/reset")
async def reset_page(request: Request, token: str = "") -> Response:
    return render(request, "reset.html", token=token)


@router.get("/onboarding")
async def onboarding_page(request: Request, db: DbSession) -> Response:
    """The first consent, or, once given, the notice of a changed document: its new version's
    text and summary, with a button that accepts it (`POST /api/v1/policies/accept`)."""
    current = await _signed_in(request, db)
    if current is None:
        return RedirectResponse("/login", status_code=303)
    user, row = current
    if setup_problem(user) is None:
        return RedirectResponse("/home", status_code=303)
    terms_version, privacy_version = current_versions()
    consented = user.age_attested_at is not None and user.terms_version is not None
    return render(
        request,
        "onboarding.html",
        user=user,
        csrf_token=row.csrf_token,
        terms_version=terms_version,
        privacy_version=privacy_version,
        changed=await policy_pages.notice_context(db, user) if consented else [],
    )


@router.get("/account")
async def account_page() -> Response:
    """The old account page: its parts are on /settings and /keys now (old emails link here)."""
    return RedirectResponse("/settings", status_code=303)


@router.get("/terms")
async def terms_page(request: Request, db: DbSession) -> Response:
    return await _policy_page(request, db, "terms")


@router.get("/privacy")
async def privacy_page(request: Request, db: DbSession) -> Response:
    return await _policy_page(request, db, "privacy")


async def _policy_page(request: Request, db: DbSession, kind: str) -> Response:
    """The version in effect, with its date, any version still to come, and a link to the
    earlier ones."""
    current, upcoming = await documents.current_and_upcoming(db, kind=kind)
    return render(
        request,
        "policy.html",
        title=current.title,
        document=current,
        html=documents.render_html(current.text),
        upcoming=upcoming,
        archive=True,
        privacy_contact=privacy_contact(request.app.state.settings),
    )
