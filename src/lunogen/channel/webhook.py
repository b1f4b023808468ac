"""The webhook channel: Standard Webhooks signatures and the delivery of replies to callbacks.

Deliveries: a `Delivery` row is keyed by the INBOUND message it answers (`message_id`), so it
can exist before the reply does and a reply is sent at most once per inbound message. It is
created `waiting` (async mode: with the inbound message; sync mode: when the caller's wait ran
out), becomes `queued` when the turn ends (`reply_ready`, or `reply_failed` when no reply will
come), and ends `delivered`, `failed` or `disabled`. What it sends follows from the stored
rows (there is no kind column): the reply (`message.reply`) if one exists, else, the inbound
message being `failed` or `skipped`, a failure notice (`message.failed`) with its `last_error`.

A 410 from the receiver disables the whole channel (`AgentChannel.disabled_at`) in the same
transaction as the delivery's outcome, and ends the channel's other pending deliveries as
`disabled`; an attempt on a disabled channel ends `disabled` without a request.

Retries: an attempt claims the row by pushing `next_attempt_at` past the send timeout (a
conditional UPDATE, so two jobs never send the same attempt). A retryable failure stores the
next `next_attempt_at` (exponential backoff with jitter, or `Retry-After` if longer); the job
sleeps and retries in place while the wait is short (the in-process broker ignores delays), and
the runtime sweeper (`requeue_due`) re-enqueues whatever is due after longer waits or a crash.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.agent.models import Agent, AgentChannel
from lunogen.channel.service import disable_channel, read_secrets
from lunogen.kit.crypto import KeyRing
from lunogen.kit.http import FetchError, SafeHttp, UnsafeUrlError
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.runlog.logs import log_event
from lunogen.runtime.models import Delivery, Message
from lunogen.worker.broker import job, runtime
from lunogen.worker.enqueue import enqueue
from lunogen.worker.sweeps import register_sweep

log = structlog.get_logger(__name__)

TOLERANCE_SECONDS = 5 * 60
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}")
SEND_TIMEOUT_SECONDS = 20.0
CLAIM = timedelta(seconds=60)  # longer than a send: a claimed row is not swept meanwhile
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 3600.0
INLINE_RETRY_MAX_SECONDS = 30.0  # longer waits are left to the sweeper
DEDUPE_PREFIX = "webhook:"
# Inbound statuses after which no reply will come: the waiting deliveries send a failure notice.
UNANSWERED = ("failed", "skipped")


# Standard Webhooks ----------------------------------------------------------------------


class SignatureError(ValueError):
    """The request's Standard Webhooks headers do not authenticate it; the text says why."""


