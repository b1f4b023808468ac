"""A fake Stripe API served over real HTTP on 127.0.0.1, speaking Stripe's v1 wire format.

The real `stripe` SDK talks to it (`base_addresses={"api": fake.api_base}`). It serves:

- `POST /v1/checkout/sessions`: form-encoded, nested keys (`line_items[0][price_data][currency]`,
  `metadata[k]`, `payment_intent_data[metadata][k]`, `subscription_data[metadata][k]`), modes
  `payment` and `subscription`; unknown or missing parameters answer Stripe's 400 error body.
- `GET /v1/checkout/sessions/{id}`; 404 `resource_missing` for an unknown id.
- `GET /c/pay/{id}`: the "hosted" page a session's `url` points at.
- Bearer (or Basic) authentication with `secret_key`; `Idempotency-Key` replays (header
  `Idempotent-Replayed: true`) and `idempotency_error` when a key is reused with other params.

The objects follow the API version of the installed SDK (`stripe.api_version`, basil or later): a
session's `payment_intent`/`subscription` are null until it completes; a charge does not embed
`refunds` (read `amount_refunded`, or the `refund.created` event); a subscription's period is on
its items (`items.data[0].current_period_end`); an invoice names its subscription under
`parent.subscription_details.subscription`.

Webhook events, like Stripe's, are rendered in the webhook endpoint's API version
(`endpoint_api_version`, by default the SDK's) and say so in `api_version`. Before
`2025-03-31.basil` an invoice names its subscription at the top (`subscription`,
`subscription_details.metadata`), its lines carry `subscription`/`price` instead of
`parent`/`pricing`, and a subscription's period is also at its top.

Tests play the customer and Stripe's back office with helpers that change the state and return
the events Stripe would send, in a plausible order (Stripe does not guarantee one):

    session = await gateway.create_topup_session(...)
    events = stripe_fake.complete_session(session.id)            # paid by card
    completed = event_of(events, "checkout.session.completed")
    body, headers = stripe_fake.signed(completed)                # POST these to the webhook

Use the `stripe_fake` fixture (import it and `stripe_server` into a conftest) and
`stripe_settings(stripe_fake)` for the Settings that point LunoGen at it.
"""

from __future__ import annotations

import base64
import calendar
import copy
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import parse_qsl

import pytest
import stripe as stripe_sdk
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tests.fakes.server import loopback_socket, serve_in_thread

SECRET_KEY = "sk_test_51LunoGenFakeAccount0000000000000000000000000000000000000000000000000000Fk"
WEBHOOK_SECRET = "whsec_LunoGenFakeEndpointSecret0123456789abcdef"
PRO_PRICE_ID = "price_1LunoGenFakeProMonthly"
PRO_PRICE_CENTS = 1900
API_VERSION: str = stripe_sdk.api_version
BASIL = "2025-03-31"  # invoices moved their subscription under `parent` in this version
SESSION_TTL_SECONDS = 24 * 3600

_ALPHANUMERIC = string.ascii_letters + string.digits
_INTERVALS = ("day", "week", "month", "year")
_MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "chf": 50, "cad": 50, "aud": 50, "jpy": 50}

# The parameters the fake understands; anything else is "Received unknown parameter", as Stripe
# answers for a typo. Values are the allowed sub-keys (None: a leaf or a free-form hash).
_PARAMS: dict[str, Any] = {
    "mode": None,
    "ui_mode": None,
    "success_url": None,
    "cancel_url": None,
    "client_reference_id": None,
    "customer": None,
    "customer_email": None,
    "customer_creation": None,
    "metadata": None,
    "expand": None,
    "expires_at": None,
    "locale": None,
    "allow_promotion_codes": None,
    "billing_address_collection": None,
    "submit_type": None,
    "payment_method_types": None,
    "line_items": {
        "price": None,
        "quantity": None,
        "price_data": {
            "currency": None,
            "unit_amount": None,
            "product": None,
            "tax_behavior": None,
            "product_data": {"name": None, "description": None, "metadata": None},
            "recurring": {"interval": None, "interval_count": None},
        },
    },
    "payment_intent_data": {
        "metadata": None,
        "description": None,
        "receipt_email": None,
        "statement_descriptor_suffix": None,
    },
    "subscription_data": {"metadata": None, "description": None},
}


_CANCEL_PARAMS: dict[str, Any] = {
    "cancellation_details": {"comment": None, "feedback": None},
    "invoice_now": None,
    "prorate": None,
    "expand": None,
}


# -- Stripe's wire format -------------------------------------------------------------------------


class ParamError(Exception):
    """A request Stripe refuses; rendered as Stripe's error body."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.status = status
        self.type = type

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = "https://stripe.com/docs/error-codes/" + self.code.replace("_", "-")
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def _missing(param: str) -> ParamError:
    return ParamError(f"Missing required param: {param}.", param=param, code="parameter_missing")


def _invalid(param: str, message: str) -> ParamError:
    return ParamError(message, param=param, code="parameter_invalid")


def decode_form(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """`a[b][0][c]=v` pairs into nested dicts and lists (leaf values stay strings)."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = re.fullmatch(r"([^\[\]]+)((?:\[[^\[\]]*\])*)", key)
        if match is None:
            raise ParamError(f"Invalid parameter name: {key}", param=key)
        path = [match.group(1), *re.findall(r"\[([^\[\]]*)\]", match.group(2))]
        node: dict[str, Any] = root
        for position, part in enumerate(path):
            last = position == len(path) - 1
            if part == "":  # `expand[]=x`: the next array index
                part = str(len(node))
            if last:
                if isinstance(node.get(part), dict):
                    raise ParamError(f"Invalid hash: {key}", param=key)
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise ParamError(f"Invalid hash: {key}", param=key)
                node = child
    converted = _arrays(root, "")
    assert isinstance(converted, dict)
    return converted


