"""Pure ASGI middleware: security headers, rate-limit headers, request metrics, body size
limit, NUL guard."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lunogen.errors import body_too_large, validation_response
from lunogen.kit.web import media_type

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; form-action 'self' https://accounts.google.com; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)

# One year, subdomains included: the answer of a server that is only ever reached over https.
HSTS = "max-age=31536000; includeSubDomains"


def security_headers(*, https: bool) -> dict[str, str]:
    """The headers every answer carries; HSTS only when browsers reach us over https alone."""
    headers = {
        "Content-Security-Policy": CSP,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
        "Cross-Origin-Opener-Policy": "same-origin",
    }
    if https:
        headers["Strict-Transport-Security"] = HSTS
    return headers


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, https: bool) -> None:
        self.app = app
        self.headers = security_headers(https=https)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                # A response that sets its own CSP (the web chat page) decides who may frame
                # it with `frame-ancestors`: X-Frame-Options: DENY would contradict it.
                own_policy = "content-security-policy" in headers
                for name, value in self.headers.items():
                    if own_policy and name == "X-Frame-Options":
                        continue
                    headers.setdefault(name, value)
                status = scope.get("state", {}).get("rate_limit")
                if status is not None:
                    for name, value in status.headers().items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "lunogen_http_requests_total",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "lunogen_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            registry=self.registry,
        )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder: dict[str, Any] = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            self.metrics.requests.labels(method, template, str(status_holder["status"])).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)


@dataclass(frozen=True)
class RouteBodyLimit:
    """A route whose bodies may be larger (or must be smaller) than the default limit."""

    method: str
    path: str  # the route's template, as declared: "/api/v1/skills/{skill_id}"
    limit: int


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            if not value.isdigit():
                return None  # the server refuses malformed lengths itself
            return int(value) if len(value) <= 18 else 10**18
    return None


def _too_large_response(limit: int) -> JSONResponse:
    error = body_too_large(limit)
    # The rest of the body is never read: the connection cannot carry another request.
    return JSONResponse(
        error.body(), status_code=error.status_code, headers={"Connection": "close"}
    )


class _CountedBody:
    """The request's `receive` and `send`, counting the body against `limit`."""

    def __init__(self, receive: Receive, send: Send, limit: int) -> None:
        self._receive = receive
        self._send = send
        self.limit = limit
        self.received = 0
        self.exceeded = False
        self.started = False

    async def receive(self) -> Message:
        if self.exceeded:
            raise body_too_large(self.limit)
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                self.exceeded = True
                raise body_too_large(self.limit)
        return message

    async def send(self, message: Message) -> None:
        if self.exceeded:
            return  # the app's answer to a body it could not read is replaced by the 413
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


class BodyLimitMiddleware:
    """Refuse request bodies over their limit with 413, before anything reads or parses them.

    The limit is `default`, or that of the first of `routes` matching the method and path. A
    Content-Length over it is answered at once, without running the app. A body without one
    (chunked) is counted as it streams: the read that passes the limit fails, whatever the app
    would have answered is dropped, and the 413 goes out instead. So no more than the limit
    (plus one chunk) is ever read, whatever comes later (NUL guard, authentication, routing).
    """

    def __init__(
        self, app: ASGIApp, *, default: int, routes: Sequence[RouteBodyLimit] = ()
    ) -> None:
        self.app = app
        self.default = default
        self.routes = [
            (route.method.upper(), compile_path(route.path)[0], route.limit) for route in routes
        ]

    def limit_for(self, method: str, path: str) -> int:
        for route_method, pattern, limit in self.routes:
            if route_method == method and pattern.match(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _too_large_response(limit)(scope, receive, send)
            return
        body = _CountedBody(receive, send, limit)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if not body.exceeded or body.started:
                raise  # a failure of its own, or one the 413 can no longer replace
        if body.exceeded and not body.started:
            await _too_large_response(limit)(scope, receive, send)


NUL_MESSAGE = "must not contain NUL (\\u0000) characters"
_FORM = "application/x-www-form-urlencoded"


def _nul_in_json(value: Any, loc: tuple[str, ...]) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return loc if "\x00" in value else None
    if isinstance(value, dict):
        items: list[tuple[str, Any]] = list(value.items())
    elif isinstance(value, list):
        items = [(str(i), v) for i, v in enumerate(value)]
    else:
        return None
    for key, item in items:
        if "\x00" in key:
            return (*loc, key.replace("\x00", ""))
        found = _nul_in_json(item, (*loc, key))
        if found:
            return found
    return None


def _nul_in_pairs(text: str, loc: str) -> tuple[str, ...] | None:
    for key, value in parse_qsl(text, keep_blank_values=True):
        if "\x00" in key or "\x00" in value:
            return (loc, key.replace("\x00", ""))
    return None


def _nul_in_body(body: bytes, content_type: str) -> tuple[str, ...] | None:
    """The place of a NUL in a form or JSON body; a byte scan first, parsing only on a hit.

    Every body is checked as JSON too, whatever its type: FastAPI parses application/json and
    every application/*+json, the form-or-JSON endpoints (kit.forms) any body they do not take
    for a form. A NUL in JSON is the escape \\u0000 (JSON has no other way to write it in
    UTF-8), or a raw zero byte of a UTF-16/32 encoded body.
    """
    if media_type(content_type) == _FORM and (b"%00" in body or b"\x00" in body):
        found = _nul_in_pairs(body.decode("latin-1"), "body")
        if found is not None:
            return found
    if b"\\u0000" not in body and b"\x00" not in body:
        return None
    try:
        return _nul_in_json(json.loads(body), ("body",))
    except (ValueError, RecursionError):
        return None  # not JSON: the endpoint answers that itself


class RejectNulMiddleware:
    """Refuse text with NUL characters anywhere in the URL, a form or a JSON body with a 422.

    PostgreSQL cannot store NUL in text columns (and a NUL in an email or a name is never
    meant), so it is refused at the edge for every endpoint, naming the field at fault. Bodies
    are read whole, so this runs inside BodyLimitMiddleware: it never holds more than the
    limit. Multipart bodies (file uploads) are left to their endpoint.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found: tuple[str, ...] | None = None
        if "\x00" in scope["path"]:
            found = ("path", "url")
        else:
            query = scope.get("query_string", b"")
            if b"%00" in query or b"\x00" in query:
                found = _nul_in_pairs(query.decode("latin-1"), "query")
        content_type = ""
        for name, value in scope.get("headers", []):
            if name == b"content-type":
                content_type = value.decode("latin-1")
        if found is None and not media_type(content_type).startswith("multipart/"):
            receive, found = await self._check_body(receive, content_type)
        if found is not None:
            errors = [{"loc": found, "msg": NUL_MESSAGE, "type": "nul_character"}]
            await validation_response(errors)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check_body(
        self, receive: Receive, content_type: str
    ) -> tuple[Receive, tuple[str, ...] | None]:
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        found = _nul_in_body(body, content_type)

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return replay, found
