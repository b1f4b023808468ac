"""The client posts its own JSON body; it must be exactly what the SDK's typed `create()` sends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from lunogen.config import Settings
from lunogen.llm.provider import ModelClient, StreamDone
from tests.fakes.openrouter import FakeOpenRouter, FakeToolCall, RecordedRequest

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": 'You are terse. Ünïcödé and "quotes" stay as they are.'},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
    {"role": "user", "content": [{"type": "text", "text": "And tomorrow?"}]},
]
# Headers that differ between two calls whatever the body (the SDK's retry and timeout info).
_VOLATILE_HEADERS = {"content-length", "x-stainless-read-timeout", "x-stainless-retry-count"}


@pytest.fixture
async def sdk(openrouter: FakeOpenRouter, settings: Settings) -> AsyncIterator[openai.AsyncOpenAI]:
    """A bare SDK client configured like `ModelClient` against the same fake."""
    client = openai.AsyncOpenAI(
        base_url=openrouter.base_url,
        api_key=openrouter.api_key,
        max_retries=0,
        default_headers={"HTTP-Referer": settings.public_url, "X-Title": "LunoGen"},
    )
    client.organization = None
    client.project = None
    yield client
    await client.close()


def _headers(request: RecordedRequest) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k not in _VOLATILE_HEADERS}


async def test_a_completion_sends_what_the_typed_sdk_call_sends(
    openrouter: FakeOpenRouter, model_client: ModelClient, sdk: openai.AsyncOpenAI
) -> None:
    openrouter.reply("Sunny again.")
    openrouter.reply("Sunny again.")
    await model_client.complete(
        model="openai/gpt-4o-mini",
        fallback_models=["anthropic/claude-3.5-haiku"],
        messages=CONVERSATION,
        tools=[WEATHER_TOOL],
        max_tokens=100,
        temperature=0.2,
        user="agent-1",
    )
    ours = openrouter.last_chat
    create: Any = sdk.chat.completions.create  # the typed call, fed plain dicts
    await create(
        model="openai/gpt-4o-mini",
        messages=CONVERSATION,
        tools=[WEATHER_TOOL],
        max_tokens=100,
        temperature=0.2,
        user="agent-1",
        extra_body={
            "usage": {"include": True},
            "provider": {"data_collection": "deny"},
            "models": ["openai/gpt-4o-mini", "anthropic/claude-3.5-haiku"],
        },
    )
    theirs = openrouter.last_chat

    assert ours.body == theirs.body
    assert ours.body["messages"] == CONVERSATION
    assert _headers(ours) == _headers(theirs)
    assert ours.headers["authorization"] == f"Bearer {openrouter.api_key}"


async def test_a_stream_sends_what_the_typed_sdk_call_sends(
    openrouter: FakeOpenRouter, model_client: ModelClient, sdk: openai.AsyncOpenAI
) -> None:
    openrouter.call_tools([FakeToolCall("get_weather", {"city": "Lyon"})])
    openrouter.reply("Cloudy.")
    events = [
        event
        async for event in model_client.stream(
            model="openai/gpt-4o-mini", messages=CONVERSATION, tools=[WEATHER_TOOL], max_tokens=50
        )
    ]
    assert isinstance(events[-1], StreamDone)
    assert events[-1].result.tool_calls[0].name == "get_weather"
    ours = openrouter.last_chat
    create: Any = sdk.chat.completions.create
    stream = await create(
        model="openai/gpt-4o-mini",
        messages=CONVERSATION,
        tools=[WEATHER_TOOL],
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"usage": {"include": True}, "provider": {"data_collection": "deny"}},
    )
    async with stream:
        async for _chunk in stream:
            pass
    theirs = openrouter.last_chat

    assert ours.body == theirs.body
    assert ours.body["stream"] is True
    assert _headers(ours) == _headers(theirs)
