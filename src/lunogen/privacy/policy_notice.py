"""Telling every active user about a material policy change, before it takes effect.

Publishing marks the version `notify_status = pending` and enqueues
`privacy.notify_policy_change` after commit. The job claims the version with a conditional
UPDATE (a lease in `notify_next_at`), then walks the users who are not deleted in id order,
`BATCH` at a time, each batch in its own short transaction: an in-app notification (deduped
per user and version, so a repeated batch adds nothing) and its email, which the email job
sends after the batch commits. The cursor moves with the batch, so a job that dies goes on
where it stopped when the sweeper re-sends it. No outside call runs inside these transactions.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.account.models import User
from lunogen.config import Settings
from lunogen.kit.crypto import KeyRing
from lunogen.kit.time import utcnow
from lunogen.notification.service import notify
from lunogen.privacy.models import PolicyVersion
from lunogen.privacy.policy import TITLES
from lunogen.worker.broker import job, runtime
from lunogen.worker.enqueue import enqueue
from lunogen.worker.sweeps import register_sweep

log = structlog.get_logger(__name__)

BATCH = 200
LEASE = timedelta(minutes=5)


def queue_notice(session: AsyncSession, version_id: str) -> None:
    """Send the notices of this version after `session` commits."""
    enqueue(session, notify_policy_change, version_id)


def notice_text(row: PolicyVersion, public_url: str) -> tuple[str, str]:
    title = TITLES[row.kind]
    when = f"{row.effective_at.day} {row.effective_at:%B %Y}"
    body = (
        f"We are changing the {title}. Version {row.version} takes effect on {when} (UTC). "
        f"{row.summary}\n\nRead it at {public_url}/{row.kind}. Continuing to use LunoGen after "
        "that date records that you accept it; if you do not, you can close your account in "
        "Settings before then."
    )
    return f"The {title} changes on {when}", body


async def _claim(session: AsyncSession, version_id: str, now: datetime) -> bool:
    result = await session.execute(
        update(PolicyVersion)
        .where(
            PolicyVersion.id == version_id,
            PolicyVersion.notify_status == "pending",
            PolicyVersion.notify_next_at <= now,
        )
        .values(notify_next_at=now + LEASE)
    )
    await session.commit()
    return bool(getattr(result, "rowcount", 0))


async def _one_batch(
    session: AsyncSession, row: PolicyVersion, settings: Settings, keyring: KeyRing
) -> int:
    query = select(User).where(User.deleted_at.is_(None)).order_by(User.id).limit(BATCH)
    if row.notify_cursor is not None:
        query = query.where(User.id > row.notify_cursor)
    users = list((await session.execute(query)).scalars())
    title, body = notice_text(row, settings.public_url)
    for user in users:
        sent = await notify(
            session,
            user=user,
            kind="policy_change",
            title=title,
            body=body,
            dedupe_key=f"policy:{row.id}:{user.id}",
            settings=settings,
            keyring=keyring,
        )
        row.notified += 1 if sent is not None else 0
    now = utcnow()
    if users:
        row.notify_cursor = users[-1].id
        row.notify_next_at = now + LEASE
    if len(users) < BATCH:
        row.notify_status = "done"
        row.notify_next_at = None
    await session.commit()
    return len(users)


async def send_notices(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    keyring: KeyRing,
    version_id: str,
) -> int | None:
    """Notify every active user of this version's change; the users reached in this run, or
    None when the version is not due (done, not material, or claimed by another run)."""
    async with sessionmaker() as session:
        if not await _claim(session, version_id, utcnow()):
            return None
    reached = 0
    while True:
        async with sessionmaker() as session:
            row = await session.get(PolicyVersion, version_id)
            if row is None or row.notify_status != "pending":
                break
            reached += await _one_batch(session, row, settings, keyring)
            if row.notify_status == "done":
                log.info("policy_change_notified", version_id=version_id, users=row.notified)
                break
    return reached


@job("privacy.notify_policy_change")
async def notify_policy_change(version_id: str) -> None:
    rt = runtime()
    await send_notices(rt.sessionmaker, rt.settings, rt.keyring, version_id)


@register_sweep("policy_notices")
async def requeue_due(sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 20) -> int:
    """Versions whose notices are pending and unclaimed (published from the CLI, whose process
    runs no jobs, or a run that died): send their job again."""
    async with sessionmaker() as session:
        due = list(
            (
                await session.execute(
                    select(PolicyVersion.id)
                    .where(
                        PolicyVersion.notify_status == "pending",
                        PolicyVersion.notify_next_at <= utcnow(),
                    )
                    .limit(limit)
                )
            ).scalars()
        )
    for version_id in due:
        await notify_policy_change.kiq(version_id)
    return len(due)
