"""Streaming: deltas, keep-alive comments, tool calls assembled, usage from the last chunk."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from lunogen.llm.provider import (
    ModelCallError,
    ModelClient,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
)
from lunogen.llm.usage import Usage
from tests.fakes.openrouter import FakeOpenRouter, FakeToolCall
from tests.llm.conftest import ClientFactory

HELLO = [{"role": "user", "content": "Say hello"}]


async def _collect(client: ModelClient, **kwargs: object) -> list[StreamEvent]:
    params: dict[str, object] = {"model": "openai/gpt-4o-mini", "messages": HELLO, "max_tokens": 50}
    params.update(kwargs)
    return [event async for event in client.stream(**params)]  # type: ignore[arg-type]


async def test_the_fake_streams_keepalive_comments_chunks_and_done(
    openrouter: FakeOpenRouter,
) -> None:
    """The wire format the client must cope with (checked here so the client tests mean it)."""
    openrouter.reply("Hello there")
    async with (
        httpx.AsyncClient() as http,
        http.stream(
            "POST",
            f"{openrouter.base_url}/chat/completions",
            json={"model": "openai/gpt-4o-mini", "messages": HELLO, "stream": True},
            headers={"Authorization": f"Bearer {openrouter.api_key}"},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines() if line]
    assert lines[0] == ": OPENROUTER PROCESSING"
    assert lines.count(": OPENROUTER PROCESSING") == 3  # two before the first chunk, one within
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert all("usage" not in c for c in chunks)  # not asked for


async def test_text_deltas_then_the_result_with_usage_from_the_last_chunk(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.keepalives = 5
    openrouter.reply(
        "Hello there, dear friend.",
        prompt_tokens=12,
        completion_tokens=6,
        cached_tokens=4,
        reasoning_tokens=2,
        cost=Decimal("0.0000201"),
    )

    events = await _collect(model_client)

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1
    assert "".join(deltas) == "Hello there, dear friend."
    assert isinstance(events[-1], StreamDone)
    assert sum(isinstance(e, StreamDone) for e in events) == 1
    result = events[-1].result
    assert result.text == "Hello there, dear friend."
    assert result.finish_reason == "stop"
    assert result.usage == Usage(
        prompt_tokens=12,
        completion_tokens=6,
        cached_tokens=4,
        reasoning_tokens=2,
        cost=Decimal("0.0000201"),
    )
    assert result.generation_id is not None and result.generation_id.startswith("gen-")
    body = openrouter.last_chat.body
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["usage"] == {"include": True}
    assert body["provider"] == {"data_collection": "deny"}


async def test_tool_call_deltas_are_assembled_into_complete_calls(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    calls = [
        FakeToolCall(name="get_weather", arguments={"city": "Paris", "unit": "celsius"}),
        FakeToolCall(name="current_time", arguments={}),
    ]
    openrouter.call_tools(calls, text="Checking.")

    events = await _collect(model_client, tools=[{"type": "function", "function": {"name": "x"}}])

    pieces = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [p.index for p in pieces if p.id] == [0, 1]
    assert len(pieces) > 2  # arguments arrived in pieces
    done = events[-1]
    assert isinstance(done, StreamDone)
    result = done.result
    assert result.finish_reason == "tool_calls"
    assert result.text == "Checking."
    assert [(c.id, c.name) for c in result.tool_calls] == [(c.id, c.name) for c in calls]
    assert json.loads(result.tool_calls[0].arguments) == {"city": "Paris", "unit": "celsius"}
    assert json.loads(result.tool_calls[1].arguments) == {}


async def test_answering_fallback_model_is_recorded_when_streaming(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.down_models.add("openai/gpt-4o-mini")
    events = await _collect(model_client, fallback_models=["anthropic/claude-sonnet-4"])
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.result.model == "anthropic/claude-sonnet-4"
    assert openrouter.last_chat.body["models"] == [
        "openai/gpt-4o-mini",
        "anthropic/claude-sonnet-4",
    ]


async def test_an_error_object_mid_stream_raises_after_the_partial_text(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.break_stream("Partial answ", code="server_error", message="Provider disconnected")
    seen: list[StreamEvent] = []
    with pytest.raises(ModelCallError) as caught:
        async for event in model_client.stream(
            model="openai/gpt-4o-mini", messages=HELLO, max_tokens=50
        ):
            seen.append(event)

    assert seen == [TextDelta("Partial answ")]
    error = caught.value
    assert (error.status, error.code, error.retryable) == (None, "server_error", True)
    assert error.message == "Provider disconnected"
    assert len(openrouter.chat_requests) == 1  # a stream that began is never retried


async def test_a_failure_before_the_stream_begins_is_retried(
    openrouter: FakeOpenRouter, model_client: ModelClient, retry_delays: list[float]
) -> None:
    openrouter.fail(429, retry_after="2")
    openrouter.reply("Streamed anyway")
    events = await _collect(model_client)
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.result.text == "Streamed anyway"
    assert retry_delays == [2.0]
    assert len(openrouter.chat_requests) == 2


async def test_a_stream_that_is_not_sse_is_a_bad_response(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.malformed()
    with pytest.raises(ModelCallError) as caught:
        await _collect(model_client)
    assert caught.value.code == "bad_response"


async def test_an_error_no_other_model_can_fix_ends_the_stream_before_it_begins(
    openrouter: FakeOpenRouter, make_client: ClientFactory
) -> None:
    client = await make_client(llm_api_style="openai")
    openrouter.fail(401)
    with pytest.raises(ModelCallError) as caught:
        await _collect(client, fallback_models=["openai/gpt-4o"])
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert len(openrouter.chat_requests) == 1


async def test_a_bad_request_moves_on_to_the_next_model(
    openrouter: FakeOpenRouter, make_client: ClientFactory
) -> None:
    """A 400 may be one model's own limit (context length): like OpenRouter, try the next."""
    client = await make_client(llm_api_style="openai")
    openrouter.fail(400, "This model's maximum context length is 8192 tokens")
    events = await _collect(client, fallback_models=["openai/gpt-4o"])
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.result.model == "openai/gpt-4o"


async def test_client_side_fallback_when_streaming_from_another_server(
    openrouter: FakeOpenRouter, make_client: ClientFactory, retry_delays: list[float]
) -> None:
    client = await make_client(llm_api_style="openai", llm_max_retries=0)
    openrouter.down_models.add("fake/echo-1")
    events = await _collect(client, model="fake/echo-1", fallback_models=["openai/gpt-4o"])
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.result.model == "openai/gpt-4o"
    assert done.result.text == "Say hello"
    assert [r.body["model"] for r in openrouter.chat_requests] == ["fake/echo-1", "openai/gpt-4o"]
    assert "stream_options" in openrouter.last_chat.body
    assert "usage" not in openrouter.last_chat.body
