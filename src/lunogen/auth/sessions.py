"""Server-side browser sessions and their CSRF tokens."""

from __future__ import annotations

import hmac
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.account.models import User
from lunogen.audit import service as audit
from lunogen.auth.models import AuthSession
from lunogen.config import Settings
from lunogen.errors import BadRequestError, NotFoundError
from lunogen.kit.ids import random_token, sha256_hex
from lunogen.kit.time import utcnow
from lunogen.kit.web import ClientInfo

SESSION_COOKIE = "lg_session"
CSRF_COOKIE = "lg_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
_TOUCH_EVERY = timedelta(minutes=5)


async def create_session(
    session: AsyncSession, *, user: User, client: ClientInfo, settings: Settings
) -> tuple[AuthSession, str]:
    token = random_token()
    now = utcnow()
    row = AuthSession(
        user_id=user.id,
        token_hash=sha256_hex(token),
        csrf_token=random_token(24),
        expires_at=now + timedelta(days=settings.session_days),
        last_seen_at=now,
        ip=client.ip,
        user_agent=client.user_agent,
    )
    session.add(row)
    await session.flush()
    return row, token


async def find_session(session: AsyncSession, token: str) -> AuthSession | None:
    if not token or len(token) > 200:
        return None
    query = select(AuthSession).where(AuthSession.token_hash == sha256_hex(token))
    row = (await session.execute(query)).scalar_one_or_none()
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    if now - row.last_seen_at > _TOUCH_EVERY:
        row.last_seen_at = now
    return row


async def revoke_session(session: AsyncSession, row: AuthSession) -> None:
    row.revoked_at = utcnow()


async def revoke_all_sessions(
    session: AsyncSession, *, user_id: str, except_id: str | None = None
) -> int:
    query = update(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if except_id:
        query = query.where(AuthSession.id != except_id)
    result = await session.execute(query.values(revoked_at=utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


async def list_active_sessions(session: AsyncSession, *, user_id: str) -> list[AuthSession]:
    """The user's signed-in browsers (unrevoked, unexpired), most recently seen first."""
    query = (
        select(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > utcnow(),
        )
        .order_by(AuthSession.last_seen_at.desc(), AuthSession.id)
    )
    return list((await session.execute(query)).scalars())


async def revoke_other_session(
    session: AsyncSession, *, user_id: str, session_id: str, current_id: str, client: ClientInfo
) -> AuthSession:
    """Sign out one of the user's other browsers (audited). Another person's session, a revoked
    one or an unknown id is not found; the current one is refused (sign out instead)."""
    row = await session.get(AuthSession, session_id)
    if row is None or row.user_id != user_id or row.revoked_at is not None:
        raise NotFoundError(error="Session not found")
    if row.id == current_id:
        raise BadRequestError("This is the session you are using: sign out instead")
    row.revoked_at = utcnow()
    audit.record(
        session,
        action="auth.session_revoked",
        actor_user_id=user_id,
        client=client,
        target_type="auth_session",
        target_id=row.id,
        details={"ip": row.ip, "user_agent": row.user_agent},
    )
    return row


def csrf_matches(expected: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(expected.encode(), (presented or "").encode())


def set_session_cookies(
    response: Response, *, token: str, csrf_token: str, settings: Settings
) -> None:
    max_age = settings.session_days * 86400
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )
    set_csrf_cookie(response, csrf_token=csrf_token, settings=settings, max_age=max_age)


def set_csrf_cookie(
    response: Response, *, csrf_token: str, settings: Settings, max_age: int | None = None
) -> None:
    # Readable by our own scripts (double-submit); useless to another origin.
    response.set_cookie(
        CSRF_COOKIE,
        csrf_token,
        max_age=max_age,
        httponly=False,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )


def clear_session_cookies(response: Response, settings: Settings) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(
            name, path="/", secure=settings.secure_cookies, httponly=name == SESSION_COOKIE
        )
