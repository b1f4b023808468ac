"""Proving, before an irreversible change to an account (deleting it, changing its email
address), that the caller is its owner and not someone holding an unattended session or a
leaked key: the current password, or for an account without one (Google only) a browser
session signed in within `RECENT_SIGN_IN`. An API key alone never proves it for such an
account."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.auth.passwords import verify_password
from lunogen.auth.principal import Principal
from lunogen.errors import BadRequestError, ForbiddenError

RECENT_SIGN_IN = timedelta(minutes=10)


class WrongPasswordError(BadRequestError):
    error = "Wrong password"


def before_transaction(session: AsyncSession) -> None:
    if session.in_transaction():
        raise RuntimeError("argon2 must run before the session's transaction begins")


async def confirm_identity(
    session: AsyncSession,
    principal: Principal,
    password: str | None,
    *,
    now: datetime,
    doing: str,
    unchanged: str,
) -> None:
    """Raise WrongPasswordError (400) or ForbiddenError (403, `Recent sign-in required`) unless
    `principal` proves it is the owner. `doing` completes "Enter your current password to …";
    `unchanged` says what a refusal left as it was. Call it with no transaction open: argon2
    runs here. The caller then checks, in its transaction, that the hash checked is still the
    account's (a reset or change meanwhile wins)."""
    user = principal.user
    if user.password_hash is not None:
        if not password:
            raise WrongPasswordError(f"Enter your current password to {doing}")
        before_transaction(session)
        if not await verify_password(user.password_hash, password):
            raise WrongPasswordError(f"Your password is wrong; {unchanged}")
        return
    signed_in = principal.auth_session.created_at if principal.auth_session else None
    if signed_in is None or now - signed_in > RECENT_SIGN_IN:
        raise ForbiddenError(
            f"Sign in with Google again, then {doing} within 10 minutes",
            error="Recent sign-in required",
        )
