"""A thin client of Meta's Graph API for the WhatsApp Cloud API, on the platform's HTTP kit.

Every call goes through `ctx.http` (`SafeHttp`: each hop's addresses checked, loopback only with
`allow_private_urls`) to `<settings.whatsapp_api_base>/<api_version>/<path>`, with the channel's
access token as a Bearer header. Graph answers errors as `{"error": {"message", "type", "code",
"error_subcode", "error_data", "fbtrace_id"}}` with an HTTP status that does not tell them apart
(throttling is a 400, like a bad parameter): callers decide by `GraphError.code`. The token never
appears in a log line or an error text (`_redact` removes it should Graph ever echo it).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from lunogen.channel.contract import ChannelView, ProviderContext
from lunogen.kit import jsontext

MAX_ANSWER_BYTES = 64_000
# Graph's generic server-side codes: 1 unknown error, 2 service unavailable; WhatsApp's 131000
# (something went wrong), 131016 (service unavailable), 133004 (server temporarily unavailable).
TRANSIENT_CODES = frozenset({1, 2, 131000, 131016, 133004})


class GraphError(Exception):
    """Graph refused a call (its `error` object), or answered something that is not Graph's."""

    def __init__(
        self,
        *,
        status: int,
        message: str,
        code: int | None = None,
        subcode: int | None = None,
        details: str | None = None,
        trace_id: str | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.subcode = subcode
        self.details = details
        self.trace_id = trace_id
        self.transient = transient

    @property
    def retryable(self) -> bool:
        """A server-side failure that a later attempt may not meet."""
        return self.transient or self.status >= 500 or self.code in TRANSIENT_CODES

    def __str__(self) -> str:
        text = self.message
        if self.details and self.details not in text:
            text = f"{text}: {self.details}"
        return f"{text} (code {self.code})" if self.code is not None else text


def _redact(text: str, token: str) -> str:
    return text.replace(token, "[access token]") if token else text


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def error_of(status: int, answer: Any, *, token: str) -> GraphError:
    """The `GraphError` of a non-2xx answer (or a 2xx answer holding an `error`)."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict):
        return GraphError(
            status=status,
            message=f"the Graph API answered HTTP {status} without an error object",
            transient=status >= 500,
        )
    data = error.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    message = error.get("message") or error.get("error_user_msg") or f"HTTP {status}"
    return GraphError(
        status=status,
        message=_redact(str(message), token)[:1000],
        code=_int(error.get("code")),
        subcode=_int(error.get("error_subcode")),
        details=_redact(str(details), token)[:1000] if details else None,
        trace_id=str(error["fbtrace_id"])[:100] if error.get("fbtrace_id") else None,
        transient=error.get("is_transient") is True,
    )


def endpoint(ctx: ProviderContext, channel: ChannelView, path: str, **params: str) -> str:
    base = ctx.settings.whatsapp_api_base.rstrip("/")
    version = quote(str(channel.config.get("api_version") or "v21.0"), safe=".")
    url = f"{base}/{version}/{path.lstrip('/')}"
    return f"{url}?{urlencode(params)}" if params else url


async def call(
    ctx: ProviderContext,
    channel: ChannelView,
    method: str,
    path: str,
    *,
    body: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One Graph call; its JSON object. Raises `GraphError`, or `FetchError` (network, timeout,
    or `UnsafeUrlError` when the API root is not an address the kit may reach)."""
    token = channel.secrets.get("access_token", "")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    content = None
    if body is not None:
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        headers["Content-Type"] = "application/json"
    result = await ctx.http.send(
        method,
        endpoint(ctx, channel, path, **(params or {})),
        headers=headers,
        content=content,
        max_bytes=MAX_ANSWER_BYTES,
    )
    try:
        answer: Any = jsontext.loads(result.content) if result.content else None
    except ValueError:
        answer = None
    if 200 <= result.status_code < 300 and isinstance(answer, dict) and "error" not in answer:
        return answer
    if 200 <= result.status_code < 300:
        raise GraphError(
            status=result.status_code,
            # It may have done what was asked: not retried, so that nothing is sent twice.
            message="the Graph API answered something that is not a JSON object",
        )
    raise error_of(result.status_code, answer, token=token)
