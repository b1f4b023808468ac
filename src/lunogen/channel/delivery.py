"""Replies on their way out: one `Delivery` row per inbound message and channel, sent by a job
through the channel's type (`ChannelType.send`), retried with backoff, ending in a state the
owner can see.

A delivery is created `waiting` with the inbound message (or, for a webhook caller in sync mode,
when its wait ran out) and becomes `queued` when the turn ends (`_queue_for_turn`, a listener of
`runtime.replies`). What it sends follows from the stored rows: the reply if one exists, else a
failure notice. An attempt claims the row by pushing `next_attempt_at` past the send timeout (a
conditional UPDATE: two jobs never send the same attempt), calls the provider with no
transaction open, and stores the outcome: `delivered` (with a receipt per provider message),
`failed`, `disabled` (the channel cannot send until its owner acts; the owner is told),
`held` (the provider's rules forbid sending now; the owner is told), `blocked` (the contact
blocked the agent). A retryable failure stores the next `next_attempt_at` (exponential backoff
with jitter, or the provider's `Retry-After` if longer): the job retries in place while the wait
is short, and the sweeper (`requeue_due`) re-enqueues whatever is due after longer waits or a
crash.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

import structlog
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from lunogen.agent.models import Agent, AgentChannel
from lunogen.channel.contract import (
    ChannelType,
    ChannelView,
    Outgoing,
    ProviderContext,
    SendOutcome,
    StatusUpdate,
    channel_type,
    type_of_channel_key,
)
from lunogen.channel.models import ChannelContact, Delivery, DeliveryReceipt, EarlyStatus
from lunogen.channel.service import disable_channel, tell_owner, view_of
from lunogen.kit.crypto import KeyRing
from lunogen.kit.effects import Effects
from lunogen.kit.http import SafeHttp
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.runlog.logs import log_event
from lunogen.runtime import replies
from lunogen.runtime.models import Message, Thread
from lunogen.worker.broker import job, runtime
from lunogen.worker.enqueue import enqueue
from lunogen.worker.queues import Queue, register_queue
from lunogen.worker.sweeps import register_sweep

log = structlog.get_logger(__name__)

SEND_TIMEOUT_SECONDS = 20.0
# An attempt (every part of a long reply) must end within SEND_BUDGET; its claim lasts longer,
# so that a claimed row is never taken by a second attempt while the first is still sending.
SEND_BUDGET_SECONDS = 240.0
CLAIM = timedelta(seconds=SEND_BUDGET_SECONDS + 60)
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 3600.0
INLINE_RETRY_MAX_SECONDS = 30.0  # longer waits are left to the sweeper
# Inbound statuses after which no reply will come: the waiting deliveries send a failure notice.
UNANSWERED = ("failed", "skipped")
_RECEIPT_ORDER = {"sent": 0, "delivered": 1, "read": 2}
EARLY_STATUS_KEPT = timedelta(days=1)


def new_delivery(*, inbound_id: str, agent_id: str, channel_id: str) -> Delivery:
    return Delivery(
        id=new_id(),
        message_id=inbound_id,
        agent_id=agent_id,
        channel_id=channel_id,
        status="waiting",
        next_attempt_at=utcnow(),
    )


# The turn's end ---------------------------------------------------------------------------


async def queue_waiting(session: AsyncSession, *, inbound_id: str) -> list[str]:
    """Queue the deliveries waiting for `inbound_id`'s turn; their jobs start after commit."""
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
        enqueue(session, deliver, delivery_id)
    return ids


@replies.on_turn_end
async def _queue_for_turn(session: AsyncSession, end: replies.TurnEnd) -> None:
    found = type_of_channel_key(end.channel_key)
    if found is None or not found[0].pushes_replies:
        return  # the request that brought the message answers it (API, web chat)
    await queue_waiting(session, inbound_id=end.inbound_id)


async def queue_if_settled(session: AsyncSession, *, inbound_id: str) -> None:
    """Queue the waiting deliveries of `inbound_id` if its turn is already over.

    For a delivery row made after the turn may have ended (a sync caller's wait ran out): the
    turn's end found nothing to queue then.
    """
    inbound = await session.get(Message, inbound_id)
    answered = (
        await session.execute(select(Message.id).where(Message.reply_to_id == inbound_id))
    ).first()
    if answered is not None or (inbound is not None and inbound.status in UNANSWERED):
        await queue_waiting(session, inbound_id=inbound_id)


