"""Lets a synchronous client (schemathesis, hypothesis) call the app that runs on the test's loop.

The app under test was started by the `app` fixture on pytest-asyncio's event loop, and its
database engine and rate-limit storage belong to that loop. Schemathesis sends requests from its
own thread and loop, so `LoopBridge` is an ASGI app for that loop which hands each request over to
the test's loop, runs the real app there, and replays the response.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class LoopBridge:
    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.loop = loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # the real app's lifespan is run by the `app` fixture
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        scope = {**scope, "client": ("127.0.0.1", 50000), "state": {}}
        future = asyncio.run_coroutine_threadsafe(self._run(scope, b"".join(chunks)), self.loop)
        for message in await asyncio.wrap_future(future):
            await send(message)

    async def _run(self, scope: Scope, body: bytes) -> list[Message]:
        sent: list[Message] = []
        finished = asyncio.Event()
        delivered = False

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                finished.set()

        await self.app(scope, receive, send)
        finished.set()
        return sent
