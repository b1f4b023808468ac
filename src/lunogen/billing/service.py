"""Billing for account owners: the balance view, settings, transactions, checkout, and the
operator's credit adjustments. Every query is scoped to one account id, given by the caller's
principal (there is no account id in the owner's paths)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.audit import service as audit
from lunogen.billing import credit_alerts, ledger
from lunogen.billing.models import CreditAccount, CreditEntry
from lunogen.billing.schemas import (
    BillingOut,
    CheckoutIn,
    CheckoutOut,
    CreditPack,
    TransactionOut,
)
from lunogen.billing.stripe_client import StripeGateway
from lunogen.billing.units import credits_to_micro, micro_to_credits_str, usd_cents_for_credits
from lunogen.config import Settings
from lunogen.errors import ConflictError, LunogenError, NotFoundError, ValidationFailedError
from lunogen.kit.effects import Effects
from lunogen.kit.ids import new_id
from lunogen.kit.web import ClientInfo

CSV_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "amount",
    "held_change",
    "balance_after",
    "reference",
    "description",
)
CSV_MAX_ROWS = 100_000
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class StripeNotConfigured(LunogenError):
    status_code = 503
    error = "Payments not configured"


# --- the owner's view -------------------------------------------------------------------------


def default_threshold(settings: Settings) -> int:
    return credits_to_micro(settings.low_credit_threshold)


def pack_prices(settings: Settings) -> list[CreditPack]:
    return [
        CreditPack(
            name=name,
            credits=credits,
            price_minor=usd_cents_for_credits(credits, usd_per_credit=settings.usd_per_credit),
        )
        for name, credits in settings.credit_pack_map.items()
    ]


async def overview(session: AsyncSession, settings: Settings, user: User) -> BillingOut:
    """Read only: an account that does not exist yet shows as empty, with the default alert."""
    account = await ledger.get_account(session, user.id)
    balance, held = (account.balance, account.held) if account else (0, 0)
    threshold = account.low_credit_threshold if account else default_threshold(settings)
    return BillingOut(
        balance=micro_to_credits_str(balance),
        held=micro_to_credits_str(held),
        available=micro_to_credits_str(balance - held),
        plan=user.plan,
        low_credit_threshold=micro_to_credits_str(threshold),
        currency=settings.billing_currency,
        packs=pack_prices(settings),
        custom_credits_min=settings.topup_min_credits,
        custom_credits_max=settings.topup_max_credits,
        pro_available=bool(settings.stripe_secret_key and settings.stripe_pro_price_id),
    )


async def set_low_credit_threshold(
    session: AsyncSession, settings: Settings, user: User, credits: Decimal
) -> None:
    """Under the account's row lock (the ledger's writers read the threshold under it too).

    Raising the threshold to or above the available credits does not alert by itself (the next
    change that is still at or below it does); lowering it below them re-arms the alert.
    """
    await ledger.ensure_account(session, user.id, low_credit_threshold=default_threshold(settings))
    account = await ledger.lock_account(session, user.id)
    assert account is not None  # ensured just above
    account.low_credit_threshold = credits_to_micro(credits)
    if account.low_alert_sent and ledger.available(account) > account.low_credit_threshold:
        account.low_alert_sent = False
    await session.flush()


def transaction_out(entry: CreditEntry) -> TransactionOut:
    return TransactionOut(
        id=entry.id,
        created_at=entry.created_at,
        kind=entry.kind,
        amount=micro_to_credits_str(entry.amount),
        held_change=micro_to_credits_str(entry.held_delta),
        balance_after=micro_to_credits_str(entry.balance_after),
        reference=entry.reference,
        description=entry.description,
    )


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and until <= since:
        raise ValidationFailedError("until: must be later than since", field="until")


async def all_entries(
    session: AsyncSession,
    account_id: str,
    *,
    kind: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[CreditEntry]:
    """Every matching entry, newest first, up to CSV_MAX_ROWS (read in pages)."""
    found: list[CreditEntry] = []
    before: int | None = None
    while len(found) < CSV_MAX_ROWS:
        page = await ledger.entries(
            session,
            account_id,
            kind=kind,
            since=since,
            until=until,
            before_id=before,
            limit=ledger.MAX_PAGE,
        )
        found.extend(page)
        if len(page) < ledger.MAX_PAGE:
            break
        before = page[-1].id
    return found[:CSV_MAX_ROWS]


def _cell(text: str | None) -> str:
    """Free text that a spreadsheet would run as a formula is quoted with a leading '."""
    if text and text.startswith(_CSV_FORMULA_START):
        return "'" + text
    return text or ""


