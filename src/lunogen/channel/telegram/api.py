"""The Bot API over the platform's SSRF-safe HTTP kit: `POST <base>/bot<token>/<method>` with a
JSON body, answered `{"ok": true, "result": ...}` or `{"ok": false, "error_code", "description",
"parameters": {"retry_after", "migrate_to_chat_id"}}`.

The token is part of the URL, so nothing raised here carries the URL: a transport failure becomes
a `FetchError` whose text names the method only, with its cause dropped.
"""

from __future__ import annotations

import json
from typing import Any

from lunogen.channel.contract import ProviderContext
from lunogen.kit import jsontext
from lunogen.kit.http import FetchError, UnsafeUrlError

MAX_ANSWER_BYTES = 256_000


class BotApiError(Exception):
    """Telegram answered `ok: false` (or something that is not the Bot API's JSON)."""

    def __init__(self, code: int, description: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code} {description}")
        self.code = code
        self.description = description
        self.retry_after = retry_after

    @property
    def token_refused(self) -> bool:
        """The token is unknown or revoked (401), or not a token at all (404 on the bot URL)."""
        return self.code in (401, 404)


def scrub(text: str, token: str) -> str:
    """`text` without the token (and so without any URL that holds it)."""
    if not token:
        return text
    shown = token.partition(":")[0] + ":…" if ":" in token else "…"
    return text.replace(token, shown)


async def call(
    ctx: ProviderContext,
    token: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,  # noqa: ASYNC109 (passed on to the HTTP kit)
) -> Any:
    """Call `method` and return its `result`; raises `BotApiError` or `FetchError` (scrubbed)."""
    base = ctx.settings.telegram_api_base.rstrip("/")
    url = f"{base}/bot{token}/{method}"
    body = json.dumps(params or {}, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        answer = await ctx.http.send(
            "POST",
            url,
            headers={"content-type": "application/json"},
            content=body,
            timeout=timeout,
            max_bytes=MAX_ANSWER_BYTES,
        )
    except UnsafeUrlError as exc:
        raise UnsafeUrlError(f"Telegram {method}: {scrub(str(exc), token)}") from None
    except FetchError as exc:
        raise FetchError(f"Telegram {method}: {scrub(str(exc), token)}") from None
    try:
        data = jsontext.loads(answer.content)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("ok"), bool):
        raise BotApiError(answer.status_code, f"HTTP {answer.status_code} without a Bot API answer")
    if data["ok"]:
        return data.get("result")
    parameters = data.get("parameters") if isinstance(data.get("parameters"), dict) else {}
    retry_after = parameters.get("retry_after") if parameters else None
    code = data.get("error_code")
    description = data.get("description")
    raise BotApiError(
        code if isinstance(code, int) else answer.status_code,
        scrub(str(description), token) if description else f"HTTP {answer.status_code}",
        float(retry_after) if isinstance(retry_after, int | float) else None,
    )


def chat_id_of(contact: str) -> int | str:
    """A thread's contact as the Bot API's `chat_id` (an integer; `@channel` names as given)."""
    try:
        return int(contact)
    except ValueError:
        return contact


def is_private(contact: str) -> bool:
    """Private chats have the user's (positive) id; groups and supergroups negative ids."""
    chat = chat_id_of(contact)
    return isinstance(chat, int) and chat > 0


def reference(message_id: int, topic: int | None) -> str:
    """The stored reference of an inbound message: `<message id>[/<forum topic id>]`."""
    return str(message_id) if topic is None else f"{message_id}/{topic}"


def parse_reference(value: str | None) -> tuple[int | None, int | None]:
    """The message id and forum topic of a stored reference (None for what is unreadable)."""
    if not value:
        return None, None
    head, _, tail = value.partition("/")
    try:
        message_id = int(head)
    except ValueError:
        return None, None
    try:
        topic = int(tail) if tail else None
    except ValueError:
        topic = None
    return message_id, topic
