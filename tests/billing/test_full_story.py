"""The billing issue's whole story in one test: a new user's starter credits pay for a
conversation at the exact reported cost until they run out; the agent pauses and its owner is
told; a Stripe top-up arrives by signed webhook and the agent answers again."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.agent.support import create_agent, new_dev
from tests.billing.stripe_support import STARTER, C, balance, billing_settings, deliver_ok, verified
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.fakes.stripe import FakeStripe, event_of
from tests.helpers import Api


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter, stripe_fake: FakeStripe) -> dict[str, object]:
    return {**openrouter_settings(openrouter), **billing_settings(stripe_fake)}


async def test_from_starter_credits_to_pause_to_top_up_and_back(
    api: Api, openrouter: FakeOpenRouter, stripe_fake: FakeStripe
) -> None:
    dev = await new_dev(api)
    assert await balance(api, dev.id) == STARTER  # 100 credits on verification
    agent = await create_agent(dev)
    agent_id = agent["id"]
    assert (await dev.http.post(f"/api/v1/agents/{agent_id}/deploy")).status_code == 200

    # Each answer costs what OpenRouter reports: US$0.40 = 40 credits.
    for n in range(2):
        openrouter.reply(f"Answer {n}", cost=Decimal("0.40"))
        said = await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": "Hi"})
        assert said.status_code == 200, said.text
    assert await balance(api, dev.id) == STARTER - 80 * C
    billing = (await dev.http.get("/api/v1/billing")).json()
    assert (billing["balance"], billing["available"]) == ("20", "20")

    # The third answer costs more than is left: it is charged in full, and the agent pauses.
    openrouter.reply("Answer 2", cost=Decimal("0.40"))
    said = await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": "Hi"})
    assert said.status_code == 200
    assert await balance(api, dev.id) == -20 * C
    status = (await dev.http.get(f"/api/v1/agents/{agent_id}/status")).json()
    assert status["status"] == "paused"
    kinds = [
        n["kind"] for n in (await dev.person.client.get("/api/v1/notifications")).json()["data"]
    ]
    assert kinds.count("agent.paused") == 1 and kinds.count("credits.low") == 1
    refused = await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": "Hi"})
    assert (refused.status_code, refused.json()["status"]) == (409, "paused")

    # A top-up through Stripe Checkout: credits land only from the signed webhook.
    checkout = await dev.person.client.post(
        "/api/v1/billing/checkout", json={"pack": "starter"}, headers=dev.person.headers
    )
    assert checkout.status_code == 200, checkout.text
    session_id = checkout.json()["session_id"]
    completed = event_of(stripe_fake.complete_session(session_id), "checkout.session.completed")
    stripe = api.new_client()
    for _ in range(3):  # Stripe repeats itself; the credits land once
        await deliver_ok(stripe, stripe_fake, completed)
    assert await balance(api, dev.id) == -20 * C + 500 * C
    status = (await dev.http.get(f"/api/v1/agents/{agent_id}/status")).json()
    assert status["status"] == "running"

    openrouter.reply("I am back", cost=Decimal("0.01"))
    back = await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": "Hello?"})
    assert back.status_code == 200 and back.json()["reply"]["text"] == "I am back"
    assert await balance(api, dev.id) == 479 * C
    await verified(api)
