"""A small website served over real HTTP(S) on a loopback address, for the outbound HTTP guard.

It records every request it receives (so a test can prove a request never arrived) and serves:
`/page.html`, `/plain.txt`, `/data.json`, `/image.png`, `/big?n=`, `/echo` (any method: the
request as JSON), `/redirect?to=&status=`, `/status/{code}`, `/hang` (never answers) and
`/hang-body` (headers and a first chunk, then nothing).

    with Website.running() as site:               # 127.0.0.1, a free port
        other = Website.running(host="127.0.0.2", port=site.port)

`FakeDns` scripts what host names resolve to, and `LoopbackIsPublic` lets 127.0.0.1 pass the
guard as if it were a public address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from lunogen.kit.http import AddressPolicy, IPAddress
from tests.fakes.server import loopback_socket, serve_in_thread


class LoopbackIsPublic(AddressPolicy):
    """Production address rules, except that 127.0.0.1 (where a `Website` runs) counts as public.

    Lets a test put a "public" first hop on loopback while 127.0.0.2 plays an internal host.
    """

    def refusal(self, address: IPAddress) -> str | None:
        if address == ipaddress.ip_address("127.0.0.1"):
            return None
        return super().refusal(address)


class FakeDns:
    """A resolver with scripted answers: the n-th lookup of a name gets its n-th (or last) one."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        seen = self.calls.count(host)
        self.calls.append(host)
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self.answers[host]
        return answers[min(seen, len(answers) - 1)]


PAGE = """<!DOCTYPE html>
<html><head>
<meta charset="utf-8">
<title>  The Lunar   Garden  </title>
<style>body { color: red; } .hidden-style-marker {}</style>
<script>var trackingMarker = "do not show";</script>
</head>
<body>
<nav><a href="/">Home</a> <a href="/menu">Navigation menu marker</a></nav>
<header><p>Site header marker</p></header>
<main>
<h1>Growing   moon flowers</h1>
<p>Moon flowers open at   dusk
   and close by morning.</p>
<ul><li>Plant in spring</li><li>Water &amp; wait</li></ul>
<noscript>Enable JavaScript marker</noscript>
<pre>keep
  this</pre>
</main>
<footer>Footer marker</footer>
<script type="module">console.log("module script marker")</script>
</body></html>
"""


@dataclass
class Seen:
    method: str
    path: str
    host: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Website:
    host: str = "127.0.0.1"
    port: int = 0
    scheme: str = "http"
    requests: list[Seen] = field(default_factory=list)
    stopping: bool = False

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    async def _record(self, request: Request) -> None:
        self.requests.append(
            Seen(
                method=request.method,
                path=request.url.path,
                host=request.headers.get("host", ""),
                body=await request.body(),
                headers=dict(request.headers),
            )
        )

    def asgi_app(self) -> Starlette:
        async def page(request: Request) -> Response:
            await self._record(request)
            return Response(PAGE, media_type="text/html")

        async def plain(request: Request) -> Response:
            await self._record(request)
            return PlainTextResponse("Just   plain text.\nSecond line.")

        async def data(request: Request) -> Response:
            await self._record(request)
            return JSONResponse({"flower": "moon", "hours": [18, 6]})

        async def image(request: Request) -> Response:
            await self._record(request)
            return Response(b"\x89PNG\r\n\x1a\n" + bytes(range(256)), media_type="image/png")

        async def big(request: Request) -> Response:
            await self._record(request)
            size = int(request.query_params.get("n", "100000"))
            kind = request.query_params.get("type", "text/plain")

            async def chunks() -> AsyncIterator[bytes]:
                sent = 0
                while sent < size:
                    piece = min(4096, size - sent)
                    sent += piece
                    yield b"a" * piece

            return StreamingResponse(chunks(), media_type=kind)

        async def echo(request: Request) -> Response:
            await self._record(request)
            seen = self.requests[-1]
            return JSONResponse(
                {
                    "method": seen.method,
                    "host": seen.host,
                    "body": seen.body.decode(),
                    "content_type": seen.headers.get("content-type"),
                    "authorization": seen.headers.get("authorization"),
                }
            )

        async def redirect(request: Request) -> Response:
            await self._record(request)
            status = int(request.query_params.get("status", "302"))
            return RedirectResponse(request.query_params["to"], status_code=status)

        async def status(request: Request) -> Response:
            await self._record(request)
            return PlainTextResponse("status page", status_code=int(request.path_params["code"]))

        async def hang(request: Request) -> Response:
            await self._record(request)
            await self._wait_for_stop()
            return PlainTextResponse("too late")

        async def hang_body(request: Request) -> Response:
            await self._record(request)

            async def chunks() -> AsyncIterator[bytes]:
                yield b"first chunk "
                await self._wait_for_stop()

            return StreamingResponse(chunks(), media_type="text/plain")

        methods = ["GET", "POST", "PUT", "HEAD"]
        return Starlette(
            routes=[
                Route("/page.html", page),
                Route("/plain.txt", plain),
                Route("/data.json", data),
                Route("/image.png", image),
                Route("/big", big),
                Route("/echo", echo, methods=methods),
                Route("/redirect", redirect, methods=methods),
                Route("/status/{code:int}", status),
                Route("/hang", hang),
                Route("/hang-body", hang_body),
            ]
        )

    async def _wait_for_stop(self) -> None:
        deadline = time.monotonic() + 30
        while not self.stopping and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    @classmethod
    @contextmanager
    def running(
        cls,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        certfile: Path | None = None,
        keyfile: Path | None = None,
    ) -> Iterator[Website]:
        sock, bound_port = loopback_socket(host, port)
        site = cls(host=host, port=bound_port, scheme="https" if certfile else "http")
        tls: dict[str, Any] = {}
        if certfile:
            tls = {
                "ssl_certfile": str(certfile),
                "ssl_keyfile": str(keyfile) if keyfile else None,
                "ssl_cert_reqs": ssl.CERT_NONE,
            }
        with serve_in_thread(site.asgi_app(), sock, name="the fake website", **tls):
            try:
                yield site
            finally:
                site.stopping = True
