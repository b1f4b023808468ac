"""Every model call of a turn is held first, for at least the most it can cost: each tool step,
streamed or not, at the dearest model of the fallback chain, with a prompt bound that a script of
one token per character cannot exceed."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from lunogen.agent.models import Agent
from lunogen.billing import ledger
from lunogen.billing.models import CreditEntry, CreditHold
from lunogen.llm.models import UsageRecord
from lunogen.runtime.models import Message
from tests.agent.support import Dev, create_agent, new_dev
from tests.billing.stripe_support import STARTER, C, verified
from tests.billing.support import set_available
from tests.fakes.openrouter import (
    DEFAULT_MODELS,
    WORST,
    FakeOpenRouter,
    RecordedRequest,
    openrouter_settings,
    request_text_bytes,
)
from tests.helpers import Api, sse_events

MINI, SONNET = "openai/gpt-4o-mini", "anthropic/claude-sonnet-4"
PRICES = {m["id"]: m["pricing"] for m in DEFAULT_MODELS}
CJK = "字" * 30_000  # 90,000 bytes; a tokenizer may well make 30,000 tokens of it


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


async def _running_agent(
    api: Api, *, fallback_models: list[str] | None = None, **overrides: Any
) -> tuple[Dev, str]:
    dev = await new_dev(api)
    agent = await create_agent(dev, **overrides)
    if fallback_models:  # not in the public API yet: set on the row
        async with api.app.state.sessionmaker() as session:
            row = await session.get(Agent, agent["id"])
            assert row is not None
            row.fallback_models = fallback_models
            await session.commit()
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    return dev, agent["id"]


async def _say(dev: Dev, agent_id: str, text: str, **extra: Any) -> Any:
    return await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": text, **extra})


async def _entries(api: Api, user_id: str) -> list[CreditEntry]:
    async with api.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(CreditEntry).where(CreditEntry.account_id == user_id).order_by(CreditEntry.id)
        )
        return list(rows.scalars())


async def _hold_amounts(api: Api, hold_ids: list[str | None]) -> list[int]:
    async with api.app.state.sessionmaker() as session:
        rows = await session.execute(select(CreditHold).where(CreditHold.id.in_(hold_ids)))
        amounts = {hold.id: hold.amount for hold in rows.scalars()}
    return [amounts[hold_id] for hold_id in hold_ids if hold_id is not None]


def _least_hold(request: RecordedRequest, *models: str) -> int:
    """Micro-credits the call of `request` can cost at most: a token for every byte of its text,
    its whole `max_tokens`, at the dearest of `models` (no markup in tests)."""
    prompt, completion = request_text_bytes(request.body), request.body["max_tokens"]
    usd = max(
        prompt * Decimal(PRICES[m]["prompt"]) + completion * Decimal(PRICES[m]["completion"])
        for m in models
    )
    return math.ceil(usd * 100 * C)  # US$0.01 a credit


def _paired(entries: list[CreditEntry]) -> list[tuple[CreditEntry, CreditEntry]]:
    """(hold, usage) pairs in ledger order; every usage comes right after its own hold."""
    calls = [e for e in entries if e.kind in ("hold", "usage")]
    assert [e.kind for e in calls] == ["hold", "usage"] * (len(calls) // 2), calls
    pairs = list(zip(calls[::2], calls[1::2], strict=True))
    assert all(hold.hold_id == usage.hold_id for hold, usage in pairs)
    return pairs


async def _eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + 20
    while not await check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.02)


async def test_a_prompt_the_balance_cannot_bound_is_refused_before_the_call(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """One 30,000-character CJK message on 5 credits took the balance to -4 when the hold
    counted characters / 3: its bytes must be held, and they are more than 5 credits."""
    dev, agent_id = await _running_agent(api, model=SONNET)
    await set_available(api.app.state.sessionmaker, dev.id, 5 * C)
    openrouter.reply("ok", prompt_tokens=30_300)  # what a tokenizer reports for it
    response = await _say(dev, agent_id, CJK)
    assert response.status_code == 402, response.text
    body = response.json()
    # 90,000 bytes at US$3/M tokens alone is 27 credits.
    assert Decimal(body["required_credits"]) > 27 and body["available_credits"] == "5"
    assert openrouter.chat_requests == []
    async with api.app.state.sessionmaker() as session:
        account = await ledger.get_account(session, dev.id)
        assert account is not None and (account.balance, account.held) == (5 * C, 0)
    await verified(api)


async def test_a_long_prompt_that_is_covered_never_costs_more_than_its_hold(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api, model=SONNET)
    openrouter.reply("ok", prompt_tokens=WORST, completion_tokens=WORST)  # at catalog prices
    with capture_logs() as logs:
        response = await _say(dev, agent_id, CJK)
    assert response.status_code == 200, response.text
    [(hold, usage)] = _paired(await _entries(api, dev.id))
    [held] = await _hold_amounts(api, [hold.hold_id])
    assert held >= _least_hold(openrouter.last_chat, SONNET)
    assert 0 < -usage.amount <= held  # about 28.6 credits, charged in full
    assert usage.balance_after == STARTER + usage.amount >= 0
    assert [e for e in logs if e["event"] == "usage_above_hold"] == []
    await verified(api)


async def test_every_tool_step_is_held_before_its_call(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api, tools=["current_time"])
    for _ in range(2):
        openrouter.call_tool("current_time", {}, prompt_tokens=WORST, completion_tokens=WORST)
    openrouter.reply("It is late.", prompt_tokens=WORST, completion_tokens=WORST)
    response = await _say(dev, agent_id, "What time is it? Check twice.")
    assert response.status_code == 200, response.text
    assert response.json()["reply"]["text"] == "It is late."
    pairs = _paired(await _entries(api, dev.id))
    requests = openrouter.chat_requests
    assert len(pairs) == len(requests) == 3
    held = await _hold_amounts(api, [hold.hold_id for hold, _ in pairs])
    for amount, (_, usage), request in zip(held, pairs, requests, strict=True):
        assert amount >= _least_hold(request, MINI) >= -usage.amount > 0
    assert held[0] < held[1] < held[2]  # each step's prompt carries the tool calls before it
    await verified(api)


async def test_a_step_whose_hold_cannot_be_placed_is_never_called(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api, tools=["current_time"])
    await set_available(api.app.state.sessionmaker, dev.id, C)
    # The first call costs 0.95 of the 1 credit: the second needs more than is left.
    openrouter.call_tool("current_time", {}, cost=Decimal("0.0095"))
    openrouter.reply("never sent")
    response = await _say(dev, agent_id, "What time is it?")
    assert response.status_code == 402, response.text
    assert len(openrouter.chat_requests) == 1
    assert [e.kind for e in await _entries(api, dev.id)] == ["grant", "adjustment", "hold", "usage"]
    async with api.app.state.sessionmaker() as session:
        message = (
            await session.execute(select(Message).where(Message.role == "user"))
        ).scalar_one()
        assert message.status == "failed"
        assert message.failure is not None and message.failure["code"] == "insufficient_credits"
    await verified(api)


async def test_a_streamed_turn_holds_every_call(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent_id = await _running_agent(api, tools=["current_time"])
    openrouter.call_tool("current_time", {}, prompt_tokens=WORST, completion_tokens=WORST)
    openrouter.reply("Noon.", prompt_tokens=WORST, completion_tokens=WORST)
    response = await _say(dev, agent_id, "Time?", stream=True)
    assert response.status_code == 200
    names = [name for name, _ in sse_events(response.text)]
    assert names[-1] == "done" and "tool" in names
    assert all(r.body["stream"] is True for r in openrouter.chat_requests)
    pairs = _paired(await _entries(api, dev.id))
    held = await _hold_amounts(api, [hold.hold_id for hold, _ in pairs])
    assert len(held) == len(openrouter.chat_requests) == 2
    for amount, (_, usage), request in zip(held, pairs, openrouter.chat_requests, strict=True):
        assert amount >= _least_hold(request, MINI) >= -usage.amount > 0
    await verified(api)


async def test_fallbacks_are_held_at_the_dearest_model_of_the_chain(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api, model=MINI, fallback_models=[SONNET])
    openrouter.down_models.add(MINI)  # OpenRouter routes the call to the fallback
    openrouter.reply("From the fallback", prompt_tokens=WORST, completion_tokens=WORST)
    response = await _say(dev, agent_id, "Hello")
    assert response.status_code == 200, response.text
    [(hold, usage)] = _paired(await _entries(api, dev.id))
    [held] = await _hold_amounts(api, [hold.hold_id])
    # The whole reply at Sonnet's US$15/M is 1.536 credits, 25 times Mini's price for it.
    assert held >= _least_hold(openrouter.last_chat, MINI, SONNET) > 1_536_000
    assert -usage.amount <= held
    async with api.app.state.sessionmaker() as session:
        record = (await session.execute(select(UsageRecord))).scalar_one()
    assert (record.requested_model, record.answered_model) == (MINI, SONNET)
    await verified(api)


async def test_the_hold_exists_while_the_call_is_in_flight(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    openrouter.stall(60)
    accepted = await _say(dev, agent_id, "Think slowly", wait_seconds=0)
    assert accepted.status_code == 202
    message_id = accepted.json()["message"]["id"]

    async def called() -> bool:
        return len(openrouter.chat_requests) == 1

    await _eventually(called, "the model call")
    async with api.app.state.sessionmaker() as session:  # the model is still thinking
        account = await ledger.get_account(session, dev.id)
        [hold] = await ledger.active_holds(session, dev.id)
    assert account is not None and account.held == hold.amount > 0
    assert hold.amount >= _least_hold(openrouter.last_chat, MINI)
    assert ledger.available(account) == STARTER - hold.amount

    openrouter.release_stalls()

    async def answered() -> bool:
        async with api.app.state.sessionmaker() as session:
            message = await session.get(Message, message_id, populate_existing=True)
            return message is not None and message.status == "done"

    await _eventually(answered, "the reply")
    async with api.app.state.sessionmaker() as session:
        account = await ledger.get_account(session, dev.id)
        assert account is not None and account.held == 0
        assert await ledger.active_holds(session, dev.id) == []
    await verified(api)


async def test_a_cost_above_the_hold_is_charged_in_full_and_logged(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """The provider's price rose above the catalog's: the difference is charged, and said."""
    dev, agent_id = await _running_agent(api)
    openrouter.reply("Expensive", cost=Decimal("0.40"))  # 40 credits; the hold is ~0.07
    with capture_logs() as logs:
        assert (await _say(dev, agent_id, "Hi")).status_code == 200
    [(hold, usage)] = _paired(await _entries(api, dev.id))
    [held] = await _hold_amounts(api, [hold.hold_id])
    assert usage.amount == -40 * C and usage.balance_after == STARTER - 40 * C
    [line] = [e for e in logs if e["event"] == "usage_above_hold"]
    assert line["log_level"] == "warning"
    assert (line["held"], line["charged"], line["over"]) == (held, 40 * C, 40 * C - held)
    assert line["hold_id"] == hold.hold_id and line["account_id"] == dev.id
    await verified(api)


async def test_a_model_without_a_price_is_never_called(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """A hold needs the prices of every model that may answer; deploy checks them, and so does
    each turn (the agent's chain may have changed since)."""
    dev, agent_id = await _running_agent(api)
    async with api.app.state.sessionmaker() as session:
        row = await session.get(Agent, agent_id)
        assert row is not None
        row.fallback_models = ["nobody/unpriced-1"]
        await session.commit()
    response = await _say(dev, agent_id, "Hello")
    assert response.status_code == 502, response.text
    assert "'nobody/unpriced-1' is not in the model catalog" in response.json()["message"]
    assert openrouter.chat_requests == []
    assert [e.kind for e in await _entries(api, dev.id)] == ["grant"]
