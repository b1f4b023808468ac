"""LunoGen's Stripe calls: Checkout sessions for top-ups and the Pro plan, and webhook checks.

Every call goes through the `stripe` SDK's async methods on one `StripeClient`; `api_base`
(setting LUNOGEN_STRIPE_API_BASE) points it elsewhere than https://api.stripe.com, at the fake in
tests. SDK errors become our `StripeError`, bad webhook signatures our `StripeSignatureError`.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from lunogen.errors import LunogenError

if TYPE_CHECKING:
    # The SDK (~50 ms of imports with `requests`) is imported where it is used: a server starts
    # without it and warms it up in the background once healthy (`worker.process.warm_up`).
    import stripe
    from stripe.params.checkout import SessionCreateParams

DEFAULT_TOLERANCE_SECONDS = 300

SignatureProblem = Literal[
    "missing_header", "bad_format", "no_matching_signature", "stale_timestamp", "bad_payload"
]


class StripeError(LunogenError):
    """A Stripe call failed: unreachable, refused (4xx) or broken (5xx)."""

    status_code = 502
    error = "Payment provider error"

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        code: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.retryable = retryable


class StripeSignatureError(LunogenError):
    """A webhook delivery that does not prove it comes from Stripe; `problem` says why."""

    status_code = 400
    error = "Invalid Stripe signature"

    def __init__(self, message: str, *, problem: SignatureProblem) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str | None  # the hosted page; null once the session is complete or expired
    status: str | None = None  # open, complete, expired
    payment_status: str | None = None  # paid, unpaid, no_payment_required
    mode: str | None = None
    client_reference_id: str | None = None
    amount_total: int | None = None
    currency: str | None = None
    customer: str | None = None
    payment_intent: str | None = None
    subscription: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class StripeGateway:
    def __init__(
        self,
        secret_key: str,
        api_base: str | None = None,
        *,
        timeout_seconds: float = 30,
        max_network_retries: int = 2,
    ) -> None:
        import stripe

        self._http = stripe.HTTPXClient(timeout=timeout_seconds)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    async def create_topup_session(
        self,
        *,
        account_id: str,
        amount_cents: int,
        currency: str,
        credits: Decimal | int,
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
    ) -> CheckoutSession:
        """A one-off payment for `credits`. The metadata is on the session and on the
        PaymentIntent (hence on its charge), so refunds can be traced back to the account."""
        metadata = {"account_id": account_id, "credits": str(credits), "kind": "topup"}
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": currency.lower(),
                        "unit_amount": amount_cents,
                        "product_data": {"name": f"{credits} LunoGen credits"},
                    },
                    "quantity": 1,
                }
            ],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": account_id,
            "metadata": metadata,
            "payment_intent_data": {"metadata": metadata},
        }
        return await self._create_session(params, idempotency_key)

    async def create_subscription_session(
        self,
        *,
        account_id: str,
        price_id: str,
        success_url: str,
        cancel_url: str,
        idempotency_key: str,
        customer_email: str | None = None,
    ) -> CheckoutSession:
        metadata = {"account_id": account_id, "kind": "subscription"}
        params: SessionCreateParams = {
            "mode": "subscription",
            "line_items": [{"price": price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": account_id,
            "metadata": metadata,
            "subscription_data": {"metadata": metadata},
        }
        if customer_email:
            params["customer_email"] = customer_email
        return await self._create_session(params, idempotency_key)

    @staticmethod
    def verify_event(
        payload: bytes,
        signature_header: str | None,
        secret: str,
        tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    ) -> dict[str, Any]:
        return verify_event(payload, signature_header, secret, tolerance)

    async def retrieve_session(self, session_id: str) -> CheckoutSession:
        import stripe

        try:
            session = await self._client.v1.checkout.sessions.retrieve_async(session_id)
        except stripe.StripeError as exc:
            raise _our_error("retrieving a checkout session", exc) from exc
        return _checkout_session(session)

    async def _create_session(
        self, params: SessionCreateParams, idempotency_key: str
    ) -> CheckoutSession:
        import stripe

        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params=params, options={"idempotency_key": idempotency_key}
            )
        except stripe.StripeError as exc:
            raise _our_error("creating a checkout session", exc) from exc
        return _checkout_session(session)


def verify_event(
    payload: bytes,
    signature_header: str | None,
    secret: str,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> dict[str, Any]:
    """The event in `payload` if `signature_header` proves Stripe sent it, recently.

    Checks what `stripe.Webhook.construct_event` checks (any `v1` entry is an HMAC-SHA256 of
    `"{t}.{payload}"` keyed with the `whsec_` secret as-is; `t` at most `tolerance` seconds old),
    naming the problem; returns the event as a plain dict parsed from the exact bytes received.
    """
    if not secret:
        raise ValueError("no Stripe webhook secret is configured")
    if not signature_header:
        raise StripeSignatureError(
            "the Stripe-Signature header is missing", problem="missing_header"
        )
    timestamp = _signed_timestamp(signature_header)
    import stripe

    try:
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance=None)
    except UnicodeDecodeError as exc:
        raise StripeSignatureError("the body is not UTF-8", problem="bad_payload") from exc
    except stripe.SignatureVerificationError as exc:
        raise StripeSignatureError(
            "no v1 signature in the Stripe-Signature header matches the body",
            problem="no_matching_signature",
        ) from exc
    age = time.time() - timestamp
    if tolerance and age > tolerance:
        raise StripeSignatureError(
            f"the signature timestamp is {int(age)} s old (more than {tolerance} s)",
            problem="stale_timestamp",
        )
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise StripeSignatureError("the body is not JSON", problem="bad_payload") from exc
    if not isinstance(event, dict) or event.get("object") != "event":
        raise StripeSignatureError("the body is not a Stripe event", problem="bad_payload")
    return event


_UNIX_SECONDS = re.compile(r"[0-9]{1,15}")  # ASCII digits only: str.isdigit() takes "²"


def _signed_timestamp(header: str) -> int:
    if not header.isascii():  # Stripe's own check would then fail inside hmac.compare_digest
        raise StripeSignatureError(
            "the Stripe-Signature header must be ASCII", problem="bad_format"
        )
    timestamps: list[str] = []
    has_v1 = False
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep or not value:
            raise StripeSignatureError(
                f"malformed Stripe-Signature entry {part.strip()[:20]!r}", problem="bad_format"
            )
        if key == "t":
            timestamps.append(value)
        has_v1 = has_v1 or key == "v1"
    if len(timestamps) != 1 or not _UNIX_SECONDS.fullmatch(timestamps[0]):
        raise StripeSignatureError(
            "the Stripe-Signature header needs exactly one t= entry of unix seconds",
            problem="bad_format",
        )
    if not has_v1:
        raise StripeSignatureError(
            "the Stripe-Signature header has no v1 signature", problem="bad_format"
        )
    return int(timestamps[0])


def _checkout_session(session: stripe.checkout.Session) -> CheckoutSession:
    data = session.to_dict()

    def text(name: str) -> str | None:
        value = data.get(name)
        if isinstance(value, dict):  # an expanded object
            value = value.get("id")
        return value if isinstance(value, str) else None

    amount = data.get("amount_total")
    return CheckoutSession(
        id=str(data["id"]),
        url=text("url"),
        status=text("status"),
        payment_status=text("payment_status"),
        mode=text("mode"),
        client_reference_id=text("client_reference_id"),
        amount_total=amount if isinstance(amount, int) else None,
        currency=text("currency"),
        customer=text("customer"),
        payment_intent=text("payment_intent"),
        subscription=text("subscription"),
        metadata={str(k): str(v) for k, v in (data.get("metadata") or {}).items()},
    )


def _our_error(action: str, exc: stripe.StripeError) -> StripeError:
    import stripe

    message = exc.user_message or exc.__class__.__name__
    status = exc.http_status
    if isinstance(exc, stripe.APIConnectionError):
        return StripeError(f"Stripe is unreachable while {action}: {message}", retryable=True)
    detail = f"HTTP {status}" if status is not None else "no HTTP status"
    if exc.code:
        detail += f" {exc.code}"
    retryable = isinstance(exc, stripe.RateLimitError) or (status is not None and status >= 500)
    return StripeError(
        f"Stripe answered {detail} while {action}: {message}",
        http_status=status,
        code=exc.code,
        retryable=retryable,
    )
