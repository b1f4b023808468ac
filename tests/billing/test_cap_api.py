"""The spend caps API: set and read an agent's caps and the account's monthly cap."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from lunogen.billing.models_caps import SpendCap
from tests.agent.support import NOT_FOUND, create_agent, new_dev
from tests.helpers import Api


async def test_agent_caps_round_trip(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    url = f"/api/v1/agents/{agent['id']}/caps"
    empty = (await dev.http.get(url)).json()
    assert empty["daily_credits"] is None and empty["turn_tokens"] is None
    assert empty["today"]["spent"] == "0" and empty["today"]["cap"] is None
    assert empty["today"]["percent"] is None
    body = {
        "daily_credits": "2.5",
        "monthly_credits": 40,
        "turn_credits": "0.000001",
        "turn_tokens": 20000,
        "reply_text": "  We are over budget today.  ",
    }
    response = await dev.http.put(url, json=body)
    assert response.status_code == 200, response.text
    saved = response.json()
    assert saved["daily_credits"] == "2.5" and saved["monthly_credits"] == "40"
    assert saved["turn_credits"] == "0.000001" and saved["turn_tokens"] == 20000
    assert saved["reply_text"] == saved["effective_reply_text"] == "We are over budget today."
    assert saved["today"]["cap"] == "2.5" and saved["today"]["percent"] == 0
    assert (await dev.http.get(url)).json() == saved
    async with api.app.state.sessionmaker() as session:
        row = await session.get(SpendCap, agent["id"])
        assert row is not None and row.daily_micro == 2_500_000 and row.turn_micro == 1
        audit = await session.execute(
            select(AuditEvent).where(AuditEvent.action == "caps.agent_set")
        )
        assert audit.scalar_one().target_id == agent["id"]
    cleared = (await dev.http.put(url, json={})).json()  # every cap off, default reply
    assert cleared["daily_credits"] is None and cleared["reply_text"] is None
    async with api.app.state.sessionmaker() as session:
        assert await session.get(SpendCap, agent["id"]) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"daily_credits": "-1"}, "daily_credits"),
        ({"monthly_credits": "0.0000001"}, "monthly_credits"),
        ({"turn_credits": "NaN"}, "turn_credits"),
        ({"daily_credits": "1000000001"}, "daily_credits"),
        ({"daily_credits": "lots"}, "daily_credits"),
        ({"turn_tokens": 0}, "turn_tokens"),
        ({"turn_tokens": 1.5}, "turn_tokens"),
        ({"reply_text": "   "}, "reply_text"),
        ({"reply_text": "x" * 1001}, "reply_text"),
        ({"weekly_credits": "1"}, "weekly_credits"),
    ],
)
async def test_bad_agent_caps_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    response = await dev.http.put(f"/api/v1/agents/{agent['id']}/caps", json=body)
    assert response.status_code == 422, response.text
    assert field in response.text
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}/caps")).json()[
        "daily_credits"
    ] is None


async def test_another_owners_agent_is_404_and_unchanged(api: Api) -> None:
    owner, stranger = await new_dev(api), await new_dev(api)
    agent = await create_agent(owner)
    url = f"/api/v1/agents/{agent['id']}/caps"
    for response in (
        await stranger.http.get(url),
        await stranger.http.put(url, json={"daily_credits": "1"}),
        await owner.http.get("/api/v1/agents/not-an-id/caps"),
    ):
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert (await owner.http.get(url)).json()["daily_credits"] is None


async def test_scopes(api: Api) -> None:
    owner = await new_dev(api)
    agent = await create_agent(owner)
    url = f"/api/v1/agents/{agent['id']}/caps"
    reader = api.key_client(await api.create_key(owner.person, ["agents:read"]))
    logs = api.key_client(await api.create_key(owner.person, ["logs:read"]))
    writer = api.key_client(await api.create_key(owner.person, ["agents:write"]))
    assert (await reader.get(url)).status_code == 200
    assert (await reader.put(url, json={"daily_credits": "1"})).status_code == 403
    assert (await logs.get(url)).status_code == 403
    assert (await writer.put(url, json={"daily_credits": "1"})).status_code == 200
    # the account's cap: any key reads it, only `full` sets it
    assert (await logs.get("/api/v1/billing/cap")).status_code == 200
    denied = await writer.put("/api/v1/billing/cap", json={"monthly_credits": "5"})
    assert denied.status_code == 403
    assert (await owner.http.get("/api/v1/billing/cap")).json()["monthly_credits"] is None


async def test_account_cap_round_trip_and_bad_values(api: Api) -> None:
    dev, other = await new_dev(api), await new_dev(api)
    response = await dev.http.put("/api/v1/billing/cap", json={"monthly_credits": "12.5"})
    assert response.status_code == 200, response.text
    assert response.json()["monthly_credits"] == "12.5"
    assert response.json()["this_month"]["cap"] == "12.5"
    assert (await other.http.get("/api/v1/billing/cap")).json()["monthly_credits"] is None
    for bad in ({"monthly_credits": "-3"}, {"monthly_credits": "1.1234567"}, {"daily": 1}):
        refused = await dev.http.put("/api/v1/billing/cap", json=bad)
        assert refused.status_code == 422, refused.text
    assert (await dev.http.get("/api/v1/billing/cap")).json()["monthly_credits"] == "12.5"
    cleared = await dev.http.put("/api/v1/billing/cap", json={"monthly_credits": None})
    assert cleared.json()["monthly_credits"] is None
