"""POST /webhooks/stripe: signed events from the fake Stripe top up, refund and change plans,
once each, whatever the order and however often they arrive."""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import httpx
import pytest
import stripe
from sqlalchemy import select
from structlog.testing import capture_logs

from lunogen.agent.models import Agent
from lunogen.audit.models import AuditEvent
from lunogen.billing.models import CreditPause
from lunogen.config import Settings
from lunogen.notification.models import Notification
from tests.billing.stripe_support import (
    STARTER,
    C,
    balance,
    billing_settings,
    deliver,
    deliver_ok,
    entries,
    stored_events,
    verified,
)
from tests.fakes.stripe import FakeStripe, event_of
from tests.helpers import Api, Signed


@pytest.fixture
def settings_overrides(stripe_fake: FakeStripe) -> dict[str, object]:
    return billing_settings(stripe_fake)


@pytest.fixture
def stripe_client(api: Api) -> httpx.AsyncClient:
    """Stripe's side: no cookies, no key."""
    return api.new_client()


async def _buy(person: Signed, body: dict[str, Any] | None = None) -> str:
    response = await person.client.post(
        "/api/v1/billing/checkout", json=body or {"pack": "starter"}, headers=person.headers
    )
    assert response.status_code == 200, response.text
    return str(response.json()["session_id"])


async def _paid_top_up(
    api: Api, stripe_client: httpx.AsyncClient, fake: FakeStripe, person: Signed
) -> str:
    session_id = await _buy(person)
    completed = event_of(fake.complete_session(session_id), "checkout.session.completed")
    await deliver_ok(stripe_client, fake, completed)
    return session_id


# --- signatures --------------------------------------------------------------------------------


