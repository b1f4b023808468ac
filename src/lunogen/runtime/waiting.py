"""Waiting for a turn's reply: as one JSON answer, or as server-sent events while it is written.

Both follow the turn's live events (`runtime.events`), subscribed before the message is
enqueued, and fall back to reading the database now and then, so a lost event (Redis hiccup,
a reply stored by another process without a follower) only delays the answer. The reads go
through the read-only sessionmaker (`db.read_sessionmaker`): on SQLite they never queue for the
write lock that the turn needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.db import read_sessionmaker
from lunogen.kit.crypto import KeyRing
from lunogen.runtime.events import Subscription
from lunogen.runtime.models import Message

CHECK_DATABASE_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0


@dataclass(frozen=True)
class Settled:
    inbound: Message
    reply: Message | None


async def exchange(
    sessionmaker: async_sessionmaker[AsyncSession], message_id: str
) -> tuple[Message, Message | None]:
    """The message and its reply (None while there is none), read in one query."""
    async with read_sessionmaker(sessionmaker)() as session:
        rows = (
            await session.execute(
                select(Message).where(
                    or_(Message.id == message_id, Message.reply_to_id == message_id)
                )
            )
        ).scalars()
        inbound: Message | None = None
        reply: Message | None = None
        for row in rows:
            if row.id == message_id:
                inbound = row
            else:
                reply = row
    assert inbound is not None
    return inbound, reply


async def settled(
    sessionmaker: async_sessionmaker[AsyncSession], message_id: str
) -> Settled | None:
    """The message and its reply once its turn is over (answered, failed, skipped), else None.

    A message whose turn will be retried later counts as not over.
    """
    inbound, reply = await exchange(sessionmaker, message_id)
    if inbound.status == "pending":
        return None
    return Settled(inbound, reply)


async def wait_for_reply(
    sessionmaker: async_sessionmaker[AsyncSession],
    subscription: Subscription,
    message_id: str,
    wait_seconds: float,
    *,
    check_first: bool = True,
) -> tuple[Message, Message | None]:
    """Wait for the turn's end; on timeout, or when the turn stopped to wait for the owner's
    approval of a tool call, the message as it is (and no reply).

    `check_first=False` skips the database read before the first wait: for a message that was
    just accepted, whose turn cannot have ended before `subscription` was taken out.
    """
    deadline = time.monotonic() + wait_seconds
    check = check_first
    while True:
        if check:
            done = await settled(sessionmaker, message_id)
            if done is not None:
                return done.inbound, done.reply
        check = True
        left = deadline - time.monotonic()
        if left <= 0:
            inbound, reply = await exchange(sessionmaker, message_id)
            return inbound, reply if inbound.status != "pending" else None
        event = await subscription.next(min(left, CHECK_DATABASE_SECONDS))  # or time to look
        if event is not None and event.event == "approval":
            inbound, _reply = await exchange(sessionmaker, message_id)
            return inbound, None


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream_reply(
    sessionmaker: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    subscription: Subscription,
    *,
    message_id: str,
    thread_id: str,
    wait_seconds: float,
) -> AsyncIterator[str]:
    """SSE: `delta` (text as written), `tool` (a tool starts or ends), then `done` or `error`,
    or `approval` when the turn stopped to wait for the owner's decision on a tool call.

    `done` carries the whole reply text: a client that missed deltas still ends up right. A
    turn that will be retried later ends the stream with `error` and `retrying: true`; the
    reply then appears in the thread.
    """
    yield f": accepted {message_id}\n\n"
    deadline = time.monotonic() + wait_seconds
    last_check = last_sent = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= deadline:
            yield sse(
                "error",
                {
                    "message_id": message_id,
                    "thread_id": thread_id,
                    "error": "The reply is not ready yet; read it from the thread later.",
                    "retrying": True,
                },
            )
            return
        event = await subscription.next(min(deadline - now, CHECK_DATABASE_SECONDS))
        if event is not None:
            yield sse(event.event, {**event.data, "thread_id": thread_id})
            last_sent = time.monotonic()
            if event.event in ("done", "error", "approval"):
                return
            continue
        if time.monotonic() - last_check >= CHECK_DATABASE_SECONDS:
            last_check = time.monotonic()
            done = await settled(sessionmaker, message_id)
            if done is not None:  # its events went missing: tell the end from the database
                yield _final_event(done, keyring, thread_id)
                return
        if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()


def _final_event(done: Settled, keyring: KeyRing, thread_id: str) -> str:
    if done.reply is not None:
        return sse(
            "done",
            {
                "message_id": done.inbound.id,
                "reply_id": done.reply.id,
                "thread_id": thread_id,
                "text": keyring.decrypt(done.reply.content),
            },
        )
    return sse(
        "error",
        {
            "message_id": done.inbound.id,
            "thread_id": thread_id,
            "error": done.inbound.last_error or "The agent could not answer",
            "retrying": False,
        },
    )
