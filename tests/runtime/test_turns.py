"""Whole turns through the API channel against the fake OpenRouter."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from sqlalchemy import func, select

from lunogen.llm.models import UsageRecord
from lunogen.runtime.models import Message
from tests.agent.support import Dev, create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api


async def _running_agent(api: Api, **overrides: Any) -> tuple[Dev, dict[str, Any]]:
    dev = await new_dev(api)
    agent = await create_agent(dev, **overrides)
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    return dev, agent


async def _say(dev: Dev, agent_id: str, text: str, **extra: Any) -> Any:
    return await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": text, **extra})


async def _usage(api: Api) -> list[UsageRecord]:
    async with api.app.state.sessionmaker() as session:
        return list((await session.execute(select(UsageRecord))).scalars())


async def test_a_message_gets_the_models_reply_and_is_metered(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api, instructions="You sell bikes.")
    openrouter.reply("Hello! Which bike?", prompt_tokens=120, completion_tokens=8)
    response = await _say(dev, agent["id"], "Hi there")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "answered"
    assert body["reply"]["text"] == "Hello! Which bike?"
    assert body["message"]["text"] == "Hi there"

    sent = openrouter.last_chat
    assert sent.body["model"] == "openai/gpt-4o-mini"
    assert sent.messages[0]["role"] == "system"
    assert sent.messages[0]["content"].startswith("You sell bikes.")
    assert "Current date and time" in sent.messages[0]["content"]
    assert sent.messages[-1] == {"role": "user", "content": "Hi there"}
    assert sent.body["provider"]["data_collection"] == "deny"

    [usage] = await _usage(api)
    assert (usage.prompt_tokens, usage.completion_tokens) == (120, 8)
    assert usage.outcome == "ok" and usage.agent_id == agent["id"]
    assert usage.cost_nano_usd is not None and usage.cost_nano_usd > 0
    assert usage.generation_id

    events = [
        e["event"]
        for e in (await dev.http.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]
    ]
    assert events[-3:] == ["inbound", "model.call", "reply"]


async def test_the_conversation_is_remembered_per_contact(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api)
    openrouter.reply("Nice to meet you, Ada.")
    await _say(dev, agent["id"], "I am Ada", contact="ada")
    openrouter.reply("You are Ada.")
    await _say(dev, agent["id"], "Who am I?", contact="ada")
    history = openrouter.last_chat.messages[1:]
    assert history == [
        {"role": "user", "content": "I am Ada"},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "Who am I?"},
    ]
    openrouter.reply("I don't know you yet.")
    await _say(dev, agent["id"], "Who am I?", contact="bob")
    assert openrouter.last_chat.messages[1:] == [{"role": "user", "content": "Who am I?"}]

    threads = (await dev.http.get(f"/api/v1/agents/{agent['id']}/threads")).json()
    assert threads["total"] == 2
    ada = next(t for t in threads["data"] if t["contact"] == "ada")
    assert ada["messages"] == 4
    messages = (
        await dev.http.get(f"/api/v1/agents/{agent['id']}/threads/{ada['id']}/messages")
    ).json()["data"]
    assert [(m["role"], m["text"]) for m in messages] == [
        ("user", "I am Ada"),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "Who am I?"),
        ("assistant", "You are Ada."),
    ]


async def test_a_multi_step_tool_conversation(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent = await _running_agent(api, tools=["current_time"])
    openrouter.call_tool("current_time", {"timezone": "Europe/Paris"})
    openrouter.call_tool("current_time", {"timezone": "Not/AZone"})
    openrouter.reply("It is morning in Paris.")
    response = await _say(dev, agent["id"], "What time is it in Paris?")
    assert response.json()["reply"]["text"] == "It is morning in Paris."

    first, second, third = openrouter.chat_requests
    assert [t["function"]["name"] for t in first.body["tools"]] == ["current_time"]
    # The fake answers tool calls with `content: null`, as OpenAI-compatible servers do; it goes
    # back to the model as it came.
    [asked] = [m for m in second.messages if m["role"] == "assistant"]
    assert asked["content"] is None and asked["tool_calls"][0]["function"]["name"] == (
        "current_time"
    )
    tool_results = [m for m in third.messages if m["role"] == "tool"]
    assert len(tool_results) == 2
    assert "Europe/Paris" in tool_results[0]["content"]
    assert "Unknown time zone" in tool_results[1]["content"]
    assert third.messages[-1]["role"] == "tool"
    assert any(m.get("tool_calls") for m in third.messages if m["role"] == "assistant")
    assert len(await _usage(api)) == 3


async def test_a_failing_or_unknown_tool_still_gets_a_reply(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api, tools=["current_time"])
    openrouter.call_tool("launch_rockets", {"count": 3})
    openrouter.call_tool("current_time", "{not json")
    openrouter.reply("Sorry, I could not do that.")
    response = await _say(dev, agent["id"], "Do things")
    assert response.json()["reply"]["text"] == "Sorry, I could not do that."
    results = [m["content"] for m in openrouter.last_chat.messages if m["role"] == "tool"]
    assert "not enabled" in results[0]
    assert "invalid arguments" in results[1]
    warnings = (
        await dev.http.get(f"/api/v1/agents/{agent['id']}/logs", params={"level": "warning"})
    ).json()["data"]
    assert [e["details"]["tool"] for e in warnings] == ["launch_rockets", "current_time"]


async def test_the_tool_loop_is_bounded(api: Api, openrouter: FakeOpenRouter) -> None:
    from lunogen.runtime.turn import MAX_TOOL_STEPS

    dev, agent = await _running_agent(api, tools=["current_time"])
    for _ in range(MAX_TOOL_STEPS + 5):
        openrouter.call_tool("current_time")
    response = await _say(dev, agent["id"], "Loop forever")
    assert response.status_code == 200
    assert len(openrouter.chat_requests) == MAX_TOOL_STEPS + 1
    assert "tools" not in openrouter.last_chat.body  # the last call must answer


async def test_a_stopped_agent_refuses_messages_with_409(api: Api) -> None:
    dev, agent = await _running_agent(api)
    await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")
    response = await _say(dev, agent["id"], "Anyone there?")
    assert response.status_code == 409
    assert response.json()["status"] == "stopped"
    assert "stopped" in response.json()["message"]
    draft = await create_agent(dev)
    response = await _say(dev, draft["id"], "Hello?")
    assert (response.status_code, response.json()["status"]) == (409, "draft")


async def test_a_model_failure_charges_nothing_and_answers_502(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api)
    openrouter.fail(400, "This model does not support that")
    response = await _say(dev, agent["id"], "Hello")
    assert response.status_code == 502
    assert "does not support" in response.json()["message"]
    [usage] = await _usage(api)
    assert usage.outcome == "error" and usage.cost_nano_usd is None


async def _first_attempt_over(api: Api, message_id: str) -> Message:
    """The message once its first attempt failed (it stays pending for a later retry)."""
    deadline = time.monotonic() + 30
    while True:
        async with api.app.state.sessionmaker() as session:
            message = await session.get(Message, message_id)
            assert message is not None
            if message.attempts:
                return message
        assert time.monotonic() < deadline, "the first attempt never ended"
        await asyncio.sleep(0.02)


async def test_a_retryable_failure_leaves_the_message_pending(
    api: Api, openrouter: FakeOpenRouter, fast_sdk_retries: None
) -> None:
    dev, agent = await _running_agent(api)
    openrouter.fail(503, times=10)
    response = await _say(dev, agent["id"], "Hello", wait_seconds=0)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending" and body["reply"] is None
    message = await _first_attempt_over(api, body["message"]["id"])
    assert message.status == "pending"
    assert message.attempts == 1 and message.next_attempt_at is not None
    assert "503" in (message.last_error or "")
    assert len(openrouter.chat_requests) == 3  # the SDK's two retries, then a later attempt


async def test_messages_of_a_thread_are_answered_in_arrival_order(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api)
    texts = [f"message {n}" for n in range(20)]
    responses = await asyncio.gather(*(_say(dev, agent["id"], t) for t in texts))
    assert all(r.status_code == 200 for r in responses)
    for response in responses:
        body = response.json()
        assert body["reply"]["text"] == body["message"]["text"]  # the fake echoes
    async with api.app.state.sessionmaker() as session:
        inbound = list(
            (
                await session.execute(
                    select(Message).where(Message.role == "user").order_by(Message.seq)
                )
            ).scalars()
        )
        replies = {
            m.reply_to_id: m
            for m in (
                await session.execute(select(Message).where(Message.role == "assistant"))
            ).scalars()
        }
        count = (await session.execute(select(func.count()).select_from(UsageRecord))).scalar()
    assert len(inbound) == 20 and len(replies) == 20 and count == 20
    # Each call saw every earlier exchange: the n-th call carries n earlier user messages.
    seen = [sum(1 for m in r.messages if m["role"] == "user") for r in openrouter.chat_requests]
    assert seen == list(range(1, 21))
    assert [r.completed_at for r in inbound] == sorted(r.completed_at for r in inbound)


async def test_threads_and_messages_of_another_tenant_are_404(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api)
    await _say(dev, agent["id"], "secret plans")
    stranger = await new_dev(api)
    thread_id = (await dev.http.get(f"/api/v1/agents/{agent['id']}/threads")).json()["data"][0][
        "id"
    ]
    for method, path, body in (
        ("POST", f"/api/v1/agents/{agent['id']}/messages", {"text": "hi"}),
        ("GET", f"/api/v1/agents/{agent['id']}/threads", None),
        ("GET", f"/api/v1/agents/{agent['id']}/threads/{thread_id}/messages", None),
    ):
        response = await stranger.http.request(method, path, json=body)
        assert (response.status_code, response.json()) == (404, {"error": "Agent not found"})
    # And a thread id of one agent is not readable through another agent of the same owner.
    other = await create_agent(dev)
    response = await dev.http.get(f"/api/v1/agents/{other['id']}/threads/{thread_id}/messages")
    assert (response.status_code, response.json()) == (404, {"error": "Thread not found"})


async def test_message_content_is_encrypted_at_rest(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent = await _running_agent(api)
    openrouter.reply("The vault code is 8812")
    await _say(dev, agent["id"], "my passport number is X123456")
    async with api.app.state.sessionmaker() as session:
        contents = [m.content for m in (await session.execute(select(Message))).scalars()]
    assert len(contents) == 2
    assert all(c.startswith("v1.") for c in contents)
    assert not any("X123456" in c or "8812" in c for c in contents)
    assert json.dumps(contents)  # plain strings


async def test_a_failed_attempt_undoes_what_its_tools_wrote(
    api: Api, openrouter: FakeOpenRouter, fast_sdk_retries: None
) -> None:
    from lunogen.runtime.models import MemoryNote

    dev, agent = await _running_agent(api, tools=["remember"])
    openrouter.call_tool("remember", {"note": "Likes green tea"})
    openrouter.fail(503, times=10)
    response = await _say(dev, agent["id"], "Remember I like green tea", wait_seconds=0)
    assert response.status_code == 202
    message = await _first_attempt_over(api, response.json()["message"]["id"])
    async with api.app.state.sessionmaker() as session:
        notes = (await session.execute(select(func.count()).select_from(MemoryNote))).scalar()
        usage = list((await session.execute(select(UsageRecord))).scalars())
    assert notes == 0  # the retry will remember it again, once
    assert message.status == "pending" and message.attempts == 1
    assert sorted(u.outcome for u in usage) == ["error", "ok"]


async def test_a_dated_model_slug_is_metered_under_the_agents_model(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """Providers may answer as a dated version of the model asked for: usage is grouped and, when
    no cost is reported, priced under the agent's model; the log keeps the exact version."""
    dev, agent = await _running_agent(api)
    openrouter.answer_as["openai/gpt-4o-mini"] = "openai/gpt-4o-mini-2024-07-18"
    openrouter.reply("Hi", cost=None, prompt_tokens=1000, completion_tokens=100)
    assert (await _say(dev, agent["id"], "Hello")).status_code == 200
    [usage] = await _usage(api)
    assert (usage.requested_model, usage.answered_model) == (
        "openai/gpt-4o-mini",
        "openai/gpt-4o-mini",
    )
    assert (usage.cost_source, usage.cost_nano_usd) == ("catalog", 210_000)  # Mini's prices
    by_model = (await dev.http.get("/api/v1/usage", params={"group_by": "model"})).json()
    assert [g["key"] for g in by_model["groups"]] == ["openai/gpt-4o-mini"]
    logs = (await dev.http.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]
    [call] = [e for e in logs if e["event"] == "model.call"]
    assert call["details"]["model"] == "openai/gpt-4o-mini-2024-07-18"


async def test_an_unknown_answering_model_is_kept_and_priced_at_the_dearest_of_the_chain(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    from lunogen.agent.models import Agent

    dev, agent = await _running_agent(api)
    async with api.app.state.sessionmaker() as session:
        row = await session.get(Agent, agent["id"])
        assert row is not None
        row.fallback_models = ["anthropic/claude-sonnet-4"]
        await session.commit()
    slug = "anthropic/claude-4-sonnet-20250522"  # a canonical slug: no chain name is its prefix
    openrouter.answer_as["openai/gpt-4o-mini"] = slug
    openrouter.reply("Hi", cost=None, prompt_tokens=1000, completion_tokens=100)
    assert (await _say(dev, agent["id"], "Hello")).status_code == 200
    [usage] = await _usage(api)
    assert usage.answered_model == slug
    # 1000 x US$3/M + 100 x US$15/M: Sonnet's prices, never less than the hold assumed.
    assert (usage.cost_source, usage.cost_nano_usd) == ("catalog", 4_500_000)
