"""`GET /api/v1/agents/{id}/tools` and `PATCH /api/v1/agents/{id}/tools/{name}`."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from lunogen.tool.registry import registry
from tests.agent.support import Dev, create_agent, new_dev, raw_rows
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)
from tests.helpers import Api

AGENT_NOT_FOUND = {"error": "Agent not found"}


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    return openrouter_settings(openrouter)


def _forbidden(scope: str) -> dict[str, str]:
    return {"error": "Forbidden", "message": f"API key missing required scope: {scope}"}


async def _client(api: Api, dev: Dev, scopes: list[str]) -> httpx.AsyncClient:
    return api.key_client(await api.create_key(dev.person, scopes))


async def _toggle(http: httpx.AsyncClient, agent_id: str, name: str, enabled: Any) -> Any:
    return await http.patch(f"/api/v1/agents/{agent_id}/tools/{name}", json={"enabled": enabled})


async def test_lists_every_registry_tool_with_its_state(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["web_fetch"])
    reader = await _client(api, dev, ["tools:read"])
    response = await reader.get(f"/api/v1/agents/{agent['id']}/tools")
    assert response.status_code == 200
    tools = response.json()["data"]
    assert [t["name"] for t in tools] == registry.names()
    assert {"remember", "recall", "forget", "current_time", "web_fetch"} <= set(registry.names())
    assert {t["name"]: t["enabled"] for t in tools if t["enabled"]} == {"web_fetch": True}
    remember = next(t for t in tools if t["name"] == "remember")
    assert remember["parameters"]["required"] == ["note"]
    assert remember["parameters"]["properties"]["about"]["enum"] == ["contact", "agent"]
    assert remember["description"]


async def test_toggling_a_tool_updates_the_agent_and_is_audited(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["current_time"])
    aid = agent["id"]
    writer = await _client(api, dev, ["tools:write"])

    enabled = await _toggle(writer, aid, "remember", True)
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["name"] == "remember" and enabled.json()["enabled"] is True
    assert (await dev.http.get(f"/api/v1/agents/{aid}")).json()["tools"] == [
        "current_time",
        "remember",
    ]
    repeat = await _toggle(writer, aid, "remember", True)
    assert repeat.json()["enabled"] is True
    disabled = await _toggle(writer, aid, "current_time", False)
    assert disabled.json() | {"parameters": None} == {
        "name": "current_time",
        "description": registry.get("current_time").description,  # type: ignore[union-attr]
        "parameters": None,
        "enabled": False,
    }
    assert (await dev.http.get(f"/api/v1/agents/{aid}")).json()["tools"] == ["remember"]
    again = await _toggle(writer, aid, "current_time", False)
    assert again.status_code == 200 and again.json()["enabled"] is False

    rows = await raw_rows(
        api,
        "select details, actor_user_id from audit_events where action = 'agent.tool_toggled' "
        "and target_id = :aid order by created_at",
        aid=aid,
    )
    details = [
        r["details"] if isinstance(r["details"], dict) else json.loads(r["details"]) for r in rows
    ]
    # Only real changes are recorded; repeats are no-ops.
    assert details == [
        {"tool": "remember", "enabled": True},
        {"tool": "current_time", "enabled": False},
    ]
    assert {r["actor_user_id"] for r in rows} == {dev.id}


async def test_unknown_tools_bad_bodies_and_scopes_are_refused(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=[])
    aid = agent["id"]
    unknown = await _toggle(dev.http, aid, "launch_rockets", True)
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Tool not found"})
    for body in ({"enabled": "maybe"}, {}, {"enabled": True, "extra": 1}):
        bad = await dev.http.patch(f"/api/v1/agents/{aid}/tools/remember", json=body)
        assert bad.status_code == 422, body

    agents_only = await _client(api, dev, ["agents:read", "agents:write"])
    listed = await agents_only.get(f"/api/v1/agents/{aid}/tools")
    assert (listed.status_code, listed.json()) == (403, _forbidden("tools:read"))
    reader = await _client(api, dev, ["tools:read"])
    patched = await _toggle(reader, aid, "remember", True)
    assert (patched.status_code, patched.json()) == (403, _forbidden("tools:write"))
    assert (await dev.http.get(f"/api/v1/agents/{aid}")).json()["tools"] == []


async def test_another_tenants_agent_is_not_found(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["current_time"])
    other = await new_dev(api)
    listed = await other.http.get(f"/api/v1/agents/{agent['id']}/tools")
    assert (listed.status_code, listed.json()) == (404, AGENT_NOT_FOUND)
    for name in ("remember", "launch_rockets"):
        patched = await _toggle(other.http, agent["id"], name, True)
        assert (patched.status_code, patched.json()) == (404, AGENT_NOT_FOUND)
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}")).json()["tools"] == ["current_time"]
    missing = await dev.http.get("/api/v1/agents/not-a-uuid/tools")
    assert (missing.status_code, missing.json()) == (404, AGENT_NOT_FOUND)
    deleted = await dev.http.delete(f"/api/v1/agents/{agent['id']}")
    assert deleted.status_code in (200, 204)
    gone = await _toggle(dev.http, agent["id"], "remember", True)
    assert (gone.status_code, gone.json()) == (404, AGENT_NOT_FOUND)


async def test_toggling_changes_what_the_model_is_offered(
    api: Api,
    openrouter: FakeOpenRouter,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["current_time"])
    aid = agent["id"]
    assert (await dev.http.post(f"/api/v1/agents/{aid}/deploy")).status_code == 200

    async def offered() -> list[str] | None:
        openrouter.reply("ok")
        response = await dev.http.post(f"/api/v1/agents/{aid}/messages", json={"text": "hi"})
        assert response.json()["status"] == "answered", response.text
        tools = openrouter.last_chat.body.get("tools")
        return None if tools is None else [t["function"]["name"] for t in tools]

    async def toggle_and_deploy(name: str, enabled: bool) -> None:
        """A toggle is a new version of the agent; the running agent serves it once deployed."""
        assert (await _toggle(dev.http, aid, name, enabled)).status_code == 200
        latest = (await dev.http.get(f"/api/v1/agents/{aid}")).json()["latest_version"]
        deployed = await dev.http.post(f"/api/v1/agents/{aid}/versions/{latest}/deploy")
        assert deployed.status_code == 200, deployed.text

    assert await offered() == ["current_time"]
    assert (await _toggle(dev.http, aid, "remember", True)).status_code == 200
    assert await offered() == ["current_time"]  # not deployed yet
    deployed = await dev.http.post(f"/api/v1/agents/{aid}/versions/2/deploy")
    assert deployed.status_code == 200, deployed.text
    assert await offered() == ["current_time", "remember"]
    await toggle_and_deploy("current_time", False)
    assert await offered() == ["remember"]
    await toggle_and_deploy("remember", False)
    assert await offered() is None
