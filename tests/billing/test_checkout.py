"""POST /api/v1/billing/checkout: Stripe Checkout sessions for packs, custom amounts and Pro,
against the fake Stripe over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lunogen.billing.stripe_client import CheckoutSession, StripeGateway
from tests.billing.stripe_support import billing_settings
from tests.fakes.stripe import PRO_PRICE_ID, FakeStripe
from tests.helpers import Api, Signed


@pytest.fixture
def settings_overrides(stripe_fake: FakeStripe) -> dict[str, object]:
    return billing_settings(stripe_fake)


async def _checkout(person: Signed, body: dict[str, Any], **headers: str) -> Any:
    return await person.client.post(
        "/api/v1/billing/checkout", json=body, headers={**person.headers, **headers}
    )


async def test_a_pack_opens_a_checkout_session_for_its_price(
    api: Api, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    response = await _checkout(person, {"pack": "standard"})
    assert response.status_code == 200, response.text
    body = response.json()
    session = stripe_fake.sessions[body["session_id"]]
    assert body["url"] == session["url"] and session["status"] == "open"
    assert session["mode"] == "payment"
    assert (session["amount_total"], session["currency"]) == (2000, "usd")  # at US$0.01
    assert session["client_reference_id"] == person.id
    assert session["metadata"] == {"account_id": person.id, "credits": "2000", "kind": "topup"}
    assert session["success_url"].startswith("http://testserver/billing?checkout=success")
    assert "{CHECKOUT_SESSION_ID}" in session["success_url"]
    assert session["cancel_url"] == "http://testserver/billing?checkout=cancelled"
    request = stripe_fake.last_request
    assert request.headers["idempotency-key"].startswith("lunogen-checkout-")
    assert request.params["payment_intent_data"]["metadata"]["account_id"] == person.id


async def test_a_custom_amount_within_the_limits(api: Api, stripe_fake: FakeStripe) -> None:
    person = await api.sign_up()
    response = await _checkout(person, {"credits": 750})
    assert response.status_code == 200, response.text
    session = stripe_fake.sessions[response.json()["session_id"]]
    assert session["amount_total"] == 750
    assert session["metadata"]["credits"] == "750"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"credits": 499}, "credits", "between 500 and 100000"),
        ({"credits": 100_001}, "credits", "between 500 and 100000"),
        ({"pack": "huge"}, "pack", "unknown pack 'huge'"),
        ({"pack": "starter", "credits": 600}, "body", "exactly one of pack, credits or plan"),
        ({}, "body", "exactly one"),
        ({"plan": "enterprise"}, "plan", ""),
        ({"credits": "lots"}, "credits", ""),
        ({"credits": 600, "coupon": "x"}, "coupon", "unknown field"),
    ],
)
async def test_bad_requests_name_the_problem_and_reach_no_stripe(
    api: Api, stripe_fake: FakeStripe, body: dict[str, Any], field: str, words: str
) -> None:
    person = await api.sign_up()
    response = await _checkout(person, body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert field in [d["field"] for d in error["details"]]
    assert words in error["message"]
    assert stripe_fake.api_requests == []


async def test_the_same_idempotency_key_returns_the_same_session(
    api: Api, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    first = await _checkout(person, {"pack": "starter"}, **{"Idempotency-Key": "buy-1"})
    again = await _checkout(person, {"pack": "starter"}, **{"Idempotency-Key": "buy-1"})
    other = await _checkout(person, {"pack": "starter"}, **{"Idempotency-Key": "buy-2"})
    unkeyed = await _checkout(person, {"pack": "starter"})
    ids = [r.json()["session_id"] for r in (first, again, other, unkeyed)]
    assert ids[0] == ids[1]
    assert len({ids[0], ids[2], ids[3]}) == 3
    assert len(stripe_fake.sessions) == 3
    # Another person's identical key is another key at Stripe.
    someone = await api.sign_up()
    theirs = await _checkout(someone, {"pack": "starter"}, **{"Idempotency-Key": "buy-1"})
    assert theirs.status_code == 200 and theirs.json()["session_id"] not in ids


async def test_pro_opens_a_subscription_checkout(api: Api, stripe_fake: FakeStripe) -> None:
    person = await api.sign_up()
    response = await _checkout(person, {"plan": "pro"})
    assert response.status_code == 200, response.text
    session = stripe_fake.sessions[response.json()["session_id"]]
    assert session["mode"] == "subscription"
    assert session["customer_email"] == person.email
    assert stripe_fake.last_request.params["line_items"][0]["price"] == PRO_PRICE_ID
    assert stripe_fake.last_request.params["subscription_data"]["metadata"] == {
        "account_id": person.id,
        "kind": "subscription",
    }
    await api.set_plan(person, "pro")
    again = await _checkout(person, {"plan": "pro"})
    assert again.status_code == 409, again.text


async def test_buying_needs_the_full_scope(api: Api, stripe_fake: FakeStripe) -> None:
    person = await api.sign_up()
    reader = api.key_client(await api.create_key(person, ["agents:read"]))
    response = await reader.post("/api/v1/billing/checkout", json={"pack": "starter"})
    assert response.status_code == 403
    assert "full" in response.json()["message"]
    assert stripe_fake.api_requests == []


async def test_without_stripe_keys_checkout_answers_503_naming_the_setting(
    api: Api, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    settings = api.app.state.settings
    api.app.state.settings = settings.model_copy(update={"stripe_secret_key": None})
    response = await _checkout(person, {"pack": "starter"})
    assert response.status_code == 503
    assert "LUNOGEN_STRIPE_SECRET_KEY" in response.json()["message"]
    api.app.state.settings = settings.model_copy(update={"stripe_pro_price_id": None})
    response = await _checkout(person, {"plan": "pro"})
    assert response.status_code == 503
    assert "LUNOGEN_STRIPE_PRO_PRICE_ID" in response.json()["message"]
    assert stripe_fake.api_requests == []


async def test_a_stripe_failure_is_a_502_and_writes_nothing(
    api: Api, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    stripe_fake.fail(400, "Your account cannot currently make live charges.")
    response = await _checkout(person, {"pack": "starter"})
    assert response.status_code == 502, response.text
    assert "Stripe answered HTTP 400" in response.json()["message"]
    assert stripe_fake.sessions == {}


async def test_a_slow_stripe_holds_no_transaction_open(
    api: Api, stripe_fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While Stripe takes its time over one checkout, another tenant's write completes: the
    authentication's transaction (on SQLite the one write lock) ended before the call."""
    buyer, other = await api.sign_up(), await api.sign_up()
    reached, release = asyncio.Event(), asyncio.Event()
    real = StripeGateway.create_topup_session

    async def stalled(self: StripeGateway, **params: Any) -> CheckoutSession:
        reached.set()
        await release.wait()
        return await real(self, **params)

    monkeypatch.setattr(StripeGateway, "create_topup_session", stalled)
    checkout = asyncio.create_task(_checkout(buyer, {"pack": "standard"}))
    await asyncio.wait_for(reached.wait(), timeout=60)

    write = asyncio.create_task(
        other.client.post(
            "/api/v1/keys", json={"name": "meanwhile", "scopes": ["full"]}, headers=other.headers
        )
    )
    done, _ = await asyncio.wait({write, checkout}, return_when=asyncio.FIRST_COMPLETED)
    assert write in done and not checkout.done()  # finished while Stripe was still stalled
    assert write.result().status_code == 201, write.result().text

    release.set()
    response = await checkout
    assert response.status_code == 200, response.text
    assert response.json()["session_id"] in stripe_fake.sessions
