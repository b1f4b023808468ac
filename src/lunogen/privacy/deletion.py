"""Deleting an account, and cancelling that deletion during the grace period.

Deletion (`delete_account`) needs the current password, or for an account without one (Google
only) a browser session signed in within the last 10 minutes (`privacy.identity`). In one
transaction it marks the account deleted (which hides it from every authenticator at once),
revokes every session and API key, stops every agent (their channels unregister through
`channel.registration`'s jobs), queues the Stripe subscription cancellations, writes the audit
row and queues the email that says when the data goes and how to keep it. `privacy.retention`
purges it once LUNOGEN_PURGE_AFTER_DAYS have passed.

Until then `restore_account` undoes the mark, given the password or the emailed link's token.
Agents stay stopped and keys stay revoked: the owner starts what they want again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import EmailToken, User
from lunogen.account.service import issue_token, normalize_email, retire_tokens
from lunogen.agent.lifecycle import ALLOWED_FROM, set_status
from lunogen.agent.models import Agent
from lunogen.audit import service as audit
from lunogen.auth.models import ApiKey
from lunogen.auth.passwords import verify_password
from lunogen.auth.principal import Principal
from lunogen.auth.sessions import revoke_all_sessions
from lunogen.channel import registration
from lunogen.errors import ForbiddenError, LunogenError
from lunogen.kit.effects import Effects
from lunogen.kit.ids import sha256_hex
from lunogen.kit.time import utcnow
from lunogen.kit.web import ClientInfo
from lunogen.notification.email import queue_email
from lunogen.privacy.identity import WrongPasswordError, before_transaction, confirm_identity
from lunogen.privacy.subscriptions import queue_cancellations, supersede_cancellations

RESTORE_PURPOSE = "restore_account"


class NotRestorableError(LunogenError):
    """Wrong credentials, an unknown or used link, or no deletion pending: one answer for all,
    so it tells nobody which addresses have accounts."""

    status_code = 400
    error = "Nothing to restore"


def purge_date(user: User, days: int) -> datetime:
    assert user.deleted_at is not None
    return user.deleted_at + timedelta(days=days)


async def delete_account(
    session: AsyncSession,
    *,
    principal: Principal,
    password: str | None,
    effects: Effects,
    now: datetime | None = None,
) -> datetime:
    """Delete the caller's account; returns when its data will be purged.

    Call it with no transaction open (argon2 runs first). Raises WrongPasswordError (400) or
    ForbiddenError (403, a Google-only account not signed in recently) with nothing changed.
    """
    now = now or utcnow()
    checked_hash = principal.user.password_hash
    await confirm_identity(
        session,
        principal,
        password,
        now=now,
        doing="delete your account",
        unchanged="nothing was deleted",
    )
    user = await session.get(User, principal.user.id, with_for_update=True, populate_existing=True)
    if user is None or user.deleted_at is not None:
        raise ForbiddenError("This account is already deleted", error="Account deleted")
    if user.password_hash != checked_hash:  # a reset or change won the race: check again
        raise WrongPasswordError("Your password changed meanwhile; nothing was deleted")
    user.deleted_at = now
    sessions = await revoke_all_sessions(session, user_id=user.id)
    keys = await session.execute(
        update(ApiKey)
        .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    agents = list(
        (
            await session.execute(
                select(Agent)
                .where(Agent.owner_id == user.id, Agent.deleted_at.is_(None))
                .with_for_update()
            )
        ).scalars()
    )
    stopped = 0
    for agent in agents:
        if agent.status in ALLOWED_FROM["stop"]:
            await set_status(
                session, agent=agent, status="stopped", effects=effects, reason="account deleted"
            )
            stopped += 1
        for row in agent.channels:
            registration.queue_unregistration(
                session, agent=agent, row=row, why="the account was deleted"
            )
    subscriptions = await queue_cancellations(session, account_id=user.id)
    purge_on = purge_date(user, effects.settings.purge_after_days)
    token = issue_token(session, user_id=user.id, purpose=RESTORE_PURPOSE, expires_at=purge_on)
    audit.record(
        session,
        action="account.deleted",
        actor_user_id=user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="user",
        target_id=user.id,
        details={
            "purge_after": purge_on.isoformat(),
            "sessions_revoked": sessions,
            "keys_revoked": int(getattr(keys, "rowcount", 0) or 0),
            "agents_stopped": stopped,
            "subscriptions_to_cancel": len(subscriptions),
        },
    )
    _send_deleted_email(session, user=user, effects=effects, purge_on=purge_on, token=token)
    await session.flush()
    return purge_on


def _send_deleted_email(
    session: AsyncSession, *, user: User, effects: Effects, purge_on: datetime, token: str
) -> None:
    url = effects.settings.public_url
    day = purge_on.strftime("%-d %B %Y")
    how = (
        f'sign in page ({url}/login) and choose "Cancel the deletion" with your email and '
        "password, or "
        if user.password_hash
        else ""
    )
    queue_email(
        session,
        effects.keyring,
        to=user.email,
        subject="Your LunoGen account is deleted",
        body=(
            f"Hello {user.name},\n\nYour LunoGen account was deleted. Your sessions and API keys "
            "no longer work and your agents are stopped.\n\n"
            f"Everything it holds (agents, conversations, memory, logs, files) will be purged "
            f"on {day} (UTC). Until then you can change your mind: use the {how}"
            f"open this link:\n\n{url}/account/restore?token={token}\n\n"
            "A cancelled deletion restores the account; your agents stay stopped and your API "
            "keys stay revoked. A Pro subscription is cancelled at once and does not come back "
            "by itself.\n\nIf you did not delete your account, open the link above now and "
            "change your password.\n"
        ),
    )


async def _restore(
    session: AsyncSession, *, user: User, days: int, client: ClientInfo, how: str, now: datetime
) -> User:
    if user.deleted_at is None or now >= purge_date(user, days):
        raise NotRestorableError("There is no pending deletion to cancel for this account")
    user.deleted_at = None
    await retire_tokens(session, user_id=user.id, purposes=(RESTORE_PURPOSE,))
    sent = await supersede_cancellations(session, account_id=user.id)
    audit.record(
        session,
        action="account.restored",
        actor_user_id=user.id,
        client=client,
        target_type="user",
        target_id=user.id,
        details={"method": how, "subscriptions_already_canceled": sent},
    )
    await session.flush()
    return user


async def restore_with_password(
    session: AsyncSession,
    *,
    email: str,
    password: str,
    days: int,
    client: ClientInfo,
    now: datetime | None = None,
) -> User:
    """Cancel the pending deletion of the account with these credentials. Call it with no
    transaction open: argon2 runs first, and the answer is the same for every failure."""
    now = now or utcnow()
    before_transaction(session)
    found = (
        await session.execute(select(User).where(User.email == normalize_email(email)))
    ).scalar_one_or_none()
    checked_hash = found.password_hash if found else None
    password_ok = await verify_password(checked_hash, password)
    await session.commit()  # the read above ended; the write below starts afresh
    user = (
        await session.get(User, found.id, with_for_update=True, populate_existing=True)
        if found
        else None
    )
    if user is None or not password_ok or user.password_hash != checked_hash:
        audit.record(
            session,
            action="account.restore_failed",
            actor_user_id=None,
            subject_user_id=user.id if user else None,
            client=client,
        )
        await session.commit()
        raise NotRestorableError("Wrong email or password, or no deletion pending")
    return await _restore(session, user=user, days=days, client=client, how="password", now=now)


async def restore_with_token(
    session: AsyncSession,
    *,
    token: str,
    days: int,
    client: ClientInfo,
    now: datetime | None = None,
) -> User:
    """Cancel a pending deletion with the link emailed when the account was deleted."""
    now = now or utcnow()
    row = (
        await session.execute(
            select(EmailToken).where(
                EmailToken.token_hash == sha256_hex(token),
                EmailToken.purpose == RESTORE_PURPOSE,
            )
        )
    ).scalar_one_or_none()
    if row is None or row.used_at is not None or row.expires_at <= now:
        raise NotRestorableError("This link is not valid (used, expired or mistyped)")
    user = await session.get(User, row.user_id, with_for_update=True, populate_existing=True)
    if user is None:
        raise NotRestorableError("This link is not valid (used, expired or mistyped)")
    return await _restore(session, user=user, days=days, client=client, how="email link", now=now)
