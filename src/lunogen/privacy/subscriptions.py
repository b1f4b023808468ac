"""Cancelling a deleted account's Stripe subscription: a row, a claim, the call outside any
transaction, retries with backoff, a visible final state (the shape of `channel.registration`).

The subscriptions to cancel are those Stripe told us about for the account (`stripe_events`
rows of `customer.subscription.*` events) and has not reported deleted. Stripe's
`DELETE /v1/subscriptions/{id}` cancels at once; it answers 404 `resource_missing` for a
subscription already cancelled, which counts as done. Other failures are retried (at most
`MAX_ATTEMPTS`), then the row ends `failed` with Stripe's answer and an audit row, for the
operator to cancel it in Stripe's dashboard.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.audit import service as audit
from lunogen.billing.models_stripe import StripeEvent
from lunogen.channel.delivery import backoff_seconds
from lunogen.config import Settings
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.privacy.models import StripeCancellation
from lunogen.worker.broker import job, runtime
from lunogen.worker.enqueue import enqueue
from lunogen.worker.queues import Queue, register_queue
from lunogen.worker.sweeps import register_sweep

log = structlog.get_logger(__name__)

STRIPE_TIMEOUT_SECONDS = 30.0
CLAIM = timedelta(seconds=STRIPE_TIMEOUT_SECONDS + 30)
MAX_ATTEMPTS = 8


class CancelFailed(Exception):
    """Stripe did not cancel the subscription (message: what it answered)."""


async def known_subscriptions(session: AsyncSession, account_id: str) -> list[str]:
    """The account's subscriptions that Stripe has not reported deleted, oldest first."""
    rows = (
        await session.execute(
            select(StripeEvent.object_id, StripeEvent.type)
            .where(
                StripeEvent.account_id == account_id,
                StripeEvent.type.like("customer.subscription.%"),
                StripeEvent.object_id.is_not(None),
            )
            .order_by(StripeEvent.stripe_created_at)
        )
    ).all()
    deleted = {oid for oid, kind in rows if kind == "customer.subscription.deleted"}
    found: list[str] = []
    for object_id, _kind in rows:
        if object_id and object_id not in deleted and object_id not in found:
            found.append(object_id)
    return found


async def queue_cancellations(session: AsyncSession, *, account_id: str) -> list[str]:
    """Queue the cancellation of each of the account's live subscriptions (after commit)."""
    subscriptions = await known_subscriptions(session, account_id)
    for subscription_id in subscriptions:
        row = StripeCancellation(
            id=new_id(),
            account_id=account_id,
            subscription_id=subscription_id,
            status="queued",
            attempts=0,
            outcome="",
            next_attempt_at=utcnow(),
        )
        session.add(row)
        enqueue(session, cancel_subscription, row.id)
    return subscriptions


async def supersede_cancellations(session: AsyncSession, *, account_id: str) -> int:
    """The deletion was cancelled: queued cancellations are not sent. Returns how many were
    already sent or in flight (the person must subscribe again)."""
    await session.execute(
        update(StripeCancellation)
        .where(StripeCancellation.account_id == account_id, StripeCancellation.status == "queued")
        .values(status="superseded", completed_at=utcnow(), next_attempt_at=None)
    )
    sent = await session.execute(
        select(StripeCancellation.id).where(
            StripeCancellation.account_id == account_id,
            StripeCancellation.status.in_(("sending", "done")),
        )
    )
    return len(sent.all())


