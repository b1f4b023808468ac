"""Spend caps in turns: a call a cap cannot cover is never made, the contact gets the over-cap
reply (unpaid), the owner hears at 80 % and 100 % once per period, and periods roll over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from lunogen.agent.models import Agent
from lunogen.billing.models_caps import CappedHold, SpendCap, SpendCounter
from lunogen.runtime.models import Message
from lunogen.runtime.turn import run_turn
from tests.billing.caps_support import (
    C,
    Clock,
    cap_logs,
    emails,
    notices,
    put_caps,
    running_agent,
    say,
)
from tests.billing.stripe_support import balance, verified
from tests.billing.support import set_available
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api, sse_events
from tests.runtime.support import DEAD_WORKER, pending_under_a_lease, turn_deps

# A call of the test agent (gpt-4o-mini, 1024 output tokens) is held for about 0.062 credits;
# each reply below is charged 0.05 credits (US$0.0005 at US$0.01 a credit).
COST = Decimal("0.0005")
CHARGE = 50_000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


async def test_a_cap_below_one_call_makes_no_call_and_replies_the_cap_text(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await running_agent(api)
    before = await balance(api, dev.id)
    await put_caps(dev, agent_id, daily_credits="0.05", reply_text="Back tomorrow, sorry!")
    openrouter.reply("never sent", cost=COST)
    body = await say(dev, agent_id, "Hello?")
    assert body["reply"]["text"] == "Back tomorrow, sorry!"
    assert openrouter.chat_requests == []
    assert await balance(api, dev.id) == before  # the reply is free
    (line,) = await cap_logs(api, agent_id)
    assert line.level == "warning" and line.details["cap"] == "daily"
    assert line.details["limit"] == "0.05"
    assert await notices(api, dev.id, "caps.reached") == 1
    async with api.app.state.sessionmaker() as session:
        inbound = (
            await session.execute(select(Message).where(Message.role == "user"))
        ).scalar_one()
        assert inbound.status == "done"
    await verified(api)


async def test_daily_cap_warns_at_80_percent_once_stops_at_100_and_rolls_over(
    api: Api, openrouter: FakeOpenRouter, clock: Clock
) -> None:
    clock.set(datetime(2031, 3, 10, 23, 59, tzinfo=UTC))  # a minute before midnight UTC
    dev, agent_id = await running_agent(api)
    caps = await put_caps(dev, agent_id, daily_credits="0.22")
    assert caps["reply_text"] is None and "spending limit" in caps["effective_reply_text"]
    for n in range(4):  # 0.05 each: the 4th takes the day to 0.2 (90 %)
        openrouter.reply(f"answer {n}", cost=COST)
        assert (await say(dev, agent_id, f"q{n}"))["reply"]["text"] == f"answer {n}"
        expected_warnings = 1 if n == 3 else 0
        assert await notices(api, dev.id, "caps.warning") == expected_warnings
    assert await emails(api, "80 %") == 1
    openrouter.reply("not sent", cost=COST)
    for n in range(2):  # 0.2 spent + a 0.062 hold > 0.22: refused, and told once
        body = await say(dev, agent_id, f"over {n}")
        assert "spending limit" in body["reply"]["text"]
    assert len(openrouter.chat_requests) == 4
    assert await notices(api, dev.id, "caps.reached") == 1
    assert await notices(api, dev.id, "caps.warning") == 1
    assert await emails(api, "reached its daily spend cap") == 1
    assert len(await cap_logs(api, agent_id)) == 2
    state = (await dev.http.get(f"/api/v1/agents/{agent_id}/caps")).json()
    assert state["today"] == {
        "period": "2031-03-10",
        "spent": "0.2",
        "held": "0",
        "cap": "0.22",
        "percent": 90,
    }
    assert state["this_month"]["spent"] == "0.2" and state["this_month"]["cap"] is None

    clock.shift(timedelta(minutes=2))  # 2031-03-11, a new UTC day: the agent answers again
    body = await say(dev, agent_id, "tomorrow")
    assert body["reply"]["text"] == "not sent"
    assert len(openrouter.chat_requests) == 5
    state = (await dev.http.get(f"/api/v1/agents/{agent_id}/caps")).json()
    assert state["today"]["spent"] == "0.05" and state["today"]["percent"] == 22
    assert state["today"]["period"] == "2031-03-11"
    assert state["this_month"] == {
        "period": "2031-03",
        "spent": "0.25",
        "held": "0",
        "cap": None,
        "percent": None,
    }
    for n in range(3):  # the new day reaches 80 % too: its own notice, once
        openrouter.reply(f"again {n}", cost=COST)
        again = await say(dev, agent_id, f"again {n}", contact=f"new-{n}")  # short threads
        assert again["reply"]["text"] == f"again {n}"
    assert await notices(api, dev.id, "caps.warning") == 2
    assert "spending limit" in (await say(dev, agent_id, "too much"))["reply"]["text"]
    assert await notices(api, dev.id, "caps.reached") == 2
    await verified(api)


async def test_raising_the_cap_lets_the_agent_answer_again(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await running_agent(api)
    await put_caps(dev, agent_id, monthly_credits="0.1")
    for n in range(2):
        openrouter.reply(f"a{n}", cost=COST)
    assert (await say(dev, agent_id, "one"))["reply"]["text"] == "a0"
    assert "spending limit" in (await say(dev, agent_id, "two"))["reply"]["text"]
    await put_caps(dev, agent_id, monthly_credits="1")
    assert (await say(dev, agent_id, "three"))["reply"]["text"] == "a1"
    assert len(openrouter.chat_requests) == 2
    async with api.app.state.sessionmaker() as session:
        assert list((await session.execute(select(CappedHold))).scalars()) == []
        counters = (await session.execute(select(SpendCounter))).scalars()
        assert {c.spent for c in counters} == {2 * CHARGE}
    await verified(api)


async def test_a_cap_set_mid_day_counts_what_the_agent_already_spent(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await running_agent(api)
    for n in range(3):
        openrouter.reply(f"free {n}", cost=COST)
    for n in range(2):  # no cap yet: 0.1 spent
        assert (await say(dev, agent_id, f"q{n}"))["reply"]["text"] == f"free {n}"
    caps = await put_caps(dev, agent_id, daily_credits="0.15")
    assert caps["today"]["spent"] == "0.1" and caps["today"]["percent"] == 66
    assert "spending limit" in (await say(dev, agent_id, "more"))["reply"]["text"]
    assert len(openrouter.chat_requests) == 2
    await verified(api)


async def test_account_cap_covers_every_agent(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, first = await running_agent(api)
    second_response = await dev.http.post(
        "/api/v1/agents", json={"name": "Second", "model": "openai/gpt-4o-mini"}
    )
    assert second_response.status_code == 201, second_response.text
    second = second_response.json()["id"]
    assert (await dev.http.post(f"/api/v1/agents/{second}/deploy")).status_code == 200
    response = await dev.http.put("/api/v1/billing/cap", json={"monthly_credits": "0.15"})
    assert response.status_code == 200, response.text
    for n in range(3):
        openrouter.reply(f"r{n}", cost=COST)
    assert (await say(dev, first, "a"))["reply"]["text"] == "r0"
    assert (await say(dev, second, "b"))["reply"]["text"] == "r1"
    # 0.1 spent + a 0.062 hold > 0.15: neither agent calls the model any more
    assert "spending limit" in (await say(dev, first, "c"))["reply"]["text"]
    assert "spending limit" in (await say(dev, second, "d"))["reply"]["text"]
    assert len(openrouter.chat_requests) == 2
    assert (await cap_logs(api, second))[0].details["cap"] == "account_monthly"
    cap = (await dev.http.get("/api/v1/billing/cap")).json()
    assert cap["monthly_credits"] == "0.15"
    assert cap["this_month"]["spent"] == "0.1" and cap["this_month"]["percent"] == 66
    assert await notices(api, dev.id, "caps.reached") == 1
    await verified(api)


async def test_turn_caps_stop_a_tool_loop_before_the_next_call(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await running_agent(api, tools=["remember"])
    # each call settles 0.05; the turn may spend 0.15: the third call's hold does not fit
    await put_caps(dev, agent_id, turn_credits="0.15", reply_text="Turn budget used up.")
    for _ in range(3):
        openrouter.call_tool("remember", {"note": "tea"}, cost=COST)
    body = await say(dev, agent_id, "what time is it, thrice?")
    assert body["reply"]["text"] == "Turn budget used up."
    assert len(openrouter.chat_requests) == 2
    (line,) = await cap_logs(api, agent_id)
    assert line.details["cap"] == "turn_credits" and line.details["used"] == "0.1"
    assert await notices(api, dev.id, "caps.reached") == 0  # a turn cap is not a period's
    await verified(api)


async def test_a_daily_cap_reached_between_tool_steps_stops_the_next_call(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await running_agent(api, tools=["remember"])
    await put_caps(dev, agent_id, daily_credits="0.15")
    for _ in range(3):
        openrouter.call_tool("remember", {"note": "tea"}, cost=COST)
    body = await say(dev, agent_id, "remember three things")
    assert "spending limit" in body["reply"]["text"]
    assert len(openrouter.chat_requests) == 2  # 0.1 settled + the third call's hold > 0.15
    (line,) = await cap_logs(api, agent_id)
    assert line.details["cap"] == "daily" and line.details["used"] == "0.1"
    assert await notices(api, dev.id, "caps.reached") == 1
    assert await notices(api, dev.id, "caps.warning") == 0  # 0.1 is 66 %: no 80 % notice
    await verified(api)


async def test_the_over_cap_reply_ends_a_stream_like_any_reply(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await running_agent(api)
    await put_caps(dev, agent_id, daily_credits="0", reply_text="No budget today.")
    response = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages",
        json={"text": "hi", "stream": True},
        headers={"Accept": "text/event-stream"},
    )
    assert response.status_code == 200, response.text
    events = sse_events(response.text)
    assert events[-1][0] == "done" and events[-1][1]["text"] == "No budget today."
    assert openrouter.chat_requests == []


async def test_turn_token_cap_counts_the_reply_budget(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent_id = await running_agent(api)
    await put_caps(dev, agent_id, turn_tokens=1000)  # below the agent's 1024-token replies
    openrouter.reply("never", cost=COST)
    assert "spending limit" in (await say(dev, agent_id, "hi"))["reply"]["text"]
    assert openrouter.chat_requests == []
    await put_caps(dev, agent_id, turn_tokens=5000)
    assert (await say(dev, agent_id, "hi again"))["reply"]["text"] == "never"


async def _message_under_cap(api: Api, cap: int) -> tuple[str, str, str]:
    """A pending message (held back by a dead worker's lease) carrying a per-message cap, the
    way a schedule's run sets it: (owner id, agent id, message id)."""
    agent_id, _, message_id = await pending_under_a_lease(
        api, text="Scheduled run", left=timedelta(minutes=5)
    )
    async with api.app.state.sessionmaker() as session:
        message = await session.get(Message, message_id)
        agent = await session.get(Agent, agent_id)
        assert message is not None and agent is not None
        message.turn_cap_micro = cap
        owner_id = agent.owner_id
        await session.commit()
    await set_available(api.app.state.sessionmaker, owner_id, 40 * C)
    return owner_id, agent_id, message_id


async def _reply_to(api: Api, message_id: str) -> str:
    async with api.app.state.sessionmaker() as session:
        reply = (
            await session.execute(select(Message).where(Message.reply_to_id == message_id))
        ).scalar_one()
        text: str = api.app.state.keyring.decrypt(reply.content)
        return text


async def test_a_message_cap_below_one_call_makes_no_call(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    _, agent_id, message_id = await _message_under_cap(api, 30_000)  # 0.03 < a 0.062 hold
    openrouter.reply("never", cost=COST)
    outcome = await run_turn(turn_deps(), inbound_id=message_id, lease_token=DEAD_WORKER)
    assert outcome == "answered"
    assert "spending limit" in await _reply_to(api, message_id)
    assert openrouter.chat_requests == []
    (line,) = await cap_logs(api, agent_id)
    assert line.details["cap"] == "turn_credits" and line.details["limit"] == "0.03"
    await verified(api)


async def test_the_smaller_of_the_agents_and_the_messages_cap_applies(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    owner_id, agent_id, message_id = await _message_under_cap(api, C)  # 1 credit
    async with api.app.state.sessionmaker() as session:  # the agent's own turn cap is lower
        session.add(SpendCap(subject=agent_id, owner_id=owner_id, agent_id=agent_id, turn_micro=1))
        await session.commit()
    openrouter.reply("never", cost=COST)
    await run_turn(turn_deps(), inbound_id=message_id, lease_token=DEAD_WORKER)
    assert openrouter.chat_requests == []
    (line,) = await cap_logs(api, agent_id)
    assert line.details["limit"] == "0.000001"


async def test_a_message_cap_that_covers_the_call_lets_it_through(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    _, _, message_id = await _message_under_cap(api, C)
    openrouter.reply("scheduled answer", cost=COST)
    await run_turn(turn_deps(), inbound_id=message_id, lease_token=DEAD_WORKER)
    assert await _reply_to(api, message_id) == "scheduled answer"
    assert len(openrouter.chat_requests) == 1
    await verified(api)


async def test_spend_stays_true_after_a_cap_is_removed_and_set_again(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await running_agent(api)
    await put_caps(dev, agent_id, daily_credits="1")
    for n in range(3):
        openrouter.reply(f"r{n}", cost=COST)
    await say(dev, agent_id, "one")  # counted while capped
    await put_caps(dev, agent_id)  # no caps: the agent's calls are no longer counted
    await say(dev, agent_id, "two")
    state = (await dev.http.get(f"/api/v1/agents/{agent_id}/caps")).json()
    assert state["today"]["spent"] == "0.1"  # from the ledger
    state = await put_caps(dev, agent_id, daily_credits="0.16")  # counted again, from 0.1
    assert state["today"]["spent"] == "0.1"
    assert "spending limit" in (await say(dev, agent_id, "three"))["reply"]["text"]
    assert len(openrouter.chat_requests) == 2
    await verified(api)
