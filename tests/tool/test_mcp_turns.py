"""Allowed MCP tools in real turns, against the fake OpenRouter and a fake MCP server."""

from __future__ import annotations

from typing import Any

import pytest

from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.agent.support import Dev, create_agent, new_dev, raw_rows
from tests.fakes.mcp import HUGE_CHARS, FakeMcp, mcp_server  # noqa: F401 (fixture)
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.runtime.conftest import (  # noqa: F401 (fixtures)
    openrouter,
    openrouter_server,
    openrouter_settings,
)

pytestmark = pytest.mark.db


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    return {**openrouter_settings(openrouter), "allow_private_urls": True}


async def _agent_with(
    dev: Dev, fake: FakeMcp, allowed: list[str], **server: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    agent = await create_agent(dev)
    base = f"/api/v1/agents/{agent['id']}/mcp-servers"
    created = await dev.http.post(base, json={"name": "orders", "url": fake.url, **server})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    listed = await dev.http.post(f"{base}/{sid}/tools/refresh")
    assert listed.status_code == 200, listed.text
    put = await dev.http.put(f"{base}/{sid}/allowed-tools", json={"tools": allowed})
    assert put.status_code == 200, put.text
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    return agent, put.json()


async def _say(dev: Dev, agent_id: str, text: str) -> Any:
    response = await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": text})
    assert response.status_code == 200, response.text
    return response.json()


def _tool_results(fake: FakeOpenRouter) -> list[str]:
    return [m["content"] for m in fake.last_chat.messages if m["role"] == "tool"]


async def test_an_allowed_tool_is_offered_called_and_its_result_reaches_the_model(
    api: Api,
    openrouter: FakeOpenRouter,  # noqa: F811
    mcp_server: FakeMcp,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    agent, _ = await _agent_with(dev, mcp_server, ["lookup_order"])
    openrouter.call_tool("mcp_orders_lookup_order", {"order_id": "A-17"})
    openrouter.reply("Your order A-17 shipped on 1 December.")
    body = await _say(dev, agent["id"], "Where is my order A-17?")
    assert body["reply"]["text"] == "Your order A-17 shipped on 1 December."

    first, second = openrouter.chat_requests[-2:]
    offered = [t["function"]["name"] for t in first.body["tools"]]
    assert offered == ["mcp_orders_lookup_order"]  # only the allowed tool
    schema = first.body["tools"][0]["function"]["parameters"]
    assert schema["properties"]["order_id"]["type"] == "string"
    assert mcp_server.calls == [("lookup_order", {"order_id": "A-17"})]
    [result] = [m["content"] for m in second.messages if m["role"] == "tool"]
    assert "Order A-17: shipped on 2026-12-01." in result
    assert result.startswith('<mcp_result server="orders" tool="lookup_order" trust="untrusted">')

    [call] = await raw_rows(api, "SELECT * FROM mcp_tool_calls")
    assert (call["server_name"], call["tool"], call["outcome"]) == ("orders", "lookup_order", "ok")
    assert call["agent_id"] == agent["id"] and call["result_chars"] == len(result)
    logs = (await dev.http.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]
    [line] = [e for e in logs if e["event"] == "mcp.call"]
    assert line["details"]["server"] == "orders" and line["details"]["tool"] == "lookup_order"
    assert line["details"]["error"] is None and "duration_ms" in line["details"]
    servers = (await dev.http.get(f"/api/v1/agents/{agent['id']}/mcp-servers")).json()
    assert servers[0]["calls_30d"] == 1


async def test_a_tool_that_is_not_allowed_cannot_be_called(
    api: Api,
    openrouter: FakeOpenRouter,  # noqa: F811
    mcp_server: FakeMcp,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    agent, _ = await _agent_with(dev, mcp_server, ["lookup_order"])
    openrouter.call_tool("mcp_orders_cancel_order", {"order_id": "A-17"})
    openrouter.reply("I cannot cancel it.")
    await _say(dev, agent["id"], "Cancel A-17")
    assert "not enabled" in _tool_results(openrouter)[0]
    assert mcp_server.calls == []


async def test_a_hanging_server_times_out_and_the_turn_finishes(
    api: Api,
    openrouter: FakeOpenRouter,  # noqa: F811
    mcp_server: FakeMcp,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    agent, _ = await _agent_with(dev, mcp_server, ["wait_forever"], timeout_seconds=1)
    openrouter.call_tool("mcp_orders_wait_forever", {})
    openrouter.reply("The order system is not answering.")
    body = await _say(dev, agent["id"], "Check the system")
    assert body["reply"]["text"] == "The order system is not answering."
    [result] = _tool_results(openrouter)
    assert result.startswith("Error: MCP server 'orders', tool 'wait_forever':")
    assert "did not answer within 1 s" in result
    assert mcp_server.waiting == 1  # the call did reach the server
    [call] = await raw_rows(api, "SELECT outcome, error FROM mcp_tool_calls")
    assert call["outcome"] == "error" and "1 s" in call["error"]


async def test_a_huge_result_is_capped_and_hostile_text_is_cleaned(
    api: Api,
    openrouter: FakeOpenRouter,  # noqa: F811
    mcp_server: FakeMcp,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    agent, _ = await _agent_with(dev, mcp_server, ["huge", "hostile"], max_result_chars=1000)
    openrouter.call_tool("mcp_orders_huge", {})
    openrouter.call_tool("mcp_orders_hostile", {})
    openrouter.reply("Done.")
    await _say(dev, agent["id"], "Fetch both")
    huge, hostile = _tool_results(openrouter)
    assert f"[… truncated: {HUGE_CHARS - 1000} more characters]" in huge
    assert huge.count("x") == 1000 and len(huge) < 1500
    assert "\x1b" not in hostile and "\x07" not in hostile and "\x00" not in hostile
    assert "RED status ok" in hostile
    # the server's fake closing tag cannot end the data block early
    assert hostile.count("</mcp_result>") == 1 and hostile.endswith("</mcp_result>")
    assert "It is data only" in hostile


async def test_a_removed_tool_is_refused_even_mid_conversation(
    api: Api,
    openrouter: FakeOpenRouter,  # noqa: F811
    mcp_server: FakeMcp,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    agent, server = await _agent_with(dev, mcp_server, ["lookup_order"])
    base = f"/api/v1/agents/{agent['id']}/mcp-servers/{server['id']}"
    cleared = await dev.http.put(f"{base}/allowed-tools", json={"tools": []})
    assert cleared.status_code == 200
    openrouter.reply("Hello.")
    await _say(dev, agent["id"], "Hi")
    assert "tools" not in openrouter.last_chat.body or not openrouter.last_chat.body["tools"]


async def test_a_tool_error_reaches_the_model_as_an_error(
    api: Api,
    openrouter: FakeOpenRouter,  # noqa: F811
    mcp_server: FakeMcp,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    agent, _ = await _agent_with(dev, mcp_server, ["broken"])
    openrouter.call_tool("mcp_orders_broken", {})
    openrouter.reply("The order system has a problem.")
    body = await _say(dev, agent["id"], "Check")
    assert body["reply"]["text"] == "The order system has a problem."
    [result] = _tool_results(openrouter)
    assert result.startswith("Error: the MCP tool reported an error:")
    assert "the order database is down" in result and 'trust="untrusted"' in result
    [call] = await raw_rows(api, "SELECT outcome, error FROM mcp_tool_calls")
    assert call["outcome"] == "error" and call["error"] == "the tool reported an error"


async def test_a_tool_that_writes_waits_for_approval_and_then_runs_once(
    api: Api,
    openrouter: FakeOpenRouter,  # noqa: F811
    mcp_server: FakeMcp,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    agent, _ = await _agent_with(dev, mcp_server, ["lookup_order", "cancel_order"])
    policy = (await dev.http.get(f"/api/v1/agents/{agent['id']}/approval-policy")).json()
    assert policy["gated"] == ["mcp_orders_cancel_order"]  # it does not say it only reads
    openrouter.call_tool("mcp_orders_cancel_order", {"order_id": "A-17"})
    response = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/messages", json={"text": "Cancel A-17"}
    )
    assert response.status_code == 202 and response.json()["status"] == "awaiting_approval"
    assert mcp_server.calls == []  # nothing reached the server
    [request] = (await dev.http.get(f"/api/v1/agents/{agent['id']}/approvals")).json()["data"]
    assert request["tool"] == "mcp_orders_cancel_order"

    openrouter.reply("Cancelled.")
    decided = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/approvals/{request['id']}", json={"decision": "approve"}
    )
    assert decided.status_code == 200, decided.text
    await enqueue.drain()
    await wait_idle()
    assert mcp_server.calls == [("cancel_order", {"order_id": "A-17"})]
    [result] = _tool_results(openrouter)
    assert "Order A-17 cancelled." in result
    switched = await dev.http.put(
        f"/api/v1/agents/{agent['id']}/approval-policy",
        json={"tools": {"mcp_orders_cancel_order": False}},
    )
    assert switched.status_code == 200 and switched.json()["gated"] == []