def secret_bytes(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret."""
    value = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """`v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>`."""
    payload = body.encode() if isinstance(body, str) else body
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def verify(
    headers: Mapping[str, str], body: bytes, secrets: Sequence[str], *, now: float | None = None
) -> str:
    """Check the signature headers against any of `secrets`; return the `webhook-id`.

    `headers` must look names up case-insensitively (Starlette and httpx headers do).
    """
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    missing = [
        name
        for name, value in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", stamp),
            ("webhook-signature", signatures),
        )
        if not value
    ]
    if missing or msg_id is None or stamp is None or signatures is None:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    # ASCII digits, and few enough that the float arithmetic below cannot overflow.
    if not _UNIX_SECONDS.fullmatch(stamp):
        raise SignatureError("webhook-timestamp must be a unix time in seconds")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError(
            f"webhook-timestamp is more than {TOLERANCE_SECONDS // 60} minutes from the "
            "server's time (stale or replayed request)"
        )
    offered = [
        part.removeprefix("v1,").encode()
        for part in signatures.split(" ")
        if part.startswith("v1,")
    ]
    if not offered:
        raise SignatureError("webhook-signature has no 'v1,' signature")
    for secret in secrets:
        expected = sign(secret, msg_id, timestamp, body).removeprefix("v1,").encode()
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return msg_id
    raise SignatureError("webhook-signature does not match the channel's secret")


# Deliveries -----------------------------------------------------------------------------


def dedupe_key(channel_id: str, payload_id: str) -> str:
    return f"{DEDUPE_PREFIX}{channel_id}:{payload_id}"


def channel_key(channel_id: str) -> str:
    return f"{DEDUPE_PREFIX}{channel_id}"


def payload_id(inbound: Message) -> str | None:
    """The caller's `id` of an inbound webhook message (kept in its dedupe key)."""
    key = inbound.dedupe_key or ""
    if not key.startswith(DEDUPE_PREFIX):
        return None
    return key.removeprefix(DEDUPE_PREFIX).split(":", 1)[-1]


def new_delivery(*, inbound: Message, channel_id: str) -> Delivery:
    return Delivery(
        id=new_id(),
        message_id=inbound.id,
        agent_id=inbound.agent_id,
        channel_id=channel_id,
        status="waiting",
        next_attempt_at=utcnow(),
    )


async def _queue_waiting(session: AsyncSession, *, inbound_id: str) -> list[str]:
    ids = list(
        (
            await session.execute(
                update(Delivery)
                .where(Delivery.message_id == inbound_id, Delivery.status == "waiting")
                .values(status="queued", next_attempt_at=utcnow())
                .returning(Delivery.id)
            )
        ).scalars()
    )
    for delivery_id in ids:
        enqueue(session, deliver_webhook, delivery_id)
    return ids


async def reply_ready(session: AsyncSession, *, inbound_id: str) -> None:
    """The reply to `inbound_id` is being stored: queue the deliveries waiting for it.

    Called inside the transaction that stores the reply; the jobs start after it commits.
    """
    await _queue_waiting(session, inbound_id=inbound_id)


async def reply_failed(session: AsyncSession, *, inbound_id: str, reason: str) -> None:
    """The turn for `inbound_id` failed for good: its waiting deliveries send a failure notice.

    Called inside the transaction that marks the inbound message failed; the notice's `error`
    is read from the message (`last_error`) when it is sent, like a reply's text.
    """
    ids = await _queue_waiting(session, inbound_id=inbound_id)
    if ids:
        log.info("webhook_failure_notice_queued", inbound_id=inbound_id, reason=reason[:200])


async def queue_if_settled(session: AsyncSession, *, inbound_id: str) -> None:
    """Queue the waiting deliveries of `inbound_id` if its turn is already over.

    For a delivery row made after the turn may have ended (a sync caller's wait ran out): the
    turn's `reply_ready`/`reply_failed` found nothing to queue then.
    """
    inbound = await session.get(Message, inbound_id)
    answered = (
        await session.execute(select(Message.id).where(Message.reply_to_id == inbound_id))
    ).first()
    if answered is not None or (inbound is not None and inbound.status in UNANSWERED):
        await _queue_waiting(session, inbound_id=inbound_id)


@register_sweep("webhook_deliveries")
async def requeue_due(sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 100) -> int:
    """For the sweeper: queue waiting deliveries whose turn is over, re-enqueue due ones."""
    async with sessionmaker() as session:
        answered = select(Message.reply_to_id).where(Message.reply_to_id.is_not(None))
        unanswered = select(Message.id).where(Message.status.in_(UNANSWERED))
        await session.execute(
            update(Delivery)
            .where(
                Delivery.status == "waiting",
                or_(Delivery.message_id.in_(answered), Delivery.message_id.in_(unanswered)),
            )
            .values(status="queued", next_attempt_at=utcnow())
        )
        await session.commit()
        due = list(
            (
                await session.execute(
                    select(Delivery.id)
                    .where(Delivery.status == "queued", Delivery.next_attempt_at <= utcnow())
                    .limit(limit)
                )
            ).scalars()
        )
    for delivery_id in due:
        await deliver_webhook.kiq(delivery_id)
    return len(due)


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(attempt-1)."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), BACKOFF_MAX_SECONDS)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    seconds = (when - (now or utcnow())).total_seconds()
    return min(max(seconds, 0.0), BACKOFF_MAX_SECONDS)


@dataclass(frozen=True)
class _Target:
    delivery: Delivery
    inbound: Message
    reply: Message | None  # None: a failure notice (the turn ended without a reply)
    channel: AgentChannel
    agent: Agent

    @property
    def what(self) -> str:
        return "reply" if self.reply is not None else "failure notice"


@dataclass(frozen=True)
class _Cancel:
    """Why no attempt can be made: the delivery ends with `status` and no request."""

    status: str  # failed | disabled
    reason: str


async def _claim(session: AsyncSession, delivery_id: str) -> bool:
    now = utcnow()
    result = await session.execute(
        update(Delivery)
        .where(
            Delivery.id == delivery_id,
            Delivery.status == "queued",
            Delivery.next_attempt_at <= now,
        )
        .values(next_attempt_at=now + CLAIM, attempts=Delivery.attempts + 1)
    )
    await session.commit()
    return bool(getattr(result, "rowcount", 0))


async def _load(session: AsyncSession, delivery_id: str) -> _Target | _Cancel:
    """What the attempt needs, or why it cannot be made."""
    delivery = await session.get(Delivery, delivery_id)
    assert delivery is not None
    inbound = await session.get(Message, delivery.message_id)
    reply = (
        await session.execute(select(Message).where(Message.reply_to_id == delivery.message_id))
    ).scalar_one_or_none()
    channel = await session.get(AgentChannel, delivery.channel_id)
    agent = await session.get(Agent, delivery.agent_id)
    if inbound is None or (reply is None and inbound.status not in UNANSWERED):
        return _Cancel("failed", "the reply no longer exists")
    if agent is None or agent.deleted_at is not None:
        return _Cancel("failed", "the agent was deleted")
    if channel is None or channel.type != "webhook":
        return _Cancel("failed", "the webhook channel was removed")
    if channel.disabled_at is not None:
        return _Cancel("disabled", f"the channel is disabled: {channel.disabled_reason}")
    if not channel.config.get("callback_url"):
        return _Cancel("failed", "the channel has no callback_url")
    return _Target(delivery, inbound, reply, channel, agent)


def _timestamp(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _body(target: _Target, keyring: KeyRing) -> bytes:
    """The callback's JSON: the reply, or (no reply will come) why the turn failed.

    Built from stored rows only, so every attempt of a delivery sends the same bytes.
    """
    payload: dict[str, Any] = {
        "type": "message.reply" if target.reply is not None else "message.failed",
        "agent_id": target.agent.id,
        "channel_id": target.channel.id,
        "reply_to": payload_id(target.inbound),
    }
    if target.reply is not None:
        payload["message_id"] = target.reply.id
        payload["text"] = keyring.decrypt(target.reply.content)
        payload["created_at"] = _timestamp(target.reply.created_at)
    else:
        payload["error"] = target.inbound.last_error or "The agent could not answer"
        payload["created_at"] = _timestamp(
            target.inbound.completed_at or target.delivery.created_at
        )
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _finish(
    session: AsyncSession,
    delivery: Delivery,
    *,
    status: str,
    code: int | None,
    error: str | None,
    what: str = "reply",
) -> None:
    delivery.status = status
    delivery.last_status_code = code
    delivery.last_error = error
    delivery.next_attempt_at = None
    if status == "delivered":
        delivery.delivered_at = utcnow()
        log_event(
            session,
            agent_id=delivery.agent_id,
            event="reply.sent" if what == "reply" else "failure.sent",
            message=f"Webhook {what} {delivery.id} accepted ({code})",
            details={"delivery_id": delivery.id, "status_code": code},
        )
        return
    log_event(
        session,
        agent_id=delivery.agent_id,
        event=f"webhook.{status}",
        level="warning" if status == "disabled" else "error",
        message=f"Webhook delivery {delivery.id} {status}: {error}",
        details={"delivery_id": delivery.id, "status_code": code, "attempts": delivery.attempts},
    )


async def _disable_channel(session: AsyncSession, delivery: Delivery) -> None:
    """The receiver answered 410: disable the channel and drop its other pending deliveries."""
    reason = f"its callback URL answered 410 Gone (delivery {delivery.id})"
    disabled = await disable_channel(
        session, agent_id=delivery.agent_id, channel_id=delivery.channel_id, reason=reason
    )
    if disabled is None:  # already disabled by a concurrent 410
        return
    await session.execute(
        update(Delivery)
        .where(
            Delivery.channel_id == delivery.channel_id,
            Delivery.status.in_(("queued", "waiting")),
            Delivery.id != delivery.id,
        )
        .values(
            status="disabled",
            last_error=f"the channel is disabled: {reason}",
            next_attempt_at=None,
        )
    )


async def attempt_delivery(
    sessionmaker: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    http: SafeHttp,
    delivery_id: str,
) -> float | None:
    """Make one attempt if the delivery is due; return the seconds until a retry, else None."""
    async with sessionmaker() as session:
        if not await _claim(session, delivery_id):
            return None
        target = await _load(session, delivery_id)
        if isinstance(target, _Cancel):
            delivery = await session.get(Delivery, delivery_id)
            assert delivery is not None
            _finish(session, delivery, status=target.status, code=None, error=target.reason)
            await session.commit()
            return None
        what = target.what
        secret = read_secrets(target.channel, keyring)["secret"]
        url = str(target.channel.config["callback_url"])
        body = _body(target, keyring)

    headers = {"content-type": "application/json", **signed_headers(secret, delivery_id, body)}
    code: int | None = None
    retry_after: float | None = None
    error: str | None
    try:
        result = await http.send("POST", url, headers=headers, content=body, max_bytes=4096)
    except UnsafeUrlError as exc:
        outcome, error = "failed", str(exc)
    except FetchError as exc:
        outcome, error = "retry", str(exc)
    else:
        code = result.status_code
        error = f"the receiver answered {code}"
        if 200 <= code < 300:
            outcome, error = "delivered", None
        elif code == 410:
            outcome = "disabled"
        elif code == 429 or code >= 500:
            outcome = "retry"
            retry_after = retry_after_seconds(result.headers.get("retry-after"))
        else:
            outcome = "failed"

    async with sessionmaker() as session:
        row = await session.get(Delivery, delivery_id)
        assert row is not None
        if outcome == "retry" and row.attempts < MAX_ATTEMPTS:
            delay = max(backoff_seconds(row.attempts), retry_after or 0.0)
            row.next_attempt_at = utcnow() + timedelta(seconds=delay)
            row.last_status_code = code
            row.last_error = error
            await session.commit()
            log.info("webhook_retry", delivery_id=delivery_id, delay=delay, error=error)
            return delay
        if outcome == "retry":
            error = f"gave up after {row.attempts} attempts; last: {error}"
            outcome = "failed"
        if outcome == "disabled":
            await _disable_channel(session, row)
        _finish(session, row, status=outcome, code=code, error=error, what=what)
        await session.commit()
    return None


@job("channel.deliver_webhook")
async def deliver_webhook(delivery_id: str) -> None:
    """POST a reply (or a failure notice) to its channel's callback, signed; short retries here."""
    rt = runtime()
    http = SafeHttp(allow_private=rt.settings.allow_private_urls, timeout=SEND_TIMEOUT_SECONDS)
    for _ in range(MAX_ATTEMPTS):
        delay = await attempt_delivery(rt.sessionmaker, rt.keyring, http, delivery_id)
        if delay is None or delay > INLINE_RETRY_MAX_SECONDS:
            return
        await asyncio.sleep(delay)
