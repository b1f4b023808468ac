"""The agent file carries an agent's spend caps and over-cap reply, both ways."""

from __future__ import annotations

import json

from tests.agent.support import create_agent, new_dev
from tests.helpers import Api


async def test_caps_travel_in_the_agent_file(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    exported = (await dev.http.get(f"/api/v1/agents/{agent['id']}/export")).json()
    assert "caps" not in exported  # no caps: nothing in the file
    caps = {
        "daily_credits": "1.5",
        "monthly_credits": "20",
        "turn_tokens": 9000,
        "reply_text": "Out of budget for today.",
    }
    assert (await dev.http.put(f"/api/v1/agents/{agent['id']}/caps", json=caps)).status_code == 200
    exported = (await dev.http.get(f"/api/v1/agents/{agent['id']}/export")).json()
    assert exported["caps"] == caps
    response = await dev.http.post(
        "/api/v1/agents/import",
        content=json.dumps(exported),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    copy_id = response.json()["agent"]["id"]
    copied = (await dev.http.get(f"/api/v1/agents/{copy_id}/caps")).json()
    assert copied["daily_credits"] == "1.5" and copied["monthly_credits"] == "20"
    assert copied["turn_credits"] is None and copied["turn_tokens"] == 9000
    assert copied["reply_text"] == "Out of budget for today."
    again = (await dev.http.get(f"/api/v1/agents/{copy_id}/export")).json()
    assert again["caps"] == caps


async def test_bad_caps_in_a_file_are_named_and_nothing_is_created(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    exported = (await dev.http.get(f"/api/v1/agents/{agent['id']}/export")).json()
    exported["caps"] = {"daily_credits": "-2", "turn_tokens": 0}
    response = await dev.http.post(
        "/api/v1/agents/import",
        content=json.dumps(exported),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    fields = {item["field"] for item in response.json()["details"]}
    assert {"caps.daily_credits", "caps.turn_tokens"} <= fields
    listed = (await dev.http.get("/api/v1/agents")).json()
    assert listed["total"] == 1
