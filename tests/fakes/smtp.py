"""A fake SMTP server on 127.0.0.1 (random port) that keeps every message it accepts.

Tests can script the next answers to DATA: `fail(code)` refuses a message with an SMTP error
(4xx or 5xx), `hang()` holds the answer until the test releases it (then refuses it, as a
server that timed out would), and with nothing scripted the message is accepted and kept.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: Message

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        payload = self.message.get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode()


@dataclass
class Hang:
    """One held answer: `started` is set once a client waits on it; `release` lets it go on;
    `ended` is set when the server stops waiting (released, or the client hung up)."""

    started: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self.released.set()


@dataclass
class _Collector:
    messages: list[Received] = field(default_factory=list)
    script: deque[tuple[int, str] | Hang] = field(default_factory=deque)
    hangs: list[Hang] = field(default_factory=list)
    attempts: int = 0  # DATA commands answered or held, accepted or not

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        step = self.script.popleft() if self.script else None
        if isinstance(step, Hang):
            step.started.set()
            try:
                while not step.released.is_set():
                    await asyncio.sleep(0.01)
            finally:
                step.ended.set()
            return "451 4.4.2 Timed out waiting for the mail store"
        if step is not None:
            code, text = step
            return f"{code} {text}"
        content = envelope.original_content or envelope.content
        assert isinstance(content, bytes)
        self.messages.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                message=message_from_bytes(content),
            )
        )
        return "250 Message accepted for delivery"


class _RandomPortController(Controller):
    """Binds port 0 and learns the real port before aiosmtpd's readiness probe connects."""

    def _trigger_server(self) -> Any:
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        return super()._trigger_server()


@dataclass
class FakeSmtp:
    port: int
    collector: _Collector

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[Received]:
        return self.collector.messages

    @property
    def attempts(self) -> int:
        return self.collector.attempts

    def fail(self, code: int, text: str = "", *, times: int = 1) -> None:
        """Refuse the next `times` messages with `code` (e.g. 451: try later; 554: refused)."""
        for _ in range(times):
            self.collector.script.append((code, text or f"Scripted failure {code}"))

    def hang(self) -> Hang:
        """Hold the answer to the next message until `release()`; then refuse it (451)."""
        held = Hang()
        self.collector.script.append(held)
        self.collector.hangs.append(held)
        return held


@contextmanager
def fake_smtp() -> Iterator[FakeSmtp]:
    collector = _Collector()
    controller = _RandomPortController(collector, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        yield FakeSmtp(port=controller.port, collector=collector)
    finally:
        for held in collector.hangs:
            held.release()
        controller.stop()
