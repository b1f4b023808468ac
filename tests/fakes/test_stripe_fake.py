"""The fake Stripe, driven through LunoGen's `StripeGateway` (the real SDK, over real HTTP)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import stripe

from lunogen.billing.stripe_client import (
    StripeError,
    StripeGateway,
    StripeSignatureError,
    verify_event,
)
from tests.fakes import stripe as fake_stripe
from tests.fakes.stripe import (
    WEBHOOK_SECRET,
    FakeStripe,
    event_bytes,
    event_of,
    sign_event,
    stripe_settings,
)

stripe_server = fake_stripe.stripe_server
stripe_fake = fake_stripe.stripe_fake

SUCCESS = "https://lunogen.test/billing/done?session_id={CHECKOUT_SESSION_ID}"
CANCEL = "https://lunogen.test/billing"
WEBHOOK = WEBHOOK_SECRET


@pytest.fixture
async def gateway(stripe_fake: FakeStripe) -> AsyncIterator[StripeGateway]:
    settings = stripe_settings(stripe_fake)
    client = StripeGateway(str(settings["stripe_secret_key"]), str(settings["stripe_api_base"]))
    yield client
    await client.aclose()


async def _topup(gateway: StripeGateway, key: str = "topup-1", **changes: Any) -> Any:
    values: dict[str, Any] = {
        "account_id": "acc_42",
        "amount_cents": 1000,
        "currency": "USD",
        "credits": 1000,
        "success_url": SUCCESS,
        "cancel_url": CANCEL,
        "idempotency_key": key,
    }
    values.update(changes)
    return await gateway.create_topup_session(**values)


def _sdk(fake: FakeStripe, key: str | None = None) -> stripe.StripeClient:
    return stripe.StripeClient(
        key or fake.secret_key,
        base_addresses={"api": fake.api_base},
        max_network_retries=0,
        http_client=stripe.HTTPXClient(),
    )


# -- checkout sessions ----------------------------------------------------------------------------


async def test_topup_session_is_created_in_stripe_wire_format(
    stripe_fake: FakeStripe, gateway: StripeGateway
) -> None:
    session = await _topup(gateway)

    assert session.id.startswith("cs_test_")
    assert session.url == f"{stripe_fake.root_url}/c/pay/{session.id}"
    assert (session.mode, session.status, session.payment_status) == ("payment", "open", "unpaid")
    assert (session.amount_total, session.currency) == (1000, "usd")
    assert session.client_reference_id == "acc_42"
    assert session.metadata == {"account_id": "acc_42", "credits": "1000", "kind": "topup"}
    assert session.payment_intent is None  # created when the customer pays

    sent = stripe_fake.last_request
    assert sent.headers["authorization"] == f"Bearer {stripe_fake.secret_key}"
    assert sent.headers["idempotency-key"] == "topup-1"
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    form = sent.raw_body.decode().split("&")
    assert "line_items[0][price_data][unit_amount]=1000" in form
    assert "payment_intent_data[metadata][account_id]=acc_42" in form
    assert sent.params["payment_intent_data"]["metadata"] == session.metadata
    product = sent.params["line_items"][0]["price_data"]["product_data"]
    assert product == {"name": "1000 LunoGen credits"}

    async with httpx.AsyncClient() as client:
        page = await client.get(session.url)
    assert page.status_code == 200
    assert "10.00 USD" in page.text


async def test_same_idempotency_key_and_params_replays_the_same_session(
    stripe_fake: FakeStripe, gateway: StripeGateway
) -> None:
    first = await _topup(gateway, key="topup-replay")
    again = await _topup(gateway, key="topup-replay")

    assert again.id == first.id
    assert list(stripe_fake.sessions) == [first.id]


async def test_replayed_response_is_marked_and_byte_identical(stripe_fake: FakeStripe) -> None:
    form = {
        "mode": "payment",
        "success_url": SUCCESS,
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "500",
        "line_items[0][price_data][product_data][name]": "500 credits",
        "line_items[0][quantity]": "1",
    }
    headers = {"Authorization": f"Bearer {stripe_fake.secret_key}", "Idempotency-Key": "raw-1"}
    url = f"{stripe_fake.api_base}/v1/checkout/sessions"
    async with httpx.AsyncClient() as client:
        first = await client.post(url, data=form, headers=headers)
        again = await client.post(url, data=form, headers=headers)

    assert first.status_code == again.status_code == 200
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["original-request"] == first.headers["request-id"]
    assert again.content == first.content


async def test_same_idempotency_key_with_other_params_is_an_idempotency_error(
    stripe_fake: FakeStripe, gateway: StripeGateway
) -> None:
    await _topup(gateway, key="topup-conflict")

    with pytest.raises(StripeError) as caught:
        await _topup(gateway, key="topup-conflict", amount_cents=2000)

    assert caught.value.http_status == 400
    assert "same parameters" in str(caught.value)
    assert not caught.value.retryable
    assert len(stripe_fake.sessions) == 1


async def test_failed_validation_does_not_burn_the_idempotency_key(
    stripe_fake: FakeStripe, gateway: StripeGateway
) -> None:
    with pytest.raises(StripeError):
        await _topup(gateway, key="topup-retry", amount_cents=10)  # under the 0.50 minimum

    session = await _topup(gateway, key="topup-retry", amount_cents=500)

    assert session.amount_total == 500


async def test_retrieve_follows_the_session_through_payment(
    stripe_fake: FakeStripe, gateway: StripeGateway
) -> None:
    created = await _topup(gateway)
    assert (await gateway.retrieve_session(created.id)) == created

    stripe_fake.complete_session(created.id)
    paid = await gateway.retrieve_session(created.id)

    assert (paid.status, paid.payment_status) == ("complete", "paid")
    assert paid.url is None
    assert paid.payment_intent is not None
    assert paid.payment_intent.startswith("pi_")


async def test_retrieving_an_unknown_session_is_a_404(gateway: StripeGateway) -> None:
    with pytest.raises(StripeError) as caught:
        await gateway.retrieve_session("cs_test_nope")

    assert caught.value.http_status == 404
    assert caught.value.code == "resource_missing"
    assert "No such checkout.session: 'cs_test_nope'" in str(caught.value)


async def test_a_wrong_secret_key_is_refused_with_401(stripe_fake: FakeStripe) -> None:
    wrong = StripeGateway("sk_test_wrong0000000000000000000000", stripe_fake.api_base)
    try:
        with pytest.raises(StripeError) as caught:
            await _topup(wrong)
    finally:
        await wrong.aclose()

    assert caught.value.http_status == 401
    assert "Invalid API Key provided: sk_test_" in str(caught.value)
    assert stripe_fake.sessions == {}


async def test_requests_without_a_key_get_stripes_401_body(stripe_fake: FakeStripe) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(f"{stripe_fake.api_base}/v1/checkout/sessions", data={})

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("You did not provide an API key.")


async def test_a_missing_required_param_is_a_400_naming_it(stripe_fake: FakeStripe) -> None:
    client = _sdk(stripe_fake)
    params: Any = {
        "mode": "payment",
        "line_items": [{"price_data": {"currency": "usd", "unit_amount": 900}, "quantity": 1}],
        "success_url": SUCCESS,
    }
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.create_async(params=params)
    assert caught.value.param == "line_items[0][price_data][product_data]"

    del params["success_url"]
    params["line_items"][0]["price_data"]["product_data"] = {"name": "credits"}
    with pytest.raises(stripe.InvalidRequestError) as caught:
        await client.v1.checkout.sessions.create_async(params=params)
    assert caught.value.http_status == 400
    assert caught.value.param == "success_url"
    assert caught.value.code == "parameter_missing"
    assert caught.value.user_message == "Missing required param: success_url."


async def test_unknown_params_and_mode_mismatches_are_refused(stripe_fake: FakeStripe) -> None:
    client = _sdk(stripe_fake)
    base: Any = {"success_url": SUCCESS, "line_items": [{"price": stripe_fake.pro_price_id}]}
    base["line_items"][0]["quantity"] = 1
    cases: list[tuple[dict[str, Any], str]] = [
        ({"mode": "payment", "payment_intent_data": {"metdata": {"a": "b"}}}, "metdata"),
        ({"mode": "payment"}, "`payment` mode but passed a recurring price"),
        ({"mode": "subscription", "payment_intent_data": {"metadata": {"a": "b"}}}, "can not"),
        ({"mode": "subscription", "line_items": [{"price": "price_x", "quantity": 1}]}, "No such"),
    ]
    for extra, expected in cases:
        params: Any = {**base, **extra}
        with pytest.raises(stripe.InvalidRequestError) as caught:
            await client.v1.checkout.sessions.create_async(params=params)
        assert expected in str(caught.value.user_message)
    assert stripe_fake.sessions == {}


async def test_server_errors_are_retried_with_the_same_key_then_reported(
    stripe_fake: FakeStripe,
) -> None:
    stripe_fake.fail(500, times=3)
    client = StripeGateway(stripe_fake.secret_key, stripe_fake.api_base, max_network_retries=1)
    try:
        with pytest.raises(StripeError) as caught:
            await _topup(client, key="topup-5xx")
        session = await _topup(client, key="topup-5xx")  # one failure left, then a retry
    finally:
        await client.aclose()

    assert caught.value.http_status == 500
    assert caught.value.retryable
    keys = [r.headers["idempotency-key"] for r in stripe_fake.api_requests]
    assert keys == ["topup-5xx"] * 4
    assert list(stripe_fake.sessions) == [session.id]


async def test_an_unreachable_stripe_is_a_retryable_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = StripeGateway("sk_test_x", f"http://127.0.0.1:{port}", max_network_retries=0)
    try:
        with pytest.raises(StripeError) as caught:
            await client.retrieve_session("cs_test_1")
    finally:
        await client.aclose()

    assert caught.value.retryable
    assert "unreachable" in str(caught.value)


# -- payments and the events they send ------------------------------------------------------------


async def test_paid_topup_sends_completed_with_the_metadata(
    stripe_fake: FakeStripe, gateway: StripeGateway
) -> None:
    session = await _topup(gateway)

    events = stripe_fake.complete_session(session.id)

    completed = event_of(events, "checkout.session.completed")
    assert completed["object"] == "event"
    assert completed["id"].startswith("evt_")
    assert completed["livemode"] is False
    assert completed["api_version"] == stripe.api_version
    body = completed["data"]["object"]
    assert (body["id"], body["payment_status"], body["status"]) == (session.id, "paid", "complete")
    assert body["client_reference_id"] == "acc_42"
    assert body["metadata"]["credits"] == "1000"
    charge = event_of(events, "charge.succeeded")["data"]["object"]
    assert charge["payment_intent"] == body["payment_intent"]
    assert charge["metadata"] == {"account_id": "acc_42", "credits": "1000", "kind": "topup"}


async def test_delayed_payment_completes_unpaid_then_succeeds_or_fails(
    stripe_fake: FakeStripe, gateway: StripeGateway
) -> None:
    good = await _topup(gateway, key="a")
    bad = await _topup(gateway, key="b")

    for session in (good, bad):
        completed = event_of(
            stripe_fake.complete_session(session.id, paid=False), "checkout.session.completed"
        )
        assert completed["data"]["object"]["payment_status"] == "unpaid"

    succeeded = event_of(
        stripe_fake.async_payment_succeeded(good.id), "checkout.session.async_payment_succeeded"
    )
    failed = event_of(
        stripe_fake.async_payment_failed(bad.id), "checkout.session.async_payment_failed"
    )
    assert succeeded["data"]["object"]["payment_status"] == "paid"
    assert failed["data"]["object"]["payment_status"] == "unpaid"
    with pytest.raises(ValueError):
        stripe_fake.async_payment_succeeded(good.id)  # already paid


async def test_partial_then_full_refund(stripe_fake: FakeStripe, gateway: StripeGateway) -> None:
    session = await _topup(gateway)
    stripe_fake.complete_session(session.id)

    partial = event_of(stripe_fake.refund(session.id, 300), "charge.refunded")
    rest = stripe_fake.refund(session.id)

    charge = partial["data"]["object"]
    assert (charge["amount"], charge["amount_refunded"], charge["refunded"]) == (1000, 300, False)
    assert charge["metadata"]["account_id"] == "acc_42"
    assert partial["data"]["previous_attributes"] == {"amount_refunded": 0}
    full = event_of(rest, "charge.refunded")["data"]["object"]
    assert (full["amount_refunded"], full["refunded"]) == (1000, True)
    assert event_of(rest, "refund.created")["data"]["object"]["amount"] == 700
    with pytest.raises(ValueError):
        stripe_fake.refund(session.id, 1)


async def test_subscription_lifecycle(stripe_fake: FakeStripe, gateway: StripeGateway) -> None:
    session = await gateway.create_subscription_session(
        account_id="acc_7",
        price_id=stripe_fake.pro_price_id,
        success_url=SUCCESS,
        cancel_url=CANCEL,
        idempotency_key="pro-1",
        customer_email="ada@example.com",
    )
    assert (session.mode, session.amount_total, session.subscription) == (
        "subscription",
        1900,
        None,
    )
    assert stripe_fake.last_request.params["subscription_data"]["metadata"]["account_id"] == "acc_7"

    events = stripe_fake.complete_session(session.id)
    created = event_of(events, "customer.subscription.created")["data"]["object"]
    activated = event_of(events, "customer.subscription.updated")["data"]
    invoice = event_of(events, "invoice.paid")["data"]["object"]
    completed = event_of(events, "checkout.session.completed")["data"]["object"]
    subscription_id = completed["subscription"]
    assert created["id"] == subscription_id
    assert created["metadata"]["account_id"] == "acc_7"
    assert (created["status"], activated["object"]["status"]) == ("incomplete", "active")
    assert activated["previous_attributes"] == {"status": "incomplete"}
    assert invoice["parent"]["subscription_details"]["subscription"] == subscription_id
    assert (invoice["amount_paid"], invoice["customer"]) == (1900, completed["customer"])
    period_end = created["items"]["data"][0]["current_period_end"]

    renewal = stripe_fake.pay_invoice(subscription_id)
    renewed = event_of(renewal, "customer.subscription.updated")["data"]["object"]
    assert renewed["items"]["data"][0]["current_period_start"] == period_end
    assert event_of(renewal, "invoice.paid")["data"]["object"]["billing_reason"] == (
        "subscription_cycle"
    )

    deleted = event_of(stripe_fake.cancel_subscription(session.id), "customer.subscription.deleted")
    assert deleted["data"]["object"]["status"] == "canceled"


async def test_events_are_rendered_in_the_endpoints_api_version(
    stripe_fake: FakeStripe, gateway: StripeGateway
) -> None:
    """Stripe renders webhook events in the endpoint's version: before basil, an invoice names
    its subscription at the top, and a subscription carries its period at the top too."""
    stripe_fake.endpoint_api_version = "2024-06-20"
    session = await gateway.create_subscription_session(
        account_id="acc_8",
        price_id=stripe_fake.pro_price_id,
        success_url=SUCCESS,
        cancel_url=CANCEL,
        idempotency_key="pro-old",
        customer_email="ada@example.com",
    )
    events = stripe_fake.complete_session(session.id)
    assert {event["api_version"] for event in events} == {"2024-06-20"}
    paid = event_of(events, "invoice.paid")["data"]["object"]
    subscription_id = event_of(events, "checkout.session.completed")["data"]["object"][
        "subscription"
    ]
    assert "parent" not in paid
    assert paid["subscription"] == subscription_id
    assert paid["subscription_details"]["metadata"]["account_id"] == "acc_8"
    [line] = paid["lines"]["data"]
    assert (line["type"], line["subscription"]) == ("subscription", subscription_id)
    assert line["price"]["id"] == stripe_fake.pro_price_id and "pricing" not in line
    created = event_of(events, "customer.subscription.created")["data"]["object"]
    assert created["current_period_end"] == created["items"]["data"][0]["current_period_end"]
    # The fake's own state stays in the current shape; only what is sent is rendered.
    assert stripe_fake.invoices[paid["id"]]["parent"]["subscription_details"]["subscription"] == (
        subscription_id
    )
    stripe_fake.endpoint_api_version = stripe.api_version
    renewal = event_of(stripe_fake.pay_invoice(subscription_id), "invoice.paid")
    assert renewal["api_version"] == stripe.api_version
    assert renewal["data"]["object"]["parent"]["subscription_details"]["subscription"] == (
        subscription_id
    )


# -- webhook signatures ---------------------------------------------------------------------------


@pytest.fixture
def delivery(stripe_fake: FakeStripe) -> tuple[dict[str, Any], bytes]:
    session = stripe_fake.create_session(
        {
            "mode": "payment",
            "success_url": SUCCESS,
            "client_reference_id": "acc_1",
            "line_items": [
                {
                    "price_data": {
                        "currency": "usd",
                        "unit_amount": "700",
                        "product_data": {"name": "700 credits"},
                    },
                    "quantity": "1",
                }
            ],
        }
    )
    event = event_of(stripe_fake.complete_session(session["id"]), "checkout.session.completed")
    return event, event_bytes(event)


def test_a_signed_delivery_verifies(
    stripe_fake: FakeStripe, delivery: tuple[dict[str, Any], bytes]
) -> None:
    event, _ = delivery
    body, headers = stripe_fake.signed(event)

    assert verify_event(body, headers["Stripe-Signature"], stripe_fake.webhook_secret) == event
    assert body.startswith(b'{\n  "id": "evt_')  # Stripe's indented JSON, signed byte for byte
    assert headers["Stripe-Signature"].startswith("t=")
    assert ",v1=" in headers["Stripe-Signature"]
    # the SDK's own check agrees with the fake's signing
    checked = stripe.Webhook.construct_event(body, headers["Stripe-Signature"], WEBHOOK)
    assert checked.id == event["id"]


def test_a_tampered_body_is_refused(delivery: tuple[dict[str, Any], bytes]) -> None:
    _, body = delivery
    header = sign_event(body, WEBHOOK)
    tampered = body.replace(b'"amount_total": 700', b'"amount_total": 70000')
    assert tampered != body

    with pytest.raises(StripeSignatureError) as caught:
        verify_event(tampered, header, WEBHOOK)
    assert caught.value.problem == "no_matching_signature"

    reserialized = json.dumps(json.loads(body)).encode()  # same data, other bytes
    with pytest.raises(StripeSignatureError):
        verify_event(reserialized, header, WEBHOOK)


def test_a_stale_timestamp_is_refused(delivery: tuple[dict[str, Any], bytes]) -> None:
    _, body = delivery
    stale = sign_event(body, WEBHOOK, timestamp=int(time.time()) - 301)
    fresh_enough = sign_event(body, WEBHOOK, timestamp=int(time.time()) - 290)

    with pytest.raises(StripeSignatureError) as caught:
        verify_event(body, stale, WEBHOOK)
    assert caught.value.problem == "stale_timestamp"
    assert "old" in str(caught.value)
    assert verify_event(body, fresh_enough, WEBHOOK)["object"] == "event"
    assert verify_event(body, stale, WEBHOOK, tolerance=600)["object"] == "event"


def test_a_signature_made_with_another_secret_is_refused(
    delivery: tuple[dict[str, Any], bytes],
) -> None:
    _, body = delivery
    header = sign_event(body, "whsec_someone_else")

    with pytest.raises(StripeSignatureError) as caught:
        verify_event(body, header, WEBHOOK)
    assert caught.value.problem == "no_matching_signature"


def test_any_matching_v1_entry_is_enough(delivery: tuple[dict[str, Any], bytes]) -> None:
    _, body = delivery
    decoys = sign_event(body, WEBHOOK, decoys=2)
    rolling = sign_event(body, "whsec_old_secret", also_signed_with=[WEBHOOK])

    assert decoys.count("v1=") == 3
    assert "v0=" in decoys  # test-mode deliveries carry a v0 entry, which is ignored
    assert verify_event(body, decoys, WEBHOOK)["type"] == "checkout.session.completed"
    assert verify_event(body, rolling, WEBHOOK)["type"] == "checkout.session.completed"


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (None, "missing_header"),
        ("", "missing_header"),
        ("v1=abc", "bad_format"),
        ("t=notanumber,v1=abc", "bad_format"),
        ("t=1700000000,v0=abc", "bad_format"),
        ("garbage", "bad_format"),
    ],
)
def test_malformed_headers_are_named(
    delivery: tuple[dict[str, Any], bytes], header: str | None, problem: str
) -> None:
    _, body = delivery

    with pytest.raises(StripeSignatureError) as caught:
        verify_event(body, header, WEBHOOK)
    assert caught.value.problem == problem


def test_a_signed_body_that_is_not_an_event_is_refused() -> None:
    body = b'{"object": "charge"}'

    with pytest.raises(StripeSignatureError) as caught:
        verify_event(body, sign_event(body, WEBHOOK), WEBHOOK)
    assert caught.value.problem == "bad_payload"