def transactions_csv(entries: Sequence[CreditEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        row = transaction_out(entry)
        writer.writerow(
            [
                row.id,
                row.created_at.isoformat(),
                row.kind,
                row.amount,
                row.held_change,
                row.balance_after,
                _cell(row.reference),
                _cell(row.description),
            ]
        )
    return out.getvalue()


# --- checkout ----------------------------------------------------------------------------------


def gateway(settings: Settings) -> StripeGateway:
    if settings.stripe_secret_key is None or not settings.stripe_secret_key.get_secret_value():
        raise StripeNotConfigured(
            "Stripe is not configured on this server: set LUNOGEN_STRIPE_SECRET_KEY (and "
            "LUNOGEN_STRIPE_WEBHOOK_SECRET) to sell credits"
        )
    return StripeGateway(settings.stripe_secret_key.get_secret_value(), settings.stripe_api_base)


def checkout_credits(settings: Settings, body: CheckoutIn) -> int:
    """The credits a top-up request buys; 422 naming the field at fault."""
    if body.pack is not None:
        packs = settings.credit_pack_map
        if body.pack not in packs:
            offered = ", ".join(packs) or "none"
            raise ValidationFailedError(
                f"pack: unknown pack {body.pack!r} (offered: {offered})", field="pack"
            )
        return packs[body.pack]
    assert body.credits is not None
    low, high = settings.topup_min_credits, settings.topup_max_credits
    if not low <= body.credits <= high:
        raise ValidationFailedError(
            f"credits: a custom top-up is between {low} and {high} credits", field="credits"
        )
    return body.credits


def checkout_idempotency_key(user_id: str, client_key: str | None) -> str:
    """Stripe's key for this request: the client's own key (scoped to the user, so two users'
    keys never collide) makes a retried request return the same session; without one, each
    request gets a fresh session."""
    if client_key:
        digest = hashlib.sha256(f"{user_id}\0{client_key}".encode()).hexdigest()
        return f"lunogen-checkout-{digest}"
    return f"lunogen-checkout-{new_id()}"


async def start_checkout(
    settings: Settings, user: User, body: CheckoutIn, *, client_key: str | None
) -> CheckoutOut:
    """A Stripe Checkout session. Nothing is written here: credits and plans change only when
    Stripe's signed webhook says the payment happened."""
    chosen = [name for name in ("pack", "credits", "plan") if getattr(body, name) is not None]
    if len(chosen) != 1:
        raise ValidationFailedError(
            "give exactly one of pack, credits or plan"
            + (f" (got {', '.join(chosen)})" if chosen else ""),
            field="body",
        )
    base = settings.public_url
    success_url = f"{base}/billing?checkout=success&session_id={{CHECKOUT_SESSION_ID}}"
    cancel_url = f"{base}/billing?checkout=cancelled"
    key = checkout_idempotency_key(user.id, client_key)
    if body.plan is not None:
        if user.plan == body.plan:
            raise ConflictError(f"You are already on the {body.plan} plan")
        if not settings.stripe_pro_price_id:
            raise StripeNotConfigured(
                "The Pro plan is not for sale on this server: set LUNOGEN_STRIPE_PRO_PRICE_ID"
            )
        client = gateway(settings)
        try:
            session = await client.create_subscription_session(
                account_id=user.id,
                price_id=settings.stripe_pro_price_id,
                success_url=success_url,
                cancel_url=cancel_url,
                idempotency_key=key,
                customer_email=user.email,
            )
        finally:
            await client.aclose()
    else:
        credits = checkout_credits(settings, body)
        client = gateway(settings)
        try:
            session = await client.create_topup_session(
                account_id=user.id,
                amount_cents=usd_cents_for_credits(credits, usd_per_credit=settings.usd_per_credit),
                currency=settings.billing_currency,
                credits=credits,
                success_url=success_url,
                cancel_url=cancel_url,
                idempotency_key=key,
            )
        finally:
            await client.aclose()
    if not session.url:
        raise ConflictError(
            "This checkout session is no longer open; retry with another Idempotency-Key"
        )
    return CheckoutOut(url=session.url, session_id=session.id)


# --- after any change of a balance ---------------------------------------------------------------


async def after_balance_change(session: AsyncSession, effects: Effects, *, account_id: str) -> None:
    """What a change of the balance does to the owner's agents and inbox: running agents whose
    cheapest call it no longer pays for pause; paused ones whose cheapest call it pays for
    resume; at or below the threshold, one low-credit alert."""
    account = await ledger.get_account(session, account_id)
    if account is None:
        return
    await credit_alerts.pause_for_credits(session, effects, owner_id=account_id)
    await credit_alerts.resume_after_top_up(session, effects, owner_id=account_id)
    if await ledger.claim_low_credit_alert(session, account_id):
        await credit_alerts.low_credits(session, effects.settings, effects.keyring, account=account)


# --- operators -------------------------------------------------------------------------------


async def adjust_credits(
    session: AsyncSession,
    effects: Effects,
    *,
    actor: User,
    actor_key_id: str | None,
    client: ClientInfo,
    user_id: str,
    credits: Decimal,
    reason: str,
    client_key: str | None,
) -> tuple[CreditEntry, CreditAccount]:
    """An `adjustment` entry and its audit row, in the caller's transaction."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError(error="User not found")
    amount = credits_to_micro(credits)
    if client_key:
        digest = hashlib.sha256(f"{actor.id}\0{client_key}".encode()).hexdigest()
        key = f"admin:{digest}"
    else:
        key = f"admin:{new_id()}"
    await ledger.ensure_account(
        session, user.id, low_credit_threshold=default_threshold(effects.settings)
    )
    replayed = (
        await session.execute(select(CreditEntry).where(CreditEntry.idempotency_key == key))
    ).scalar_one_or_none()
    entry = await ledger.post(
        session,
        account_id=user.id,
        kind="adjustment",
        amount=amount,
        key=key,
        reference=f"admin:{actor.id}",
        description=reason,
    )
    if replayed is not None:  # a retried request: already applied and audited
        account = await ledger.get_account(session, user.id)
        assert account is not None
        return entry, account
    audit.record(
        session,
        action="billing.credits_adjusted",
        actor_user_id=actor.id,
        actor_key_id=actor_key_id,
        subject_user_id=user.id,
        client=client,
        target_type="credit_entry",
        target_id=str(entry.id),
        details={"credits": micro_to_credits_str(amount), "reason": reason},
    )
    await after_balance_change(session, effects, account_id=user.id)
    account = await ledger.get_account(session, user.id)
    assert account is not None
    return entry, account
