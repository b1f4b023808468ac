"""The classifier's job, `moderation.classify`: one message's check, with the shape of every
outbound side effect here (see `notification.email`).

The check row was written with the message's end and the job sent after that commit. The job
claims the row with a conditional UPDATE and commits, reads the message, calls the endpoint
with no transaction open (`classifier.classify`), and stores the verdict in a new transaction:
`checked`, or `flagged` with a flag (evidence encrypted) and the threshold applied. A failure
(an HTTP error, a refused connection, a timeout, an unreadable answer) is retried by the sweeper
with exponential backoff (30 s doubling, at most 10 minutes) until `MAX_ATTEMPTS`, then the row
ends `failed` with its last error, which the admin's moderation page lists. The message itself
was answered long before: the classifier never delays, blocks or loses it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.config import Settings
from lunogen.db import read_sessionmaker
from lunogen.kit.crypto import KeyRing
from lunogen.kit.time import utcnow
from lunogen.moderation import service
from lunogen.moderation.classifier import ClassifierError, Verdict, classify
from lunogen.moderation.models import ModerationCheck
from lunogen.runtime.models import Message
from lunogen.worker.broker import job, runtime
from lunogen.worker.queues import Queue, register_queue
from lunogen.worker.sweeps import register_sweep

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 6
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 600.0
CLAIM_MARGIN_SECONDS = 30.0


def backoff_seconds(attempt: int) -> float:
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(ModerationCheck.next_attempt_at.is_(None), ModerationCheck.next_attempt_at <= now)


@dataclass(frozen=True)
class _Claimed:
    attempt: int
    text: str | None  # None: the message is gone (purged): nothing to check


async def _claim(
    session: AsyncSession, keyring: KeyRing, check_id: str, *, lease: timedelta
) -> _Claimed | None:
    now = utcnow()
    result = await session.execute(
        update(ModerationCheck)
        .where(ModerationCheck.id == check_id, ModerationCheck.status == "queued", _due(now))
        .values(attempts=ModerationCheck.attempts + 1, next_attempt_at=now + lease)
    )
    if not getattr(result, "rowcount", 0):
        await session.rollback()
        return None
    check = await session.get(ModerationCheck, check_id)
    assert check is not None
    message = await session.get(Message, check.message_id)
    text = keyring.decrypt(message.content) if message is not None else None
    claimed = _Claimed(check.attempts, text)
    await session.commit()
    return claimed


async def _record(
    session: AsyncSession,
    check_id: str,
    attempt: int,
    *,
    verdict: Verdict | ClassifierError,
    text: str,
    settings: Settings,
    keyring: KeyRing,
) -> str | None:
    check = await session.get(ModerationCheck, check_id, with_for_update=True)
    if check is None or check.status != "queued":
        return None
    if isinstance(verdict, ClassifierError):
        if check.attempts != attempt:  # a later attempt owns the row now
            return None
        check.last_error = str(verdict)[:1000]
        details = {"check_id": check_id, "attempts": attempt}
        if attempt >= MAX_ATTEMPTS:
            check.status, check.next_attempt_at = "failed", None
            log.error("moderation_check_gave_up", **details, error=check.last_error)
        else:
            delay = backoff_seconds(attempt)
            check.next_attempt_at = utcnow() + timedelta(seconds=delay)
            log.warning("moderation_check_failed", **details, retry_in=round(delay))
        await session.commit()
        return check.status
    check.checked_at, check.next_attempt_at, check.last_error = utcnow(), None, None
    if verdict.flagged:
        check.status = "flagged"
        await service.flag_from_classifier(
            session,
            check,
            text=text,
            categories=verdict.categories,
            scores=verdict.scores,
            settings=settings,
            keyring=keyring,
        )
    else:
        check.status = "checked"
    await session.commit()
    return check.status


async def attempt_check(
    sessionmaker: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    settings: Settings,
    check_id: str,
) -> str | None:
    """One attempt at a due check; the status it leaves (None: not due, or not ours)."""
    lease = timedelta(seconds=settings.moderation_timeout_seconds + CLAIM_MARGIN_SECONDS)
    async with sessionmaker() as session:
        claimed = await _claim(session, keyring, check_id, lease=lease)
    if claimed is None:
        return None
    if claimed.text is None:
        async with sessionmaker() as session:
            await session.execute(
                update(ModerationCheck)
                .where(ModerationCheck.id == check_id)
                .values(status="checked", next_attempt_at=None, checked_at=utcnow())
            )
            await session.commit()
        return "checked"
    verdict: Verdict | ClassifierError
    try:
        verdict = await classify(settings, claimed.text)
    except ClassifierError as exc:
        verdict = exc
    async with sessionmaker() as session:
        return await _record(
            session,
            check_id,
            claimed.attempt,
            verdict=verdict,
            text=claimed.text,
            settings=settings,
            keyring=keyring,
        )


@job("moderation.classify")
async def classify_message(check_id: str) -> None:
    rt = runtime()
    await attempt_check(rt.sessionmaker, rt.keyring, rt.settings, check_id)


register_queue(
    Queue(
        "moderation_checks",
        "Messages waiting for the moderation classifier",
        ModerationCheck,
        ("queued",),
    )
)


@register_sweep("moderation_checks")
async def requeue_due(sessionmaker: async_sessionmaker[AsyncSession], limit: int = 100) -> int:
    """Send the job again for every queued check that is due (a retry after backoff, or a job
    lost in transport); the claim keeps a duplicate from calling twice."""
    async with read_sessionmaker(sessionmaker)() as session:
        due = list(
            (
                await session.execute(
                    select(ModerationCheck.id)
                    .where(ModerationCheck.status == "queued", _due(utcnow()))
                    .order_by(ModerationCheck.next_attempt_at)
                    .limit(limit)
                )
            ).scalars()
        )
    for check_id in due:
        await classify_message.kiq(check_id)
    return len(due)