def _arrays(node: Any, name: str) -> Any:
    """Turn hashes keyed 0..n-1 into lists, as Stripe reads `a[0]`, `a[1]`."""
    if not isinstance(node, dict):
        return node
    items = {k: _arrays(v, f"{name}[{k}]" if name else k) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        indexes = sorted(int(k) for k in items)
        if indexes != list(range(len(indexes))):
            raise ParamError(
                f"Invalid array: {name} must be indexed from 0 without gaps", param=name
            )
        return [items[str(i)] for i in indexes]
    return items


def _check_known(params: dict[str, Any], allowed: dict[str, Any], prefix: str = "") -> None:
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else key
        if key not in allowed:
            raise ParamError(f"Received unknown parameter: {name}", param=name)
        nested = allowed[key]
        if nested is None:
            continue
        entries = value if isinstance(value, list) else [value]
        for index, entry in enumerate(entries):
            entry_name = f"{name}[{index}]" if isinstance(value, list) else name
            if not isinstance(entry, dict):
                raise _invalid(entry_name, f"Invalid object: {entry_name}")
            _check_known(entry, nested, entry_name)


def _int(value: Any, param: str, *, minimum: int) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        raise _invalid(param, f"Invalid integer: {value}")
    number = int(value)
    if number < minimum:
        label = "positive integer" if minimum == 1 else "non-negative integer"
        raise _invalid(param, f"Invalid {label}")
    return number


def _url(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise ParamError("Not a valid URL", param=name, code="url_invalid")
    return value


def _metadata(value: Any, param: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise _invalid(param, f"Invalid hash: {param}")
    if len(value) > 50:
        raise _invalid(param, "Invalid metadata: metadata can have up to 50 keys")
    for key, item in value.items():
        if len(key) > 40:
            raise _invalid(param, f"Invalid metadata: key '{key}' is longer than 40 characters")
        if not isinstance(item, str):
            raise _invalid(f"{param}[{key}]", f"Invalid string: {param}[{key}]")
        if len(item) > 500:
            raise _invalid(f"{param}[{key}]", f"Invalid value for {param}[{key}]: too long")
    return {k: v for k, v in value.items() if v != ""}


def _new_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHANUMERIC) for _ in range(length))


def _add_interval(timestamp: int, interval: str, count: int) -> int:
    if interval == "day":
        return timestamp + 86400 * count
    if interval == "week":
        return timestamp + 7 * 86400 * count
    start = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    months = count * (12 if interval == "year" else 1)
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def _list(data: list[dict[str, Any]], url: str) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False, "total_count": len(data), "url": url}


def _json_bytes(value: Any) -> bytes:
    """Stripe's bodies are JSON indented by two spaces; the signature covers these exact bytes."""
    return json.dumps(value, indent=2).encode()


def event_bytes(event: dict[str, Any]) -> bytes:
    """The webhook body of `event`, exactly as Stripe signs and sends it."""
    return _json_bytes(event)


def _v1(payload: bytes, secret: str, timestamp: int) -> str:
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign_event(
    payload: bytes,
    secret: str,
    timestamp: int | None = None,
    *,
    decoys: int = 0,
    also_signed_with: Sequence[str] = (),
    test_mode_v0: bool = True,
) -> str:
    """The `Stripe-Signature` header for `payload`: `t=<unix>,v1=<hex>[,v1=...][,v0=<hex>]`.

    `timestamp` in the past makes a stale delivery; `decoys` puts that many v1 entries that match
    nothing before the real one; `also_signed_with` adds a v1 per extra secret (Stripe signs with
    both secrets while an endpoint secret is being rolled); `test_mode_v0` adds the `v0` entry
    test-mode deliveries carry, which receivers must ignore.
    """
    t = int(time.time()) if timestamp is None else timestamp
    parts = [f"t={t}"]
    parts += [f"v1={secrets.token_hex(32)}" for _ in range(decoys)]
    parts.append(f"v1={_v1(payload, secret, t)}")
    parts += [f"v1={_v1(payload, other, t)}" for other in also_signed_with]
    if test_mode_v0:
        parts.append(f"v0={_v1(payload, 'whsec_test_mode_v0', t)}")
    return ",".join(parts)


def event_of(events: Sequence[dict[str, Any]], type: str) -> dict[str, Any]:
    """The one event of `type` among `events` (fails if there is not exactly one)."""
    found = [e for e in events if e["type"] == type]
    assert len(found) == 1, f"expected one {type} event, got {[e['type'] for e in events]}"
    return found[0]


# -- the fake -----------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    params: dict[str, Any]  # the form body (or query) decoded into nested dicts and lists
    raw_body: bytes
    form_error: ParamError | None = None  # the body could not be decoded


@dataclass
class ScriptedFailure:
    status: int
    message: str
    type: str
    code: str | None
    should_retry: bool | None


@dataclass
class _Stored:
    """A response kept for idempotent replay."""

    method: str
    path: str
    params: dict[str, Any]
    status: int
    body: bytes
    request_id: str


@dataclass
class _SessionExtras:
    line_items: list[dict[str, Any]]
    payment_intent_data: dict[str, Any]
    subscription_data: dict[str, Any]


