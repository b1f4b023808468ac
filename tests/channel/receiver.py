"""A webhook receiver on 127.0.0.1 that records what it is sent and answers scripted statuses."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes.server import loopback_socket, serve_in_thread


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    port: int = 0
    requests: list[Received] = field(default_factory=list)
    script: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, status: int, *, times: int = 1, **headers: str) -> None:
        """The next POSTs get `status` (then 200 once the script runs out)."""
        with self.lock:
            for _ in range(times):
                self.script.append((status, {k.replace("_", "-"): v for k, v in headers.items()}))

    def received(self) -> list[Received]:
        with self.lock:
            return list(self.requests)

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            status, headers = self.script.popleft() if self.script else (200, {})
            self.requests.append(Received(dict(request.headers), body, status))
        return Response(b"", status_code=status, headers=headers)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[Receiver]:
        sock, port = loopback_socket()
        fake = cls(port=port)
        app = Starlette(routes=[Route("/hook", fake._hook, methods=["POST"])])
        with serve_in_thread(app, sock, name="webhook receiver"):
            yield fake