async def call_stripe(settings: Settings, subscription_id: str) -> str:
    """`DELETE /v1/subscriptions/{id}`; returns the outcome, raises CancelFailed."""
    if settings.stripe_secret_key is None or not settings.stripe_secret_key.get_secret_value():
        raise CancelFailed("Stripe is not configured on this server (LUNOGEN_STRIPE_SECRET_KEY)")
    import stripe

    http = stripe.HTTPXClient(timeout=STRIPE_TIMEOUT_SECONDS)
    client = stripe.StripeClient(
        settings.stripe_secret_key.get_secret_value(),
        base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
        max_network_retries=0,  # our own retries, with backoff, on the row
        http_client=http,
    )
    try:
        subscription = await client.v1.subscriptions.cancel_async(subscription_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404 and exc.code == "resource_missing":
            return "already canceled"
        raise CancelFailed(_described(exc)) from exc
    except stripe.StripeError as exc:
        raise CancelFailed(_described(exc)) from exc
    finally:
        await http.close_async()
    return str(subscription.status or "canceled")


def _described(exc: object) -> str:
    import stripe

    assert isinstance(exc, stripe.StripeError)
    if isinstance(exc, stripe.APIConnectionError):
        return f"Stripe is unreachable: {exc.user_message or exc.__class__.__name__}"
    code = f" {exc.code}" if exc.code else ""
    return f"Stripe answered HTTP {exc.http_status}{code}: {exc.user_message or ''}".strip()


async def _claim(session: AsyncSession, row_id: str, now: datetime) -> bool:
    result = await session.execute(
        update(StripeCancellation)
        .where(
            StripeCancellation.id == row_id,
            StripeCancellation.status.in_(("queued", "sending")),
            StripeCancellation.next_attempt_at <= now,  # a `sending` one whose worker died
        )
        .values(
            status="sending", next_attempt_at=now + CLAIM, attempts=StripeCancellation.attempts + 1
        )
    )
    await session.commit()
    return bool(getattr(result, "rowcount", 0))


async def attempt_cancellation(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    row_id: str,
    *,
    now: datetime | None = None,
) -> float | None:
    """One attempt if due (`now`: the clock); the seconds until the next one, else None."""
    async with sessionmaker() as session:
        if not await _claim(session, row_id, now or utcnow()):
            return None
        row = await session.get(StripeCancellation, row_id)
        assert row is not None
        subscription_id = row.subscription_id
    error: str | None = None
    outcome = ""
    try:
        outcome = await call_stripe(settings, subscription_id)
    except CancelFailed as exc:
        error = str(exc)
    except Exception as exc:  # a bug: retried, then failed, never stuck in `sending`
        log.exception("stripe_cancel_crashed", cancellation_id=row_id)
        error = f"unexpected error: {exc}"
    async with sessionmaker() as session:
        row = await session.get(StripeCancellation, row_id)
        assert row is not None
        if error is not None and row.attempts < MAX_ATTEMPTS:
            delay = backoff_seconds(row.attempts)
            row.status = "queued"
            row.next_attempt_at = (now or utcnow()) + timedelta(seconds=delay)
            row.last_error = error[:2000]
            await session.commit()
            return delay
        row.status = "done" if error is None else "failed"
        row.outcome = outcome[:100]
        row.completed_at = utcnow()
        row.next_attempt_at = None
        row.last_error = None if error is None else error[:2000]
        audit.record(
            session,
            action="privacy.subscription_canceled"
            if error is None
            else "privacy.subscription_cancel_failed",
            actor_user_id=None,
            subject_user_id=row.account_id,
            target_type="stripe_subscription",
            target_id=row.subscription_id,
            details={"attempts": row.attempts, "outcome": outcome, "error": error},
        )
        if error is not None:
            log.error("stripe_cancel_failed", cancellation_id=row_id, error=error)
        await session.commit()
    return None


@job("privacy.cancel_subscription")
async def cancel_subscription(row_id: str) -> None:
    rt = runtime()
    for _ in range(MAX_ATTEMPTS):
        delay = await attempt_cancellation(rt.sessionmaker, rt.settings, row_id)
        if delay is None or delay > 30:
            return
        await asyncio.sleep(delay)


register_queue(
    Queue(
        "stripe_cancellations",
        "Subscriptions of deleted accounts to cancel at Stripe",
        StripeCancellation,
        ("queued", "sending"),
    )
)


@register_sweep("stripe_cancellations")
async def requeue_due(sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 100) -> int:
    async with sessionmaker() as session:
        due = list(
            (
                await session.execute(
                    select(StripeCancellation.id)
                    .where(
                        StripeCancellation.status.in_(("queued", "sending")),
                        StripeCancellation.next_attempt_at <= utcnow(),
                    )
                    .limit(limit)
                )
            ).scalars()
        )
    for row_id in due:
        await cancel_subscription.kiq(row_id)
    return len(due)
