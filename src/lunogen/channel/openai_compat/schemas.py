"""The request and answers of `POST /v1/chat/completions`, in OpenAI's wire format.

Only what decides the answer is read: `model`, the last message, `stream`,
`stream_options.include_usage` and `user`. Parameters that would change what the client gets
back in ways an agent cannot honour are refused by name (`UNSUPPORTED`); the tuning ones
(`IGNORED`, and any other unknown field) are accepted and ignored, since the agent's own
configuration decides its model and output length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from lunogen.channel.fields import storable
from lunogen.channel.openai_compat.errors import invalid
from lunogen.llm.models import UsageRecord

MAX_TEXT_CHARS = 32_000  # as the API channel (`runtime.endpoints.MessageIn.text`)
MAX_CONTACT_CHARS = 200  # as the API channel's `contact`

# Accepted and ignored: the agent's configuration decides these.
IGNORED = (
    "frequency_penalty",
    "logit_bias",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "temperature",
    "top_p",
    "verbosity",
)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: StrictBool = False


class ChatCompletionRequest(BaseModel):
    """Earlier messages are read only to find the last one: the agent keeps its own memory of
    the conversation, so a client's copy of the history is never replayed to it."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1, max_length=300)]
    messages: Annotated[list[dict[str, Any]], Field(min_length=1)]
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)


def _n(value: Any) -> bool:
    return value is not None and value != 1


def _listed(value: Any) -> bool:
    return bool(value)


def _tool_choice(value: Any) -> bool:
    return value not in (None, "none", "auto")


def _response_format(value: Any) -> bool:
    return value is not None and value != {"type": "text"}


def _true(value: Any) -> bool:
    return value not in (None, False, 0)


def _modalities(value: Any) -> bool:
    return value not in (None, ["text"])


def _set(value: Any) -> bool:
    return value is not None


# Parameters an agent cannot honour, and what makes a value one it cannot honour.
UNSUPPORTED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (_n, "an agent writes one reply per message: 'n' must be 1"),
    "tools": (_listed, "the agent uses its own tools: client-side 'tools' are not supported"),
    "functions": (_listed, "client-side 'functions' are not supported"),
    "tool_choice": (
        _tool_choice,
        "client-side tools are not supported: 'tool_choice' must be 'none' or 'auto'",
    ),
    "function_call": (_tool_choice, "client-side functions are not supported"),
    "response_format": (
        _response_format,
        'only text replies are supported: \'response_format\' must be {"type": "text"}',
    ),
    "logprobs": (_true, "'logprobs' are not available from an agent"),
    "top_logprobs": (_true, "'top_logprobs' are not available from an agent"),
    "audio": (_set, "audio output is not supported"),
    "modalities": (_modalities, "only text output is supported: 'modalities' must be ['text']"),
    "web_search_options": (
        _set,
        "the agent uses its own tools: 'web_search_options' are not supported",
    ),
}


def check_supported(request: ChatCompletionRequest) -> None:
    """Refuse, naming it, the first parameter that asks for something an agent cannot do."""
    extra = request.model_extra or {}
    for name, (unsupported, why) in UNSUPPORTED.items():
        if name in extra and unsupported(extra[name]):
            raise invalid(
                f"Unsupported parameter: {why}.", param=name, code="unsupported_parameter"
            )


def inbound_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last message, which must be the user's: a string, or text parts.

    A conversation that ends with another role (a client asking to continue an assistant
    message, or sending tool results) is refused rather than answered as if the user had asked
    again.
    """
    index = len(messages) - 1
    last = messages[index]
    where = f"messages[{index}]"
    role = last.get("role")
    if role != "user":
        raise invalid(
            f"The last message must have role 'user' (it has {role!r}): the agent answers the "
            "user's newest message and keeps the conversation's history itself.",
            param=f"{where}.role",
        )
    content = last.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = _text_of_parts(content, where)
    else:
        raise invalid(
            f"'{where}.content' must be a string or an array of text parts.",
            param=f"{where}.content",
        )
    return _checked_text(text, f"{where}.content")


def _text_of_parts(parts: list[Any], where: str) -> str:
    texts: list[str] = []
    refused: list[str] = []
    for position, part in enumerate(parts):
        place = f"{where}.content[{position}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise invalid(f"'{place}' must be an object with a 'type'.", param=place)
        if part["type"] != "text":
            refused.append(f"{place} ({part['type']})")
            continue
        if not isinstance(part.get("text"), str):
            raise invalid(f"'{place}.text' must be a string.", param=f"{place}.text")
        texts.append(part["text"])
    if refused:
        raise invalid(
            f"Only text content is supported; not supported: {', '.join(refused)}.",
            param=refused[0].split(" ")[0],
            code="unsupported_content",
        )
    return "\n".join(texts)


def _checked_text(text: str, param: str) -> str:
    if not text.strip():
        raise invalid(f"'{param}' must contain some text.", param=param)
    if len(text) > MAX_TEXT_CHARS:
        raise invalid(
            f"'{param}' is {len(text)} characters long; at most {MAX_TEXT_CHARS} are accepted.",
            param=param,
            code="string_above_max_length",
        )
    return _storable(text, param)


def _storable(text: str, param: str) -> str:
    try:
        return storable(text)
    except ValueError as exc:  # pydantic's custom error is a ValueError
        raise invalid(f"'{param}' {exc}.", param=param) from exc


def contact_of(*, header: str | None, user: str | None, key_id: str) -> str:
    """Who the conversation is with: the `X-LunoGen-Contact` header, else the `user` field,
    else one conversation per API key (`key:<key id>`). Blank values count as absent."""
    for value, param in ((header, "X-LunoGen-Contact"), (user, "user")):
        if value is None or not value.strip():
            continue
        contact = value.strip()
        if len(contact) > MAX_CONTACT_CHARS:
            raise invalid(
                f"'{param}' names the conversation in at most {MAX_CONTACT_CHARS} characters.",
                param=param,
                code="string_above_max_length",
            )
        return _storable(contact, param)
    return f"key:{key_id}"


def completion_id(message_id: str) -> str:
    """The completion's id: the inbound message's, so a client's id finds the thread's message."""
    return f"chatcmpl-{message_id}"


def usage_body(rows: list[UsageRecord]) -> dict[str, Any]:
    """The turn's tokens: every model call it made (tool steps included), as recorded."""
    prompt = sum(row.prompt_tokens for row in rows)
    completion = sum(row.completion_tokens for row in rows)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(row.cached_tokens for row in rows)},
        "completion_tokens_details": {
            "reasoning_tokens": sum(row.reasoning_tokens for row in rows)
        },
    }


def completion_body(
    *, message_id: str, created: int, model: str, text: str, usage: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": completion_id(message_id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def chunk_body(
    *,
    message_id: str,
    created: int,
    model: str,
    delta: dict[str, Any] | None,
    finish_reason: str | None = None,
    usage: dict[str, Any] | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    """A `chat.completion.chunk`; `delta=None` is the usage chunk (no choices). With
    `include_usage`, every chunk carries `usage` (null until the last), as OpenAI sends them."""
    body: dict[str, Any] = {
        "id": completion_id(message_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if with_usage:
        body["usage"] = usage
    return body


def model_body(*, agent_id: str, name: str, slug: str, status: str, created: int) -> dict[str, Any]:
    """An agent as an OpenAI model. `name` is what chat front-ends (Open WebUI) show."""
    return {
        "id": f"agent/{agent_id}",
        "object": "model",
        "created": created,
        "owned_by": "lunogen",
        "name": name,
        "slug": f"agent/{slug}" if slug else None,
        "status": status,
    }
