"""Billing over HTTP: the owner's balance, settings, transactions and checkout; Stripe's
webhook. The admins' credit adjustments are in `admin.credits_endpoints`.

Reading billing takes any key of the owner (every scope can see what its calls cost); buying
and changing settings need `full` (or a browser session).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from lunogen.auth.dependencies import AnyUser, FullAccess
from lunogen.billing import ledger, service, stripe_events
from lunogen.billing.models import EntryKind
from lunogen.billing.schemas import (
    BillingOut,
    BillingSettingsIn,
    CheckoutIn,
    CheckoutOut,
    TransactionPage,
)
from lunogen.billing.stripe_client import StripeSignatureError, verify_event
from lunogen.config import Settings
from lunogen.db import DbSession
from lunogen.errors import BadRequestError, error_responses
from lunogen.kit.effects import Effects
from lunogen.kit.time import UtcDateTimeIn

billing_router = APIRouter(prefix="/api/v1/billing", tags=["billing"])
stripe_webhook_router = APIRouter(tags=["webhooks"])

MAX_WEBHOOK_BYTES = 512 * 1024  # the Stripe route's cap in BodyLimitMiddleware (app.py)
MAX_ENTRY_ID = 2**63 - 1  # ledger ids are 64-bit integers
CSV_TYPE = "text/csv"
Kind = Literal["grant", "topup", "usage", "hold", "release", "refund", "adjustment", "plan"]
assert set(Kind.__args__) == {k.value for k in EntryKind}  # type: ignore[attr-defined]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _effects(request: Request) -> Effects:
    return Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


@billing_router.get("", response_model=BillingOut)
async def get_billing(request: Request, principal: AnyUser, db: DbSession) -> BillingOut:
    """Your credits (balance, held for calls in progress, available), plan, alert threshold, and
    what you can buy. Any key of yours can read it. Credits are exact decimal strings."""
    return await service.overview(db, _settings(request), principal.user)


@billing_router.patch("/settings", response_model=BillingOut)
async def update_billing_settings(
    data: BillingSettingsIn, request: Request, principal: FullAccess, db: DbSession
) -> BillingOut:
    """Set the low-credit alert threshold (credits, 0 to 1,000,000). Scope: `full`."""
    settings = _settings(request)
    await service.set_low_credit_threshold(db, settings, principal.user, data.low_credit_threshold)
    return await service.overview(db, settings, principal.user)


@billing_router.get(
    "/transactions",
    response_model=TransactionPage,
    responses={200: {"content": {CSV_TYPE: {"schema": {"type": "string"}}}}},
)
async def list_transactions(
    request: Request,
    principal: AnyUser,
    db: DbSession,
    kind: Annotated[Kind | None, Query(description="Only entries of this kind")] = None,
    since: Annotated[
        UtcDateTimeIn | None, Query(description="From, inclusive (UTC if no offset)")
    ] = None,
    until: Annotated[UtcDateTimeIn | None, Query(description="To, exclusive")] = None,
    before_id: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_ENTRY_ID,
            description="Older than this id: the previous page's next_before_id",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200, description="Entries per page")] = 50,
    format: Annotated[
        Literal["json", "csv"] | None,
        Query(description="csv: every matching entry as CSV (also with Accept: text/csv)"),
    ] = None,
) -> Any:
    """Your ledger entries, newest first. Page back with `before_id`. As CSV (`?format=csv` or
    `Accept: text/csv`), every matching entry (up to 100,000) with a header row, no paging."""
    service.check_range(since, until)
    wants_csv = format == "csv" or (
        format is None and CSV_TYPE in request.headers.get("accept", "")
    )
    owner = principal.user.id
    if wants_csv:
        rows = await service.all_entries(db, owner, kind=kind, since=since, until=until)
        return Response(
            service.transactions_csv(rows),
            media_type=f"{CSV_TYPE}; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="lunogen-transactions.csv"'},
        )
    page = await ledger.entries(
        db, owner, kind=kind, since=since, until=until, before_id=before_id, limit=limit + 1
    )
    more = len(page) > limit
    page = page[:limit]
    return TransactionPage(
        data=[service.transaction_out(entry) for entry in page],
        next_before_id=page[-1].id if more and page else None,
    )


@billing_router.post(
    "/checkout",
    response_model=CheckoutOut,
    responses=error_responses(409, 502, 503),
)
async def create_checkout(
    data: CheckoutIn,
    request: Request,
    principal: FullAccess,
    db: DbSession,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Retrying with the same key returns the same checkout session",
        ),
    ] = None,
) -> CheckoutOut:
    """Start a Stripe Checkout: `{"pack": name}` or `{"credits": n}` (a custom amount between
    the configured minimum and maximum) buys credits; `{"plan": "pro"}` subscribes to Pro.
    Send the customer to `url`. Credits (or the plan) arrive when Stripe confirms the payment.
    Scope: `full`. 503 when this server has no Stripe keys."""
    # Stripe can take seconds: end the authentication's transaction (on SQLite the write
    # lock) first. Nothing is written here afterwards.
    await db.commit()
    return await service.start_checkout(
        _settings(request), principal.user, data, client_key=idempotency_key
    )


@stripe_webhook_router.post("/webhooks/stripe", include_in_schema=False)
async def stripe_webhook(request: Request, db: DbSession) -> dict[str, Any]:
    """Stripe's event deliveries, checked against `Stripe-Signature` (no other authentication).
    Each event is applied once however often it is delivered. Not in the API document: only
    Stripe calls it."""
    settings = _settings(request)
    secret = settings.stripe_webhook_secret
    if secret is None or not secret.get_secret_value():
        raise service.StripeNotConfigured(
            "Stripe webhooks are not configured: set LUNOGEN_STRIPE_WEBHOOK_SECRET"
        )
    payload = await request.body()  # at most MAX_WEBHOOK_BYTES: BodyLimitMiddleware (413)
    try:
        event = verify_event(
            payload, request.headers.get("stripe-signature"), secret.get_secret_value()
        )
    except StripeSignatureError as exc:
        raise BadRequestError(exc.message, error=exc.error, extra={"problem": exc.problem}) from exc
    received = await stripe_events.receive(db, _effects(request), event)
    return {
        "received": True,
        "event_id": received.event_id,
        "duplicate": received.duplicate,
        "outcome": received.outcome,
    }
