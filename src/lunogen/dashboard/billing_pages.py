"""The Billing page: credits (balance, held, available), the plan, what happens at zero, the
ledger's transactions (paged, filtered by kind, and the API's CSV), buying credits and Pro
through Stripe Checkout, and the low-credit alert threshold.

Everything goes through `billing.service` (and `billing.ledger.entries`), as the API does.
Buying answers a page that sends the browser on to Stripe's hosted checkout (an instant
`<meta http-equiv="refresh">` and a link), not a 303: the CSP's `form-action 'self'` makes
Chromium block a form submission whose redirect leaves the origin. Nothing changes here until
Stripe's signed webhook says the payment happened. Outcomes shown after a redirect are fixed
words in the query (`?checkout=success`, `?saved=threshold`), never text taken from the URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.responses import Response

from lunogen.account.plans import limits_for
from lunogen.auth.dependencies import FullAccess
from lunogen.billing import ledger, service
from lunogen.billing.models import EntryKind
from lunogen.billing.schemas import BillingSettingsIn, CheckoutIn, TransactionOut
from lunogen.config import Settings
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError, ValidationFailedError

router = page_router()

PAGE_SIZE = 25
MAX_ENTRY_ID = 2**63 - 1
KINDS = tuple(kind.value for kind in EntryKind)
FLASHES = {
    ("checkout", "success"): "Thank you. Your payment is being confirmed: the credits (or the Pro "
    "plan) appear here as soon as Stripe tells us, usually within seconds. Reload to see them.",
    ("checkout", "cancelled"): "Checkout cancelled: nothing was charged.",
    ("saved", "threshold"): "Low-credit alert saved.",
}


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def stripe_configured(settings: Settings) -> bool:
    """Whether this server can sell anything (the same test `service.gateway` makes)."""
    key = settings.stripe_secret_key
    return key is not None and bool(key.get_secret_value())


def _flash(request: Request) -> str | None:
    for (name, word), text in FLASHES.items():
        if request.query_params.get(name) == word:
            return text
    return None


@dataclass(frozen=True)
class Listing:
    """One page of transactions and the links around it."""

    rows: list[TransactionOut]
    kind: str | None
    before: int | None
    older: str | None  # the next (older) page's URL, None on the last page
    csv: str


def _before(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    if not value.isdigit() or not 1 <= int(value) <= MAX_ENTRY_ID:
        raise ValidationFailedError(f"before: {value[:30]!r} is not an entry id", field="before")
    return int(value)


def _kind(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if value not in KINDS:
        raise ValidationFailedError(
            f"kind: {value[:30]!r} is not one of {', '.join(KINDS)}", field="kind"
        )
    return value


async def _listing(
    db: DbSession, viewer: Viewer, *, kind: str | None, before: int | None
) -> Listing:
    entries = await ledger.entries(
        db, viewer.user.id, kind=kind, before_id=before, limit=PAGE_SIZE + 1
    )
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    base = {"kind": kind} if kind else {}
    older = None
    if more and entries:
        older = "/billing?" + urlencode({**base, "before": entries[-1].id}) + "#transactions"
    return Listing(
        rows=[service.transaction_out(entry) for entry in entries],
        kind=kind,
        before=before,
        older=older,
        csv="/api/v1/billing/transactions?" + urlencode({**base, "format": "csv"}),
    )


async def _billing_page(
    request: Request,
    viewer: Viewer,
    db: DbSession,
    *,
    kind: str | None = None,
    before: int | None = None,
    status_code: int = 200,
    **context: Any,
) -> Response:
    settings = _settings(request)
    billing = await service.overview(db, settings, viewer.user)
    return page(
        request,
        viewer,
        "billing/index.html",
        section="billing",
        status_code=status_code,
        billing=billing,
        plan=limits_for(billing.plan),
        pro=limits_for("pro"),
        can_buy=stripe_configured(settings),
        listing=await _listing(db, viewer, kind=kind, before=before),
        kinds=KINDS,
        money=money,
        signed=signed,
        **context,
    )


def money(minor: int, currency: str) -> str:
    """A price in minor units: 2000, "usd" → "US$20.00" (other currencies by their code)."""
    amount = f"{Decimal(minor).scaleb(-2):,.2f}"
    return f"US${amount}" if currency.lower() == "usd" else f"{amount} {currency.upper()}"


def signed(credits: str) -> str:
    """An amount of credits with its sign written out (a minus sign, or +): not colour alone."""
    if credits.startswith("-"):
        return "\u2212" + credits[1:]
    return credits if Decimal(credits) == 0 else "+" + credits


@router.get("/billing")
async def billing_page(
    request: Request,
    viewer: SignedIn,
    db: DbSession,
    kind: str | None = None,
    before: str | None = None,
) -> Response:
    return await _billing_page(
        request,
        viewer,
        db,
        kind=_kind(kind),
        before=_before(before),
        flash=_flash(request),
    )


def _checkout_body(form: dict[str, str], settings: Settings) -> CheckoutIn:
    """The form's choice as the API's body: Pro, a pack's button, or a custom amount."""
    plan, pack = form.get("plan", ""), form.get("pack", "")
    if plan:
        if plan != "pro":
            raise ValidationFailedError(f"plan: {plan[:30]!r} is not for sale", field="plan")
        return CheckoutIn(plan="pro")
    if pack:
        return CheckoutIn(pack=pack[:50])  # the service names an unknown pack (422)
    text = form.get("credits", "").strip()
    if not text:
        raise ValidationFailedError("credits: enter a number of credits to buy", field="credits")
    if not (text.isascii() and text.isdigit()):
        raise ValidationFailedError(
            f"credits: {text[:30]!r} is not a whole number of credits", field="credits"
        )
    if len(text) > len(str(settings.topup_max_credits)):
        raise ValidationFailedError(
            f"credits: a custom top-up is between {settings.topup_min_credits} and "
            f"{settings.topup_max_credits} credits",
            field="credits",
        )
    return CheckoutIn(credits=int(text))


