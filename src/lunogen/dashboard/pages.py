"""Plain server-rendered pages: register, sign in, verify, reset, consent.

Forms post to the `/api/v1/auth/...` endpoints, which answer browsers with pages too.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from lunogen.account.models import User
from lunogen.account.service import setup_problem
from lunogen.auth.models import AuthSession
from lunogen.auth.sessions import SESSION_COOKIE, find_session
from lunogen.config import Settings
from lunogen.dashboard.render import render
from lunogen.db import DbSession
from lunogen.privacy.policy import PRIVACY_VERSION, TERMS_VERSION

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
    return render(
        request,
        "register.html",
        google=_google_enabled(request),
        terms_version=TERMS_VERSION,
        privacy_version=PRIVACY_VERSION,
    )


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:
    # Only a path on this site is carried through the form (LoginIn checks it again).
    back = next if next.startswith("/") and not next.startswith(("//", "/\\")) else ""
    return render(request, "login.html", google=_google_enabled(request), next=back[:300])


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
    current = await _signed_in(request, db)
    if current is None:
        return RedirectResponse("/login", status_code=303)
    user, row = current
    if setup_problem(user) is None:
        return RedirectResponse("/home", status_code=303)
    return render(
        request,
        "onboarding.html",
        user=user,
        csrf_token=row.csrf_token,
        terms_version=TERMS_VERSION,
        privacy_version=PRIVACY_VERSION,
    )


@router.get("/account")
async def account_page() -> Response:
    """The old account page: its parts are on /settings and /keys now (old emails link here)."""
    return RedirectResponse("/settings", status_code=303)


@router.get("/terms")
async def terms_page(request: Request) -> Response:
    return render(request, "policy.html", title="Terms of Service", version=TERMS_VERSION)


@router.get("/privacy")
async def privacy_page(request: Request) -> Response:
    return render(request, "policy.html", title="Privacy Policy", version=PRIVACY_VERSION)
