"""Telling a person about their ticket or privacy request: an in-app notification and an email.

The notification says what happened and links to the page; the email also carries the text
(a reply, a response). Message text stays out of the notifications table (stored in clear):
only the email, whose body the outbox keeps encrypted, carries it. Both are written in the
caller's transaction; the email is sent by the `notification.send_email` job after it commits.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.kit.effects import Effects
from lunogen.kit.ids import new_id
from lunogen.notification.email import queue_email
from lunogen.notification.service import notify


async def tell(
    session: AsyncSession,
    effects: Effects,
    *,
    user: User,
    kind: str,
    title: str,
    note: str,
    path: str,
    text: str | None = None,
) -> None:
    """Notify `user` (`note` in the app) and email them `note`, then `text` when given. An
    account being deleted is told nothing more."""
    if user.deleted_at is not None:
        return
    link = f"{effects.settings.public_url}{path}"
    await notify(
        session,
        user=user,
        kind=kind,
        title=title,
        body=f"{note} {link}",
        dedupe_key=f"{kind}:{new_id()}",
        settings=effects.settings,
        keyring=effects.keyring,
        email=False,
    )
    parts = [f"Hello {user.name},", note]
    if text:
        parts.append("\n".join(f"> {line}" if line else ">" for line in text.splitlines()))
    parts.append(f"See it and answer in the dashboard: {link}")
    queue_email(
        session,
        effects.keyring,
        to=user.email,
        subject=f"LunoGen: {title}",
        body="\n\n".join(parts) + "\n",
    )
