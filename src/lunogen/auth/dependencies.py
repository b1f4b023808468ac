"""Authenticators: one dependency per scope, declared once and used as annotated types.

A request is authenticated either by `Authorization: Bearer lg_live_…` (a developer key, rate
limited per key by its owner's plan) or by the `lg_session` cookie (acting with `full`, with a
CSRF token required on every state change; all of a user's sessions share one budget of the
plan's requests per minute).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from lunogen.account.models import User
from lunogen.account.plans import limits_for
from lunogen.account.service import setup_problem
from lunogen.admin.suspended import AccountSuspendedError
from lunogen.auth import apikeys
from lunogen.auth.principal import Principal
from lunogen.auth.ratelimit import RateLimiter
from lunogen.auth.scopes import Scope, grants
from lunogen.auth.sessions import CSRF_FIELD, CSRF_HEADER, csrf_matches, find_session
from lunogen.db import DbSession
from lunogen.errors import ForbiddenError, TooManyRequestsError, UnauthorizedError
from lunogen.kit.time import utcnow
from lunogen.kit.web import ClientInfo
from lunogen.privacy import documents as policy_documents

UNAUTHORIZED_MESSAGE = (
    "Valid API key required. Send it as 'Authorization: Bearer lg_live_…', or sign in."
)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LAST_USED_EVERY = timedelta(seconds=60)

bearer_scheme = HTTPBearer(auto_error=False, description="A developer key: lg_live_<64 hex>")
cookie_scheme = APIKeyCookie(name="lg_session", auto_error=False, description="Browser session")


def _unauthorized() -> UnauthorizedError:
    return UnauthorizedError(UNAUTHORIZED_MESSAGE)


async def _count_request(request: Request, bucket: str, user: User, whose: str) -> None:
    """Spend one of the plan's requests per minute from `bucket`, or raise 429."""
    limiter: RateLimiter = request.app.state.rate_limiter
    status = await limiter.hit(bucket, limits_for(user.plan).requests_per_minute)
    request.state.rate_limit = status
    if not status.allowed:
        raise TooManyRequestsError(
            f"Rate limit of {status.limit} requests per minute exceeded {whose}; "
            f"retry in {status.retry_after} s",
            headers=status.headers(),
            extra={"retry_after": status.retry_after},
        )


async def _from_key(request: Request, db: DbSession, token: str, client: ClientInfo) -> Principal:
    found = await apikeys.find_active_key_and_user(db, token)
    if found is None:
        raise _unauthorized()
    key, user = found
    if user.deleted_at is not None:
        raise _unauthorized()
    await _count_request(request, f"key:{key.id}", user, "for this API key")
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_EVERY:
        key.last_used_at = now
    return Principal(user=user, client=client, api_key=key, scopes=frozenset(key.scopes))


async def _from_cookie(
    request: Request, db: DbSession, token: str, client: ClientInfo
) -> Principal:
    row = await find_session(db, token)
    if row is None:
        raise _unauthorized()
    user = await db.get(User, row.user_id)
    if user is None or user.deleted_at is not None:
        raise _unauthorized()
    # One budget for all of a user's browser sessions, apart from their keys' budgets.
    await _count_request(request, f"sessions:{user.id}", user, "for your browser sessions")
    if request.method not in SAFE_METHODS:
        presented = request.headers.get(CSRF_HEADER)
        if presented is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            presented = value if isinstance(value, str) else None
        if not csrf_matches(row.csrf_token, presented):
            raise ForbiddenError(
                "CSRF token missing or invalid: send the lg_csrf cookie value in the "
                "X-CSRF-Token header"
            )
    return Principal(user=user, client=client, auth_session=row)


class Authenticator:
    """A dependency that authenticates the caller and requires `scope` (None: any scope)."""

    def __init__(
        self,
        scope: Scope | None,
        *,
        allow_incomplete_setup: bool = False,
        allow_suspended: bool = False,
    ) -> None:
        self.scope = scope
        self.allow_incomplete_setup = allow_incomplete_setup
        self.allow_suspended = allow_suspended  # signing out only

    async def __call__(
        self,
        request: Request,
        db: DbSession,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
        session_token: Annotated[str | None, Depends(cookie_scheme)],
    ) -> Principal:
        client = ClientInfo.from_request(request)
        if request.headers.get("authorization") is not None:
            if credentials is None or credentials.scheme.lower() != "bearer":
                raise _unauthorized()
            principal = await _from_key(request, db, credentials.credentials, client)
        elif session_token:
            principal = await _from_cookie(request, db, session_token, client)
        else:
            raise _unauthorized()
        if principal.user.suspended_at is not None and not self.allow_suspended:
            raise AccountSuspendedError(principal.user, request.app.state.settings)
        if self.scope is not None and not grants(principal.scopes, self.scope):
            raise ForbiddenError(f"API key missing required scope: {self.scope.value}")
        if principal.api_key is not None:
            # An API call after a policy change took effect is continued use: it records
            # acceptance (the Privacy Policy's [changes] clause), once.
            await policy_documents.accept_on_continued_use(db, user=principal.user, client=client)
        if not self.allow_incomplete_setup:
            problem = setup_problem(principal.user)
            if problem:
                raise ForbiddenError(problem, error="Account setup incomplete")
        request.state.principal = principal
        return principal


def _require_admin(
    principal: Annotated[Principal, Depends(Authenticator(Scope.FULL))],
) -> Principal:
    if not principal.is_admin:
        raise ForbiddenError("This endpoint requires the admin role")
    return principal


AnyUser = Annotated[Principal, Depends(Authenticator(None))]
SetupUser = Annotated[Principal, Depends(Authenticator(None, allow_incomplete_setup=True))]
# Signing out is the one thing a suspended account may still do.
SignOutUser = Annotated[
    Principal,
    Depends(Authenticator(None, allow_incomplete_setup=True, allow_suspended=True)),
]
FullAccess = Annotated[Principal, Depends(Authenticator(Scope.FULL))]
SetupFullAccess = Annotated[
    Principal, Depends(Authenticator(Scope.FULL, allow_incomplete_setup=True))
]
AgentsRead = Annotated[Principal, Depends(Authenticator(Scope.AGENTS_READ))]
AgentsWrite = Annotated[Principal, Depends(Authenticator(Scope.AGENTS_WRITE))]
AgentsExecute = Annotated[Principal, Depends(Authenticator(Scope.AGENTS_EXECUTE))]
ToolsRead = Annotated[Principal, Depends(Authenticator(Scope.TOOLS_READ))]
ToolsWrite = Annotated[Principal, Depends(Authenticator(Scope.TOOLS_WRITE))]
SkillsRead = Annotated[Principal, Depends(Authenticator(Scope.SKILLS_READ))]
SkillsWrite = Annotated[Principal, Depends(Authenticator(Scope.SKILLS_WRITE))]
LogsRead = Annotated[Principal, Depends(Authenticator(Scope.LOGS_READ))]
Admin = Annotated[Principal, Depends(_require_admin)]
