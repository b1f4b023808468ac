"""The model provider client: chat completions against OpenRouter or any OpenAI-compatible server.

Built on the `openai` SDK, which retries 408, 409, 429, 5xx, timeouts and connection errors up to
`llm_max_retries` times, waiting for `Retry-After` / `retry-after-ms` when the provider sends one
(up to the SDK's cap, two minutes today) and otherwise backing off exponentially (0.5 s doubling,
at most 8 s) with jitter. Whatever still fails surfaces as `ModelCallError`: a failed call has no
usage and must be charged nothing.

OpenRouter's extensions (attribution headers, `usage.include`, `provider.data_collection = deny`,
the `models` fallback list) are sent only when `Settings.llm_uses_openrouter`. Against another
server, fallback models are tried one after the other by this client instead.

Requests are posted with the SDK's generic `post()` and a body we build ourselves: the typed
`chat.completions.create()` would first walk every message against the SDK's TypedDicts to
transform it, which costs about 0.45 ms of CPU per message of the prompt and changes nothing in
the JSON we send (no aliased or transformed fields). Retries, timeouts, headers, error types and
response parsing are the SDK's, exactly as `create()` has them.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from lunogen.config import Settings
from lunogen.errors import LunogenError
from lunogen.llm.usage import Usage, parse_cost

if TYPE_CHECKING:
    # The SDK is imported where it is used (~0.4 s of imports, not needed to start a server);
    # a server warms it up in the background once healthy (`worker.process.warm_up`).
    import openai
    from openai.types.chat import ChatCompletionChunk

log = structlog.get_logger(__name__)

# Used as the bearer key for servers that need none (the SDK insists on one); Ollama and vLLM
# ignore it.
NO_KEY = "no-key"

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    402: "insufficient_credits",
    403: "forbidden",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    422: "unprocessable",
    429: "rate_limited",
    500: "provider_error",
    502: "model_down",
    503: "no_provider",
    504: "timeout",
}


class ProviderNotConfiguredError(LunogenError):
    status_code = 503
    error = "Model provider not configured"


class ModelCallError(LunogenError):
    """A model call that produced no reply: nothing to record as usage, nothing to charge.

    `status` is the provider's HTTP status (None when it never answered: timeout, connection
    error, or an error inside a stream that had begun); `code` is a short name (`rate_limited`,
    `model_down`, `timeout`, `bad_response`, ... or the provider's own code); `retryable` says
    whether the same call may succeed later.
    """

    status_code = 502
    error = "Model call failed"

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int | None = None,
        retryable: bool = False,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        latency_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message: str = message
        self.code = code
        self.status = status
        self.retryable = retryable
        self.model = model
        self.metadata = dict(metadata or {})
        self.latency_ms = latency_ms

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        return f"Model call failed ({self.code}{status}): {self.message}"

    @property
    def tries_next_model(self) -> bool:
        """Whether another model may answer where this one failed."""
        return self.retryable or self.status in (400, 404, 422)


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text exactly as the model wrote it; it may be invalid

    def as_message_part(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True)
class ModelCallResult:
    requested_model: str
    model: str  # the model that answered (a fallback, or the provider's exact version)
    generation_id: str | None
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: str | None
    usage: Usage
    latency_ms: int

    def assistant_message(self) -> dict[str, Any]:
        """The reply as a message to append to the conversation for the next call."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["content"] = self.text or None
            message["tool_calls"] = [call.as_message_part() for call in self.tool_calls]
        return message


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """A piece of a tool call; the assembled calls are in the final `StreamDone`."""

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True)
class StreamDone:
    result: ModelCallResult


StreamEvent = TextDelta | ToolCallDelta | StreamDone

_CHAT_PATH = "/chat/completions"


def _chat_options() -> Any:
    """The request options `chat.completions.create()` sends besides the body (a new dict each
    time: the SDK keeps a reference to it in the request it builds)."""
    return {"security": {"bearer_auth": True}}


def _call_failures() -> tuple[type[BaseException], ...]:
    """What a provider call may raise that means "the call failed" (not a bug of ours)."""
    import openai

    return (ModelCallError, openai.OpenAIError, httpx.HTTPError, ValueError)


