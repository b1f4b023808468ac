"""What every signed-in page shares: who is looking (`Viewer`), the page route that turns the
services' errors into pages, and the render helper that fills the layout (navigation by role,
the unread count, the CSRF token for forms).

Pages call the same services as the API. A page route answers:
- signed out → 303 to `/login?next=<path>`; setup incomplete → 303 to `/onboarding`;
- a `NotFoundError` (another tenant's id, a deleted agent) → the 404 page;
- any other `LunogenError` → an error page with its status and message.
State changes are POSTed forms: the cookie authenticator checks their CSRF field.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from sqlalchemy import func, select
from starlette.responses import Response

from lunogen.account.models import User
from lunogen.account.service import setup_problem
from lunogen.admin.suspended import appeal_contact
from lunogen.auth.models import AuthSession
from lunogen.auth.sessions import SESSION_COOKIE, find_session
from lunogen.dashboard.render import render
from lunogen.db import DbSession
from lunogen.errors import LunogenError, NotFoundError, validation_details
from lunogen.notification.models import Notification


class LoginRequired(Exception):
    pass


class SetupRequired(Exception):
    pass


class AccountSuspended(Exception):
    """The signed-in account is suspended: every page is the page saying so."""

    def __init__(self, user: User, session: AuthSession) -> None:
        self.user, self.session = user, session


@dataclass(frozen=True)
class NavItem:
    href: str
    label: str
    section: str
    roles: frozenset[str] | None = None  # None: every signed-in person

    def shown_to(self, role: str) -> bool:
        return self.roles is None or role in self.roles


# The sections of the signed-in dashboard, in the order the header shows them. A console for a
# role (admin, support) is listed with its roles and shown only to them.
NAV: tuple[NavItem, ...] = (
    NavItem("/home", "Home", "home"),
    NavItem("/agents", "Agents", "agents"),
    NavItem("/skills", "Skills", "skills"),
    NavItem("/usage", "Usage", "usage"),
    NavItem("/billing", "Billing", "billing"),
    NavItem("/keys", "API keys", "keys"),
    NavItem("/security", "Security log", "security"),
    NavItem("/settings", "Settings", "settings"),
    NavItem("/help", "Help", "help"),
    NavItem("/support", "Support", "support", roles=frozenset({"support", "admin"})),
    NavItem("/admin", "Admin", "admin", roles=frozenset({"admin"})),
    NavItem("/admin/moderation", "Moderation", "moderation", roles=frozenset({"admin"})),
)


@dataclass(frozen=True)
class Viewer:
    user: User
    session: AuthSession
    unread: int

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token

    @property
    def is_admin(self) -> bool:
        return self.user.role == "admin"

    @property
    def nav(self) -> tuple[NavItem, ...]:
        return tuple(item for item in NAV if item.shown_to(self.user.role))

    def require_role(self, *roles: str) -> None:
        """A console page for other roles answers as if it did not exist."""
        if self.user.role not in roles:
            raise NotFoundError("Page not found")


async def _viewer(request: Request, db: DbSession) -> Viewer:
    token = request.cookies.get(SESSION_COOKIE)
    row = await find_session(db, token) if token else None
    user = await db.get(User, row.user_id) if row is not None else None
    if row is None or user is None or user.deleted_at is not None:
        raise LoginRequired
    if user.suspended_at is not None:
        raise AccountSuspended(user, row)
    if setup_problem(user) is not None:
        raise SetupRequired
    unread = int(
        (
            await db.execute(
                select(func.count()).where(
                    Notification.user_id == user.id, Notification.read_at.is_(None)
                )
            )
        ).scalar_one()
    )
    return Viewer(user=user, session=row, unread=unread)


SignedIn = Annotated[Viewer, Depends(_viewer)]


class PageRoute(APIRoute):
    """A dashboard route: errors become pages (or the sign-in redirect), never JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = quote(request.url.path, safe="/")
                return RedirectResponse(f"/login?next={target}", status_code=303)
            except SetupRequired:
                return RedirectResponse("/onboarding", status_code=303)
            except AccountSuspended as exc:
                return render(
                    request,
                    "errors/suspended.html",
                    status_code=403,
                    user=exc.user,
                    contact=appeal_contact(request.app.state.settings),
                    csrf_token=exc.session.csrf_token,
                )
            except NotFoundError:
                return render(request, "errors/not_found.html", status_code=404)
            except RequestValidationError as exc:  # a malformed path or query
                details = validation_details(list(exc.errors()))
                message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
                problem = {"error": "Invalid request", "message": message}
                return render(request, "errors/problem.html", status_code=422, problem=problem)
            except LunogenError as exc:
                return render(
                    request,
                    "errors/problem.html",
                    status_code=exc.status_code,
                    problem=exc.body(),
                )

        return page_handler


def page_router() -> APIRouter:
    """The router a dashboard module declares its pages on."""
    return APIRouter(include_in_schema=False, route_class=PageRoute)


def page(
    request: Request,
    viewer: Viewer,
    template: str,
    *,
    section: str,
    status_code: int = 200,
    **context: Any,
) -> Response:
    """A signed-in page in the layout, with `section` marked in the navigation."""
    return render(
        request,
        template,
        status_code=status_code,
        viewer=viewer,
        nav=viewer.nav,
        section=section,
        csrf_token=viewer.csrf_token,
        **context,
    )
