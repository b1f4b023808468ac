"""A fake OpenRouter served over real HTTP on 127.0.0.1, speaking its wire format.

`POST /api/v1/chat/completions` (JSON, or SSE when `stream` is true: `: OPENROUTER PROCESSING`
keep-alive comments, `chat.completion.chunk`s, usage with `cost` in a last chunk without choices
when `stream_options.include_usage` or `usage.include` asks for it, `data: [DONE]`), tool calls,
`models` fallback routing around `down_models`, `GET /api/v1/models` and
`GET /api/v1/generation?id=`. Every request is recorded (headers and JSON body).

Like the real service: an assistant message with tool calls and no text has `content: null`;
`/generation` answers 404 until `generation_delay` seconds after the call; and the answering
model can be named by a dated or provider slug (`answer_as = {"openai/gpt-4o-mini":
"openai/gpt-4o-mini-2024-07-18"}`).

Tests script what the next chat requests get, in order; with nothing queued, the fake echoes the
last message back:

    openrouter.reply("Hello!", cost=Decimal("0.0001"))
    openrouter.call_tool("current_time", {"zone": "UTC"})
    openrouter.fail(429, retry_after="1")
    openrouter.stall(30)            # answer nothing for 30 s (past the client's timeout)
    openrouter.release_stalls()     # ... or until now: stalled requests then get their echo
    openrouter.break_stream("Part")  # stream "Part", then an error object mid-stream
    openrouter.malformed()          # a 200 whose JSON body is cut short
    openrouter.latency = 0.4        # every chat request answers 0.4 s after it arrived
    openrouter.script = decide      # nothing queued: `decide(body)` says what to answer

Use the `openrouter` fixture (import it, and `openrouter_server`, into a conftest) and
`openrouter_settings(openrouter)` for the Settings that point LunoGen at it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.server import loopback_socket, serve_in_thread

API_KEY = "sk-or-v1-fake-0123456789abcdef"
KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
AUTO: Any = object()  # a usage figure computed from the request and the fake's catalog
# A usage figure at its worst: the prompt as many tokens as its text has UTF-8 bytes (the most a
# byte-level tokenizer can make), the reply the request's whole `max_tokens`.
WORST: Any = object()
GENERATION_DELAY = 2.0  # real OpenRouter knows a generation a few seconds after the call

DEFAULT_MODELS: list[dict[str, Any]] = [
    {
        "id": "openai/gpt-4o-mini",
        "canonical_slug": "openai/gpt-4o-mini",
        "name": "OpenAI: GPT-4o-mini",
        "created": 1721260800,
        "context_length": 128000,
        "architecture": {"modality": "text+image->text", "tokenizer": "GPT"},
        "pricing": {"prompt": "0.00000015", "completion": "0.0000006", "request": "0"},
        "top_provider": {"context_length": 128000, "max_completion_tokens": 16384},
        "supported_parameters": ["max_tokens", "temperature", "tools", "tool_choice"],
    },
    {
        "id": "anthropic/claude-sonnet-4",
        "canonical_slug": "anthropic/claude-4-sonnet-20250522",
        "name": "Anthropic: Claude Sonnet 4",
        "created": 1747930371,
        "context_length": 200000,
        "architecture": {"modality": "text+image->text", "tokenizer": "Claude"},
        "pricing": {"prompt": "0.000003", "completion": "0.000015", "request": "0"},
        "top_provider": {"context_length": 200000, "max_completion_tokens": 64000},
        "supported_parameters": ["max_tokens", "temperature", "tools", "tool_choice"],
    },
    {
        "id": "fake/echo-1",
        "canonical_slug": "fake/echo-1",
        "name": "Fake: Echo 1",
        "created": 1760000000,
        "context_length": 32768,
        "architecture": {"modality": "text->text", "tokenizer": "Other"},
        "pricing": {"prompt": "0.000001", "completion": "0.000002", "request": "0"},
        "top_provider": {"context_length": 32768, "max_completion_tokens": 4096},
        "supported_parameters": ["max_tokens", "temperature", "tools"],
    },
]


@dataclass
class FakeToolCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(8))

    @property
    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments)


@dataclass
class Reply:
    """A successful completion. Unset figures are computed like the real service would."""

    text: str = ""
    tool_calls: list[FakeToolCall] = field(default_factory=list)
    echo: bool = False  # the text is the content of the last message received
    model: str | None = None  # the answering model; default: the first requested model up
    finish_reason: str | None = None  # default "tool_calls" with tool calls, else "stop"
    prompt_tokens: Any = None  # int, None (a rough count) or WORST
    completion_tokens: Any = None  # int, None (a rough count) or WORST
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Any = AUTO  # Decimal, None (no `cost` in usage) or AUTO (catalog prices)
    final_cost: Decimal | None = None  # what `/generation` says; default: `cost`, else catalog


@dataclass
class Failure:
    status: int
    message: str = ""
    retry_after: str | None = None
    retry_after_ms: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class Stall:
    seconds: float


@dataclass
class MidStreamError:
    text: str = "Partial"
    code: str | int = "server_error"
    message: str = "Provider disconnected unexpectedly"


@dataclass
class Malformed:
    body: str = '{"id": "gen-broken", "object": "chat.completion", "choices": [{"ind'
    content_type: str = "application/json"


Step = Reply | Failure | Stall | MidStreamError | Malformed

_DEFAULT_MESSAGES = {
    400: "Invalid request",
    401: "No auth credentials found",
    402: "Insufficient credits. Add more using https://openrouter.ai/credits",
    403: "Input was flagged by moderation",
    408: "Request timed out",
    429: "Rate limit exceeded: limit_rpm/openai/gpt-4o-mini",
    502: "Provider returned error",
    503: "No endpoints found matching your data policy",
}


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: Any  # the parsed JSON body, None when absent or not JSON

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []


@dataclass
class FakeOpenRouter:
    root_url: str = ""
    api_key: str | None = API_KEY  # None: accept requests without a key
    keepalives: int = 2  # comment lines before the first chunk (one more after the first piece)
    queue: deque[Step] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    down_models: set[str] = field(default_factory=set)
    models: list[dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEFAULT_MODELS))
    models_failure: int | None = None  # answer `GET /models` with this status
    generations: dict[str, dict[str, Any]] = field(default_factory=dict)
    generation_delay: float = GENERATION_DELAY  # seconds before `/generation` knows a call
    answer_as: dict[str, str] = field(default_factory=dict)  # model id → slug in `model`
    latency: float = 0.0  # seconds each chat request waits (after it is recorded)
    # What a chat request gets when nothing is queued, from its JSON body (default: an echo);
    # for concurrent turns, whose requests arrive in no set order.
    script: Callable[[dict[str, Any]], Reply] | None = None
    _generation_ready: dict[str, float] = field(default_factory=dict)  # id → monotonic time
    _epoch: int = 0

    @property
    def base_url(self) -> str:
        """What LUNOGEN_LLM_BASE_URL is set to."""
        return f"{self.root_url}/api/v1"

    def reset(self) -> None:
        self._epoch += 1  # releases stalled requests
        self.api_key = API_KEY
        self.keepalives = 2
        self.queue.clear()
        self.requests.clear()
        self.down_models.clear()
        self.models = copy.deepcopy(DEFAULT_MODELS)
        self.models_failure = None
        self.generations.clear()
        self.generation_delay = GENERATION_DELAY
        self.answer_as.clear()
        self.latency = 0.0
        self.script = None
        self._generation_ready.clear()

    # -- scripting -------------------------------------------------------------------------------

    def reply(self, text: str = "", **figures: Any) -> Reply:
        step = Reply(text=text, **figures)
        self.queue.append(step)
        return step

    def call_tool(
        self, name: str, arguments: dict[str, Any] | str | None = None, *, text: str = "", **kw: Any
    ) -> Reply:
        call = FakeToolCall(name=name, arguments={} if arguments is None else arguments)
        return self.reply(text, tool_calls=[call], **kw)

    def call_tools(self, calls: list[FakeToolCall], *, text: str = "", **kw: Any) -> Reply:
        return self.reply(text, tool_calls=calls, **kw)

    def echo(self, **figures: Any) -> Reply:
        return self.reply(echo=True, **figures)

    def fail(
        self,
        status: int,
        message: str | None = None,
        *,
        retry_after: str | None = None,
        retry_after_ms: str | None = None,
        metadata: dict[str, Any] | None = None,
        times: int = 1,
    ) -> None:
        text = message or _DEFAULT_MESSAGES.get(status, f"HTTP {status}")
        for _ in range(times):
            self.queue.append(Failure(status, text, retry_after, retry_after_ms, metadata))

    def stall(self, seconds: float = 30, *, times: int = 1) -> None:
        for _ in range(times):
            self.queue.append(Stall(seconds))

    def release_stalls(self) -> None:
        """Let every stalled request go on now (the queue is kept)."""
        self._epoch += 1

    def break_stream(self, text: str = "Partial", **kw: Any) -> None:
        self.queue.append(MidStreamError(text=text, **kw))

    def malformed(self, body: str | None = None, *, content_type: str = "application/json") -> None:
        self.queue.append(Malformed(body=body or Malformed.body, content_type=content_type))

    # -- assertions ------------------------------------------------------------------------------

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def last_chat(self) -> RecordedRequest:
        assert self.chat_requests, "no chat completion request reached the fake"
        return self.chat_requests[-1]

    # -- HTTP ------------------------------------------------------------------------------------

    def asgi_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/api/v1/models", self._models, methods=["GET"]),
                Route("/api/v1/generation", self._generation, methods=["GET"]),
            ]
        )

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        recorded = RecordedRequest(
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
        )
        self.requests.append(recorded)
        return recorded

    def _authorized(self, recorded: RecordedRequest) -> bool:
        if self.api_key is None:
            return True
        return recorded.headers.get("authorization") == f"Bearer {self.api_key}"

    async def _chat(self, request: Request) -> Response:
        recorded = await self._record(request)
        if not self._authorized(recorded):
            return _error(401, _DEFAULT_MESSAGES[401])
        body = recorded.body
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("model"), str)
            or not isinstance(body.get("messages"), list)
            or not body["messages"]
        ):
            return _error(400, "Input required: specify `model` and a non-empty `messages`")
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        step: Step
        if self.queue:
            step = self.queue.popleft()
        else:
            step = self.script(body) if self.script is not None else Reply(echo=True)
        streaming = body.get("stream") is True
        if isinstance(step, Stall):
            await self._stall(step.seconds)
            step = Reply(echo=True)
        if isinstance(step, Failure):
            return _failure(step)
        if isinstance(step, Malformed):
            return Response(step.body, media_type=step.content_type)
        answering = self._route(body, step.model if isinstance(step, Reply) else None)
        if answering is None:
            return _error(502, "All requested models are down", {"provider_name": "Fake"})
        generation_id = "gen-" + secrets.token_hex(12)
        slug = self.answer_as.get(answering, answering)
        if isinstance(step, MidStreamError):
            if streaming:
                return _sse(self._broken_stream(step, generation_id, slug))
            return JSONResponse(_broken_completion(step, generation_id, slug))
        reply = _materialize(step, body)
        usage = self._usage(reply, body, answering)
        final = reply.final_cost if reply.final_cost is not None else usage.get("cost")
        if final is None:  # no cost in the answer: the catalog price, as it will be billed
            final = float(
                self._price(answering, usage["prompt_tokens"], usage["completion_tokens"])
            )
        self.generations[generation_id] = {
            "id": generation_id,
            "model": slug,
            "total_cost": float(final),
            "tokens_prompt": usage["prompt_tokens"],
            "tokens_completion": usage["completion_tokens"],
            "provider_name": "Fake",
        }
        self._generation_ready[generation_id] = time.monotonic() + self.generation_delay
        if streaming:
            include = _wants_stream_usage(body)
            return _sse(self._stream(reply, generation_id, slug, usage if include else None))
        return JSONResponse(_completion(reply, generation_id, slug, usage))

    async def _stall(self, seconds: float) -> None:
        epoch = self._epoch
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and self._epoch == epoch:
            await asyncio.sleep(0.02)

    def _route(self, body: dict[str, Any], forced: str | None) -> str | None:
        if forced is not None:
            return forced
        candidates = [body["model"]]
        if isinstance(body.get("models"), list):
            candidates += [m for m in body["models"] if isinstance(m, str) and m not in candidates]
        return next((m for m in candidates if m not in self.down_models), None)

    def _usage(self, reply: Reply, body: dict[str, Any], model: str) -> dict[str, Any]:
        prompt = reply.prompt_tokens
        if prompt is WORST:
            prompt = request_text_bytes(body)
        elif prompt is None:
            prompt = sum(3 + len(str(m.get("content") or "").split()) for m in body["messages"])
        completion = reply.completion_tokens
        if completion is WORST:
            completion = int(body.get("max_tokens") or 0)
        elif completion is None:
            completion = max(1, len(reply.text.split())) + sum(
                1 + len(c.arguments_json) // 4 for c in reply.tool_calls
            )
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": reply.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens},
        }
        cost = reply.cost
        if cost is AUTO:
            cost = self._price(model, prompt, completion)
        if cost is not None:
            usage["cost"] = float(cost)
            usage["is_byok"] = False
        return usage

    def _price(self, model: str, prompt: int, completion: int) -> Decimal:
        for entry in self.models:
            if entry["id"] == model:
                pricing = entry["pricing"]
                return prompt * Decimal(pricing["prompt"]) + completion * Decimal(
                    pricing["completion"]
                )
        return Decimal(0)

    async def _stream(
        self, reply: Reply, generation_id: str, model: str, usage: dict[str, Any] | None
    ) -> AsyncIterator[bytes]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _data(_chunk(generation_id, model, delta, finish))

        for _ in range(self.keepalives):
            yield KEEPALIVE
        silent = bool(reply.tool_calls) and not reply.text  # OpenAI-style: null beside tool calls
        yield chunk({"role": "assistant", "content": None if silent else ""})
        for position, piece in enumerate(re.findall(r"\S+\s*|\s+", reply.text)):
            yield chunk({"role": "assistant", "content": piece})
            if position == 0:
                yield KEEPALIVE
        for index, call in enumerate(reply.tool_calls):
            head = {"index": index, "id": call.id, "type": "function"}
            yield chunk(
                {"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]}
            )
            arguments = call.arguments_json
            middle = len(arguments) // 2
            for piece in (arguments[:middle], arguments[middle:]):
                if piece:
                    yield chunk(
                        {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                    )
        yield chunk({"role": "assistant", "content": ""}, reply.finish_reason)
        if usage is not None:
            last = _chunk(generation_id, model, None, None)
            last["choices"] = []
            last["usage"] = usage
            yield _data(last)
        yield b"data: [DONE]\n\n"

    async def _broken_stream(
        self, step: MidStreamError, generation_id: str, model: str
    ) -> AsyncIterator[bytes]:
        yield KEEPALIVE
        yield _data(_chunk(generation_id, model, {"role": "assistant", "content": step.text}, None))
        broken = _chunk(generation_id, model, {"content": ""}, "error")
        broken["error"] = {"code": step.code, "message": step.message}
        yield _data(broken)
        yield b"data: [DONE]\n\n"

    async def _models(self, request: Request) -> Response:
        await self._record(request)
        if self.models_failure is not None:
            return _error(self.models_failure, _DEFAULT_MESSAGES.get(self.models_failure, "Error"))
        return JSONResponse({"data": self.models})

    async def _generation(self, request: Request) -> Response:
        recorded = await self._record(request)
        if not self._authorized(recorded):
            return _error(401, _DEFAULT_MESSAGES[401])
        generation_id = recorded.query.get("id", "")
        found = self.generations.get(generation_id)
        if found is None or time.monotonic() < self._generation_ready.get(generation_id, 0):
            return _error(404, "Generation not found")
        return JSONResponse({"data": found})

    # -- running ---------------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[FakeOpenRouter]:
        fake = cls()
        sock, port = loopback_socket()
        fake.root_url = f"http://127.0.0.1:{port}"
        with serve_in_thread(fake.asgi_app(), sock, name="the fake OpenRouter"):
            try:
                yield fake
            finally:
                fake.reset()  # releases stalled requests so the server can stop


def _materialize(step: Reply, body: dict[str, Any]) -> Reply:
    text = step.text
    if step.echo:
        content = body["messages"][-1].get("content")
        if isinstance(content, list):  # content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        text = str(content or "")
    finish = step.finish_reason or ("tool_calls" if step.tool_calls else "stop")
    return Reply(
        text=text,
        tool_calls=step.tool_calls,
        model=step.model,
        finish_reason=finish,
        prompt_tokens=step.prompt_tokens,
        completion_tokens=step.completion_tokens,
        cached_tokens=step.cached_tokens,
        reasoning_tokens=step.reasoning_tokens,
        cost=step.cost,
        final_cost=step.final_cost,
    )


def request_text_bytes(body: dict[str, Any]) -> int:
    """UTF-8 bytes of every text a chat template renders from a request: message contents, tool
    calls (names and arguments) and tool schemas."""
    total = 0
    for message in body.get("messages") or []:
        total += len(str(message.get("content") or "").encode())
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            total += len(str(function.get("name", "")).encode())
            total += len(str(function.get("arguments", "")).encode())
    if body.get("tools"):
        total += len(json.dumps(body["tools"], ensure_ascii=False).encode())
    return total


def _wants_stream_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    usage = body.get("usage")
    return (isinstance(options, dict) and options.get("include_usage") is True) or (
        isinstance(usage, dict) and usage.get("include") is True
    )


def _chunk(
    generation_id: str, model: str, delta: dict[str, Any] | None, finish: str | None
) -> dict[str, Any]:
    return {
        "id": generation_id,
        "provider": "Fake",
        "model": model,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "choices": [
            {
                "index": 0,
                "delta": delta or {},
                "finish_reason": finish,
                "native_finish_reason": finish,
                "logprobs": None,
            }
        ],
    }


def _completion(
    reply: Reply, generation_id: str, model: str, usage: dict[str, Any]
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if reply.tool_calls and not reply.text else reply.text,
        "refusal": None,
        "reasoning": None,
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "index": index,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for index, call in enumerate(reply.tool_calls)
        ]
    return {
        "id": generation_id,
        "provider": "Fake",
        "model": model,
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {
                "logprobs": None,
                "finish_reason": reply.finish_reason,
                "native_finish_reason": reply.finish_reason,
                "index": 0,
                "message": message,
            }
        ],
        "usage": usage,
    }


def _broken_completion(step: MidStreamError, generation_id: str, model: str) -> dict[str, Any]:
    """A generation that failed after the provider accepted it: HTTP 200 with an `error`."""
    return {
        "id": generation_id,
        "provider": "Fake",
        "model": model,
        "object": "chat.completion",
        "created": int(time.time()),
        "error": {"code": step.code, "message": step.message},
        "choices": [
            {
                "index": 0,
                "finish_reason": "error",
                "message": {"role": "assistant", "content": step.text},
            }
        ],
    }


def _data(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def _sse(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _error(status: int, message: str, metadata: dict[str, Any] | None = None) -> JSONResponse:
    error: dict[str, Any] = {"code": status, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    return JSONResponse({"error": error}, status_code=status)


def _failure(step: Failure) -> JSONResponse:
    response = _error(step.status, step.message, step.metadata)
    if step.retry_after is not None:
        response.headers["Retry-After"] = step.retry_after
    if step.retry_after_ms is not None:
        response.headers["retry-after-ms"] = step.retry_after_ms
    return response


def openrouter_settings(fake: FakeOpenRouter, **overrides: object) -> dict[str, object]:
    """Settings overrides that point LunoGen's model client and catalog refresh at `fake`."""
    values: dict[str, object] = {
        "llm_base_url": fake.base_url,
        "openrouter_api_key": fake.api_key,
        "llm_api_style": "openrouter",
        "llm_timeout_seconds": 10,
        "llm_max_retries": 2,
    }
    values.update(overrides)
    return values


@pytest.fixture(scope="session")
def openrouter_server() -> Iterator[FakeOpenRouter]:
    with FakeOpenRouter.running() as fake:
        yield fake


@pytest.fixture
def openrouter(openrouter_server: FakeOpenRouter) -> Iterator[FakeOpenRouter]:
    """The fake OpenRouter, reset for this test (empty queue, no recorded requests)."""
    openrouter_server.reset()
    yield openrouter_server
    openrouter_server.reset()