class ModelClient:
    """One per process: it holds a connection pool. Close it with `aclose()`."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        openrouter: bool,
        timeout_seconds: float,
        max_retries: int,
        app_name: str,
        app_url: str,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url
        self.openrouter = openrouter
        self.timeout_seconds = timeout_seconds
        self._api_key = api_key or NO_KEY
        self._max_retries = max_retries
        self._headers = {"HTTP-Referer": app_url, "X-Title": app_name} if openrouter else {}
        self._http_client = http_client
        self._sdk: openai.AsyncOpenAI | None = None

    @property
    def _client(self) -> openai.AsyncOpenAI:
        """The SDK's client, made at the first call (a server starts without importing it)."""
        if self._sdk is None:
            import openai

            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                max_retries=self._max_retries,
                timeout=self.timeout_seconds,
                default_headers=self._headers,
                http_client=self._http_client,
            )
            # The SDK would forward OPENAI_ORG_ID / OPENAI_PROJECT_ID from the environment.
            client.organization = None
            client.project = None
            self._sdk = client
        return self._sdk

    @classmethod
    def from_settings(
        cls, settings: Settings, *, http_client: httpx.AsyncClient | None = None
    ) -> ModelClient:
        """Raises `ProviderNotConfiguredError` naming the setting to set."""
        problem = settings.llm_provider_problem
        if problem is not None:
            raise ProviderNotConfiguredError(problem)
        return cls(
            base_url=settings.llm_base_url,
            api_key=settings.llm_key,
            openrouter=settings.llm_uses_openrouter,
            timeout_seconds=settings.llm_timeout_seconds,
            max_retries=settings.llm_max_retries,
            app_name=settings.llm_app_name,
            app_url=settings.public_url,
            http_client=http_client,
        )

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
        elif self._http_client is not None:  # what the SDK's close() would have closed
            await self._http_client.aclose()

    async def __aenter__(self) -> ModelClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def complete(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        tools: Sequence[Mapping[str, Any]] | None = None,
        fallback_models: Sequence[str] = (),
        temperature: float | None = None,
        user: str | None = None,
    ) -> ModelCallResult:
        """One chat completion. Raises `ModelCallError` once retries and fallbacks are spent."""
        from openai.types.chat import ChatCompletion

        started = time.perf_counter()
        chain = self._chain(model, fallback_models)
        for position, models in enumerate(chain):
            params = self._params(models, messages, max_tokens, tools, temperature, user)
            try:
                completion = await self._client.post(
                    _CHAT_PATH, body=params, cast_to=ChatCompletion, options=_chat_options()
                )
                return _completion_result(completion, requested_model=model, started=started)
            except _call_failures() as exc:
                error = _call_error(
                    exc, model=models[0], started=started, timeout=self.timeout_seconds
                )
                if position + 1 < len(chain) and error.tries_next_model:
                    log.warning("model_fallback", model=models[0], code=error.code)
                    continue
                raise error from exc
        raise AssertionError("unreachable: the chain has at least one model")

    async def stream(
        self,
        *,
        model: str,
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        tools: Sequence[Mapping[str, Any]] | None = None,
        fallback_models: Sequence[str] = (),
        temperature: float | None = None,
        user: str | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Text and tool-call deltas as they arrive, then `StreamDone` with the whole result.

        An error after the stream began raises `ModelCallError`; the caller has seen the deltas
        so far and decides what becomes of them. Fallbacks are only tried before anything was
        streamed, and a stream that began is never retried.
        """
        from openai import AsyncStream
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        started = time.perf_counter()
        chain = self._chain(model, fallback_models)
        for position, models in enumerate(chain):
            params = self._params(models, messages, max_tokens, tools, temperature, user)
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
            assembler = _StreamAssembler(requested_model=model)
            try:
                stream = await self._client.post(
                    _CHAT_PATH,
                    body=params,
                    cast_to=ChatCompletion,
                    options=_chat_options(),
                    stream=True,
                    stream_cls=AsyncStream[ChatCompletionChunk],
                )
                async with stream:
                    async for chunk in stream:
                        for event in assembler.feed(chunk):
                            yield event
                result = assembler.result(started=started)
            except _call_failures() as exc:
                error = _call_error(
                    exc, model=models[0], started=started, timeout=self.timeout_seconds
                )
                if not assembler.emitted and position + 1 < len(chain) and error.tries_next_model:
                    log.warning("model_fallback", model=models[0], code=error.code)
                    continue
                raise error from exc
            yield StreamDone(result)
            return

    async def generation_cost(self, generation_id: str) -> GenerationCost | None:
        """OpenRouter's final figure for a generation (`GET /generation`), for reconciliation.

        None when the provider does not know it (yet) or is not OpenRouter.
        """
        if not self.openrouter:
            return None
        import openai

        started = time.perf_counter()
        try:
            body = await self._client.get(
                "/generation", cast_to=object, options={"params": {"id": generation_id}}
            )
        except openai.NotFoundError:
            return None
        except _call_failures() as exc:
            raise _call_error(
                exc, model=None, started=started, timeout=self.timeout_seconds
            ) from exc
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return None
        return GenerationCost(
            id=str(data.get("id") or generation_id),
            model=str(data.get("model") or ""),
            total_cost=parse_cost(data.get("total_cost")),
        )

    def _chain(self, model: str, fallback_models: Sequence[str]) -> list[list[str]]:
        models = list(dict.fromkeys([model, *fallback_models]))
        if self.openrouter:
            return [models]  # OpenRouter walks the list itself
        return [[m] for m in models]

    def _params(
        self,
        models: list[str],
        messages: Sequence[Mapping[str, Any]],
        max_tokens: int,
        tools: Sequence[Mapping[str, Any]] | None,
        temperature: float | None,
        user: str | None,
    ) -> dict[str, Any]:
        """The request body, JSON-ready (the OpenRouter extensions merged in)."""
        params: dict[str, Any] = {
            "model": models[0],
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens,
        }
        if tools:
            params["tools"] = [dict(t) for t in tools]
        if temperature is not None:
            params["temperature"] = temperature
        if user:
            params["user"] = user
        if self.openrouter:
            extra: dict[str, Any] = {
                "usage": {"include": True},
                "provider": {"data_collection": "deny"},
            }
            if len(models) > 1:
                extra["models"] = models
            params.update(extra)
        return params


@dataclass(frozen=True)
class GenerationCost:
    id: str
    model: str
    total_cost: Decimal | None


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _completion_result(completion: Any, *, requested_model: str, started: float) -> ModelCallResult:
    from openai.types.chat import ChatCompletion

    if not isinstance(completion, ChatCompletion):
        raise _bad_response("the answer is not a chat completion", requested_model, started)
    extra = completion.model_extra or {}
    if extra.get("error"):
        raise _body_error(extra["error"], status=None, model=requested_model, started=started)
    choices = getattr(completion, "choices", None) or []
    if not choices:
        raise _bad_response("the completion has no choices", requested_model, started)
    choice = choices[0]
    choice_error = (choice.model_extra or {}).get("error")
    finish_reason = getattr(choice, "finish_reason", None)
    if choice_error or finish_reason == "error":
        body = choice_error or {"message": "the model stopped with an error"}
        raise _body_error(body, status=None, model=requested_model, started=started)
    message = getattr(choice, "message", None)
    if message is None:
        raise _bad_response("the choice has no message", requested_model, started)
    calls = []
    for call in message.tool_calls or []:
        function = getattr(call, "function", None)
        if function is not None:
            calls.append(ToolCall(id=call.id, name=function.name, arguments=function.arguments))
    usage = completion.usage.model_dump() if completion.usage is not None else None
    return ModelCallResult(
        requested_model=requested_model,
        model=getattr(completion, "model", None) or requested_model,
        generation_id=getattr(completion, "id", None) or None,
        text=message.content or "",
        tool_calls=tuple(calls),
        finish_reason=finish_reason,
        usage=Usage.from_payload(usage),
        latency_ms=_elapsed_ms(started),
    )


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _StreamAssembler:
    requested_model: str
    model: str | None = None
    generation_id: str | None = None
    text: list[str] = field(default_factory=list)
    calls: dict[int, _PartialCall] = field(default_factory=dict)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    chunks: int = 0
    emitted: bool = False

    def feed(self, chunk: ChatCompletionChunk) -> Iterator[StreamEvent]:
        self.chunks += 1
        self.generation_id = self.generation_id or getattr(chunk, "id", None) or None
        self.model = getattr(chunk, "model", None) or self.model
        if getattr(chunk, "usage", None) is not None:
            self.usage = Usage.from_payload(chunk.usage.model_dump())  # type: ignore[union-attr]
        for choice in getattr(chunk, "choices", None) or []:
            if choice.index != 0:
                continue
            if choice.finish_reason:
                self.finish_reason = choice.finish_reason
            delta = choice.delta
            if delta is None:
                continue
            if delta.content:
                self.text.append(delta.content)
                self.emitted = True
                yield TextDelta(delta.content)
            for part in delta.tool_calls or []:
                yield self._tool_delta(part)

    def _tool_delta(self, part: Any) -> ToolCallDelta:
        index = part.index if part.index is not None else max(self.calls, default=-1) + 1
        call = self.calls.setdefault(index, _PartialCall())
        function = part.function
        name = function.name if function is not None else None
        arguments = (function.arguments if function is not None else None) or ""
        if part.id and not call.id:
            call.id = part.id
        if name and not call.name:
            call.name = name
        call.arguments.append(arguments)
        self.emitted = True
        return ToolCallDelta(index=index, id=part.id, name=name, arguments=arguments)

    def result(self, *, started: float) -> ModelCallResult:
        if self.chunks == 0:
            raise _bad_response("the stream ended without any chunk", self.requested_model, started)
        if self.finish_reason == "error":
            body = {"message": "the model stopped with an error"}
            raise _body_error(body, status=None, model=self.requested_model, started=started)
        if self.finish_reason is None:
            raise _bad_response(
                "the stream ended before the model finished", self.requested_model, started
            )
        calls = tuple(
            ToolCall(id=c.id or f"call_{i}", name=c.name, arguments="".join(c.arguments))
            for i, c in sorted(self.calls.items())
        )
        return ModelCallResult(
            requested_model=self.requested_model,
            model=self.model or self.requested_model,
            generation_id=self.generation_id,
            text="".join(self.text),
            tool_calls=calls,
            finish_reason=self.finish_reason,
            usage=self.usage,
            latency_ms=_elapsed_ms(started),
        )


def _bad_response(reason: str, model: str | None, started: float) -> ModelCallError:
    return ModelCallError(
        f"The model provider sent an unusable answer: {reason}",
        code="bad_response",
        retryable=True,
        model=model,
        latency_ms=_elapsed_ms(started),
    )


def _retryable_status(status: int) -> bool:
    return status in (408, 409, 429) or status >= 500


def _body_error(
    body: Any, *, status: int | None, model: str | None, started: float
) -> ModelCallError:
    """From an OpenRouter error object `{code, message, metadata?}`."""
    body = body if isinstance(body, Mapping) else {"message": str(body)}
    raw_code = body.get("code")
    if status is None and isinstance(raw_code, int) and 400 <= raw_code <= 599:
        status = raw_code
    if status is not None:
        code = _STATUS_CODES.get(status, f"http_{status}")
        retryable = _retryable_status(status)
    else:  # an error inside a generation that had begun: the provider broke, try again later
        code = str(raw_code or body.get("type") or "generation_error")
        retryable = True
    message = body.get("message")
    metadata = body.get("metadata")
    return ModelCallError(
        str(message) if message else "The model provider reported an error",
        code=code,
        status=status,
        retryable=retryable,
        model=model,
        metadata=metadata if isinstance(metadata, Mapping) else None,
        latency_ms=_elapsed_ms(started),
    )


def _call_error(
    exc: BaseException, *, model: str | None, started: float, timeout: float
) -> ModelCallError:
    if isinstance(exc, ModelCallError):
        return exc
    import openai

    latency = _elapsed_ms(started)
    if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
        return ModelCallError(
            f"The model provider did not answer within {timeout:g} seconds",
            code="timeout",
            retryable=True,
            model=model,
            latency_ms=latency,
        )
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
        cause = exc.__cause__ or exc
        return ModelCallError(
            f"Could not reach the model provider: {cause}",
            code="connection_error",
            retryable=True,
            model=model,
            latency_ms=latency,
        )
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, Mapping) else {"message": exc.message}
        return _body_error(body, status=exc.status_code, model=model, started=started)
    if isinstance(exc, openai.APIError):  # an `error` object inside a stream
        return _body_error(
            exc.body or {"message": exc.message}, status=None, model=model, started=started
        )
    return _bad_response(f"{type(exc).__name__}: {exc}", model, started)
