"""Serve a fake's ASGI app over real HTTP on 127.0.0.1, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.types import ASGIApp


def loopback_socket(host: str = "127.0.0.1", port: int = 0) -> tuple[socket.socket, int]:
    """A socket bound on loopback (a free port by default), so the URL is known before serving."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock, int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(
    app: ASGIApp, sock: socket.socket, *, name: str, **config: Any
) -> Iterator[None]:
    """Run `app` with uvicorn on `sock` until the block ends; fail loudly if it cannot start."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
