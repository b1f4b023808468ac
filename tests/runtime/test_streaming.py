"""Replies streamed as server-sent events on the API channel: `delta`, `tool`, `done`, `error`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import func, select

from lunogen.llm.models import UsageRecord
from lunogen.runtime.models import Message
from tests.agent.support import Dev, create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api, sse_events


async def _running_agent(api: Api, **overrides: Any) -> tuple[Dev, str]:
    dev = await new_dev(api)
    agent = await create_agent(dev, **overrides)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    return dev, agent["id"]


async def _stream(dev: Dev, agent_id: str, text: str, **extra: Any) -> httpx.Response:
    return await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages", json={"text": text, "stream": True, **extra}
    )


async def test_a_reply_streams_over_real_http_as_it_is_written(
    live_server: str, api_for_live: tuple[httpx.AsyncClient, str], openrouter: FakeOpenRouter
) -> None:
    client, agent_id = api_for_live
    assert (await client.post(f"/api/v1/agents/{agent_id}/deploy")).status_code == 200
    openrouter.reply("One two three four")
    chunks: list[str] = []
    async with client.stream(
        "POST",
        f"/api/v1/agents/{agent_id}/messages",
        json={"text": "Count"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        async for chunk in response.aiter_text():
            chunks.append(chunk)
    events = sse_events("".join(chunks))
    names = [name for name, _ in events]
    assert names == ["delta"] * 4 + ["done"]
    assert [data["text"] for _, data in events[:4]] == ["One ", "two ", "three ", "four"]
    done = events[-1][1]
    assert done["text"] == "One two three four"
    assert done["reply_id"] and done["thread_id"] and done["message_id"]
    assert openrouter.last_chat.body["stream"] is True
    assert openrouter.last_chat.body["stream_options"] == {"include_usage": True}
    # The streamed reply is stored like any other, and metered once.
    messages = await client.get(f"/api/v1/agents/{agent_id}/threads/{done['thread_id']}/messages")
    assert [m["text"] for m in messages.json()["data"]] == ["Count", "One two three four"]


async def test_tool_calls_show_as_tool_events(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent_id = await _running_agent(api, tools=["current_time"])
    openrouter.call_tool("current_time", {"timezone": "UTC"})
    openrouter.call_tool("no_such_tool")
    openrouter.reply("Done now")
    response = await _stream(dev, agent_id, "What time is it?")
    events = sse_events(response.text)
    tools = [(data["name"], data["status"]) for name, data in events if name == "tool"]
    assert tools == [
        ("current_time", "started"),
        ("current_time", "ok"),
        ("no_such_tool", "started"),
        ("no_such_tool", "failed"),
    ]
    assert "".join(d["text"] for name, d in events if name == "delta") == "Done now"
    assert events[-1][0] == "done"
    async with api.app.state.sessionmaker() as session:
        usage = await session.execute(select(func.count()).select_from(UsageRecord))
        assert usage.scalar_one() == 3


async def test_a_stream_broken_by_the_provider_ends_with_a_retry_notice(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    openrouter.break_stream("Half an ans")
    response = await _stream(dev, agent_id, "Hello")
    events = sse_events(response.text)
    assert events[0] == ("delta", {"text": "Half an ans", "thread_id": events[0][1]["thread_id"]})
    name, data = events[-1]
    assert name == "error" and data["retrying"] is True and data["retry_at"]
    async with api.app.state.sessionmaker() as session:
        message = await session.get(Message, data["message_id"])
        assert message is not None
        assert (message.status, message.attempts) == ("pending", 1)
        replies = await session.execute(
            select(func.count()).where(Message.reply_to_id == message.id)
        )
        assert replies.scalar_one() == 0  # the partial text is not a reply


async def test_a_failed_turn_ends_the_stream_with_an_error(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    openrouter.fail(400, "This model does not support that")
    events = sse_events((await _stream(dev, agent_id, "Hello")).text)
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["retrying"] is False
    assert "does not support" in events[0][1]["error"]


async def test_a_slow_reply_ends_the_stream_at_wait_seconds(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id = await _running_agent(api)
    openrouter.stall(5)
    events = sse_events((await _stream(dev, agent_id, "Hello", wait_seconds=0.3)).text)
    assert [name for name, _ in events] == ["error"]
    assert events[0][1]["retrying"] is True
    assert "not ready" in events[0][1]["error"]
    openrouter.reset()  # releases the stalled call


async def test_refusals_stay_plain_json(api: Api) -> None:
    dev = await new_dev(api)
    draft = await create_agent(dev)
    response = await _stream(dev, draft["id"], "Hello?")
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["status"] == "draft"
    other = await new_dev(api)
    stranger = await _stream(other, draft["id"], "Hello?")
    assert (stranger.status_code, stranger.json()) == (404, {"error": "Agent not found"})


async def test_a_turn_waiting_for_the_model_blocks_no_other_writer(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """On SQLite a transaction holds the database's only write lock: a turn must not keep one
    open while the model thinks, or every other request that writes would wait for it."""
    dev, agent_id = await _running_agent(api)
    openrouter.stall(30)
    sent = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages", json={"text": "Think hard", "wait_seconds": 0}
    )
    assert sent.status_code == 202
    for _ in range(200):
        if openrouter.chat_requests:
            break
        await asyncio.sleep(0.02)
    assert openrouter.chat_requests, "the turn never called the model"
    # While the model call hangs, other requests write (agents, another conversation).
    created = await asyncio.wait_for(create_agent(dev, name="Second"), timeout=10)
    assert created["name"] == "Second"
    renamed = await asyncio.wait_for(
        dev.http.patch(f"/api/v1/agents/{agent_id}", json={"instructions": "Be brief."}),
        timeout=10,
    )
    assert renamed.status_code == 200, renamed.text
    async with api.app.state.sessionmaker() as session:
        message = await session.get(Message, sent.json()["message"]["id"])
        assert message is not None and message.status == "pending"  # still thinking
    openrouter.reset()