async def test_a_paid_checkout_tops_up_once_with_its_references(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    session_id = await _buy(person)
    events = stripe_fake.complete_session(session_id)
    for event in events:  # everything Stripe sends; only the completion moves money
        await deliver_ok(stripe_client, stripe_fake, event)
    assert await balance(api, person.id) == STARTER + 500 * C
    (topup,) = await entries(api, person.id, "topup")
    assert topup.idempotency_key == f"topup:{session_id}"
    assert topup.reference == stripe_fake.sessions[session_id]["payment_intent"]
    assert "5.00 USD" in topup.description
    stored = {row.type: row for row in await stored_events(api)}
    assert len(stored) == len(events)
    assert stored["checkout.session.completed"].outcome == "topup"
    assert stored["checkout.session.completed"].account_id == person.id
    assert stored["checkout.session.completed"].processed_at is not None
    assert stored["charge.succeeded"].outcome == "ignored: not handled"
    await verified(api)


@pytest.mark.parametrize(
    ("signing", "problem"),
    [
        ({"secret": "whsec_someone_else_entirely"}, "no_matching_signature"),
        ({"timestamp": int(time.time()) - 301}, "stale_timestamp"),
        ({"decoys": 3}, None),  # decoy v1 entries beside the real one are fine
    ],
)
async def test_signatures(
    api: Api,
    stripe_client: httpx.AsyncClient,
    stripe_fake: FakeStripe,
    signing: dict[str, Any],
    problem: str | None,
) -> None:
    person = await api.sign_up()
    session_id = await _buy(person)
    completed = event_of(stripe_fake.complete_session(session_id), "checkout.session.completed")
    response = await deliver(stripe_client, stripe_fake, completed, **signing)
    if problem is None:
        assert response.status_code == 200, response.text
        assert await balance(api, person.id) == STARTER + 500 * C
        return
    assert response.status_code == 400, response.text
    assert response.json()["problem"] == problem
    assert response.json()["error"] == "Invalid Stripe signature"
    assert await balance(api, person.id) == STARTER
    assert await stored_events(api) == []


async def test_a_tampered_or_unsigned_body_is_refused(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    session_id = await _buy(person)
    completed = event_of(stripe_fake.complete_session(session_id), "checkout.session.completed")
    body, headers = stripe_fake.signed(completed)
    tampered = body.replace(b'"credits": "500"', b'"credits": "99999"')
    assert tampered != body
    response = await stripe_client.post("/webhooks/stripe", content=tampered, headers=headers)
    assert response.status_code == 400
    assert response.json()["problem"] == "no_matching_signature"
    unsigned = {k: v for k, v in headers.items() if k != "Stripe-Signature"}
    response = await stripe_client.post("/webhooks/stripe", content=body, headers=unsigned)
    assert response.status_code == 400
    assert response.json()["problem"] == "missing_header"
    assert await balance(api, person.id) == STARTER
    assert await stored_events(api) == []


async def test_without_a_webhook_secret_deliveries_get_503(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    settings = api.app.state.settings
    api.app.state.settings = settings.model_copy(update={"stripe_webhook_secret": None})
    response = await stripe_client.post("/webhooks/stripe", content=b"{}")
    assert response.status_code == 503
    assert "LUNOGEN_STRIPE_WEBHOOK_SECRET" in response.json()["message"]


# --- once, in any order ------------------------------------------------------------------------


async def test_an_event_delivered_five_times_tops_up_once(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    session_id = await _buy(person)
    completed = event_of(stripe_fake.complete_session(session_id), "checkout.session.completed")
    answers = [await deliver_ok(stripe_client, stripe_fake, completed) for _ in range(5)]
    assert [a["duplicate"] for a in answers] == [False, True, True, True, True]
    assert {a["outcome"] for a in answers} == {"topup"}
    assert await balance(api, person.id) == STARTER + 500 * C
    assert len(await entries(api, person.id, "topup")) == 1
    assert len(await stored_events(api)) == 1
    await verified(api)


async def test_unpaid_then_async_succeeded_tops_up_only_when_paid(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    session_id = await _buy(person)
    completed = event_of(
        stripe_fake.complete_session(session_id, paid=False), "checkout.session.completed"
    )
    assert (await deliver_ok(stripe_client, stripe_fake, completed))["outcome"] == (
        "awaiting payment"
    )
    assert await balance(api, person.id) == STARTER
    succeeded = event_of(
        stripe_fake.async_payment_succeeded(session_id),
        "checkout.session.async_payment_succeeded",
    )
    assert (await deliver_ok(stripe_client, stripe_fake, succeeded))["outcome"] == "topup"
    await deliver_ok(stripe_client, stripe_fake, succeeded)
    assert await balance(api, person.id) == STARTER + 500 * C
    await verified(api)


async def test_async_succeeded_before_completed_still_applies_once(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    session_id = await _buy(person, {"credits": 800})
    completed = event_of(
        stripe_fake.complete_session(session_id, paid=False), "checkout.session.completed"
    )
    succeeded = event_of(
        stripe_fake.async_payment_succeeded(session_id),
        "checkout.session.async_payment_succeeded",
    )
    for event in (succeeded, completed, succeeded, completed):
        await deliver_ok(stripe_client, stripe_fake, event)
    assert await balance(api, person.id) == STARTER + 800 * C
    assert len(await entries(api, person.id, "topup")) == 1
    await verified(api)


async def test_a_failed_async_payment_adds_nothing_and_tells_the_owner(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    session_id = await _buy(person)
    stripe_fake.complete_session(session_id, paid=False)
    failed = event_of(
        stripe_fake.async_payment_failed(session_id), "checkout.session.async_payment_failed"
    )
    await deliver_ok(stripe_client, stripe_fake, failed)
    await deliver_ok(stripe_client, stripe_fake, failed)
    assert await balance(api, person.id) == STARTER
    async with api.app.state.sessionmaker() as session:
        kinds = (
            await session.execute(
                select(Notification.kind).where(Notification.user_id == person.id)
            )
        ).scalars()
        assert list(kinds).count("billing.payment_failed") == 1


async def test_events_for_unknown_accounts_are_stored_and_ignored(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    session_id = await _buy(person)
    completed = event_of(stripe_fake.complete_session(session_id), "checkout.session.completed")
    stranger = copy.deepcopy(completed)
    stranger["id"] = "evt_1stranger"
    stranger["data"]["object"]["metadata"]["account_id"] = "00000000-0000-0000-0000-000000000000"
    stranger["data"]["object"]["client_reference_id"] = "00000000-0000-0000-0000-000000000000"
    answer = await deliver_ok(stripe_client, stripe_fake, stranger)
    assert answer["outcome"] == "ignored: unknown account"
    assert await balance(api, person.id) == STARTER
    (row,) = await stored_events(api)
    assert (row.id, row.account_id) == ("evt_1stranger", None)


# --- refunds -------------------------------------------------------------------------------------


async def test_partial_then_full_refund_takes_back_what_was_refunded(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    session_id = await _paid_top_up(api, stripe_client, stripe_fake, person)
    partial = event_of(stripe_fake.refund(session_id, 200), "charge.refunded")
    await deliver_ok(stripe_client, stripe_fake, partial)
    assert await balance(api, person.id) == STARTER + 300 * C
    rest = event_of(stripe_fake.refund(session_id), "charge.refunded")
    await deliver_ok(stripe_client, stripe_fake, rest)
    await deliver_ok(stripe_client, stripe_fake, partial)  # a late redelivery
    assert await balance(api, person.id) == STARTER
    refunds = await entries(api, person.id, "refund")
    charge_id = partial["data"]["object"]["id"]
    assert [(r.amount, r.reference) for r in refunds] == [
        (-200 * C, charge_id),
        (-300 * C, charge_id),
    ]
    assert [r.idempotency_key for r in refunds] == [
        f"refund:{charge_id}:200",
        f"refund:{charge_id}:500",
    ]
    await verified(api)


async def test_a_full_refund_before_the_partial_one_arrives_applies_once(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    session_id = await _buy(person, {"credits": 1000})
    completed = event_of(stripe_fake.complete_session(session_id), "checkout.session.completed")
    partial = event_of(stripe_fake.refund(session_id, 333), "charge.refunded")
    full = event_of(stripe_fake.refund(session_id), "charge.refunded")
    for event in (full, completed, partial, full):
        await deliver_ok(stripe_client, stripe_fake, event)
    assert await balance(api, person.id) == STARTER
    assert [r.amount for r in await entries(api, person.id, "refund")] == [-1000 * C]
    await verified(api)


async def test_a_refund_below_zero_pauses_agents_and_a_top_up_resumes_them(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    async with api.app.state.sessionmaker() as session:
        agents = [
            Agent(owner_id=person.id, name=f"bot {n}", model="m", status=status)
            for n, status in enumerate(("running", "running", "stopped"))
        ]
        session.add_all(agents)
        await session.commit()
    session_id = await _paid_top_up(api, stripe_client, stripe_fake, person)
    admin = await api.sign_up()
    await api.make_admin(admin)
    spend = await admin.client.post(
        f"/api/v1/admin/accounts/{person.id}/credits",
        json={"credits": -550, "reason": "test: credits spent"},
        headers=admin.headers,
    )
    assert spend.status_code == 201, spend.text
    refund = event_of(stripe_fake.refund(session_id), "charge.refunded")
    await deliver_ok(stripe_client, stripe_fake, refund)
    assert await balance(api, person.id) == -450 * C

    async def statuses() -> list[str]:
        async with api.app.state.sessionmaker() as session:
            rows = await session.execute(
                select(Agent.status).where(Agent.owner_id == person.id).order_by(Agent.name)
            )
            return list(rows.scalars())

    assert await statuses() == ["paused", "paused", "stopped"]
    async with api.app.state.sessionmaker() as session:
        pauses = (await session.execute(select(CreditPause.agent_id))).scalars()
        assert set(pauses) == {agents[0].id, agents[1].id}
    second = await _buy(person, {"credits": 600})
    completed = event_of(stripe_fake.complete_session(second), "checkout.session.completed")
    await deliver_ok(stripe_client, stripe_fake, completed)
    assert await balance(api, person.id) == 150 * C
    assert await statuses() == ["running", "running", "stopped"]
    await verified(api)


# --- the Pro plan --------------------------------------------------------------------------------


async def test_subscribing_and_cancelling_moves_the_plan_and_its_rate_limit(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    keyed = api.key_client(await api.create_key(person))

    async def limit() -> str:
        response = await keyed.get("/api/v1/billing")
        assert response.status_code == 200
        return str(response.headers["X-RateLimit-Limit"])

    assert await limit() == "30"
    session_id = await _buy(person, {"plan": "pro"})
    for event in stripe_fake.complete_session(session_id):
        await deliver_ok(stripe_client, stripe_fake, event)
    assert (await keyed.get("/api/v1/billing")).json()["plan"] == "pro"
    assert await limit() == "2000"
    outcomes = {row.type: row.outcome for row in await stored_events(api)}
    assert outcomes["invoice.paid"] == "plan: pro"
    assert outcomes["customer.subscription.created"] == "unchanged plan: subscription incomplete"

    past_due = stripe_fake.fail_invoice_payment(session_id)
    for event in past_due:  # a failed renewal keeps Pro while Stripe retries
        await deliver_ok(stripe_client, stripe_fake, event)
    assert await limit() == "2000"

    (deleted,) = stripe_fake.cancel_subscription(session_id)
    await deliver_ok(stripe_client, stripe_fake, deleted)
    assert (await keyed.get("/api/v1/billing")).json()["plan"] == "free"
    assert await limit() == "30"

    # A delayed, older "active" update does not bring Pro back after the cancellation.
    stale = copy.deepcopy(event_of(past_due, "invoice.finalized"))
    stale.update(id="evt_1olderupdate", type="customer.subscription.updated")
    stale["data"]["object"] = copy.deepcopy(deleted["data"]["object"])
    stale["data"]["object"]["status"] = "active"
    stale["created"] = deleted["created"] - 60
    answer = await deliver_ok(stripe_client, stripe_fake, stale)
    assert answer["outcome"] == "ignored: a newer plan event was applied"
    assert (await keyed.get("/api/v1/billing")).json()["plan"] == "free"

    async with api.app.state.sessionmaker() as session:
        changes = (
            await session.execute(
                select(AuditEvent.details)
                .where(AuditEvent.action == "account.plan_changed")
                .order_by(AuditEvent.created_at)
            )
        ).scalars()
        assert [(d["from"], d["to"]) for d in changes] == [("free", "pro"), ("pro", "free")]


@pytest.mark.parametrize("version", ["2024-06-20", "2025-03-31.basil", stripe.api_version])
async def test_invoice_paid_moves_the_plan_in_the_endpoints_api_version(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe, version: str
) -> None:
    """Stripe renders events in the webhook endpoint's version: an endpoint made before basil
    names the invoice's subscription at the top, a newer one under `parent`. Either moves the
    plan; one in another version than configured is logged and still applied."""
    stripe_fake.endpoint_api_version = version
    person = await api.sign_up()
    session_id = await _buy(person, {"plan": "pro"})
    paid = event_of(stripe_fake.complete_session(session_id), "invoice.paid")
    assert paid["api_version"] == version
    with capture_logs() as logs:
        answer = await deliver_ok(stripe_client, stripe_fake, paid)  # before any other event
    assert answer["outcome"] == "plan: pro"
    assert (await person.client.get("/api/v1/billing")).json()["plan"] == "pro"
    warnings = [entry for entry in logs if entry["event"] == "stripe_event_api_version"]
    if version == api.app.state.settings.stripe_webhook_api_version:
        assert warnings == []
    else:
        [warning] = warnings
        assert (warning["log_level"], warning["api_version"]) == ("warning", version)
        assert warning["expected"] == stripe.api_version
        assert warning["event_id"] == paid["id"]


async def test_an_invoice_of_no_subscription_leaves_the_plan_in_any_version(
    api: Api, stripe_client: httpx.AsyncClient, stripe_fake: FakeStripe
) -> None:
    person = await api.sign_up()
    session_id = await _buy(person, {"plan": "pro"})
    paid = event_of(stripe_fake.complete_session(session_id), "invoice.paid")
    for version in ("2024-06-20", stripe.api_version):
        event = copy.deepcopy(paid)  # a one-off invoice: neither shape names a subscription
        event.update(id=f"evt_1oneoff{version[:4]}", api_version=version)
        event["data"]["object"].pop("parent")
        event["data"]["object"]["subscription"] = None
        answer = await deliver_ok(stripe_client, stripe_fake, event)
        assert answer["outcome"] == "ignored: unknown account"
    assert (await person.client.get("/api/v1/billing")).json()["plan"] == "free"


def test_the_webhook_api_version_is_the_pinned_sdks() -> None:
    """Create the endpoint in the version the SDK (and so this code) reads: docs/operations.md."""
    assert Settings.model_fields["stripe_webhook_api_version"].default == stripe.api_version


async def test_concurrent_deliveries_of_one_payment_apply_once(
    api: Api, stripe_fake: FakeStripe
) -> None:
    """The same event five times at once, and the other event announcing the same payment."""
    person = await api.sign_up()
    session_id = await _buy(person)
    completed = event_of(
        stripe_fake.complete_session(session_id, paid=False), "checkout.session.completed"
    )
    succeeded = event_of(
        stripe_fake.async_payment_succeeded(session_id),
        "checkout.session.async_payment_succeeded",
    )
    paid_completion = copy.deepcopy(completed)
    paid_completion["id"] = "evt_1samepaymentagain"
    paid_completion["data"]["object"]["payment_status"] = "paid"
    clients = [api.new_client() for _ in range(6)]
    deliveries = [deliver(c, stripe_fake, succeeded) for c in clients[:5]]
    deliveries.append(deliver(clients[5], stripe_fake, paid_completion))
    answers = await asyncio.gather(*deliveries)
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert sum(not a.json()["duplicate"] for a in answers) == 2
    assert await balance(api, person.id) == STARTER + 500 * C
    assert len(await entries(api, person.id, "topup")) == 1
    await verified(api)
