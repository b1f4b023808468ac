"""Firing with a clock the test chooses: a run is a metered turn on the schedule's thread;
skips (agent not running, previous run going, day cap), one catch-up after downtime, once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select, update

from lunogen.agent.models import Agent
from lunogen.kit.time import utcnow
from lunogen.runlog.models import AgentLogEvent
from lunogen.runtime.models import Message, Thread
from lunogen.schedule.firing import fire_due
from lunogen.schedule.models import Schedule, ScheduleRun
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.schedule.support import create, fire_at, running_agent, runs_of, schedule_row


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _later(hours: int) -> datetime:
    """An hour well ahead of the real clock, so the process's own loop never fires first."""
    now = utcnow()
    return (now + timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)


async def _set_agent(api: Api, agent_id: str, **values: object) -> None:
    async with api.app.state.sessionmaker() as session:
        await session.execute(update(Agent).where(Agent.id == agent_id).values(**values))
        await session.commit()


async def test_a_run_is_a_metered_turn_on_the_schedules_thread(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await running_agent(api)
    start = _later(3)
    schedule = await create(
        dev,
        agent["id"],
        kind="interval",
        interval_seconds=3600,
        run_at=start.isoformat(),
        prompt="Check the inbox and report.",
        run_cap_credits="0.25",
    )
    assert await fire_at(api, start - timedelta(seconds=1)) == []  # not due yet

    openrouter.reply(
        "Inbox is empty.", prompt_tokens=100, completion_tokens=5, cost=Decimal("0.002")
    )
    [fired] = await fire_at(api, start + timedelta(milliseconds=300))
    assert fired.status == "started" and fired.thread_id is not None

    assert openrouter.last_chat.messages[-1] == {
        "role": "user",
        "content": "Check the inbox and report.",
    }
    async with api.app.state.sessionmaker() as session:
        thread = await session.get(Thread, fired.thread_id)
        assert thread is not None
        assert (thread.channel_key, thread.contact) == ("schedule", schedule["id"])
        inbound = (
            await session.execute(
                select(Message).where(Message.thread_id == thread.id, Message.role == "user")
            )
        ).scalar_one()
        assert inbound.status == "done"
        assert inbound.turn_cap_micro == 250_000  # the per-run cap, on the run's message
        logged = (
            await session.execute(
                select(AgentLogEvent.event).where(AgentLogEvent.agent_id == agent["id"])
            )
        ).scalars()
        assert "schedule.run" in list(logged)

    row = await schedule_row(api, schedule["id"])
    assert row.next_run_at == start + timedelta(hours=1)

    history = await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules/{schedule['id']}/runs")
    [run] = history.json()["data"]
    assert run["status"] == "started" and run["outcome"] == "done"
    assert run["catch_up"] is False and run["cap_credits"] == "0.25"
    assert _parse(run["planned_at"]) == start
    assert Decimal(run["cost_credits"]) > 0
    ledger = await dev.http.get("/api/v1/billing/transactions")
    charged = [e for e in ledger.json()["data"] if e["kind"] == "usage"]
    assert len(charged) == 1 and Decimal(charged[0]["amount"]) == -Decimal(run["cost_credits"])

    conversation = await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules/{schedule['id']}")
    assert conversation.json()["thread_id"] == fired.thread_id


async def test_missed_times_run_once_then_the_next_future_time(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await running_agent(api)
    start = _later(2)
    schedule = await create(
        dev, agent["id"], kind="interval", interval_seconds=3600, run_at=start.isoformat()
    )
    openrouter.reply("Caught up.")
    down_until = start + timedelta(hours=5, minutes=30)  # five runs missed
    fired = await fire_at(api, down_until)
    assert [f.status for f in fired] == ["started"]
    assert await fire_at(api, down_until + timedelta(minutes=1)) == []
    [run] = await runs_of(api, schedule["id"])
    assert run.catch_up is True and run.planned_at == start
    assert (await schedule_row(api, schedule["id"])).next_run_at == start + timedelta(hours=6)


async def test_a_one_off_runs_once_and_is_then_done(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent = await running_agent(api)
    when = _later(4)
    schedule = await create(dev, agent["id"], kind="once", run_at=when.isoformat())
    openrouter.reply("Done.")
    assert len(await fire_at(api, when)) == 1
    assert await fire_at(api, when + timedelta(days=1)) == []
    got = await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules/{schedule['id']}")
    assert got.json()["next_run_at"] is None and got.json()["next_runs"] == []


async def test_runs_of_an_agent_that_is_not_running_are_skipped_not_queued(api: Api) -> None:
    dev, agent = await running_agent(api)
    start = _later(2)
    schedule = await create(
        dev, agent["id"], kind="interval", interval_seconds=3600, run_at=start.isoformat()
    )
    stopped = await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")
    assert stopped.status_code == 200, stopped.text
    [first] = await fire_at(api, start)
    assert (first.status, first.reason) == ("skipped", "agent_not_running")
    await _set_agent(api, agent["id"], status="paused")
    [second] = await fire_at(api, start + timedelta(hours=1))
    assert second.reason == "agent_not_running"
    await _set_agent(api, agent["id"], status="suspended")
    [third] = await fire_at(api, start + timedelta(hours=2))
    assert third.reason == "agent_not_running"

    runs = await runs_of(api, schedule["id"])
    assert [r.detail for r in runs] == [
        "the agent is stopped",
        "the agent is paused",
        "the agent is suspended",
    ]
    async with api.app.state.sessionmaker() as session:
        messages = await session.scalar(
            select(func.count()).select_from(Message).where(Message.agent_id == agent["id"])
        )
        assert messages == 0  # nothing queued for later
        skipped = await session.scalar(
            select(func.count())
            .select_from(AgentLogEvent)
            .where(AgentLogEvent.agent_id == agent["id"], AgentLogEvent.event == "schedule.skipped")
        )
        assert skipped == 3
    history = await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules/{schedule['id']}/runs")
    assert {r["outcome"] for r in history.json()["data"]} == {"skipped"}
    assert {r["cost_credits"] for r in history.json()["data"]} == {"0"}


async def test_a_deleted_agents_schedule_stops(api: Api) -> None:
    dev, agent = await running_agent(api)
    start = _later(2)
    schedule = await create(
        dev, agent["id"], kind="interval", interval_seconds=3600, run_at=start.isoformat()
    )
    assert (await dev.http.delete(f"/api/v1/agents/{agent['id']}")).status_code == 204
    [fired] = await fire_at(api, start)
    assert fired.reason == "agent_deleted"
    assert (await schedule_row(api, schedule["id"])).next_run_at is None


async def test_a_run_is_skipped_while_the_previous_one_is_going(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await running_agent(api)
    start = _later(2)
    schedule = await create(
        dev, agent["id"], kind="interval", interval_seconds=3600, run_at=start.isoformat()
    )
    openrouter.reply("First.")
    [first] = await fire_at(api, start)
    assert first.status == "started"
    [run] = await runs_of(api, schedule["id"])
    async with api.app.state.sessionmaker() as session:  # its turn is still going
        await session.execute(
            update(Message).where(Message.id == run.message_id).values(status="pending")
        )
        await session.commit()
    [second] = await fire_at(api, start + timedelta(hours=1))
    assert (second.status, second.reason) == ("skipped", "previous_run_going")
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(Message).where(Message.id == run.message_id).values(status="done")
        )
        await session.commit()
    openrouter.reply("Third.")
    [third] = await fire_at(api, start + timedelta(hours=2))
    assert third.status == "started"


async def test_the_day_cap_skips_runs_and_lowers_the_run_cap(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await running_agent(api)
    # Midnight in Tokyo is 15:00 UTC: the day of the cap is Tokyo's day.
    start = (utcnow() + timedelta(days=2)).replace(hour=1, minute=0, second=0, microsecond=0)
    schedule = await create(
        dev,
        agent["id"],
        kind="interval",
        interval_seconds=3600,
        run_at=start.isoformat(),
        timezone="Asia/Tokyo",
        run_cap_credits="100",
        day_cap_credits="1",
    )
    openrouter.reply("Pricey.", prompt_tokens=1000, completion_tokens=1000, cost=Decimal("0.006"))
    [first] = await fire_at(api, start)
    assert first.status == "started"
    [run] = await runs_of(api, schedule["id"])
    history = await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules/{schedule['id']}/runs")
    spent = Decimal(history.json()["data"][0]["cost_credits"])
    assert Decimal(0) < spent < Decimal(1), spent
    assert run.cap_micro == 1_000_000  # min(run cap 100, day cap 1 - 0 spent)

    openrouter.reply("Again.")
    [second] = await fire_at(api, start + timedelta(hours=1))
    assert second.status == "started"
    async with api.app.state.sessionmaker() as session:
        second_run = await session.get(ScheduleRun, second.run_id)
        assert second_run is not None
        left = 1_000_000 - int(spent * 1_000_000)
        assert second_run.cap_micro == left  # what is left of the day
        message = await session.get(Message, second_run.message_id)
        assert message is not None and message.turn_cap_micro == left

    await _spend_the_day(api, openrouter, start)
    # A new day in Tokyo (15:00 UTC) starts afresh.
    tokyo_midnight = start.replace(hour=15)
    openrouter.reply("New day.")
    [fresh] = await fire_at(api, tokyo_midnight)
    assert fresh.status == "started"


async def _spend_the_day(api: Api, openrouter: FakeOpenRouter, start: datetime) -> None:
    """Runs until the day cap is reached, then one more time: skipped with the reason."""
    hour = 2
    while True:
        openrouter.reply("Spend.", prompt_tokens=1000, completion_tokens=1000, cost=Decimal("0.2"))
        [fired] = await fire_at(api, start + timedelta(hours=hour))
        hour += 1
        if fired.status == "skipped":
            assert fired.reason == "day_cap_reached"
            break
        assert hour < 12, "the day cap never stopped the runs"
    [again] = await fire_at(api, start + timedelta(hours=hour))
    assert again.reason == "day_cap_reached"
    openrouter.queue.clear()


async def test_two_firers_at_once_fire_each_run_once(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent = await running_agent(api)
    start = _later(2)
    ids = []
    for index in range(5):
        made = await create(
            dev,
            agent["id"],
            name=f"s{index}",
            kind="interval",
            interval_seconds=3600,
            run_at=start.isoformat(),
        )
        ids.append(made["id"])
    for _ in ids:
        openrouter.reply("ok")
    sm, keys = api.app.state.sessionmaker, api.app.state.keyring
    results = await asyncio.gather(
        fire_due(sm, keys, now=start), fire_due(sm, keys, now=start), fire_due(sm, keys, now=start)
    )
    fired = [f for result in results for f in result]
    assert sorted(f.schedule_id for f in fired) == sorted(ids)
    for schedule_id in ids:
        assert len(await runs_of(api, schedule_id)) == 1
    await fire_at(api, start)


async def test_the_run_cap_stops_a_turn_that_would_cost_more(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """End to end with the turn engine's cap enforcement: a run whose cap cannot cover a model
    call makes no call and is charged nothing."""
    dev, agent = await running_agent(api)
    start = _later(2)
    schedule = await create(
        dev,
        agent["id"],
        kind="interval",
        interval_seconds=3600,
        run_at=start.isoformat(),
        run_cap_credits="0.000001",
    )
    openrouter.reply("Should never be asked.")
    calls_before = len(openrouter.requests)
    [fired] = await fire_at(api, start)
    assert fired.status == "started"
    assert len(openrouter.requests) == calls_before  # no model call was made
    history = await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules/{schedule['id']}/runs")
    [run] = history.json()["data"]
    assert run["cap_credits"] == "0.000001" and run["cost_credits"] == "0"
    assert run["outcome"] in ("done", "failed")
    openrouter.queue.clear()


async def test_a_schedule_that_cannot_fire_does_not_stop_the_others(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await running_agent(api)
    start = _later(2)
    good = await create(
        dev, agent["id"], kind="interval", interval_seconds=3600, run_at=start.isoformat()
    )
    broken = await create(dev, agent["id"], kind="cron", cron="0 9 * * *", timezone="Europe/Berlin")
    async with api.app.state.sessionmaker() as session:  # a zone this system no longer knows
        await session.execute(
            update(Schedule)
            .where(Schedule.id == broken["id"])
            .values(timezone="Gone/Zone", next_run_at=start)
        )
        await session.commit()
    openrouter.reply("Still here.")
    fired = await fire_at(api, start)
    assert [(f.schedule_id, f.status) for f in fired] == [(good["id"], "started")]
    assert (await schedule_row(api, broken["id"])).next_run_at is None
    assert await runs_of(api, broken["id"]) == []
    assert await fire_at(api, start + timedelta(minutes=5)) == []  # not retried hot


async def test_runs_of_an_agent_over_its_spend_cap_are_skipped(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await running_agent(api)
    # Caps count UTC days, and the charge is written on the real clock: both runs stay near it.
    start = utcnow().replace(microsecond=0) + timedelta(minutes=1)
    schedule = await create(
        dev, agent["id"], kind="interval", interval_seconds=60, run_at=start.isoformat()
    )
    openrouter.reply("Spent.", prompt_tokens=500, completion_tokens=500, cost=Decimal("0.01"))
    [first] = await fire_at(api, start)
    assert first.status == "started"
    capped = await dev.http.put(  # today's spend already passes the new daily cap
        f"/api/v1/agents/{agent['id']}/caps", json={"daily_credits": "0.000001"}
    )
    assert capped.status_code == 200, capped.text
    [second] = await fire_at(api, start + timedelta(seconds=60))
    assert (second.status, second.reason) == ("skipped", "agent_over_cap")
    runs = await runs_of(api, schedule["id"])
    assert runs[-1].detail == "the agent's daily spend cap is reached"
    assert runs[-1].message_id is None


async def test_a_run_cannot_use_a_gated_tool_without_approval(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """A run goes through the normal turn engine: a tool that requires approval stops the turn
    until the owner decides, and the schedule's next run is skipped meanwhile."""
    from lunogen.runtime.approval_models import ToolApproval

    dev, agent = await running_agent(api, tools=["current_time"])
    gated = await dev.http.put(
        f"/api/v1/agents/{agent['id']}/approval-policy", json={"tools": {"current_time": True}}
    )
    assert gated.status_code == 200, gated.text
    start = _later(2)
    schedule = await create(
        dev, agent["id"], kind="interval", interval_seconds=3600, run_at=start.isoformat()
    )
    openrouter.call_tool("current_time", {"timezone": "Europe/Paris"})
    [fired] = await fire_at(api, start)
    assert fired.status == "started"
    [run] = await runs_of(api, schedule["id"])
    async with api.app.state.sessionmaker() as session:
        approvals = list(
            (
                await session.execute(
                    select(ToolApproval).where(ToolApproval.message_id == run.message_id)
                )
            ).scalars()
        )
        message = await session.get(Message, run.message_id)
    assert [a.status for a in approvals] == ["pending"]
    assert approvals[0].executed_at is None  # the tool did not run
    assert message is not None and message.status == "pending"
    [second] = await fire_at(api, start + timedelta(hours=1))
    assert (second.status, second.reason) == ("skipped", "previous_run_going")
    openrouter.queue.clear()
