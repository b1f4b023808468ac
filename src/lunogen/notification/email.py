"""Email: rows in `outbound_emails`, sent by the `notification.send_email` job.

With `LUNOGEN_SMTP_URL` set the job delivers over SMTP (`smtp://`, `smtps://`, with optional
`user:password@`, `?starttls=true`); without it the row stays as the development outbox, which
`lunogen mail outbox` lists and the server log shows.

Sending has the shape of the webhook channel's deliveries: the job claims the row with a
conditional UPDATE and commits, talks to the SMTP server with no transaction open (each step
bounded by `LUNOGEN_SMTP_TIMEOUT_SECONDS`), and records the outcome in a new transaction. Any
failure (a 4xx or 5xx answer, a refused connection, a timeout) is retried: a relay's 5xx is as
often its own configuration (authentication, sender policy) as a bad address. The sweeper
re-sends what is due, with exponential backoff of one minute doubling up to an hour; after
`MAX_ATTEMPTS` attempts (one to two hours after the first) the row ends `failed` with its last
error, and `email_gave_up` is logged.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import structlog
from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.config import Settings
from lunogen.db import read_sessionmaker
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.notification.models import OutboundEmail
from lunogen.worker.broker import job, runtime
from lunogen.worker.enqueue import enqueue
from lunogen.worker.queues import Queue, register_queue
from lunogen.worker.sweeps import register_sweep

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 60.0
BACKOFF_MAX_SECONDS = 3600.0
CLAIM_MARGIN_SECONDS = 60.0  # past the longest attempt: a claimed row is not swept meanwhile


@dataclass(frozen=True)
class Letter:
    """What one attempt sends; read from the row, so every attempt sends the same message."""

    id: str
    to: str
    subject: str
    body: str


def queue_email(
    session: AsyncSession, keyring: KeyRing, *, to: str, subject: str, body: str
) -> OutboundEmail:
    email = OutboundEmail(
        id=new_id(),
        to_address=to,
        subject=subject,
        body_encrypted=keyring.encrypt(body),
        status="queued",
        next_attempt_at=utcnow(),
    )
    session.add(email)
    enqueue(session, send_email, email.id)
    return email


async def deliver_smtp(smtp_url: str, sender: str, letter: Letter, *, step_seconds: float) -> None:
    """Send `letter`. `step_seconds` bounds each SMTP step, and twice it the whole conversation
    (a cancelled conversation still says QUIT, within one more step)."""
    parts = urlsplit(smtp_url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("LUNOGEN_SMTP_URL must start with smtp:// or smtps://")
    query = parse_qs(parts.query)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = letter.to
    message["Subject"] = letter.subject
    message["Message-ID"] = f"<{letter.id}@lunogen>"
    message.set_content(letter.body)
    async with asyncio.timeout(2 * step_seconds):
        await aiosmtplib.send(
            message,
            hostname=parts.hostname or "localhost",
            port=parts.port or (465 if parts.scheme == "smtps" else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=parts.scheme == "smtps",
            start_tls=query.get("starttls", ["false"])[0] == "true" or None,
            timeout=step_seconds,
        )


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(attempt-1)."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(OutboundEmail.next_attempt_at.is_(None), OutboundEmail.next_attempt_at <= now)


async def _keep_in_outbox(session: AsyncSession, keyring: KeyRing, email_id: str) -> None:
    """No SMTP server: the row is the development outbox."""
    result = await session.execute(
        update(OutboundEmail)
        .where(OutboundEmail.id == email_id, OutboundEmail.status == "queued")
        .values(status="outbox", next_attempt_at=None)
    )
    if not getattr(result, "rowcount", 0):
        return
    email = await session.get(OutboundEmail, email_id)
    assert email is not None
    await session.commit()
    log.info(
        "email_outbox",
        to=email.to_address,
        subject=email.subject,
        body=keyring.decrypt(email.body_encrypted),
        hint="development outbox: set LUNOGEN_SMTP_URL to send for real",
    )


async def _claim(
    session: AsyncSession, keyring: KeyRing, email_id: str, *, lease: timedelta
) -> tuple[Letter, int] | None:
    """Take a due email for one attempt (committed); None when it is not due or not queued."""
    now = utcnow()
    result = await session.execute(
        update(OutboundEmail)
        .where(OutboundEmail.id == email_id, OutboundEmail.status == "queued", _due(now))
        .values(attempts=OutboundEmail.attempts + 1, next_attempt_at=now + lease)
    )
    if not getattr(result, "rowcount", 0):
        await session.rollback()
        return None
    email = await session.get(OutboundEmail, email_id)
    assert email is not None
    letter = Letter(
        id=email.id,
        to=email.to_address,
        subject=email.subject,
        body=keyring.decrypt(email.body_encrypted),
    )
    attempt = email.attempts
    await session.commit()
    return letter, attempt


def _describe(exc: Exception, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"the SMTP server did not answer within {timeout:g} s"
    return f"{type(exc).__name__}: {exc}"[:1000]


async def _record(
    session: AsyncSession, email_id: str, attempt: int, failure: Exception | None, error: str
) -> str | None:
    """Store the outcome of attempt number `attempt`; the status it leaves."""
    email = await session.get(OutboundEmail, email_id)
    if email is None or email.status != "queued":
        return None
    if failure is None:  # sent, even if our claim ran out and another attempt began
        email.status = "sent"
        email.sent_at = utcnow()
        email.last_error = None
        email.next_attempt_at = None
        await session.commit()
        return email.status
    if email.attempts != attempt:  # a later attempt owns the row now
        return None
    email.last_error = error
    # The address and the server's text stay out of the log: they are on the row.
    details = {"email_id": email_id, "attempts": attempt, "error_type": type(failure).__name__}
    smtp_code = getattr(failure, "code", None)
    if attempt >= MAX_ATTEMPTS:
        email.status = "failed"
        email.next_attempt_at = None
        log.error("email_gave_up", **details, smtp_code=smtp_code)
    else:
        delay = backoff_seconds(attempt)
        email.next_attempt_at = utcnow() + timedelta(seconds=delay)
        log.warning("email_send_failed", **details, smtp_code=smtp_code, retry_in=round(delay))
    await session.commit()
    return email.status


async def attempt_email(
    sessionmaker: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    settings: Settings,
    email_id: str,
) -> str | None:
    """One attempt at a due email; the status it leaves (None: not due, or not ours)."""
    async with sessionmaker() as session:
        if not settings.smtp_url:
            await _keep_in_outbox(session, keyring, email_id)
            return None
        timeout = settings.smtp_timeout_seconds
        lease = timedelta(seconds=3 * timeout + CLAIM_MARGIN_SECONDS)
        claimed = await _claim(session, keyring, email_id, lease=lease)
    if claimed is None:
        return None
    letter, attempt = claimed
    failure: Exception | None = None
    try:
        await deliver_smtp(settings.smtp_url, settings.mail_from, letter, step_seconds=timeout)
    except Exception as exc:
        failure = exc
    error = "" if failure is None else _describe(failure, timeout)
    async with sessionmaker() as session:
        return await _record(session, email_id, attempt, failure, error)


@job("notification.send_email")
async def send_email(email_id: str) -> None:
    rt = runtime()
    await attempt_email(rt.sessionmaker, rt.keyring, rt.settings, email_id)


register_queue(Queue("emails", "Outbound emails", OutboundEmail, ("queued", "sending")))


@register_sweep("email")
async def requeue_due(sessionmaker: async_sessionmaker[AsyncSession], limit: int = 100) -> int:
    """For the sweeper: send the job again for every queued email that is due (a retry after
    backoff, or a job lost in transport). The job's claim keeps a duplicate from sending."""
    async with read_sessionmaker(sessionmaker)() as session:
        due = list(
            (
                await session.execute(
                    select(OutboundEmail.id)
                    .where(OutboundEmail.status == "queued", _due(utcnow()))
                    .order_by(OutboundEmail.next_attempt_at)
                    .limit(limit)
                )
            ).scalars()
        )
    for email_id in due:
        await send_email.kiq(email_id)
    return len(due)