@router.post("/billing/checkout")
async def start_checkout(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """A page that goes on to Stripe's checkout (see the module's docstring for why not a 303);
    a refused choice, a server without Stripe or a Stripe failure re-renders the billing page
    with the reason (and the service's status code)."""
    raw = await request.form()
    form = {key: value for key, value in raw.items() if isinstance(value, str)}
    try:
        body = _checkout_body(form, _settings(request))
        # Stripe can take seconds: end the request's transaction first (the API does too).
        await db.commit()
        checkout = await service.start_checkout(
            _settings(request), principal.user, body, client_key=None
        )
    except LunogenError as exc:
        return await _billing_page(
            request,
            viewer,
            db,
            status_code=exc.status_code,
            error=exc.message or exc.error,
            custom_credits=form.get("credits", "")[:12],
        )
    if body.plan is not None:
        what = "The Pro plan, monthly"
    elif body.pack is not None:
        what = f"The {body.pack} pack of credits"
    else:
        what = f"{body.credits:,} credits"
    return page(
        request,
        viewer,
        "billing/checkout.html",
        section="billing",
        checkout_url=checkout.url,
        what=what,
    )


@router.post("/billing/threshold")
async def set_threshold(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    raw = await request.form()
    value = raw.get("low_credit_threshold")
    text = value.strip() if isinstance(value, str) else ""
    try:
        data = BillingSettingsIn.model_validate({"low_credit_threshold": text})
    except ValidationError:
        return await _billing_page(
            request,
            viewer,
            db,
            status_code=422,
            error="Low-credit alert: enter a number of credits from 0 to 1,000,000, with at "
            "most six decimal places.",
            threshold_value=text[:30],
        )
    await service.set_low_credit_threshold(
        db, _settings(request), principal.user, data.low_credit_threshold
    )
    return RedirectResponse("/billing?saved=threshold", status_code=303)