@dataclass
class FakeStripe:
    root_url: str = ""
    secret_key: str = SECRET_KEY
    webhook_secret: str = WEBHOOK_SECRET
    api_version: str = API_VERSION
    endpoint_api_version: str = API_VERSION  # what webhook events are rendered in
    requests: list[RecordedRequest] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # every event made, in order
    failures: deque[ScriptedFailure] = field(default_factory=deque)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    payment_intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    _extras: dict[str, _SessionExtras] = field(default_factory=dict)
    _idempotent: dict[tuple[str, str], _Stored] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.reset()

    @property
    def api_base(self) -> str:
        """What LUNOGEN_STRIPE_API_BASE is set to (the SDK appends `/v1/...`)."""
        return self.root_url

    @property
    def pro_price_id(self) -> str:
        return PRO_PRICE_ID

    def reset(self) -> None:
        with self._lock:
            self.secret_key = SECRET_KEY
            self.webhook_secret = WEBHOOK_SECRET
            self.api_version = API_VERSION
            self.endpoint_api_version = API_VERSION
            for store in (
                self.requests,
                self.events,
                self.failures,
                self.prices,
                self.sessions,
                self.customers,
                self.payment_intents,
                self.charges,
                self.refunds,
                self.subscriptions,
                self.invoices,
                self._extras,
                self._idempotent,
            ):
                store.clear()
            self.add_price(
                unit_amount=PRO_PRICE_CENTS,
                currency="usd",
                interval="month",
                product_name="LunoGen Pro",
                price_id=PRO_PRICE_ID,
            )

    # -- scripting -------------------------------------------------------------------------------

    def add_price(
        self,
        *,
        unit_amount: int,
        currency: str = "usd",
        interval: str | None = "month",
        interval_count: int = 1,
        product_name: str = "LunoGen plan",
        price_id: str | None = None,
    ) -> str:
        """A price in the catalog (`interval=None`: a one-time price); returns its id."""
        price = self._price(
            price_id or _new_id("price_1"),
            unit_amount=unit_amount,
            currency=currency,
            recurring=None
            if interval is None
            else {"interval": interval, "interval_count": interval_count},
            product=_new_id("prod_", 14),
            active=True,
        )
        price["_product_name"] = product_name
        self.prices[price["id"]] = price
        return str(price["id"])

    def fail(
        self,
        status: int,
        message: str | None = None,
        *,
        type: str | None = None,
        code: str | None = None,
        should_retry: bool | None = None,
        times: int = 1,
    ) -> None:
        """The next `times` API requests get this error instead of being executed."""
        default_type = "api_error" if status >= 500 else "invalid_request_error"
        text = message or f"Scripted failure ({status}) from the fake Stripe."
        for _ in range(times):
            self.failures.append(
                ScriptedFailure(status, text, type or default_type, code, should_retry)
            )

    @property
    def api_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.startswith("/v1/")]

    @property
    def last_request(self) -> RecordedRequest:
        assert self.api_requests, "no API request reached the fake Stripe"
        return self.api_requests[-1]

    def signed(
        self,
        event: dict[str, Any],
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        **signing: Any,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the webhook delivery of `event` (see `sign_event`)."""
        body = event_bytes(event)
        header = sign_event(body, secret or self.webhook_secret, timestamp, **signing)
        return body, {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": header,
        }

    # -- customer and back-office actions (each returns the events Stripe would send) ------------

    def complete_session(
        self,
        session_id: str,
        *,
        paid: bool = True,
        email: str = "jenny.rosen@example.com",
        name: str = "Jenny Rosen",
    ) -> list[dict[str, Any]]:
        """The customer finishes checkout. `paid=False`: a delayed payment method (bank debit)
        whose outcome comes later with `async_payment_succeeded`/`async_payment_failed`."""
        with self._lock:
            session = self._session(session_id)
            if session["status"] != "open":
                raise ValueError(f"session {session_id} is {session['status']}, not open")
            events: list[dict[str, Any]] = []
            customer_id = session["customer"]
            wants_customer = session["mode"] == "subscription" or (
                session["customer_creation"] == "always"
            )
            if customer_id is None and wants_customer:
                customer = self._new_customer(session["customer_email"] or email, name)
                customer_id = customer["id"]
                events.append(self._event("customer.created", customer))
            session.update(
                status="complete",
                payment_status="paid" if paid else "unpaid",
                customer=customer_id,
                url=None,
                customer_details={
                    "address": None,
                    "email": session["customer_email"] or email,
                    "name": name,
                    "phone": None,
                    "tax_exempt": "none",
                    "tax_ids": [],
                },
            )
            if session["mode"] == "payment":
                intent = self._new_payment_intent(session, succeeded=paid)
                session["payment_intent"] = intent["id"]
                if paid:
                    charge = self._new_charge(intent, session)
                    events.append(self._event("charge.succeeded", charge))
                    events.append(self._event("payment_intent.succeeded", intent))
                else:
                    events.append(self._event("payment_intent.processing", intent))
            else:
                subscription = self._new_subscription(session)
                session["subscription"] = subscription["id"]
                events.append(self._event("customer.subscription.created", subscription))
                invoice = self._new_invoice(subscription, billing_reason="subscription_create")
                session["invoice"] = invoice["id"]
                events.append(self._event("invoice.finalized", invoice))
                if paid:
                    events += self._invoice_paid(subscription, invoice)
            events.append(self._event("checkout.session.completed", session))
            return events

    def async_payment_succeeded(self, session_id: str) -> list[dict[str, Any]]:
        with self._lock:
            session = self._awaiting_payment(session_id)
            events: list[dict[str, Any]] = []
            session["payment_status"] = "paid"
            if session["mode"] == "payment":
                intent = self.payment_intents[session["payment_intent"]]
                intent.update(status="succeeded", amount_received=intent["amount"])
                charge = self._new_charge(intent, session)
                events.append(self._event("charge.succeeded", charge))
                events.append(self._event("payment_intent.succeeded", intent))
            else:
                subscription = self.subscriptions[session["subscription"]]
                events += self._invoice_paid(subscription, self.invoices[session["invoice"]])
            events.append(self._event("checkout.session.async_payment_succeeded", session))
            return events

    def async_payment_failed(self, session_id: str) -> list[dict[str, Any]]:
        with self._lock:
            session = self._awaiting_payment(session_id)
            events: list[dict[str, Any]] = []
            if session["mode"] == "payment":
                intent = self.payment_intents[session["payment_intent"]]
                intent.update(
                    status="requires_payment_method",
                    last_payment_error={
                        "code": "payment_method_provider_decline",
                        "message": "The customer's bank declined the debit.",
                        "type": "card_error",
                    },
                )
                events.append(self._event("payment_intent.payment_failed", intent))
            else:
                invoice = self.invoices[session["invoice"]]
                invoice.update(attempted=True, attempt_count=invoice["attempt_count"] + 1)
                events.append(self._event("invoice.payment_failed", invoice))
            events.append(self._event("checkout.session.async_payment_failed", session))
            return events

    def expire_session(self, session_id: str) -> list[dict[str, Any]]:
        with self._lock:
            session = self._session(session_id)
            if session["status"] != "open":
                raise ValueError(f"session {session_id} is {session['status']}, not open")
            session.update(status="expired", url=None)
            return [self._event("checkout.session.expired", session)]

    def refund(
        self, session_id: str, amount: int | None = None, *, reason: str | None = None
    ) -> list[dict[str, Any]]:
        """Refund the charge of a paid payment-mode session: all that is left, or `amount`."""
        with self._lock:
            session = self._session(session_id)
            intent = self.payment_intents.get(session.get("payment_intent") or "")
            charge = self.charges.get((intent or {}).get("latest_charge") or "")
            if intent is None or charge is None or charge["status"] != "succeeded":
                raise ValueError(f"session {session_id} has no successful charge to refund")
            left = charge["amount"] - charge["amount_refunded"]
            amount = left if amount is None else amount
            if not 0 < amount <= left:
                raise ValueError(f"cannot refund {amount}: {left} is left on {charge['id']}")
            refund = {
                "id": _new_id("re_3"),
                "object": "refund",
                "amount": amount,
                "balance_transaction": _new_id("txn_3"),
                "charge": charge["id"],
                "created": int(time.time()),
                "currency": charge["currency"],
                "destination_details": {"type": "card", "card": {"type": "refund"}},
                "metadata": {},
                "payment_intent": intent["id"],
                "reason": reason,
                "receipt_number": None,
                "source_transfer_reversal": None,
                "status": "succeeded",
                "transfer_reversal": None,
            }
            self.refunds[refund["id"]] = refund
            previous: dict[str, Any] = {"amount_refunded": charge["amount_refunded"]}
            charge["amount_refunded"] += amount
            if charge["amount_refunded"] == charge["amount"]:
                previous["refunded"] = False
                charge["refunded"] = True
            return [
                self._event("charge.refunded", charge, previous),
                self._event("refund.created", refund),
            ]

    def update_subscription(
        self,
        subscription_id: str,
        *,
        status: str | None = None,
        cancel_at_period_end: bool | None = None,
        price_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """`customer.subscription.updated`; `subscription_id` may also be its session's id."""
        with self._lock:
            subscription = self._subscription(subscription_id)
            changes: dict[str, Any] = {}
            if status is not None:
                changes["status"] = status
            if cancel_at_period_end is not None:
                changes["cancel_at_period_end"] = cancel_at_period_end
                changes["cancel_at"] = _period_end(subscription) if cancel_at_period_end else None
            if metadata is not None:
                changes["metadata"] = metadata
            if price_id is not None:
                items = copy.deepcopy(subscription["items"])
                items["data"][0]["price"] = self._public_price(self.prices[price_id])
                changes["items"] = items
            return [self._change(subscription, changes)]

    def cancel_subscription(
        self,
        subscription_id: str,
        *,
        at_period_end: bool = False,
        reason: str = "cancellation_requested",
    ) -> list[dict[str, Any]]:
        """Cancel now (`customer.subscription.deleted`) or at the period end (an update)."""
        with self._lock:
            subscription = self._subscription(subscription_id)
            if at_period_end:
                return self.update_subscription(subscription["id"], cancel_at_period_end=True)
            now = int(time.time())
            subscription.update(
                status="canceled",
                canceled_at=now,
                ended_at=now,
                cancellation_details={"comment": None, "feedback": None, "reason": reason},
            )
            return [self._event("customer.subscription.deleted", subscription)]

    def pay_invoice(self, subscription_id: str) -> list[dict[str, Any]]:
        """Pay the subscription's open invoice, or else renew it: the next period, paid."""
        with self._lock:
            subscription = self._subscription(subscription_id)
            latest = self.invoices.get(subscription["latest_invoice"] or "")
            if latest is not None and latest["status"] == "open":
                return self._invoice_paid(subscription, latest)
            events, invoice = self._renew(subscription)
            return events + self._invoice_paid(subscription, invoice)

    def fail_invoice_payment(self, subscription_id: str) -> list[dict[str, Any]]:
        """The renewal payment fails: the invoice stays open and the subscription is past_due."""
        with self._lock:
            subscription = self._subscription(subscription_id)
            events, invoice = self._renew(subscription)
            invoice.update(
                attempted=True,
                attempt_count=1,
                next_payment_attempt=int(time.time()) + 3 * 86400,
            )
            events.append(self._event("invoice.payment_failed", invoice))
            events.append(self._change(subscription, {"status": "past_due"}))
            return events

    # -- object builders -------------------------------------------------------------------------

    def _event(
        self, type: str, obj: dict[str, Any], previous: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        version = self.endpoint_api_version
        data: dict[str, Any] = {"object": _rendered(copy.deepcopy(obj), version)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = {
            "id": _new_id("evt_1"),
            "object": "event",
            "api_version": version,
            "created": int(time.time()),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": type,
        }
        self.events.append(event)
        return event

    def _change(self, subscription: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        previous = {k: subscription[k] for k, v in changes.items() if subscription[k] != v}
        if not previous:
            raise ValueError(f"nothing changes on {subscription['id']}")
        subscription.update(changes)
        return self._event("customer.subscription.updated", subscription, previous)

    def _session(self, session_id: str) -> dict[str, Any]:
        if session_id not in self.sessions:
            raise KeyError(f"no checkout session {session_id}")
        return self.sessions[session_id]

    def _awaiting_payment(self, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        if session["status"] != "complete" or session["payment_status"] != "unpaid":
            raise ValueError(f"session {session_id} is not a completed, unpaid session")
        return session

    def _subscription(self, reference: str) -> dict[str, Any]:
        if reference.startswith("cs_"):
            reference = self._session(reference).get("subscription") or ""
        if reference not in self.subscriptions:
            raise KeyError(f"no subscription {reference!r}")
        return self.subscriptions[reference]

    @staticmethod
    def _price(
        price_id: str,
        *,
        unit_amount: int,
        currency: str,
        recurring: dict[str, Any] | None,
        product: str,
        active: bool,
    ) -> dict[str, Any]:
        return {
            "id": price_id,
            "object": "price",
            "active": active,
            "billing_scheme": "per_unit",
            "created": int(time.time()),
            "currency": currency,
            "custom_unit_amount": None,
            "livemode": False,
            "lookup_key": None,
            "metadata": {},
            "nickname": None,
            "product": product,
            "recurring": None
            if recurring is None
            else {
                "interval": recurring["interval"],
                "interval_count": recurring["interval_count"],
                "meter": None,
                "trial_period_days": None,
                "usage_type": "licensed",
            },
            "tax_behavior": "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "one_time" if recurring is None else "recurring",
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
        }

    @staticmethod
    def _public_price(price: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in price.items() if not k.startswith("_")}

    def _line_item(self, raw: Any, index: int) -> dict[str, Any]:
        param = f"line_items[{index}]"
        if not isinstance(raw, dict):
            raise _invalid(param, f"Invalid object: {param}")
        if "quantity" not in raw:
            raise _missing(f"{param}[quantity]")
        quantity = _int(raw["quantity"], f"{param}[quantity]", minimum=1)
        if "price" in raw and "price_data" in raw:
            raise ParamError(
                "You may only specify one of these parameters: price, price_data.", param=param
            )
        if "price" in raw:
            price = self.prices.get(raw["price"])
            if price is None:
                raise ParamError(
                    f"No such price: '{raw['price']}'",
                    param=f"{param}[price]",
                    code="resource_missing",
                )
            name = price.get("_product_name", "Product")
        elif "price_data" in raw:
            price, name = self._inline_price(raw["price_data"], f"{param}[price_data]")
        else:
            raise _missing(f"{param}[price]")
        amount = price["unit_amount"] * quantity
        return {
            "id": _new_id("li_1"),
            "object": "item",
            "amount_discount": 0,
            "amount_subtotal": amount,
            "amount_tax": 0,
            "amount_total": amount,
            "currency": price["currency"],
            "description": name,
            "price": self._public_price(price),
            "quantity": quantity,
        }

    def _inline_price(self, data: dict[str, Any], param: str) -> tuple[dict[str, Any], str]:
        if "currency" not in data:
            raise _missing(f"{param}[currency]")
        currency = str(data["currency"]).lower()
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise _invalid(f"{param}[currency]", f"Invalid currency: {data['currency']}")
        if "unit_amount" not in data:
            raise _missing(f"{param}[unit_amount]")
        unit_amount = _int(data["unit_amount"], f"{param}[unit_amount]", minimum=0)
        if "product" in data:
            product, name = str(data["product"]), "Product"
        elif "product_data" in data:
            if not data["product_data"].get("name"):
                raise _missing(f"{param}[product_data][name]")
            product, name = _new_id("prod_", 14), str(data["product_data"]["name"])
        else:
            raise _missing(f"{param}[product_data]")
        recurring = None
        if "recurring" in data:
            interval = data["recurring"].get("interval")
            if interval is None:
                raise _missing(f"{param}[recurring][interval]")
            if interval not in _INTERVALS:
                raise _invalid(
                    f"{param}[recurring][interval]",
                    f"Invalid {param}[recurring][interval]: must be one of day, week, month, "
                    "or year",
                )
            count = _int(
                data["recurring"].get("interval_count", "1"),
                f"{param}[recurring][interval_count]",
                minimum=1,
            )
            recurring = {"interval": interval, "interval_count": count}
        price = self._price(
            _new_id("price_1"),
            unit_amount=unit_amount,
            currency=currency,
            recurring=recurring,
            product=product,
            active=False,
        )
        return price, name

    def create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        """Validate `params` as Stripe does and store a new open session."""
        _check_known(params, _PARAMS)
        mode = params.get("mode")
        if mode is None:
            raise _missing("mode")
        if mode not in ("payment", "setup", "subscription"):
            raise _invalid("mode", "Invalid mode: must be one of payment, setup, or subscription")
        if mode == "setup":
            raise _invalid("mode", "The fake Stripe does not support setup mode")
        if params.get("ui_mode", "hosted") != "hosted":
            raise _invalid("ui_mode", "The fake Stripe supports only ui_mode=hosted")
        success_url = _url(params, "success_url")
        if success_url is None:
            raise _missing("success_url")
        cancel_url = _url(params, "cancel_url")
        if mode == "subscription" and "payment_intent_data" in params:
            raise ParamError(
                "You can not pass `payment_intent_data` in `subscription` mode.",
                param="payment_intent_data",
            )
        if mode == "payment" and "subscription_data" in params:
            raise ParamError(
                "You can not pass `subscription_data` in `payment` mode.",
                param="subscription_data",
            )
        if "customer" in params and "customer_email" in params:
            raise ParamError(
                "You may only specify one of these parameters: customer, customer_email.",
                param="customer_email",
            )
        if "customer" in params and params["customer"] not in self.customers:
            raise ParamError(
                f"No such customer: '{params['customer']}'",
                param="customer",
                code="resource_missing",
            )
        reference = params.get("client_reference_id")
        if reference is not None and not 0 < len(reference) <= 200:
            raise _invalid(
                "client_reference_id",
                "Invalid string: client_reference_id must be 1 to 200 characters",
            )
        metadata = _metadata(params.get("metadata"), "metadata")
        intent_data = dict(params.get("payment_intent_data") or {})
        intent_data["metadata"] = _metadata(
            intent_data.get("metadata"), "payment_intent_data[metadata]"
        )
        subscription_data = dict(params.get("subscription_data") or {})
        subscription_data["metadata"] = _metadata(
            subscription_data.get("metadata"), "subscription_data[metadata]"
        )
        raw_items = params.get("line_items")
        if not raw_items:
            raise _missing("line_items")
        if not isinstance(raw_items, list):
            raise _invalid("line_items", "Invalid array: line_items")
        items = [self._line_item(raw, i) for i, raw in enumerate(raw_items)]
        currencies = {item["currency"] for item in items}
        if len(currencies) > 1:
            raise _invalid("line_items", "All line items must use the same currency")
        currency = currencies.pop()
        recurring = [i for i in items if i["price"]["type"] == "recurring"]
        if mode == "subscription" and not recurring:
            raise ParamError(
                "You must provide at least one recurring price in `subscription` mode when "
                "using prices.",
                param="line_items",
            )
        if mode == "payment" and recurring:
            raise ParamError(
                "You specified `payment` mode but passed a recurring price. Either switch to "
                "`subscription` mode or use only one-time prices.",
                param="line_items",
            )
        total = sum(item["amount_total"] for item in items)
        minimum = _MINIMUM_CHARGE.get(currency, 50)
        if mode == "payment" and total < minimum:
            raise ParamError(
                "The Checkout Session's total amount due must add up to at least "
                f"{minimum / 100:.2f} {currency}",
                param="line_items",
            )
        customer_creation = params.get("customer_creation")
        if customer_creation not in (None, "always", "if_required"):
            raise _invalid("customer_creation", "Invalid customer_creation")
        now = int(time.time())
        expires_at = now + SESSION_TTL_SECONDS
        if "expires_at" in params:
            expires_at = _int(params["expires_at"], "expires_at", minimum=now + 1800)
        session_id = _new_id("cs_test_a1", 56)
        session: dict[str, Any] = {
            "id": session_id,
            "object": "checkout.session",
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": total,
            "amount_total": total,
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "billing_address_collection": None,
            "cancel_url": cancel_url,
            "client_reference_id": reference,
            "client_secret": None,
            "consent": None,
            "consent_collection": None,
            "created": now,
            "currency": currency,
            "custom_fields": [],
            "custom_text": {
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            "customer": params.get("customer"),
            "customer_creation": None
            if mode == "subscription"
            else (customer_creation or "if_required"),
            "customer_details": None,
            "customer_email": params.get("customer_email"),
            "expires_at": expires_at,
            "invoice": None,
            "invoice_creation": None
            if mode == "subscription"
            else {"enabled": False, "invoice_data": {"metadata": {}}},
            "livemode": False,
            "locale": params.get("locale"),
            "metadata": metadata,
            "mode": mode,
            "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": "always" if mode == "subscription" else None,
            "payment_method_options": {},
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "phone_number_collection": {"enabled": False},
            "recovered_from": None,
            "setup_intent": None,
            "shipping_address_collection": None,
            "shipping_cost": None,
            "shipping_options": [],
            "status": "open",
            "submit_type": params.get("submit_type"),
            "subscription": None,
            "success_url": success_url,
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"{self.root_url}/c/pay/{session_id}",
        }
        self.sessions[session_id] = session
        self._extras[session_id] = _SessionExtras(items, intent_data, subscription_data)
        return session

    def _new_customer(self, email: str | None, name: str) -> dict[str, Any]:
        customer: dict[str, Any] = {
            "id": _new_id("cus_", 14),
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": int(time.time()),
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": None,
            "email": email,
            "invoice_prefix": secrets.token_hex(4).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": {},
            "name": name,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self.customers[customer["id"]] = customer
        return customer

    def _new_payment_intent(self, session: dict[str, Any], *, succeeded: bool) -> dict[str, Any]:
        extras = self._extras[session["id"]]
        intent_id = _new_id("pi_3")
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": session["amount_total"],
            "amount_capturable": 0,
            "amount_received": session["amount_total"] if succeeded else 0,
            "application": None,
            "automatic_payment_methods": None,
            "canceled_at": None,
            "cancellation_reason": None,
            "capture_method": "automatic_async",
            "client_secret": f"{intent_id}_secret_{_new_id('', 25)}",
            "confirmation_method": "automatic",
            "created": int(time.time()),
            "currency": session["currency"],
            "customer": session["customer"],
            "description": extras.payment_intent_data.get("description"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": dict(extras.payment_intent_data["metadata"]),
            "next_action": None,
            "payment_method": _new_id("pm_1"),
            "payment_method_types": ["card"] if succeeded else ["us_bank_account"],
            "receipt_email": extras.payment_intent_data.get("receipt_email"),
            "setup_future_usage": None,
            "status": "succeeded" if succeeded else "processing",
        }
        self.payment_intents[intent_id] = intent
        return intent

    def _new_charge(self, intent: dict[str, Any], session: dict[str, Any]) -> dict[str, Any]:
        details = session["customer_details"] or {}
        charge_id = _new_id("ch_3")
        card = intent["payment_method_types"] == ["card"]
        charge = {
            "id": charge_id,
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "application": None,
            "application_fee": None,
            "application_fee_amount": None,
            "balance_transaction": _new_id("txn_3"),
            "billing_details": {
                "address": None,
                "email": details.get("email"),
                "name": details.get("name"),
                "phone": None,
            },
            "calculated_statement_descriptor": "LUNOGEN",
            "captured": True,
            "created": int(time.time()),
            "currency": intent["currency"],
            "customer": intent["customer"],
            "description": intent["description"],
            "disputed": False,
            "failure_balance_transaction": None,
            "failure_code": None,
            "failure_message": None,
            "fraud_details": {},
            "livemode": False,
            "metadata": dict(intent["metadata"]),
            "on_behalf_of": None,
            "outcome": {
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            },
            "paid": True,
            "payment_intent": intent["id"],
            "payment_method": intent["payment_method"],
            "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242"}}
            if card
            else {"type": "us_bank_account", "us_bank_account": {"last4": "6789"}},
            "receipt_email": intent["receipt_email"],
            "receipt_number": None,
            "receipt_url": f"https://pay.stripe.com/receipts/payment/{_new_id('', 40)}",
            "refunded": False,
            "review": None,
            "shipping": None,
            "source_transfer": None,
            "statement_descriptor": None,
            "statement_descriptor_suffix": None,
            "status": "succeeded",
            "transfer_data": None,
            "transfer_group": None,
        }
        self.charges[charge_id] = charge
        intent["latest_charge"] = charge_id
        return charge

    def _new_subscription(self, session: dict[str, Any]) -> dict[str, Any]:
        extras = self._extras[session["id"]]
        now = int(time.time())
        subscription_id = _new_id("sub_1")
        items = []
        for line in extras.line_items:
            recurring = line["price"]["recurring"] or {"interval": "month", "interval_count": 1}
            items.append(
                {
                    "id": _new_id("si_", 14),
                    "object": "subscription_item",
                    "billing_thresholds": None,
                    "created": now,
                    "current_period_end": _add_interval(
                        now, recurring["interval"], recurring["interval_count"]
                    ),
                    "current_period_start": now,
                    "discounts": [],
                    "metadata": {},
                    "price": copy.deepcopy(line["price"]),
                    "quantity": line["quantity"],
                    "subscription": subscription_id,
                    "tax_rates": [],
                }
            )
        subscription = {
            "id": subscription_id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "billing_cycle_anchor": now,
            "billing_cycle_anchor_config": None,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "cancellation_details": {"comment": None, "feedback": None, "reason": None},
            "collection_method": "charge_automatically",
            "created": now,
            "currency": session["currency"],
            "customer": session["customer"],
            "days_until_due": None,
            "default_payment_method": _new_id("pm_1"),
            "default_source": None,
            "description": extras.subscription_data.get("description"),
            "discounts": [],
            "ended_at": None,
            "items": _list(items, f"/v1/subscription_items?subscription={subscription_id}"),
            "latest_invoice": None,
            "livemode": False,
            "metadata": dict(extras.subscription_data["metadata"]),
            "pause_collection": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": now,
            "status": "incomplete",
            "test_clock": None,
            "trial_end": None,
            "trial_start": None,
        }
        self.subscriptions[subscription_id] = subscription
        return subscription

    def _new_invoice(
        self,
        subscription: dict[str, Any],
        *,
        billing_reason: str,
        period: tuple[int, int] | None = None,
    ) -> dict[str, Any]:
        now = int(time.time())
        invoice_id = _new_id("in_1")
        customer = self.customers.get(subscription["customer"]) or {}
        lines = []
        for item in subscription["items"]["data"]:
            amount = item["price"]["unit_amount"] * item["quantity"]
            lines.append(
                {
                    "id": _new_id("il_1"),
                    "object": "line_item",
                    "amount": amount,
                    "currency": subscription["currency"],
                    "description": f"{item['quantity']} \u00d7 LunoGen subscription",
                    "discount_amounts": [],
                    "discountable": True,
                    "discounts": [],
                    "invoice": invoice_id,
                    "livemode": False,
                    "metadata": dict(subscription["metadata"]),
                    "parent": {
                        "type": "subscription_item_details",
                        "invoice_item_details": None,
                        "subscription_item_details": {
                            "invoice_item": None,
                            "proration": False,
                            "proration_details": {"credited_items": None},
                            "subscription": subscription["id"],
                            "subscription_item": item["id"],
                        },
                    },
                    "period": {
                        "end": item["current_period_end"],
                        "start": item["current_period_start"],
                    },
                    "pretax_credit_amounts": [],
                    "pricing": {
                        "type": "price_details",
                        "price_details": {
                            "price": item["price"]["id"],
                            "product": item["price"]["product"],
                        },
                        "unit_amount_decimal": item["price"]["unit_amount_decimal"],
                    },
                    "quantity": item["quantity"],
                    "taxes": [],
                }
            )
        total = sum(line["amount"] for line in lines)
        start, end = period or (now, now)
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "account_country": "US",
            "account_name": "LunoGen (test)",
            "amount_due": total,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_remaining": total,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": True,
            "automatic_tax": {
                "disabled_reason": None,
                "enabled": False,
                "liability": None,
                "status": None,
            },
            "billing_reason": billing_reason,
            "collection_method": "charge_automatically",
            "created": now,
            "currency": subscription["currency"],
            "customer": subscription["customer"],
            "customer_email": customer.get("email"),
            "customer_name": customer.get("name"),
            "description": None,
            "discounts": [],
            "due_date": None,
            "effective_at": now,
            "ending_balance": 0,
            "hosted_invoice_url": f"https://invoice.stripe.com/i/{_new_id('', 40)}",
            "invoice_pdf": f"https://pay.stripe.com/invoice/{_new_id('', 40)}/pdf",
            "last_finalization_error": None,
            "lines": _list(lines, f"/v1/invoices/{invoice_id}/lines"),
            "livemode": False,
            "metadata": {},
            "next_payment_attempt": now + 3600,
            "number": f"{customer.get('invoice_prefix', 'FAKE')}-{len(self.invoices) + 1:04d}",
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "metadata": dict(subscription["metadata"]),
                    "subscription": subscription["id"],
                },
            },
            "period_end": end,
            "period_start": start,
            "starting_balance": 0,
            "status": "open",
            "status_transitions": {
                "finalized_at": now,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            "subtotal": total,
            "subtotal_excluding_tax": total,
            "total": total,
            "total_excluding_tax": total,
            "total_taxes": [],
            "webhooks_delivered_at": now,
        }
        self.invoices[invoice_id] = invoice
        subscription["latest_invoice"] = invoice_id
        return invoice

    def _invoice_paid(
        self, subscription: dict[str, Any], invoice: dict[str, Any]
    ) -> list[dict[str, Any]]:
        now = int(time.time())
        invoice.update(
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            attempted=True,
            attempt_count=invoice["attempt_count"] + 1,
            next_payment_attempt=None,
            status="paid",
        )
        invoice["status_transitions"]["paid_at"] = now
        events = [
            self._event("invoice.paid", invoice),
            self._event("invoice.payment_succeeded", invoice),
        ]
        if subscription["status"] != "active":
            events.append(self._change(subscription, {"status": "active"}))
        return events

    def _renew(self, subscription: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        if subscription["status"] not in ("active", "past_due", "trialing"):
            raise ValueError(f"{subscription['id']} is {subscription['status']}: no renewal")
        items = copy.deepcopy(subscription["items"])
        first = items["data"][0]
        period = (first["current_period_start"], first["current_period_end"])
        for item in items["data"]:
            recurring = item["price"]["recurring"] or {"interval": "month", "interval_count": 1}
            start = item["current_period_end"]
            item["current_period_start"] = start
            item["current_period_end"] = _add_interval(
                start, recurring["interval"], recurring["interval_count"]
            )
        previous = {
            "items": copy.deepcopy(subscription["items"]),
            "latest_invoice": subscription["latest_invoice"],
        }
        subscription["items"] = items
        invoice = self._new_invoice(
            subscription, billing_reason="subscription_cycle", period=period
        )
        events = [
            self._event("customer.subscription.updated", subscription, previous),
            self._event("invoice.finalized", invoice),
        ]
        return events, invoice

    # -- HTTP ------------------------------------------------------------------------------------

    def asgi_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/checkout/sessions", self._create_session, methods=["POST"]),
                Route("/v1/checkout/sessions/{session_id}", self._retrieve, methods=["GET"]),
                Route(
                    "/v1/subscriptions/{subscription_id}",
                    self._cancel_subscription_now,
                    methods=["DELETE"],
                ),
                Route("/c/pay/{session_id}", self._hosted_page, methods=["GET"]),
                Route(
                    "/v1/{rest:path}",
                    self._unrecognized,
                    methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
                ),
            ]
        )

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        pairs = (
            parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
            if request.method == "POST"
            else list(request.query_params.multi_items())
        )
        params: dict[str, Any] = {}
        form_error = None
        try:
            params = decode_form(pairs)
        except ParamError as error:
            form_error = error
        recorded = RecordedRequest(
            request.method, request.url.path, headers, params, raw, form_error
        )
        self.requests.append(recorded)
        return recorded

    def _respond(
        self,
        recorded: RecordedRequest,
        status: int,
        body: bytes,
        extra: dict[str, str] | None = None,
    ) -> Response:
        headers = {
            "Request-Id": _new_id("req_", 14),
            "Stripe-Version": recorded.headers.get("stripe-version", self.api_version),
            "Cache-Control": "no-cache, no-store",
            **(extra or {}),
        }
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    def _error(self, recorded: RecordedRequest, error: ParamError) -> Response:
        return self._respond(recorded, error.status, _json_bytes(error.body()))

    def _api_key(self, recorded: RecordedRequest) -> str | None:
        header = recorded.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer":
            return credentials.strip() or None
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials).decode()
            except ValueError:
                return None
            return decoded.partition(":")[0] or None
        return None

    def _authenticate(self, recorded: RecordedRequest) -> ParamError | None:
        key = self._api_key(recorded)
        if key is None:
            return ParamError(
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, "
                "or we can help at https://support.stripe.com/.",
                status=401,
            )
        if not hmac.compare_digest(key, self.secret_key):
            return ParamError(
                f"Invalid API Key provided: {key[:8]}{'*' * max(len(key) - 12, 0)}{key[-4:]}",
                status=401,
                code="api_key_invalid" if key.startswith("sk_") else None,
            )
        return None

    def _scripted(self, recorded: RecordedRequest) -> Response | None:
        if not self.failures:
            return None
        failure = self.failures.popleft()
        extra = {}
        if failure.should_retry is not None:
            extra["Stripe-Should-Retry"] = "true" if failure.should_retry else "false"
        error = ParamError(
            failure.message, status=failure.status, type=failure.type, code=failure.code
        )
        return self._respond(recorded, failure.status, _json_bytes(error.body()), extra)

    def _replay(self, recorded: RecordedRequest, key: str) -> Response | None:
        stored = self._idempotent.get((self.secret_key, key))
        if stored is None:
            return None
        if (stored.method, stored.path) != (recorded.method, recorded.path):
            message = (
                "Keys for idempotent requests can only be used for the same endpoint they were "
                f"first used for ('{stored.method} {stored.path}' vs "
                f"'{recorded.method} {recorded.path}'). Try using a key other than '{key}' if "
                "you meant to execute a different request."
            )
        elif stored.params != recorded.params:
            message = (
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request."
            )
        else:
            return self._respond(
                recorded,
                stored.status,
                stored.body,
                {"Idempotent-Replayed": "true", "Original-Request": stored.request_id},
            )
        return self._error(recorded, ParamError(message, type="idempotency_error"))

    async def _create_session(self, request: Request) -> Response:
        recorded = await self._record(request)
        with self._lock:
            denied = self._authenticate(recorded)
            if denied is not None:
                return self._error(recorded, denied)
            key = recorded.headers.get("idempotency-key")
            if key:
                replayed = self._replay(recorded, key)
                if replayed is not None:
                    return replayed
            scripted = self._scripted(recorded)
            if scripted is not None:
                return scripted
            try:
                if recorded.form_error is not None:
                    raise recorded.form_error
                session = self.create_session(recorded.params)
            except ParamError as error:
                return self._error(recorded, error)  # failed validation: nothing is stored
            response = self._respond(recorded, 200, _json_bytes(session))
            if key:
                self._idempotent[(self.secret_key, key)] = _Stored(
                    recorded.method,
                    recorded.path,
                    recorded.params,
                    200,
                    bytes(response.body),
                    response.headers["request-id"],
                )
            return response

    async def _retrieve(self, request: Request) -> Response:
        recorded = await self._record(request)
        with self._lock:
            denied = self._authenticate(recorded)
            if denied is not None:
                return self._error(recorded, denied)
            scripted = self._scripted(recorded)
            if scripted is not None:
                return scripted
            session_id = request.path_params["session_id"]
            session = self.sessions.get(session_id)
            if session is None:
                missing = ParamError(
                    f"No such checkout.session: '{session_id}'",
                    param="session",
                    code="resource_missing",
                    status=404,
                )
                return self._error(recorded, missing)
            return self._respond(recorded, 200, _json_bytes(session))

    async def _cancel_subscription_now(self, request: Request) -> Response:
        """`DELETE /v1/subscriptions/{id}`: cancel at once and answer the subscription.

        As Stripe does: a subscription already cancelled (or never made) is 404
        `resource_missing`; `cancellation_details`, `invoice_now` and `prorate` are the only
        parameters (sent in the query string, as the SDK sends a DELETE's).
        """
        recorded = await self._record(request)
        with self._lock:
            denied = self._authenticate(recorded)
            if denied is not None:
                return self._error(recorded, denied)
            scripted = self._scripted(recorded)
            if scripted is not None:
                return scripted
            subscription_id = request.path_params["subscription_id"]
            subscription = self.subscriptions.get(subscription_id)
            try:
                if recorded.form_error is not None:
                    raise recorded.form_error
                _check_known(recorded.params, _CANCEL_PARAMS)
                if subscription is None or subscription["status"] == "canceled":
                    raise ParamError(
                        f"No such subscription: '{subscription_id}'",
                        param="id",
                        code="resource_missing",
                        status=404,
                    )
            except ParamError as error:
                return self._error(recorded, error)
            details = recorded.params.get("cancellation_details") or {}
            self.cancel_subscription(subscription_id)
            subscription["cancellation_details"].update(
                {k: details[k] for k in ("comment", "feedback") if k in details}
            )
            return self._respond(recorded, 200, _json_bytes(subscription))

    async def _hosted_page(self, request: Request) -> Response:
        await self._record(request)
        session = self.sessions.get(request.path_params["session_id"])
        if session is None:
            return HTMLResponse("<h1>Something went wrong</h1>", status_code=404)
        if session["status"] != "open":
            return HTMLResponse("<h1>This Checkout Session is no longer active.</h1>")
        amount = f"{session['amount_total'] / 100:.2f} {session['currency'].upper()}"
        return HTMLResponse(
            f"<h1>Pay LunoGen (test mode)</h1><p>{escape(amount)}</p>"
            f"<p>Session {escape(session['id'])}</p>"
        )

    async def _unrecognized(self, request: Request) -> Response:
        recorded = await self._record(request)
        error = ParamError(
            f"Unrecognized request URL ({request.method}: {request.url.path}). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/.",
            status=404,
        )
        return self._error(recorded, error)

    # -- running ---------------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[FakeStripe]:
        fake = cls()
        sock, port = loopback_socket()
        fake.root_url = f"http://127.0.0.1:{port}"
        with serve_in_thread(fake.asgi_app(), sock, name="the fake Stripe"):
            yield fake


def _rendered(obj: dict[str, Any], version: str) -> dict[str, Any]:
    """`obj` (built in basil's shapes) as an event in API `version` carries it."""
    if version[:10] >= BASIL:
        return obj
    if obj.get("object") == "invoice":
        parent = obj.pop("parent", None) or {}
        details = parent.get("subscription_details") or {}
        obj["subscription"] = details.get("subscription")
        obj["subscription_details"] = {"metadata": details.get("metadata") or {}}
        for line in obj["lines"]["data"]:
            item = ((line.pop("parent", None) or {}).get("subscription_item_details")) or {}
            pricing = (line.pop("pricing", None) or {}).get("price_details") or {}
            line.update(
                type="subscription",
                subscription=item.get("subscription"),
                subscription_item=item.get("subscription_item"),
                proration=bool(item.get("proration")),
                price={
                    "id": pricing.get("price"),
                    "object": "price",
                    "product": pricing.get("product"),
                },
            )
    elif obj.get("object") == "subscription":
        first = obj["items"]["data"][0]
        obj["current_period_start"] = first["current_period_start"]
        obj["current_period_end"] = first["current_period_end"]
    return obj


def _period_end(subscription: dict[str, Any]) -> int:
    return int(subscription["items"]["data"][0]["current_period_end"])


def stripe_settings(fake: FakeStripe, **overrides: object) -> dict[str, object]:
    """Settings overrides that point LunoGen's Stripe client and webhook check at `fake`."""
    values: dict[str, object] = {
        "stripe_secret_key": fake.secret_key,
        "stripe_webhook_secret": fake.webhook_secret,
        "stripe_api_base": fake.api_base,
    }
    values.update(overrides)
    return values


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[FakeStripe]:
    with FakeStripe.running() as fake:
        yield fake


@pytest.fixture
def stripe_fake(stripe_server: FakeStripe) -> Iterator[FakeStripe]:
    """The fake Stripe, reset for this test (no sessions, events, requests or failures)."""
    stripe_server.reset()
    yield stripe_server
    stripe_server.reset()
