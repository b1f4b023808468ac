"""Changing the account's email address (the right to correction; the name is `account.rename`).

1. `request_change`: the owner proves who they are (`privacy.identity`: the password, or a
   Google-only account's recent browser sign-in), names the new address, and gets a one-use
   link there (a `change_email` row in `email_tokens`: only the token's hash, an expiry, and
   the address it switches to); the current address gets a notice. A newer request replaces
   the pending one. Nothing about the account changes yet.
2. `confirm_change`: the link, opened while signed in to the same account, switches the
   address, marks it verified (the link proved the mailbox), uses up every outstanding link
   of the account (a reset link in the old mailbox must not work any more), audits
   `account.email_changed` with both addresses and tells the old address.

Confirming needs the account's own session or key, not the link alone: whoever holds a
mistyped new address could otherwise take the account over (change it, then reset the
password). An address held by any account, closed ones included, is refused (409) at both
steps. A Google link stays: Google sign-in finds the account by its subject id, not by email.
Emails go through the outbox (`queue_email`): sent after commit, never inside a transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import EmailToken, User
from lunogen.account.service import (
    RESET_PASSWORD,
    VERIFY_EMAIL,
    InvalidTokenError,
    issue_token,
    retire_tokens,
    valid_email,
)
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.auth.ratelimit import RateLimiter
from lunogen.errors import (
    ConflictError,
    ForbiddenError,
    TooManyRequestsError,
    ValidationFailedError,
)
from lunogen.kit.effects import Effects
from lunogen.kit.ids import sha256_hex
from lunogen.kit.time import utcnow
from lunogen.notification.email import queue_email
from lunogen.privacy.identity import WrongPasswordError, confirm_identity

CHANGE_EMAIL = "change_email"
CONFIRM_PATH = "/settings/email/confirm/"  # + the token: a dashboard page (`account_pages`)
REQUESTS_PER_HOUR = 5  # per account: each one emails an address the caller chose


class EmailTakenError(ConflictError):
    error = "Email address taken"


@dataclass(frozen=True)
class PendingChange:
    new_email: str
    expires_at: datetime


async def within_budget(limiter: RateLimiter, *, user_id: str) -> None:
    """Spend one of the account's `REQUESTS_PER_HOUR` requests, or raise 429: each request
    mails a confirmation link to an address the caller chose."""
    if not await limiter.allow(f"email-change:{user_id}", REQUESTS_PER_HOUR, 3600):
        raise TooManyRequestsError(
            f"At most {REQUESTS_PER_HOUR} email changes an hour; try again later",
            headers={"Retry-After": "3600"},
        )


def confirm_url(public_url: str, token: str) -> str:
    """The emailed link. The token is in the path, so signing in on the way keeps it."""
    return f"{public_url}{CONFIRM_PATH}{token}"


async def pending_change(
    session: AsyncSession, *, user_id: str, now: datetime | None = None
) -> PendingChange | None:
    """The change waiting for its link to be opened, if any (at most one is usable)."""
    row = (
        await session.execute(
            select(EmailToken)
            .where(
                EmailToken.user_id == user_id,
                EmailToken.purpose == CHANGE_EMAIL,
                EmailToken.used_at.is_(None),
                EmailToken.expires_at > (now or utcnow()),
            )
            .order_by(EmailToken.created_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    if row is None or row.new_email is None:
        return None
    return PendingChange(new_email=row.new_email, expires_at=row.expires_at)


async def _usable(
    session: AsyncSession, *, token: str, user_id: str, now: datetime, lock: bool = False
) -> EmailToken | None:
    """The token's row if it is this account's, unused and unexpired."""
    query = select(EmailToken).where(
        EmailToken.token_hash == sha256_hex(token), EmailToken.purpose == CHANGE_EMAIL
    )
    row = (await session.execute(query.with_for_update() if lock else query)).scalar_one_or_none()
    if (
        row is None
        or row.user_id != user_id
        or row.used_at is not None
        or row.expires_at <= now
        or row.new_email is None
    ):
        return None
    return row


async def change_for_token(
    session: AsyncSession, *, user_id: str, token: str, now: datetime | None = None
) -> PendingChange | None:
    """What opening the link `token` would do for this account (None: nothing, refused)."""
    row = await _usable(session, token=token, user_id=user_id, now=now or utcnow())
    if row is None or row.new_email is None:
        return None
    return PendingChange(new_email=row.new_email, expires_at=row.expires_at)


async def _taken(session: AsyncSession, email: str, *, by_other_than: str) -> bool:
    holder = await session.scalar(select(User.id).where(User.email == email))
    return holder is not None and holder != by_other_than


async def request_change(
    session: AsyncSession,
    *,
    principal: Principal,
    new_email: str,
    password: str | None,
    effects: Effects,
    now: datetime | None = None,
) -> PendingChange:
    """Email a confirmation link to `new_email` and a notice to the current address.

    Call it with no transaction open (argon2 runs first). Raises ValidationFailedError (422: not
    an address sign-in accepts, or the current one), WrongPasswordError (400),
    ForbiddenError (403: a Google-only account without a browser sign-in in the last 10
    minutes) or EmailTakenError (409), each with nothing changed or sent.
    """
    now = now or utcnow()
    address = valid_email(new_email)  # 422 naming the problem, before any password check
    if address == principal.user.email:
        raise ValidationFailedError("That is already your email address", field="new_email")
    checked_hash = principal.user.password_hash
    await confirm_identity(
        session,
        principal,
        password,
        now=now,
        doing="change your email address",
        unchanged="your email address is unchanged",
    )
    user = await session.get(User, principal.user.id, with_for_update=True, populate_existing=True)
    if user is None or user.deleted_at is not None:
        raise ForbiddenError("This account is deleted", error="Account deleted")
    if user.password_hash != checked_hash:  # a reset or change won the race: check again
        raise WrongPasswordError("Your password changed meanwhile; your email address is unchanged")
    if await _taken(session, address, by_other_than=user.id):
        raise EmailTakenError(f"{address} belongs to another LunoGen account")
    settings = effects.settings
    await retire_tokens(session, user_id=user.id, purposes=(CHANGE_EMAIL,))
    expires_at = now + timedelta(hours=settings.email_token_hours)
    token = issue_token(
        session, user_id=user.id, purpose=CHANGE_EMAIL, expires_at=expires_at, new_email=address
    )
    audit.record(
        session,
        action="account.email_change_requested",
        actor_user_id=user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="user",
        target_id=user.id,
        details={"from": user.email, "to": address},
    )
    queue_email(
        session,
        effects.keyring,
        to=address,
        subject="Confirm your new LunoGen email address",
        body=(
            f"Hello {user.name},\n\nYou asked to use this address for your LunoGen account "
            f"instead of {user.email}. To confirm, open this link while signed in to LunoGen:"
            f"\n\n{confirm_url(settings.public_url, token)}\n\nThe link works once and expires "
            f"in {settings.email_token_hours} hours. If you did not ask for this, ignore this "
            "email: nothing changes.\n"
        ),
    )
    queue_email(
        session,
        effects.keyring,
        to=user.email,
        subject="Your LunoGen email address is about to change",
        body=(
            f"Hello {user.name},\n\nSomeone signed in to your LunoGen account asked to change "
            f"its email address to {address}. The change happens only when the link we sent "
            "there is opened.\n\nIf it was not you, change your password now at "
            f"{settings.public_url}/settings and sign out the sessions you do not know: "
            "the link only works for someone signed in to your account.\n"
        ),
    )
    await session.flush()
    return PendingChange(new_email=address, expires_at=expires_at)


async def confirm_change(
    session: AsyncSession,
    *,
    principal: Principal,
    token: str,
    effects: Effects,
    now: datetime | None = None,
) -> User:
    """Switch the account to the address of the link `token` came from.

    Only the account that asked can confirm: another account's token is refused like an
    unknown one (400), and is left usable. Raises InvalidTokenError (400: unknown, used,
    expired, or another account's) or EmailTakenError (409: the address was taken meanwhile),
    each with nothing changed.
    """
    now = now or utcnow()
    row = await _usable(session, token=token, user_id=principal.user.id, now=now, lock=True)
    if row is None or row.new_email is None:
        raise InvalidTokenError(
            "This link is invalid, already used, expired or for another account; "
            "sign in to the account that asked for it, or ask for a new one in Settings"
        )
    user = await session.get(User, row.user_id, with_for_update=True, populate_existing=True)
    if user is None or user.deleted_at is not None:
        raise InvalidTokenError("This link is invalid, already used or expired")
    new_email = row.new_email
    if await _taken(session, new_email, by_other_than=user.id):
        raise EmailTakenError(f"{new_email} belongs to another LunoGen account now")
    old_email = user.email
    user.email = new_email
    user.email_verified_at = now
    # Every outstanding link went to the old address (or is this one): none works any more.
    await retire_tokens(
        session, user_id=user.id, purposes=(CHANGE_EMAIL, VERIFY_EMAIL, RESET_PASSWORD)
    )
    audit.record(
        session,
        action="account.email_changed",
        actor_user_id=user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="user",
        target_id=user.id,
        details={"from": old_email, "to": new_email},
    )
    queue_email(
        session,
        effects.keyring,
        to=old_email,
        subject="Your LunoGen email address was changed",
        body=(
            f"Hello {user.name},\n\nYour LunoGen account now uses {new_email} instead of this "
            "address: sign-in, password resets and our emails go there from now on.\n\n"
            f"If it was not you, sign in at {effects.settings.public_url}/login with that "
            "address and your password, change your password, and set your address back in "
            "Settings.\n"
        ),
    )
    try:
        await session.flush()
    except IntegrityError as exc:  # another account took the address in the same instant
        raise EmailTakenError(f"{new_email} belongs to another LunoGen account now") from exc
    return user
