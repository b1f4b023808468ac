"""Email: rows in `outbound_emails`, sent by the `notification.send_email` job.

With `LUNOGEN_SMTP_URL` set the job delivers over SMTP (`smtp://`, `smtps://`, with optional
`user:password@`, `?starttls=true`); without it the row stays as the development outbox, which
`lunogen mail outbox` lists and the server log shows.
"""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.notification.models import OutboundEmail
from lunogen.worker.broker import job, runtime
from lunogen.worker.enqueue import enqueue

log = structlog.get_logger(__name__)

MAX_ATTEMPTS = 5


def queue_email(
    session: AsyncSession, keyring: KeyRing, *, to: str, subject: str, body: str
) -> OutboundEmail:
    email = OutboundEmail(
        id=new_id(),
        to_address=to,
        subject=subject,
        body_encrypted=keyring.encrypt(body),
        status="queued",
    )
    session.add(email)
    enqueue(session, send_email, email.id)
    return email


async def deliver_smtp(smtp_url: str, sender: str, email: OutboundEmail, body: str) -> None:
    parts = urlsplit(smtp_url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("LUNOGEN_SMTP_URL must start with smtp:// or smtps://")
    query = parse_qs(parts.query)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = email.to_address
    message["Subject"] = email.subject
    message["Message-ID"] = f"<{email.id}@lunogen>"
    message.set_content(body)
    await aiosmtplib.send(
        message,
        hostname=parts.hostname or "localhost",
        port=parts.port or (465 if parts.scheme == "smtps" else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        use_tls=parts.scheme == "smtps",
        start_tls=query.get("starttls", ["false"])[0] == "true" or None,
        timeout=30,
    )


@job("notification.send_email")
async def send_email(email_id: str) -> None:
    rt = runtime()
    async with rt.sessionmaker() as session:
        email = await session.get(OutboundEmail, email_id)
        if email is None or email.status in ("sent", "outbox"):
            return
        body = rt.keyring.decrypt(email.body_encrypted)
        if not rt.settings.smtp_url:
            email.status = "outbox"
            log.info(
                "email_outbox",
                to=email.to_address,
                subject=email.subject,
                body=body,
                hint="development outbox: set LUNOGEN_SMTP_URL to send for real",
            )
            await session.commit()
            return
        email.attempts += 1
        try:
            await deliver_smtp(rt.settings.smtp_url, rt.settings.mail_from, email, body)
        except Exception as exc:
            email.last_error = f"{type(exc).__name__}: {exc}"[:1000]
            email.status = "failed" if email.attempts >= MAX_ATTEMPTS else "queued"
            log.warning("email_send_failed", email_id=email.id, error=email.last_error)
        else:
            email.status = "sent"
            email.sent_at = utcnow()
            email.last_error = None
        await session.commit()
