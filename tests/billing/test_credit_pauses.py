"""Agents pause for credits only when the settled balance cannot pay for one call of their model;
a message refused while other calls hold the credits is a 402 and nothing more; a pause ends by a
top-up, or by `start`/`restart` once the credits cover a call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from lunogen.agent.models import Agent
from lunogen.billing.models import CreditPause
from lunogen.runtime.models import Message
from tests.agent.support import Dev, create_agent, new_dev
from tests.billing.stripe_support import C, balance, verified
from tests.billing.support import set_available
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api, Signed

SONNET = "anthropic/claude-sonnet-4"
MINI_CHEAPEST_CALL = 61_440  # 1024 reply tokens x US$0.6/M, in micro-credits


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


async def _running_agent(api: Api, dev: Dev | None = None, **overrides: Any) -> tuple[Dev, str]:
    dev = dev or await new_dev(api)
    agent = await create_agent(dev, **overrides)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    return dev, agent["id"]


async def _say(dev: Dev, agent_id: str, text: str, **extra: Any) -> Any:
    return await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": text, **extra})


async def _status(dev: Dev, agent_id: str) -> str:
    return str((await dev.http.get(f"/api/v1/agents/{agent_id}/status")).json()["status"])


async def _pauses(api: Api) -> list[str]:
    async with api.app.state.sessionmaker() as session:
        return list((await session.execute(select(CreditPause.agent_id))).scalars())


async def _admin_credits(api: Api, admin: Signed, user_id: str, credits: str) -> None:
    response = await admin.client.post(
        f"/api/v1/admin/accounts/{user_id}/credits",
        json={"credits": credits, "reason": "test"},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 30
    while not await check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


async def test_a_burst_on_a_small_balance_refuses_some_and_pauses_none(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """The review's reproduction: 20 concurrent messages on 5.44 credits, each held at ~1.6
    credits, paused every agent "out of credits" with 5.41 left, and skipped accepted ones."""
    dev, agent_id = await _running_agent(api, model=SONNET)
    _, other_id = await _running_agent(api, dev, model=SONNET)
    await set_available(api.app.state.sessionmaker, dev.id, 5_440_000)
    openrouter.stall(60, times=3)  # the three calls the balance can hold think until released

    burst = asyncio.gather(
        *(_say(dev, agent_id, f"Message {n}", contact=f"c{n}", wait_seconds=60) for n in range(20))
    )

    async def three_called_seventeen_refused() -> bool:
        async with api.app.state.sessionmaker() as session:
            failed = await session.execute(
                select(func.count()).select_from(Message).where(Message.status == "failed")
            )
            return failed.scalar_one() == 17 and len(openrouter.chat_requests) == 3

    await _eventually(three_called_seventeen_refused, "3 calls in flight, 17 refusals")
    # While three calls hold most of the credits, nothing is paused: they will come back.
    assert (await _status(dev, agent_id), await _status(dev, other_id)) == ("running", "running")
    openrouter.release_stalls()
    responses = await burst
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 3 + [402] * 17, [r.text for r in responses if r.status_code != 200]
    refused = next(r.json() for r in responses if r.status_code == 402)
    assert refused["error"] == "Insufficient credits" and refused["message_id"]
    assert (await _status(dev, agent_id), await _status(dev, other_id)) == ("running", "running")
    assert await _pauses(api) == []
    left = await balance(api, dev.id)
    assert 5_000_000 < left < 5_440_000
    notes = (await dev.person.client.get("/api/v1/notifications")).json()["data"]
    assert [n for n in notes if n["kind"] == "agent.paused"] == []
    assert (await _say(dev, agent_id, "Still there?")).status_code == 200
    await verified(api)


async def test_a_balance_below_the_cheapest_call_pauses_and_only_enough_credit_resumes(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    admin = await api.sign_up()
    await api.make_admin(admin)
    await set_available(api.app.state.sessionmaker, dev.id, C)
    openrouter.reply("ok", cost=Decimal("0.0095"))  # 0.95 credits: 0.05 left
    assert (await _say(dev, agent_id, "Hi")).status_code == 200
    assert await balance(api, dev.id) == 50_000 < MINI_CHEAPEST_CALL
    # Positive, but no call of its model fits in it any more: paused now, not at the next refusal.
    assert await _status(dev, agent_id) == "paused"
    assert await _pauses(api) == [agent_id]

    await _admin_credits(api, admin, dev.id, "0.01")  # 0.06: still short of one call
    assert await _status(dev, agent_id) == "paused"
    await _admin_credits(api, admin, dev.id, "1")
    assert await _status(dev, agent_id) == "running"
    assert await _pauses(api) == []
    assert (await _say(dev, agent_id, "Back?")).status_code == 200
    await verified(api)


async def test_start_and_restart_run_a_paused_agent_when_the_credits_cover_a_call(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """Agents paused while credits remained (as a burst did before) come back by hand."""
    dev, first = await _running_agent(api)
    _, second = await _running_agent(api, dev)
    async with api.app.state.sessionmaker() as session:
        for agent_id in (first, second):
            agent = await session.get(Agent, agent_id)
            assert agent is not None
            agent.status = "paused"
            session.add(CreditPause(agent_id=agent_id, account_id=dev.id))
        await session.commit()
    started = await dev.http.post(f"/api/v1/agents/{first}/start")
    assert (started.status_code, started.json()["status"]) == (200, "running")
    restarted = await dev.http.post(f"/api/v1/agents/{second}/restart")
    assert (restarted.status_code, restarted.json()["status"]) == (200, "running")
    assert await _pauses(api) == []
    assert (await _say(dev, first, "Hello")).status_code == 200


async def test_a_paused_agent_without_credits_answers_402_on_start_and_restart(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    admin = await api.sign_up()
    await api.make_admin(admin)
    await set_available(api.app.state.sessionmaker, dev.id, C)
    openrouter.reply("ok", cost=Decimal("0.0095"))
    assert (await _say(dev, agent_id, "Hi")).status_code == 200
    assert await _status(dev, agent_id) == "paused"
    for action in ("start", "restart"):
        response = await dev.http.post(f"/api/v1/agents/{agent_id}/{action}")
        assert response.status_code == 402, response.text
        body = response.json()
        assert body["error"] == "Insufficient credits"
        assert (body["required_credits"], body["available_credits"]) == ("0.06144", "0.05")
        assert "Top up" in body["message"]
    assert await _status(dev, agent_id) == "paused"
    # Stopping it by hand does not get around the credits either.
    assert (await dev.http.post(f"/api/v1/agents/{agent_id}/stop")).status_code == 200
    assert (await dev.http.post(f"/api/v1/agents/{agent_id}/start")).status_code == 402
    # A top-up leaves a stopped agent stopped; starting it then works.
    await _admin_credits(api, admin, dev.id, "5")
    assert await _status(dev, agent_id) == "stopped"
    assert (await dev.http.post(f"/api/v1/agents/{agent_id}/start")).status_code == 200
    assert await _pauses(api) == []


async def test_a_message_skipped_because_the_agent_stopped_is_a_409_not_a_202(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    openrouter.stall(60)
    first = await _say(dev, agent_id, "First", wait_seconds=0)
    assert first.status_code == 202
    waiting = asyncio.ensure_future(_say(dev, agent_id, "Second", wait_seconds=60))

    async def both_stored() -> bool:
        async with api.app.state.sessionmaker() as session:
            count = await session.execute(
                select(func.count()).select_from(Message).where(Message.role == "user")
            )
            return count.scalar_one() == 2 and len(openrouter.chat_requests) == 1

    await _eventually(both_stored, "the second message waiting behind the first")
    assert (await dev.http.post(f"/api/v1/agents/{agent_id}/stop")).status_code == 200
    openrouter.release_stalls()
    skipped = await waiting
    assert skipped.status_code == 409, skipped.text
    body = skipped.json()
    assert (body["error"], body["status"]) == ("Agent is stopped", "stopped")
    assert body["message_id"] and body["thread_id"]
    assert "stopped before it could answer" in body["message"]
