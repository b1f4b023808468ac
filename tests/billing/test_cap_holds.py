"""Holds under a cap: calls in flight count against it until their hold closes, an expired hold
stops counting by itself, and the counters equal what the ledger charged."""

from __future__ import annotations

from datetime import timedelta

import pytest

from lunogen.billing import caps, ledger
from lunogen.billing.caps import CapReached, TurnCaps
from lunogen.kit.time import utcnow
from tests.billing.caps_support import C, running_agent
from tests.billing.stripe_support import verified
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


async def _hold(api: Api, capped: TurnCaps, amount: int, key: str) -> str:
    async with api.app.state.sessionmaker() as session:
        periods = await caps.check(session, capped, amount=amount)
        hold = await ledger.place_hold(
            session,
            account_id=capped.owner_id,
            amount=amount,
            key=key,
            reference=None,
            ttl=timedelta(seconds=30),
        )
        await caps.track(session, capped, periods, hold_id=hold.id, amount=amount)
        await session.commit()
        return hold.id


async def test_holds_in_flight_count_until_they_expire(api: Api) -> None:
    dev, agent_id = await running_agent(api)
    capped = TurnCaps(agent_id=agent_id, agent_name="A", owner_id=dev.id, daily=C)
    await _hold(api, capped, 400_000, "t:1")
    await _hold(api, capped, 500_000, "t:2")
    with pytest.raises(CapReached) as refused:  # 0.9 held + 0.2 > 1
        await _hold(api, capped, 200_000, "t:3")
    assert (refused.value.cap, refused.value.used) == ("daily", 900_000)
    async with api.app.state.sessionmaker() as session:
        today, _ = await caps.spend_of(session, owner_id=dev.id, agent_id=agent_id)
        assert today is not None and (today.spent, today.held) == (0, 900_000)
        assert await ledger.expire_holds(session, utcnow() + timedelta(minutes=1)) == 2
        await session.commit()
    await _hold(api, capped, 900_000, "t:4")  # the expired holds no longer count
    async with api.app.state.sessionmaker() as session:
        today, month = await caps.spend_of(session, owner_id=dev.id, agent_id=agent_id)
        assert today is not None and (today.spent, today.held) == (0, 900_000)
        assert (month.spent, month.held, month.limit) == (0, 900_000, None)
    await verified(api)


async def test_the_account_cap_counts_every_agents_holds(api: Api) -> None:
    dev, first = await running_agent(api)
    second = (
        await dev.http.post("/api/v1/agents", json={"name": "B", "model": "openai/gpt-4o-mini"})
    ).json()["id"]
    one = TurnCaps(agent_id=first, agent_name="A", owner_id=dev.id, account_monthly=C)
    two = TurnCaps(agent_id=second, agent_name="B", owner_id=dev.id, account_monthly=C)
    await _hold(api, one, 600_000, "a:1")
    with pytest.raises(CapReached) as refused:
        await _hold(api, two, 500_000, "a:2")
    assert refused.value.cap == "account_monthly"
    await _hold(api, two, 400_000, "a:3")


def test_periods_are_utc_days_and_months() -> None:
    start, end = caps.period_bounds("2026-12-31")
    assert (start.isoformat(), end.isoformat()) == (
        "2026-12-31T00:00:00+00:00",
        "2027-01-01T00:00:00+00:00",
    )
    start, end = caps.period_bounds("2026-12")
    assert (start.isoformat(), end.isoformat()) == (
        "2026-12-01T00:00:00+00:00",
        "2027-01-01T00:00:00+00:00",
    )
    assert caps.period_bounds("2027-02")[1].isoformat() == "2027-03-01T00:00:00+00:00"
