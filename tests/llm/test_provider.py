"""The model client against the fake OpenRouter: wire format, usage, tools, retries, errors."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal

import httpx
import pytest
from pydantic import SecretStr

from lunogen.config import Settings
from lunogen.llm.provider import ModelCallError, ModelClient
from lunogen.llm.usage import Usage
from tests.fakes.openrouter import FakeOpenRouter, FakeToolCall
from tests.llm.conftest import ClientFactory

HELLO = [{"role": "user", "content": "Say hello"}]
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


async def test_sends_attribution_headers_key_and_openrouter_extensions(
    openrouter: FakeOpenRouter, model_client: ModelClient, settings: Settings
) -> None:
    openrouter.reply("Hello!")
    result = await model_client.complete(
        model="openai/gpt-4o-mini", messages=HELLO, max_tokens=100, user="agent-1"
    )

    assert result.text == "Hello!"
    request = openrouter.last_chat
    assert request.headers["authorization"] == f"Bearer {openrouter.api_key}"
    assert request.headers["http-referer"] == settings.public_url
    assert request.headers["x-title"] == "LunoGen"
    body = request.body
    assert body["model"] == "openai/gpt-4o-mini"
    assert body["messages"] == HELLO
    assert body["max_tokens"] == 100
    assert body["user"] == "agent-1"
    assert body["usage"] == {"include": True}
    assert body["provider"] == {"data_collection": "deny"}
    assert "models" not in body  # no fallbacks asked for
    assert "temperature" not in body and "tools" not in body and "stream" not in body


async def test_openai_environment_variables_are_not_forwarded(
    openrouter: FakeOpenRouter, make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-elsewhere")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-elsewhere")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-elsewhere")
    client = await make_client()
    await client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)
    headers = openrouter.last_chat.headers
    assert headers["authorization"] == f"Bearer {openrouter.api_key}"
    assert "openai-organization" not in headers and "openai-project" not in headers


async def test_reads_usage_cost_and_token_details_exactly(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.reply(
        "Done.",
        prompt_tokens=1200,
        completion_tokens=345,
        cached_tokens=1000,
        reasoning_tokens=120,
        cost=Decimal("0.00123456"),
    )
    result = await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=50)

    assert result.usage == Usage(
        prompt_tokens=1200,
        completion_tokens=345,
        cached_tokens=1000,
        reasoning_tokens=120,
        cost=Decimal("0.00123456"),
    )
    assert isinstance(result.usage.cost, Decimal)
    assert result.usage.total_tokens == 1545
    assert result.finish_reason == "stop"
    assert result.generation_id is not None and result.generation_id.startswith("gen-")
    assert result.requested_model == result.model == "openai/gpt-4o-mini"
    assert result.latency_ms >= 0


async def test_a_provider_that_reports_no_cost_gives_none(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.reply("Hi", cost=None, prompt_tokens=7, completion_tokens=1)
    result = await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)
    assert result.usage.cost is None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (7, 1)


async def test_fallback_models_are_sent_and_the_answering_model_recorded(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.down_models.add("openai/gpt-4o-mini")
    result = await model_client.complete(
        model="openai/gpt-4o-mini",
        messages=HELLO,
        max_tokens=20,
        fallback_models=["anthropic/claude-sonnet-4", "openai/gpt-4o-mini"],
    )

    assert openrouter.last_chat.body["models"] == [
        "openai/gpt-4o-mini",
        "anthropic/claude-sonnet-4",
    ]
    assert len(openrouter.chat_requests) == 1  # OpenRouter routes; the client sends once
    assert result.requested_model == "openai/gpt-4o-mini"
    assert result.model == "anthropic/claude-sonnet-4"


async def test_a_down_model_without_fallbacks_fails_as_model_down(
    openrouter: FakeOpenRouter, model_client: ModelClient, retry_delays: list[float]
) -> None:
    openrouter.down_models.add("openai/gpt-4o-mini")
    with pytest.raises(ModelCallError) as caught:
        await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=20)
    assert (caught.value.status, caught.value.code) == (502, "model_down")
    assert caught.value.metadata == {"provider_name": "Fake"}


async def test_tool_call_round_trip(openrouter: FakeOpenRouter, model_client: ModelClient) -> None:
    call = openrouter.call_tool("get_weather", {"city": "Paris"}).tool_calls[0]
    first = await model_client.complete(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        max_tokens=100,
    )
    assert openrouter.last_chat.body["tools"] == [WEATHER_TOOL]
    assert first.finish_reason == "tool_calls"
    assert len(first.tool_calls) == 1
    assert first.tool_calls[0].id == call.id
    assert first.tool_calls[0].name == "get_weather"
    assert json.loads(first.tool_calls[0].arguments) == {"city": "Paris"}

    openrouter.reply("It is sunny in Paris.")
    tool_message = {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "sunny"}'}
    conversation = [
        {"role": "user", "content": "Weather in Paris?"},
        first.assistant_message(),
        tool_message,
    ]
    second = await model_client.complete(
        model="openai/gpt-4o-mini", messages=conversation, tools=[WEATHER_TOOL], max_tokens=100
    )

    sent = openrouter.last_chat.body["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[1]["tool_calls"] == [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    assert sent[2] == tool_message
    assert second.text == "It is sunny in Paris."
    assert second.tool_calls == ()
    assert second.assistant_message() == {"role": "assistant", "content": "It is sunny in Paris."}


async def test_tool_calls_beside_null_content_are_read(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    """OpenAI-compatible servers send `content: null` beside tool calls, as the fake does."""
    openrouter.call_tool("get_weather", {"city": "Oslo"})
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"{openrouter.base_url}/chat/completions",
            json={"model": "openai/gpt-4o-mini", "messages": HELLO},
            headers={"Authorization": f"Bearer {openrouter.api_key}"},
        )
    raw = answer.json()
    assert raw["choices"][0]["message"]["content"] is None
    openrouter.call_tool("get_weather", {"city": "Oslo"})
    result = await model_client.complete(
        model="openai/gpt-4o-mini", messages=HELLO, tools=[WEATHER_TOOL], max_tokens=50
    )
    assert (result.text, [c.name for c in result.tool_calls]) == ("", ["get_weather"])
    assert result.assistant_message()["content"] is None


async def test_a_dated_model_slug_is_passed_on_as_the_answering_model(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.answer_as["openai/gpt-4o-mini"] = "openai/gpt-4o-mini-2024-07-18"
    openrouter.reply("Hi")
    result = await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)
    assert (result.requested_model, result.model) == (
        "openai/gpt-4o-mini",
        "openai/gpt-4o-mini-2024-07-18",
    )


async def test_echo_replies_with_the_last_message(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    result = await model_client.complete(
        model="openai/gpt-4o-mini",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ping"}],
        max_tokens=5,
    )
    assert result.text == "ping"  # nothing scripted: the fake echoes


async def test_rate_limit_is_retried_after_retry_after_then_succeeds(
    openrouter: FakeOpenRouter, model_client: ModelClient, retry_delays: list[float]
) -> None:
    openrouter.fail(429, retry_after="3")
    openrouter.reply("Finally.")

    result = await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)

    assert result.text == "Finally."
    assert len(openrouter.chat_requests) == 2
    assert retry_delays == [3.0]  # the provider's Retry-After, not the exponential backoff
    assert openrouter.chat_requests[1].headers["x-stainless-retry-count"] == "1"
    assert openrouter.chat_requests[1].body == openrouter.chat_requests[0].body


async def test_retry_after_ms_is_honoured(
    openrouter: FakeOpenRouter, model_client: ModelClient, retry_delays: list[float]
) -> None:
    openrouter.fail(503, retry_after_ms="250")
    openrouter.reply("ok")
    result = await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)
    assert result.text == "ok"
    assert retry_delays == [0.25]


@pytest.mark.parametrize("max_retries", [0, 2])
async def test_retries_are_bounded_with_jittered_exponential_backoff(
    openrouter: FakeOpenRouter,
    make_client: ClientFactory,
    retry_delays: list[float],
    max_retries: int,
) -> None:
    openrouter.fail(502, times=10)
    client = await make_client(llm_max_retries=max_retries)

    with pytest.raises(ModelCallError) as caught:
        await client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)

    error = caught.value
    assert (error.status, error.code, error.retryable) == (502, "model_down", True)
    assert error.message == "Provider returned error"
    assert len(openrouter.chat_requests) == max_retries + 1
    assert len(retry_delays) == max_retries
    for attempt, delay in enumerate(retry_delays):  # 0.5 s doubling, jitter takes up to 25 % off
        assert 0.5 * 2**attempt * 0.75 <= delay <= 0.5 * 2**attempt


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "bad_request"), (402, "insufficient_credits"), (403, "forbidden")],
)
async def test_client_errors_are_not_retried(
    openrouter: FakeOpenRouter, model_client: ModelClient, status: int, code: str
) -> None:
    openrouter.fail(status)
    with pytest.raises(ModelCallError) as caught:
        await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)
    assert (caught.value.status, caught.value.code, caught.value.retryable) == (status, code, False)
    assert len(openrouter.chat_requests) == 1


async def test_a_wrong_key_is_unauthorized(
    openrouter: FakeOpenRouter, make_client: ClientFactory
) -> None:
    client = await make_client(openrouter_api_key=SecretStr("sk-or-v1-wrong"))
    with pytest.raises(ModelCallError) as caught:
        await client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")
    assert openrouter.last_chat.headers["authorization"] == "Bearer sk-or-v1-wrong"
    assert "sk-or-v1-wrong" not in str(caught.value)


async def test_timeout_is_retried_then_fails(
    openrouter: FakeOpenRouter, make_client: ClientFactory, retry_delays: list[float]
) -> None:
    openrouter.stall(30, times=2)
    client = await make_client(llm_timeout_seconds=0.3, llm_max_retries=1)

    with pytest.raises(ModelCallError) as caught:
        await client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)

    error = caught.value
    assert (error.status, error.code, error.retryable) == (None, "timeout", True)
    assert "0.3 seconds" in error.message
    assert len(openrouter.chat_requests) == 2
    assert len(retry_delays) == 1


async def test_malformed_json_is_a_bad_response(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.malformed()
    with pytest.raises(ModelCallError) as caught:
        await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)
    assert caught.value.code == "bad_response"
    assert caught.value.retryable is True
    assert len(openrouter.chat_requests) == 1


async def test_an_html_page_is_a_bad_response(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.malformed("<html>Bad gateway</html>", content_type="text/html")
    with pytest.raises(ModelCallError) as caught:
        await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)
    assert caught.value.code == "bad_response"
    assert "not a chat completion" in caught.value.message


async def test_an_error_inside_a_200_completion_is_a_failed_call(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.break_stream("Half an ans", message="Upstream provider crashed")
    with pytest.raises(ModelCallError) as caught:
        await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)
    error = caught.value
    assert (error.status, error.code, error.retryable) == (None, "server_error", True)
    assert error.message == "Upstream provider crashed"


async def test_generation_cost_lookup(
    openrouter: FakeOpenRouter, model_client: ModelClient
) -> None:
    openrouter.generation_delay = 0.2  # OpenRouter answers 404 for a while after the call
    openrouter.reply("Hi", cost=Decimal("0.0042"))
    result = await model_client.complete(model="openai/gpt-4o-mini", messages=HELLO, max_tokens=9)
    assert result.generation_id is not None

    assert await model_client.generation_cost(result.generation_id) is None  # not known yet
    deadline = time.monotonic() + 10
    while (generation := await model_client.generation_cost(result.generation_id)) is None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    assert generation.total_cost == Decimal("0.0042")
    assert generation.model == "openai/gpt-4o-mini"
    assert openrouter.requests[-1].query == {"id": result.generation_id}
    assert await model_client.generation_cost("gen-unknown") is None


class TestOtherOpenAICompatibleServers:
    """`llm_api_style = "openai"`: no OpenRouter extensions; fallbacks tried by the client."""

    async def test_no_openrouter_fields_or_headers(
        self, openrouter: FakeOpenRouter, make_client: ClientFactory
    ) -> None:
        client = await make_client(llm_api_style="openai")
        await client.complete(model="fake/echo-1", messages=HELLO, max_tokens=9)
        request = openrouter.last_chat
        assert not {"usage", "provider", "models"} & set(request.body)
        assert "x-title" not in request.headers and "http-referer" not in request.headers

    async def test_a_local_server_needs_no_key(
        self, openrouter: FakeOpenRouter, make_client: ClientFactory
    ) -> None:
        openrouter.api_key = None
        client = await make_client(llm_api_style="openai", openrouter_api_key=None)
        result = await client.complete(model="fake/echo-1", messages=HELLO, max_tokens=9)
        assert result.text == "Say hello"

    async def test_fallbacks_are_tried_one_after_the_other(
        self, openrouter: FakeOpenRouter, make_client: ClientFactory, retry_delays: list[float]
    ) -> None:
        client = await make_client(llm_api_style="openai", llm_max_retries=0)
        openrouter.down_models.add("fake/echo-1")
        result = await client.complete(
            model="fake/echo-1", messages=HELLO, max_tokens=9, fallback_models=["openai/gpt-4o"]
        )
        assert [r.body["model"] for r in openrouter.chat_requests] == [
            "fake/echo-1",
            "openai/gpt-4o",
        ]
        assert (result.requested_model, result.model) == ("fake/echo-1", "openai/gpt-4o")

    async def test_an_error_another_model_cannot_fix_is_not_passed_on(
        self, openrouter: FakeOpenRouter, make_client: ClientFactory
    ) -> None:
        client = await make_client(llm_api_style="openai")
        openrouter.fail(402)
        with pytest.raises(ModelCallError) as caught:
            await client.complete(
                model="fake/echo-1", messages=HELLO, max_tokens=9, fallback_models=["openai/gpt-4o"]
            )
        assert caught.value.code == "insufficient_credits"
        assert len(openrouter.chat_requests) == 1


def test_model_call_error_is_a_lunogen_error_with_a_readable_text() -> None:
    error = ModelCallError("Rate limited", code="rate_limited", status=429, retryable=True)
    assert str(error) == "Model call failed (rate_limited 429): Rate limited"
    assert error.status_code == 502
    assert error.body() == {"error": "Model call failed", "message": "Rate limited"}
    assert FakeToolCall(name="x", arguments="{bad").arguments_json == "{bad"
