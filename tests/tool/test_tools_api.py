from __future__ import annotations

from tests.agent.support import create_agent, new_dev
from tests.helpers import Api


async def test_tools_endpoint_lists_web_fetch_with_its_schema(api: Api) -> None:
    dev = await new_dev(api, scopes=["tools:read"])
    response = await dev.http.get("/api/v1/tools")
    assert response.status_code == 200
    tools = {tool["name"]: tool for tool in response.json()["data"]}
    assert {"current_time", "web_fetch"} <= set(tools)
    parameters = tools["web_fetch"]["parameters"]
    assert parameters["required"] == ["url"]
    assert set(parameters["properties"]) == {"url", "max_chars"}
    assert "Private" in tools["web_fetch"]["description"]


async def test_tools_endpoint_needs_the_tools_read_scope(api: Api) -> None:
    dev = await new_dev(api, scopes=["agents:read"])
    response = await dev.http.get("/api/v1/tools")
    assert response.status_code == 403


async def test_agents_can_enable_web_fetch(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["web_fetch", "current_time"])
    assert agent["tools"] == ["web_fetch", "current_time"]
    unknown = await dev.http.post(
        "/api/v1/agents",
        json={
            "name": "x",
            "model": "openai/gpt-4o-mini",
            "instructions": "x",
            "tools": ["web_fetchh"],
        },
    )
    assert unknown.status_code == 422
    assert "web_fetchh" in unknown.text
