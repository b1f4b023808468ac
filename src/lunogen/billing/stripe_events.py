"""Applying Stripe's webhook events: top-ups, refunds and the Pro plan.

Each event is stored once by its id, in the transaction that applies it, so a repeated delivery
changes nothing; the ledger's idempotency keys (`topup:<session>`, `refund:<charge>:<cumulative
amount refunded>`) make the same payment land once even when it is announced by two different
events (`checkout.session.completed` and `..._async_payment_succeeded`), in any order.

Events only touch the database (no call out), so they are applied within the webhook request
and Stripe gets its 2xx when they are committed; a failure rolls everything back and answers 5xx,
and Stripe delivers again.

Stripe renders an event in its webhook endpoint's API version (else the account's default), and
says which in `api_version`. The endpoint should be created with `stripe_webhook_api_version`;
an event in another version is logged (`stripe_event_api_version`) and applied all the same
when the fields we read are there. The one shape we read that moved is `invoice.paid`'s
subscription: top-level `subscription` (+ `subscription_details`) before `2025-03-31.basil`,
`parent.subscription_details` since; both are read, the event's version deciding which first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.audit import service as audit
from lunogen.billing import ledger
from lunogen.billing.models import CreditEntry, EntryKind
from lunogen.billing.models_stripe import StripeEvent
from lunogen.billing.service import after_balance_change, default_threshold
from lunogen.billing.units import credits_to_micro, micro_to_credits_str
from lunogen.errors import BadRequestError
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow
from lunogen.notification.service import notify

log = structlog.get_logger(__name__)

PRO_STATUSES = frozenset({"active", "trialing"})
FREE_STATUSES = frozenset({"canceled", "unpaid", "incomplete_expired"})
PLAN_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "invoice.paid",
    }
)
MAX_ID_LENGTH = 255
BASIL = "2025-03-31"  # the first API version with `invoice.parent.subscription_details`


@dataclass(frozen=True)
class Received:
    event_id: str
    outcome: str
    duplicate: bool


async def receive(session: AsyncSession, effects: Effects, event: dict[str, Any]) -> Received:
    """Store `event` (already verified) and apply it, unless it was stored before."""
    event_id, event_type = event.get("id"), event.get("type")
    if not _is_id(event_id) or not isinstance(event_type, str) or not event_type:
        raise BadRequestError("the event has no valid id or type")
    assert isinstance(event_id, str)
    existing = await session.get(StripeEvent, event_id)
    if existing is not None:
        return Received(event_id, existing.outcome, duplicate=True)
    obj = (event.get("data") or {}).get("object") or {}
    created = event.get("created")
    row = StripeEvent(
        id=event_id,
        type=event_type[:100],
        object_id=_text(obj.get("id")),
        stripe_created_at=datetime.fromtimestamp(created if isinstance(created, int) else 0, UTC),
        livemode=bool(event.get("livemode")),
        outcome="",
        received_at=utcnow(),
    )
    try:
        async with session.begin_nested():
            session.add(row)
    except IntegrityError:  # the same event, delivered concurrently, was stored first
        return Received(event_id, "duplicate", duplicate=True)
    version = event.get("api_version")
    if version != effects.settings.stripe_webhook_api_version:
        log.warning(
            "stripe_event_api_version",
            event_id=event_id,
            type=event_type,
            api_version=version,
            expected=effects.settings.stripe_webhook_api_version,
        )
    outcome = await _apply(
        session, effects, row, event_type, obj, version if isinstance(version, str) else None
    )
    row.outcome = outcome[:100]
    row.processed_at = utcnow()
    await session.flush()
    log.info("stripe_event", event_id=event_id, type=event_type, outcome=row.outcome)
    return Received(event_id, row.outcome, duplicate=False)


async def _apply(
    session: AsyncSession,
    effects: Effects,
    row: StripeEvent,
    event_type: str,
    obj: Any,
    version: str | None,
) -> str:
    if not isinstance(obj, dict):
        return "ignored: no object"
    if event_type == "checkout.session.completed":
        if obj.get("mode") != "payment":
            return "ignored: subscription checkout (plan follows subscription events)"
        if obj.get("payment_status") != "paid":
            return "awaiting payment"
        return await _top_up(session, effects, row, obj)
    if event_type == "checkout.session.async_payment_succeeded":
        if obj.get("mode") != "payment":
            return "ignored: subscription checkout (plan follows subscription events)"
        return await _top_up(session, effects, row, obj)
    if event_type == "checkout.session.async_payment_failed":
        return await _payment_failed(session, effects, row, obj)
    if event_type == "charge.refunded":
        return await _refund(session, effects, row, obj)
    if event_type in PLAN_EVENTS:
        return await _plan(session, row, event_type, obj, version)
    return "ignored: not handled"


# --- top-ups and refunds --------------------------------------------------------------------


async def _owner(session: AsyncSession, row: StripeEvent, *candidates: Any) -> User | None:
    """The user named by the first usable candidate (our metadata or client_reference_id)."""
    for candidate in candidates:
        if isinstance(candidate, str) and 0 < len(candidate) <= 36:
            user = await session.get(User, candidate)
            if user is not None:
                row.account_id = user.id
                return user
            return None
    return None


def _bought_credits(metadata: Any) -> int | None:
    """Micro-credits a top-up paid for, from the metadata we put on its session and charge."""
    if not isinstance(metadata, dict) or metadata.get("kind") != "topup":
        return None
    try:
        micro = credits_to_micro(Decimal(str(metadata.get("credits"))))
    except (InvalidOperation, ValueError, TypeError):
        return None
    return micro if 0 < micro <= ledger.MAX_AMOUNT else None


async def _top_up(
    session: AsyncSession, effects: Effects, row: StripeEvent, checkout: dict[str, Any]
) -> str:
    metadata = checkout.get("metadata") or {}
    micro = _bought_credits(metadata)
    if micro is None:
        return "ignored: not a LunoGen top-up"
    user = await _owner(
        session, row, metadata.get("account_id"), checkout.get("client_reference_id")
    )
    if user is None:
        return "ignored: unknown account"
    session_id = _text(checkout.get("id"))
    if session_id is None:
        return "ignored: no session id"
    paid = checkout.get("amount_total")
    currency = str(checkout.get("currency") or "").upper()
    await ledger.ensure_account(
        session, user.id, low_credit_threshold=default_threshold(effects.settings)
    )
    await ledger.post(
        session,
        account_id=user.id,
        kind=EntryKind.TOPUP,
        amount=micro,
        key=f"topup:{session_id}",
        reference=_text(checkout.get("payment_intent")) or session_id,
        description=f"Top-up: {micro_to_credits_str(micro)} credits"
        + (f" for {paid / 100:.2f} {currency}" if isinstance(paid, int) else ""),
    )
    await after_balance_change(session, effects, account_id=user.id)
    return "topup"


async def _refund(
    session: AsyncSession, effects: Effects, row: StripeEvent, charge: dict[str, Any]
) -> str:
    """Take back the credits of the part of the charge refunded since the last refund we saw.

    `amount_refunded` is cumulative: the credits due back for it are proportional to the charge
    (rounded up, so a refund never leaves credits that were paid back; a full refund takes back
    exactly what was bought). Entries already posted for the charge are subtracted under the
    account's lock, so partial refunds add up and a late, smaller one changes nothing.
    """
    metadata = charge.get("metadata") or {}
    bought = _bought_credits(metadata)
    if bought is None:
        return "ignored: not a LunoGen top-up"
    user = await _owner(session, row, metadata.get("account_id"))
    if user is None:
        return "ignored: unknown account"
    charge_id, amount, refunded = (
        _text(charge.get("id")),
        charge.get("amount"),
        charge.get("amount_refunded"),
    )
    if charge_id is None or not isinstance(amount, int) or not isinstance(refunded, int):
        return "ignored: malformed charge"
    if amount <= 0 or refunded <= 0:
        return "ignored: nothing refunded"
    refunded = min(refunded, amount)
    due = Fraction(bought * refunded, amount)
    target = -((-due.numerator) // due.denominator)
    await ledger.ensure_account(
        session, user.id, low_credit_threshold=default_threshold(effects.settings)
    )
    await ledger.lock_account(session, user.id)
    taken = -int(
        (
            await session.execute(
                select(func.coalesce(func.sum(CreditEntry.amount), 0)).where(
                    CreditEntry.account_id == user.id,
                    CreditEntry.kind == EntryKind.REFUND,
                    CreditEntry.reference == charge_id,
                )
            )
        ).scalar_one()
    )
    delta = target - taken
    if delta <= 0:
        return "refund: already applied"
    currency = str(charge.get("currency") or "").upper()
    await ledger.post(
        session,
        account_id=user.id,
        kind=EntryKind.REFUND,
        amount=-delta,
        key=f"refund:{charge_id}:{refunded}",
        reference=charge_id,
        description=f"Refund of {refunded / 100:.2f} {currency} of {amount / 100:.2f} {currency}",
    )
    await after_balance_change(session, effects, account_id=user.id)
    return "refund"


async def _payment_failed(
    session: AsyncSession, effects: Effects, row: StripeEvent, checkout: dict[str, Any]
) -> str:
    metadata = checkout.get("metadata") or {}
    user = await _owner(
        session, row, metadata.get("account_id"), checkout.get("client_reference_id")
    )
    if user is None:
        return "ignored: unknown account"
    await notify(
        session,
        user=user,
        kind="billing.payment_failed",
        title="Your LunoGen payment did not go through",
        body="Your bank declined the payment for your top-up, so no credits were added. "
        "You can try again with another payment method.",
        dedupe_key=f"stripe-payment-failed:{checkout.get('id')}",
        settings=effects.settings,
        keyring=effects.keyring,
    )
    return "payment failed"


# --- the Pro plan --------------------------------------------------------------------------------


def _plan_subject(
    event_type: str, obj: dict[str, Any], version: str | None
) -> tuple[Any, str | None]:
    """(the account id candidate, the plan the event asks for, or None to leave it)."""
    if event_type == "invoice.paid":
        shapes = (_basil_subscription, _legacy_subscription)
        if version is not None and version[:10] < BASIL:
            shapes = shapes[::-1]
        for shape in shapes:
            subscription, metadata = shape(obj)
            if subscription:
                return _account_of(metadata, obj), "pro"
        return None, None
    metadata = obj.get("metadata") or {}
    status = obj.get("status")
    if event_type == "customer.subscription.deleted" or status in FREE_STATUSES:
        return metadata.get("account_id"), "free"
    if status in PRO_STATUSES:
        return metadata.get("account_id"), "pro"
    return metadata.get("account_id"), None  # past_due, incomplete, paused: no change yet


def _basil_subscription(invoice: dict[str, Any]) -> tuple[Any, Any]:
    """(subscription, its metadata) as `2025-03-31.basil` and later name them."""
    details = _dict(_dict(invoice.get("parent")).get("subscription_details"))
    return details.get("subscription"), details.get("metadata")


def _legacy_subscription(invoice: dict[str, Any]) -> tuple[Any, Any]:
    """(subscription, its metadata) as versions before basil name them: the subscription at
    the top (an id, or the object when expanded), its metadata in `subscription_details`."""
    subscription = invoice.get("subscription")
    metadata = _dict(invoice.get("subscription_details")).get("metadata")
    if metadata is None and isinstance(subscription, dict):
        metadata = subscription.get("metadata")
    return subscription, metadata


def _account_of(metadata: Any, invoice: dict[str, Any]) -> Any:
    """Our account id from the subscription's metadata, else from a line item's copy of it."""
    account_id = _dict(metadata).get("account_id")
    if account_id is not None:
        return account_id
    for line in _dict(invoice.get("lines")).get("data") or []:
        account_id = _dict(_dict(line).get("metadata")).get("account_id")
        if account_id is not None:
            return account_id
    return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def _plan(
    session: AsyncSession,
    row: StripeEvent,
    event_type: str,
    obj: dict[str, Any],
    version: str | None,
) -> str:
    candidate, plan = _plan_subject(event_type, obj, version)
    user = await _owner(session, row, candidate)
    if user is None:
        return "ignored: unknown account"
    if plan is None:
        return f"unchanged plan: subscription {obj.get('status')}"
    newer = await session.execute(
        select(StripeEvent.id)
        .where(
            StripeEvent.account_id == user.id,
            StripeEvent.outcome.like("plan:%"),
            StripeEvent.stripe_created_at > row.stripe_created_at,
            StripeEvent.id != row.id,
        )
        .limit(1)
    )
    if newer.first() is not None:
        return "ignored: a newer plan event was applied"
    await session.refresh(user, with_for_update=True)
    if user.plan != plan:
        audit.record(
            session,
            action="account.plan_changed",
            actor_user_id=None,
            subject_user_id=user.id,
            target_type="user",
            target_id=user.id,
            details={"from": user.plan, "to": plan, "stripe_event": row.id},
        )
        user.plan = plan
    return f"plan: {plan}"


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


def _text(value: Any) -> str | None:
    if isinstance(value, dict):  # an expanded object
        value = value.get("id")
    return value if _is_id(value) else None
