"""Where a turn's end and a turn in progress meet the outside world, without the runtime knowing
who listens: the channels register here (`channel.delivery`) and send what the turn produced.

`turn_ended` runs inside the transaction that stores the reply (or marks the message failed or
skipped), so whatever a listener writes commits with it and its jobs start after that commit.
`answering` wraps the model loop, with no transaction open, for what a channel shows while the
agent is answering (typing indicators, streamed drafts).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TurnEnd:
    inbound_id: str
    thread_id: str
    channel_key: str
    answered: bool  # False: failed or skipped, no reply will come
    reason: str | None = None


@dataclass(frozen=True)
class TurnInProgress:
    inbound_id: str
    thread_id: str
    channel_key: str
    contact: str | None
    streams: bool


TurnEndListener = Callable[[AsyncSession, TurnEnd], Awaitable[None]]
AnsweringListener = Callable[[TurnInProgress], AbstractAsyncContextManager[None]]

_on_end: list[TurnEndListener] = []
_answering: list[AnsweringListener] = []


def on_turn_end(listener: TurnEndListener) -> TurnEndListener:
    _on_end.append(listener)
    return listener


def on_answering(listener: AnsweringListener) -> AnsweringListener:
    _answering.append(listener)
    return listener


async def turn_ended(session: AsyncSession, end: TurnEnd) -> None:
    for listener in _on_end:
        await listener(session, end)


@asynccontextmanager
async def answering(turn: TurnInProgress) -> AsyncIterator[None]:
    """Enter every listener's context around the turn; a listener that fails is logged and
    left out, never failing the turn."""
    async with contextlib.AsyncExitStack() as stack:
        for listener in _answering:
            try:
                await stack.enter_async_context(_guarded(listener(turn), turn))
            except Exception:
                log.exception("answering_listener_failed", message_id=turn.inbound_id)
        yield


@asynccontextmanager
async def _guarded(
    context: AbstractAsyncContextManager[None], turn: TurnInProgress
) -> AsyncIterator[None]:
    await context.__aenter__()
    try:
        yield
    finally:
        try:
            await context.__aexit__(None, None, None)
        except Exception:
            log.exception("answering_listener_failed", message_id=turn.inbound_id)
