"""`GET /api/v1/usage`: exact totals and groups of the caller's model calls, and nobody else's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from lunogen.kit.ids import new_id
from lunogen.llm.models import UsageRecord
from tests.agent.support import MODEL, NOT_FOUND, Dev, create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api

OTHER_MODEL = "anthropic/claude-3-haiku"
ZERO = {
    "calls": 0,
    "failed_calls": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cached_tokens": 0,
    "reasoning_tokens": 0,
    "cost_usd": "0.000000000",
    "cost_nano_usd": 0,
    "unpriced_calls": 0,
}


async def _running_agent(dev: Dev, name: str) -> dict[str, Any]:
    agent = await create_agent(dev, name=name)
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    return agent


async def _say(dev: Dev, agent_id: str, text: str) -> int:
    response = await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": text})
    return response.status_code


async def _usage(dev: Dev, **params: str) -> dict[str, Any]:
    response = await dev.http.get("/api/v1/usage", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _figures(item: dict[str, Any]) -> dict[str, Any]:
    return {k: item[k] for k in ZERO}


async def _today(api: Api) -> str:
    """The UTC day of the recorded calls (read back, so a test run across midnight holds)."""
    async with api.app.state.sessionmaker() as session:
        days = {r.created_at.astimezone(UTC).date().isoformat() for r in await _rows(session)}
    assert len(days) == 1
    return days.pop()


async def _rows(session: Any) -> list[UsageRecord]:
    return list((await session.execute(select(UsageRecord))).scalars())


async def _metered_dev(
    api: Api, openrouter: FakeOpenRouter
) -> tuple[Dev, dict[str, Any], dict[str, Any]]:
    """A developer with two running agents: three priced calls and one failed call."""
    dev = await new_dev(api)
    shop = await _running_agent(dev, "Shop")
    desk = await _running_agent(dev, "Desk")
    openrouter.reply("a", prompt_tokens=100, completion_tokens=10, cost=Decimal("0.000123"))
    assert await _say(dev, shop["id"], "one") == 200
    openrouter.reply(
        "b",
        prompt_tokens=200,
        completion_tokens=20,
        cached_tokens=50,
        reasoning_tokens=5,
        cost=Decimal("0.0000015"),
        model=OTHER_MODEL,
    )
    assert await _say(dev, shop["id"], "two") == 200
    openrouter.reply("c", prompt_tokens=300, completion_tokens=30, cost=Decimal("0.25"))
    assert await _say(dev, desk["id"], "three") == 200
    openrouter.fail(400, "This model does not support that")
    assert await _say(dev, shop["id"], "four") == 502
    return dev, shop, desk


SHOP = {
    "calls": 3,
    "failed_calls": 1,
    "prompt_tokens": 300,
    "completion_tokens": 30,
    "cached_tokens": 50,
    "reasoning_tokens": 5,
    "cost_usd": "0.000124500",
    "cost_nano_usd": 124_500,
    "unpriced_calls": 0,
}
DESK = {
    "calls": 1,
    "failed_calls": 0,
    "prompt_tokens": 300,
    "completion_tokens": 30,
    "cached_tokens": 0,
    "reasoning_tokens": 0,
    "cost_usd": "0.250000000",
    "cost_nano_usd": 250_000_000,
    "unpriced_calls": 0,
}
ALL = {
    "calls": 4,
    "failed_calls": 1,
    "prompt_tokens": 600,
    "completion_tokens": 60,
    "cached_tokens": 50,
    "reasoning_tokens": 5,
    "cost_usd": "0.250124500",
    "cost_nano_usd": 250_124_500,
    "unpriced_calls": 0,
}


async def test_totals_and_groups_are_exact(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, shop, desk = await _metered_dev(api, openrouter)
    today = await _today(api)

    by_day = await _usage(dev)
    assert by_day["group_by"] == "day" and by_day["agent_id"] is None
    assert _figures(by_day["totals"]) == ALL
    assert [g["key"] for g in by_day["groups"]] == [today]
    assert _figures(by_day["groups"][0]) == ALL
    assert Decimal(by_day["totals"]["cost_usd"]) == Decimal("0.000123") + Decimal(
        "0.0000015"
    ) + Decimal("0.25")
    window = datetime.fromisoformat(by_day["until"]) - datetime.fromisoformat(by_day["since"])
    assert window == timedelta(days=30)

    by_agent = await _usage(dev, group_by="agent")
    assert _figures(by_agent["totals"]) == ALL
    assert [(g["key"], g["name"]) for g in by_agent["groups"]] == [
        (desk["id"], "Desk"),  # the most expensive first
        (shop["id"], "Shop"),
    ]
    assert [_figures(g) for g in by_agent["groups"]] == [DESK, SHOP]

    by_model = await _usage(dev, group_by="model")
    assert _figures(by_model["totals"]) == ALL
    groups = {g["key"]: _figures(g) for g in by_model["groups"]}
    assert set(groups) == {MODEL, OTHER_MODEL}
    assert groups[OTHER_MODEL] == {
        **ZERO,
        "calls": 1,
        "prompt_tokens": 200,
        "completion_tokens": 20,
        "cached_tokens": 50,
        "reasoning_tokens": 5,
        "cost_usd": "0.000001500",
        "cost_nano_usd": 1500,
    }
    # The failed call has no answering model: it counts under the requested one, at no cost.
    assert groups[MODEL]["failed_calls"] == 1 and groups[MODEL]["calls"] == 3
    assert groups[MODEL]["cost_nano_usd"] == 250_123_000
    assert all(g["name"] is None for g in by_model["groups"])


async def test_the_agent_filter_keeps_one_agents_calls(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, shop, desk = await _metered_dev(api, openrouter)
    only_desk = await _usage(dev, agent_id=desk["id"], group_by="agent")
    assert only_desk["agent_id"] == desk["id"]
    assert _figures(only_desk["totals"]) == DESK
    assert [g["key"] for g in only_desk["groups"]] == [desk["id"]]
    only_shop = await _usage(dev, agent_id=shop["id"])
    assert _figures(only_shop["totals"]) == SHOP


async def test_another_tenants_usage_never_appears(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, shop, _ = await _metered_dev(api, openrouter)
    other = await new_dev(api)
    theirs = await _running_agent(other, "Theirs")
    openrouter.reply("x", prompt_tokens=7, completion_tokens=3, cost=Decimal("1"))
    assert await _say(other, theirs["id"], "hi") == 200

    for group_by in ("day", "model", "agent"):
        mine = await _usage(dev, group_by=group_by)
        assert _figures(mine["totals"]) == ALL
        assert theirs["id"] not in {g["key"] for g in mine["groups"]}
    their_view = await _usage(other, group_by="agent")
    assert [g["key"] for g in their_view["groups"]] == [theirs["id"]]
    assert their_view["totals"]["cost_usd"] == "1.000000000"
    assert their_view["totals"]["prompt_tokens"] == 7

    for agent_id in (theirs["id"], new_id(), "not-a-uuid"):
        response = await dev.http.get("/api/v1/usage", params={"agent_id": agent_id})
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
    response = await other.http.get("/api/v1/usage", params={"agent_id": shop["id"]})
    assert response.status_code == 404 and response.json() == NOT_FOUND


async def test_a_new_account_has_zero_usage(api: Api) -> None:
    dev = await new_dev(api)
    body = await _usage(dev)
    assert body["totals"] == ZERO and body["groups"] == []


async def _insert(api: Api, dev: Dev, agent_id: str, rows: list[dict[str, Any]]) -> None:
    async with api.app.state.sessionmaker() as session:
        for row in rows:
            session.add(
                UsageRecord(
                    **{
                        "owner_id": dev.id,
                        "agent_id": agent_id,
                        "requested_model": MODEL,
                        "answered_model": MODEL,
                        "outcome": "ok",
                        **row,
                    }
                )
            )
        await session.commit()


async def test_days_are_utc_and_the_range_is_half_open(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, name="Old")
    at = datetime(2026, 1, 1, 23, 30, tzinfo=UTC)
    await _insert(
        api,
        dev,
        agent["id"],
        [
            {"created_at": at, "prompt_tokens": 1, "cost_nano_usd": 10},
            {"created_at": at + timedelta(hours=1), "prompt_tokens": 2, "cost_nano_usd": 20},
            # Priced by nobody: counted, not charged, and reported as unpriced.
            {"created_at": at + timedelta(hours=2), "prompt_tokens": 4, "cost_nano_usd": None},
            # A failed call whose row carries a cost still charges nothing.
            {
                "created_at": at + timedelta(hours=3),
                "cost_nano_usd": 999,
                "outcome": "error",
                "answered_model": None,
            },
            {"created_at": at + timedelta(days=1), "prompt_tokens": 8, "cost_nano_usd": 40},
        ],
    )
    body = await _usage(dev, since="2026-01-01T00:00:00Z", until="2026-01-02T23:30:00Z")
    assert [(g["key"], g["prompt_tokens"], g["cost_nano_usd"]) for g in body["groups"]] == [
        ("2026-01-01", 1, 10),
        ("2026-01-02", 6, 20),
    ]
    day2 = body["groups"][1]
    assert (day2["calls"], day2["failed_calls"], day2["unpriced_calls"]) == (3, 1, 1)
    assert body["totals"]["cost_usd"] == "0.000000030"
    assert body["totals"]["calls"] == 4  # `until` is exclusive: the 23:30 call is out

    # An offset is honoured: 2026-01-02T01:00+02:00 is 2026-01-01T23:00Z.
    narrow = await _usage(dev, since="2026-01-02T01:00:00+02:00", until="2026-01-02T00:00:00Z")
    assert narrow["totals"]["calls"] == 1 and narrow["totals"]["prompt_tokens"] == 1
    # A time without an offset is UTC.
    naive = await _usage(dev, since="2026-01-02T00:00:00", until="2026-01-03T00:00:00")
    assert naive["totals"]["calls"] == 4


async def test_the_default_window_is_the_last_30_days(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, name="Recent")
    now = datetime.now(UTC)
    await _insert(
        api,
        dev,
        agent["id"],
        [
            {"created_at": now - timedelta(days=31), "prompt_tokens": 1, "cost_nano_usd": 1},
            {"created_at": now - timedelta(days=29), "prompt_tokens": 2, "cost_nano_usd": 2},
            {"created_at": now - timedelta(hours=1), "prompt_tokens": 4, "cost_nano_usd": 4},
        ],
    )
    body = await _usage(dev)
    assert body["totals"]["calls"] == 2 and body["totals"]["prompt_tokens"] == 6
    assert body["totals"]["cost_usd"] == "0.000000006"
    since_given = await _usage(dev, since=(now - timedelta(days=32)).isoformat())
    assert since_given["totals"]["prompt_tokens"] == 7


async def test_bad_ranges_and_parameters_are_422(api: Api) -> None:
    dev = await new_dev(api)
    cases: list[tuple[dict[str, str], str]] = [
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"since": "2025-01-01T00:00:00Z", "until": "2026-01-03T00:00:00Z"}, "since"),
        ({"since": "yesterday"}, "since"),
        ({"until": "0001-01-01T00:00:00Z"}, "since"),
        ({"group_by": "week"}, "group_by"),
    ]
    for params, field in cases:
        response = await dev.http.get("/api/v1/usage", params=params)
        assert response.status_code == 422, (params, response.text)
        body = response.json()
        assert body["error"] == "Validation failed"
        assert [d["field"] for d in body["details"]] == [field], params
    exactly_max = {"since": "2025-01-01T00:00:00Z", "until": "2026-01-02T00:00:00Z"}
    assert (await dev.http.get("/api/v1/usage", params=exactly_max)).status_code == 200


async def test_the_endpoint_needs_the_agents_read_scope(api: Api) -> None:
    tools_only = await new_dev(api, scopes=["tools:read"])
    response = await tools_only.http.get("/api/v1/usage")
    assert response.status_code == 403
    assert response.json() == {
        "error": "Forbidden",
        "message": "API key missing required scope: agents:read",
    }
    reader = await new_dev(api, scopes=["agents:read"])
    assert (await reader.http.get("/api/v1/usage")).status_code == 200
    anonymous = api.new_client()
    assert (await anonymous.get("/api/v1/usage")).status_code == 401


async def test_a_signed_in_browser_can_read_usage(api: Api) -> None:
    person = await api.sign_up()
    response = await person.client.get("/api/v1/usage", params={"group_by": "agent"})
    assert response.status_code == 200
    assert response.json()["totals"] == ZERO
