"""Turns pay for their model calls from the owner's credits: hold, settle, refuse, pause."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from lunogen.account.models import User
from lunogen.billing import credit_alerts, ledger
from lunogen.billing.grants import grant_starter_credits
from lunogen.billing.models import CreditAccount, CreditEntry, CreditHold, CreditPause
from lunogen.billing.verify import verify_all
from lunogen.kit.effects import Effects
from lunogen.runtime.models import Message
from tests.agent.support import Dev, create_agent, new_dev
from tests.billing.support import set_available
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api

CREDIT = 1_000_000  # micro-credits


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


async def _running_agent(api: Api, dev: Dev | None = None) -> tuple[Dev, str]:
    dev = dev or await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    return dev, agent["id"]


async def _account(api: Api, user_id: str) -> CreditAccount:
    async with api.app.state.sessionmaker() as session:
        account = await session.get(CreditAccount, user_id)
        assert account is not None
        return account


async def _say(dev: Dev, agent_id: str, text: str) -> Any:
    return await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": text})


async def _kinds(api: Api, user_id: str) -> list[str]:
    async with api.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(CreditEntry.kind)
            .where(CreditEntry.account_id == user_id)
            .order_by(CreditEntry.id)
        )
        return list(rows.scalars())


async def _verify(api: Api) -> None:
    async with api.app.state.sessionmaker() as session:
        assert await verify_all(session) == []


async def test_a_verified_account_gets_its_starter_credits_once_per_person(api: Api) -> None:
    dev = await new_dev(api)
    account = await _account(api, dev.id)
    assert (account.balance, account.held) == (100 * CREDIT, 0)
    assert await _kinds(api, dev.id) == ["grant"]
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, dev.id)
        assert user is not None
        # Signing in again, or the same person coming back with a new account, grants nothing.
        assert not await grant_starter_credits(session, user=user, credits=100)
        again = User(id="00000000-0000-0000-0000-00000000000a", email=user.email.upper(), name="x")
        assert not await grant_starter_credits(session, user=again, credits=100)
        await session.commit()
    assert (await _account(api, dev.id)).balance == 100 * CREDIT


async def test_a_turn_is_charged_exactly_the_reported_cost(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    openrouter.reply("Hello!", cost=Decimal("0.0025"))  # US$0.0025 = 0.25 credits
    assert (await _say(dev, agent_id, "Hi")).status_code == 200
    account = await _account(api, dev.id)
    assert (account.balance, account.held) == (100 * CREDIT - 250_000, 0)
    assert await _kinds(api, dev.id) == ["grant", "hold", "usage"]
    async with api.app.state.sessionmaker() as session:
        usage = (
            await session.execute(select(CreditEntry).where(CreditEntry.kind == "usage"))
        ).scalar_one()
        assert usage.amount == -250_000 and usage.held_delta < 0
        holds = await session.execute(select(CreditHold.status))
        assert list(holds.scalars()) == ["settled"]
    await _verify(api)


async def test_a_failed_call_charges_nothing(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent_id = await _running_agent(api)
    openrouter.fail(400, "Bad request")
    assert (await _say(dev, agent_id, "Hi")).status_code == 502
    account = await _account(api, dev.id)
    assert (account.balance, account.held) == (100 * CREDIT, 0)
    assert await _kinds(api, dev.id) == ["grant", "hold", "release"]
    await _verify(api)


async def test_a_call_the_balance_cannot_cover_is_never_made(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    _, other_agent = await _running_agent(api, dev)
    await set_available(api.app.state.sessionmaker, dev.id, 1)  # one micro-credit
    response = await _say(dev, agent_id, "Hi")
    assert response.status_code == 402, response.text
    body = response.json()
    assert body["available_credits"] == "0.000001"
    assert Decimal(body["required_credits"]) > Decimal("0.000001")
    assert openrouter.chat_requests == []
    async with api.app.state.sessionmaker() as session:
        message = (
            await session.execute(select(Message).where(Message.role == "user"))
        ).scalar_one()
        assert message.status == "failed"
        assert message.failure is not None and message.failure["code"] == "insufficient_credits"
        paused = await session.execute(select(CreditPause.agent_id))
        assert sorted(paused.scalars()) == sorted([agent_id, other_agent])
    for agent in (agent_id, other_agent):
        status = (await dev.http.get(f"/api/v1/agents/{agent}/status")).json()
        assert status["status"] == "paused"
    notes = (await dev.person.client.get("/api/v1/notifications")).json()["data"]
    assert sorted(n["kind"] for n in notes if n["kind"].startswith("agent.")) == [
        "agent.paused",
        "agent.paused",
    ]
    refused = await _say(dev, agent_id, "Still there?")
    assert (refused.status_code, refused.json()["status"]) == (409, "paused")
    await _verify(api)


async def test_spending_the_last_credit_pauses_and_a_top_up_resumes(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    await set_available(api.app.state.sessionmaker, dev.id, CREDIT)  # 1 credit = US$0.01
    openrouter.reply("That was my last answer", cost=Decimal("0.01"))
    assert (await _say(dev, agent_id, "Hi")).status_code == 200  # it answers, then pauses
    account = await _account(api, dev.id)
    assert (account.balance, account.held) == (0, 0)
    assert (await dev.http.get(f"/api/v1/agents/{agent_id}/status")).json()["status"] == "paused"
    notes = (await dev.person.client.get("/api/v1/notifications")).json()["data"]
    kinds = [n["kind"] for n in notes]
    assert kinds.count("credits.low") == 1 and kinds.count("agent.paused") == 1

    stopped_by_hand = await create_agent(dev, name="Manual")  # a draft is not resumed
    async with api.app.state.sessionmaker() as session:
        await ledger.post(
            session, account_id=dev.id, kind="topup", amount=20 * CREDIT, key="test-topup"
        )
        effects = Effects(settings=api.app.state.settings, keyring=api.app.state.keyring)
        resumed = await credit_alerts.resume_after_top_up(session, effects, owner_id=dev.id)
        await session.commit()
    assert resumed == [agent_id]
    assert (await dev.http.get(f"/api/v1/agents/{agent_id}/status")).json()["status"] == "running"
    draft = (await dev.http.get(f"/api/v1/agents/{stopped_by_hand['id']}/status")).json()
    assert draft["status"] == "draft"
    openrouter.reply("Back again")
    assert (await _say(dev, agent_id, "Hello again")).status_code == 200
    async with api.app.state.sessionmaker() as session:
        assert (
            await session.execute(select(func.count()).select_from(CreditPause))
        ).scalar_one() == 0
    await _verify(api)


async def test_the_low_credit_alert_is_sent_once_per_crossing(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    await set_available(
        api.app.state.sessionmaker, dev.id, 12 * CREDIT
    )  # the default threshold is 10
    for _ in range(3):
        openrouter.reply("ok", cost=Decimal("0.01"))  # 1 credit each: 11, 10, 9 left
        assert (await _say(dev, agent_id, "Hi")).status_code == 200
    notes = (await dev.person.client.get("/api/v1/notifications")).json()["data"]
    assert [n["kind"] for n in notes].count("credits.low") == 1
    assert (await _account(api, dev.id)).balance == 9 * CREDIT


async def test_a_hold_left_by_a_dead_worker_expires_and_charges_nothing(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    from datetime import timedelta

    from lunogen.billing.worker_parts import expire_credit_holds
    from lunogen.kit.time import utcnow

    dev = await new_dev(api)
    async with api.app.state.sessionmaker() as session:  # as a turn does before its call
        hold = await ledger.place_hold(
            session,
            account_id=dev.id,
            amount=5 * CREDIT,
            key="hold:dead-worker",
            reference="some-message",
            ttl=timedelta(seconds=600),
        )
        await session.commit()
    assert (await _account(api, dev.id)).held == 5 * CREDIT
    assert await expire_credit_holds(api.app.state.sessionmaker) == 0  # not yet
    async with api.app.state.sessionmaker() as session:
        row = await session.get(CreditHold, hold.id)
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)  # the worker never came back
        await session.commit()
    assert await expire_credit_holds(api.app.state.sessionmaker) == 1
    account = await _account(api, dev.id)
    assert (account.balance, account.held) == (100 * CREDIT, 0)
    await _verify(api)