register_queue(
    Queue("deliveries", "Replies to send to a channel", Delivery, ("waiting", "queued", "sending"))
)


@register_sweep("channel_deliveries")
async def requeue_due(sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 100) -> int:
    """For the sweeper: queue waiting deliveries whose turn is over, re-enqueue due ones."""
    async with sessionmaker() as session:
        # Correlated, so that each waiting delivery looks up its own message by index instead
        # of the sweep reading every message.
        reply = aliased(Message)
        answered = select(reply.id).where(reply.reply_to_id == Delivery.message_id).exists()
        unanswered = (
            select(Message.id)
            .where(Message.id == Delivery.message_id, Message.status.in_(UNANSWERED))
            .exists()
        )
        await session.execute(
            update(Delivery)
            .where(Delivery.status == "waiting", or_(answered, unanswered))
            .values(status="queued", next_attempt_at=utcnow())
        )
        # News of messages no receipt ever matched (sent by another system, or lost).
        await session.execute(
            delete(EarlyStatus).where(EarlyStatus.created_at < utcnow() - EARLY_STATUS_KEPT)
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
        await deliver.kiq(delivery_id)
    return len(due)


# Backoff ----------------------------------------------------------------------------------


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(attempt-1)."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date), capped; None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value[:12]), BACKOFF_MAX_SECONDS)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    seconds = (when - (now or utcnow())).total_seconds()
    return min(max(seconds, 0.0), BACKOFF_MAX_SECONDS)


# One attempt ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Attempt:
    kind: ChannelType
    view: ChannelView
    outgoing: Outgoing


@dataclass(frozen=True)
class _Cancel:
    """Why no attempt can be made: the delivery ends with `status` and no request."""

    status: str  # failed | disabled | blocked
    reason: str


async def _claim(session: AsyncSession, delivery_id: str) -> bool:
    """Take the delivery for one attempt if it is due; one whose attempts are used up (the last
    ones never stored an outcome: a crashed worker) ends `failed` instead. Commits."""
    now = utcnow()
    due = (Delivery.id == delivery_id, Delivery.status == "queued", Delivery.next_attempt_at <= now)
    result = await session.execute(
        update(Delivery)
        .where(*due, Delivery.attempts < MAX_ATTEMPTS)
        .values(next_attempt_at=now + CLAIM, attempts=Delivery.attempts + 1)
    )
    claimed = bool(getattr(result, "rowcount", 0))
    if not claimed:
        spent = (
            await session.execute(select(Delivery).where(*due, Delivery.attempts >= MAX_ATTEMPTS))
        ).scalar_one_or_none()
        if spent is not None:
            _finish(
                session,
                spent,
                status="failed",
                code=spent.last_status_code,
                error=f"gave up after {spent.attempts} attempts (the last did not finish); "
                f"last: {spent.last_error}",
                what="reply",
                channel_type_name="channel",
            )
    await session.commit()
    return claimed


async def _load(session: AsyncSession, delivery: Delivery, keyring: KeyRing) -> _Attempt | _Cancel:
    """What the attempt needs, or why it cannot be made."""
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
    kind = None if channel is None else channel_type(channel.type)
    if channel is None or kind is None or not kind.pushes_replies:
        return _Cancel("failed", "the channel was removed")
    if channel.disabled_at is not None:
        return _Cancel("disabled", f"the channel is disabled: {channel.disabled_reason}")
    thread = await session.get(Thread, inbound.thread_id)
    assert thread is not None
    contact = (
        await session.execute(
            select(ChannelContact).where(
                ChannelContact.channel_id == channel.id, ChannelContact.contact == thread.contact
            )
        )
    ).scalar_one_or_none()
    if contact is not None and contact.blocked_at is not None:
        return _Cancel("blocked", "the contact blocked the agent; nothing is sent to them")
    view = view_of(channel, agent_name=agent.name, keyring=keyring)
    if reply is not None:
        text, created = keyring.decrypt(reply.content), reply.created_at
    else:  # what the contact is told: the type's notice, else (a machine caller) the reason
        notice = kind.failure_notice(view)
        text = notice if notice is not None else inbound.last_error or "The agent could not answer"
        created = inbound.completed_at or delivery.created_at
    outgoing = Outgoing(
        delivery_id=delivery.id,
        kind="reply" if reply is not None else "failure",
        text=text,
        contact=thread.contact,
        agent_id=agent.id,
        inbound_id=inbound.id,
        inbound_reference=inbound.external_id,
        inbound_payload_id=_payload_id(inbound, channel.id),
        # The provider's time where it gave one: a message redelivered late was written earlier.
        contact_wrote_at=max(
            inbound.sent_at or inbound.created_at,
            contact.last_inbound_at
            if contact and contact.last_inbound_at
            else inbound.sent_at or inbound.created_at,
        ),
        reply_id=reply.id if reply is not None else None,
        created_at=created,
        parts_sent=delivery.parts_sent,
    )
    return _Attempt(kind, view, outgoing)


def _payload_id(inbound: Message, channel_id: str) -> str | None:
    """The sender's own id of an inbound message, kept in its dedupe key `<type>:<channel>:<id>`."""
    key = inbound.dedupe_key or ""
    _, _, rest = key.partition(":")
    found_channel, _, payload = rest.partition(":")
    return payload if found_channel == channel_id and payload else None


def _finish(
    session: AsyncSession,
    delivery: Delivery,
    *,
    status: str,
    code: int | None,
    error: str | None,
    what: str,
    channel_type_name: str,
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
            message=f"{channel_type_name.capitalize()} {what} {delivery.id} accepted"
            + (f" ({code})" if code else ""),
            details={"delivery_id": delivery.id, "status_code": code},
        )
        return
    log_event(
        session,
        agent_id=delivery.agent_id,
        event=f"delivery.{status}",
        level="warning" if status in ("disabled", "blocked", "held") else "error",
        message=f"{channel_type_name.capitalize()} delivery {delivery.id} {status}: {error}",
        details={"delivery_id": delivery.id, "status_code": code, "attempts": delivery.attempts},
    )


async def _disable_channel(
    session: AsyncSession, effects: Effects, delivery: Delivery, reason: str
) -> None:
    """The channel cannot send any more: disable it, drop its other pending deliveries, and
    tell the owner."""
    disabled = await disable_channel(
        session, agent_id=delivery.agent_id, channel_id=delivery.channel_id, reason=reason
    )
    if disabled is None:  # already disabled by a concurrent attempt
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
    await tell_owner(
        session,
        effects,
        agent_id=delivery.agent_id,
        kind="channel.disabled",
        title="A channel of {agent} stopped sending",
        body="A channel of your agent {agent!r} was disabled: "
        + reason
        + ". Nothing is sent or accepted on it until you fix it and enable it again.",
        dedupe_key=f"channel:{delivery.channel_id}:disabled:{disabled.isoformat()}",
    )


async def _store_outcome(
    session: AsyncSession,
    effects: Effects,
    row: Delivery,
    attempt: _Attempt,
    outcome: SendOutcome,
) -> float | None:
    what = attempt.outgoing.kind
    name = attempt.kind.name
    row.parts_sent = max(row.parts_sent, outcome.parts_sent)
    first_part = attempt.outgoing.parts_sent
    receipts: list[DeliveryReceipt] = []
    for index, external_id in enumerate(outcome.external_ids):
        if not external_id:  # the provider named no id for this part: nothing to track
            continue
        receipts.append(
            DeliveryReceipt(
                id=new_id(),
                delivery_id=row.id,
                channel_id=row.channel_id,
                external_id=external_id[:200],
                part=first_part + index,
                status="sent",
                status_at=utcnow(),
            )
        )
    session.add_all(receipts)
    result = outcome.result
    error = outcome.error
    if result == "retry" and row.attempts < MAX_ATTEMPTS:
        delay = max(
            backoff_seconds(row.attempts), min(outcome.retry_after or 0.0, BACKOFF_MAX_SECONDS)
        )
        row.next_attempt_at = utcnow() + timedelta(seconds=delay)
        row.last_status_code = outcome.status_code
        row.last_error = error
        log.info("delivery_retry", delivery_id=row.id, delay=delay, error=error)
        await session.flush()
        await _apply_early_statuses(session, effects, receipts)
        return delay
    if result == "retry":
        result, error = "failed", f"gave up after {row.attempts} attempts; last: {error}"
    status = {"disable_channel": "disabled"}.get(result, result)
    if result == "disable_channel":
        await _disable_channel(session, effects, row, error or "the provider refused it")
    elif result == "blocked":
        await _mark_blocked(session, row, attempt.outgoing.contact)
    elif result == "held":
        await tell_owner(
            session,
            effects,
            agent_id=row.agent_id,
            kind="delivery.held",
            title="A reply of {agent} could not be sent",
            body="A reply of your agent {agent!r} to "
            + attempt.outgoing.contact
            + " is held: "
            + (error or "the provider's rules forbid sending it now")
            + ". It is kept in the conversation.",
            dedupe_key=f"delivery:{row.id}:held",
        )
    _finish(
        session,
        row,
        status=status,
        code=outcome.status_code,
        error=error,
        what=what,
        channel_type_name=name,
    )
    await session.flush()
    await _apply_early_statuses(session, effects, receipts)
    return None


async def _mark_blocked(session: AsyncSession, delivery: Delivery, contact: str) -> None:
    now = utcnow()
    updated = await session.execute(
        update(ChannelContact)
        .where(ChannelContact.channel_id == delivery.channel_id, ChannelContact.contact == contact)
        .values(blocked_at=now)
    )
    if not getattr(updated, "rowcount", 0):
        session.add(
            ChannelContact(
                id=new_id(),
                channel_id=delivery.channel_id,
                agent_id=delivery.agent_id,
                contact=contact,
                blocked_at=now,
            )
        )


async def attempt_delivery(
    sessionmaker: async_sessionmaker[AsyncSession],
    effects: Effects,
    http: SafeHttp,
    delivery_id: str,
) -> float | None:
    """Make one attempt if the delivery is due; return the seconds until a retry, else None."""
    async with sessionmaker() as session:
        if not await _claim(session, delivery_id):
            return None
        delivery = await session.get(Delivery, delivery_id)
        assert delivery is not None
        loaded = await _load(session, delivery, effects.keyring)
        if isinstance(loaded, _Cancel):
            channel = await session.get(AgentChannel, delivery.channel_id)
            _finish(
                session,
                delivery,
                status=loaded.status,
                code=None,
                error=loaded.reason,
                what="reply",
                channel_type_name=channel.type if channel is not None else "channel",
            )
            await session.commit()
            return None

    ctx = ProviderContext(settings=effects.settings, http=http)
    try:
        async with asyncio.timeout(SEND_BUDGET_SECONDS):
            outcome = await loaded.kind.send(ctx, loaded.view, loaded.outgoing)
    except TimeoutError:
        outcome = SendOutcome(
            "retry", error=f"the attempt took longer than {SEND_BUDGET_SECONDS:g} seconds"
        )
    except Exception as exc:  # a bug in a type must not leave the delivery claimed forever
        log.exception("delivery_send_crashed", delivery_id=delivery_id)
        outcome = SendOutcome("retry", error=f"the {loaded.kind.name} sender failed: {exc}")

    async with sessionmaker() as session:
        row = await session.get(Delivery, delivery_id)
        assert row is not None
        delay = await _store_outcome(session, effects, row, loaded, outcome)
        await session.commit()
    return delay


@job("channel.deliver")
async def deliver(delivery_id: str) -> None:
    """Send a reply (or a failure notice) through its channel; short retries here."""
    rt = runtime()
    http = SafeHttp(allow_private=rt.settings.allow_private_urls, timeout=SEND_TIMEOUT_SECONDS)
    effects = Effects(settings=rt.settings, keyring=rt.keyring)
    for _ in range(MAX_ATTEMPTS):
        delay = await attempt_delivery(rt.sessionmaker, effects, http, delivery_id)
        if delay is None or delay > INLINE_RETRY_MAX_SECONDS:
            return
        await asyncio.sleep(delay)


async def last_deliveries(
    session: AsyncSession, *, channel_ids: Sequence[str]
) -> dict[str, Delivery]:
    """The newest delivery of each channel (by index: one short lookup per channel)."""
    found: dict[str, Delivery] = {}
    for channel_id in channel_ids:
        row = (
            await session.execute(
                select(Delivery)
                .where(Delivery.channel_id == channel_id)
                .order_by(Delivery.created_at.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if row is not None:
            found[channel_id] = row
    return found


# Provider receipts ----------------------------------------------------------------------


async def apply_statuses(
    session: AsyncSession,
    *,
    channel_id: str,
    statuses: list[StatusUpdate],
    effects: Effects | None = None,
) -> int:
    """Record the provider's news about messages we sent; returns how many were ours.

    Out of order is normal: a status only moves a receipt forward (sent → delivered → read),
    and `failed` never overrides delivered or read. News of a message whose receipt is not
    written yet (the send that made it is still finishing) is kept (`EarlyStatus`) and applied
    when it is. A part failed for a closed service window holds its delivery
    (`_hold_outside_window`): the owner is told (with `effects`, else the job runtime's).
    """
    matched = 0
    for news in statuses:
        receipts = list(
            (
                await session.execute(
                    select(DeliveryReceipt).where(
                        DeliveryReceipt.channel_id == channel_id,
                        DeliveryReceipt.external_id == news.external_id,
                    )
                )
            ).scalars()
        )
        if not receipts:
            session.add(
                EarlyStatus(
                    id=new_id(),
                    channel_id=channel_id,
                    external_id=news.external_id[:200],
                    status=news.status,
                    at=news.at,
                    error_code=news.error_code,
                    error=None if news.error is None else news.error[:2000],
                    window_closed=news.window_closed,
                )
            )
            continue
        matched += 1
        for receipt in receipts:
            await _apply_status(session, effects, receipt, news)
    return matched


async def _apply_status(
    session: AsyncSession, effects: Effects | None, receipt: DeliveryReceipt, news: StatusUpdate
) -> None:
    if not _moves_forward(receipt.status, news.status):
        return
    receipt.status = news.status
    receipt.status_at = news.at or utcnow()
    if news.status != "failed":
        return
    receipt.error = news.error or (f"error {news.error_code}" if news.error_code else None)
    delivery = await session.get(Delivery, receipt.delivery_id)
    if delivery is None:
        return
    if news.window_closed:
        await _hold_outside_window(session, effects, delivery, receipt)
        return
    log_event(
        session,
        agent_id=delivery.agent_id,
        event="delivery.failed",
        level="error",
        message=f"The provider could not deliver part {receipt.part + 1} of "
        f"delivery {delivery.id}: {receipt.error}",
        details={"delivery_id": delivery.id, "error_code": news.error_code},
    )


async def _apply_early_statuses(
    session: AsyncSession, effects: Effects, receipts: list[DeliveryReceipt]
) -> None:
    """Apply the news that came before these receipts were written, then forget it."""
    if not receipts:
        return
    by_id = {receipt.external_id: receipt for receipt in receipts}
    early = list(
        (
            await session.execute(
                select(EarlyStatus)
                .where(
                    EarlyStatus.channel_id == receipts[0].channel_id,
                    EarlyStatus.external_id.in_(list(by_id)),
                )
                .order_by(EarlyStatus.created_at)
            )
        ).scalars()
    )
    for row in early:
        news = StatusUpdate(
            external_id=row.external_id,
            status=row.status,  # type: ignore[arg-type]
            at=row.at,
            error_code=row.error_code,
            error=row.error,
            window_closed=row.window_closed,
        )
        await _apply_status(session, effects, by_id[row.external_id], news)
        await session.delete(row)


async def _hold_outside_window(
    session: AsyncSession, effects: Effects | None, delivery: Delivery, receipt: DeliveryReceipt
) -> None:
    """The provider accepted the reply, then refused it because the contact's service window
    had closed: the delivery is `held` (the reply stays in the conversation), logged, and the
    owner told once (the same notification key as a delivery held when sent)."""
    if delivery.status == "held":  # another part of it failed the same way
        return
    reason = f"the provider refused part {receipt.part + 1} after accepting it: {receipt.error}"
    delivery.status = "held"
    delivery.last_error = reason
    delivery.next_attempt_at = None
    log_event(
        session,
        agent_id=delivery.agent_id,
        event="delivery.held",
        level="warning",
        message=f"Delivery {delivery.id} held: {reason}",
        details={"delivery_id": delivery.id, "external_id": receipt.external_id},
    )
    inbound = await session.get(Message, delivery.message_id)
    thread = None if inbound is None else await session.get(Thread, inbound.thread_id)
    contact = thread.contact if thread is not None else "a contact"
    said = f"{contact} is held: {reason}"
    if effects is None:
        rt = runtime()
        effects = Effects(settings=rt.settings, keyring=rt.keyring)
    await tell_owner(
        session,
        effects,
        agent_id=delivery.agent_id,
        kind="delivery.held",
        title="A reply of {agent} could not be sent",
        body="A reply of your agent {agent!r} to "
        + said
        + ". It is kept in the conversation. Once a contact's service window has closed, the "
        "provider takes only approved templates: set the channel's template_name to send one "
        "in such cases.",
        dedupe_key=f"delivery:{delivery.id}:held",
    )


def _moves_forward(current: str, new: str) -> bool:
    if current == new:
        return False
    if new == "failed":
        return current == "sent"
    if current == "failed":
        return False
    return _RECEIPT_ORDER.get(new, -1) > _RECEIPT_ORDER.get(current, -1)
