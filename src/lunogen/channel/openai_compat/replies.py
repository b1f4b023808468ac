"""Following a turn for an OpenAI client: its end as one answer, or its text as chunks.

The turn's live events (`runtime.events`) are followed as the API channel follows them
(`runtime.waiting`): subscribed before the message is enqueued, with a database read now and
then, so a lost event only delays the answer. A turn the runtime will retry later (the model
provider failed) is waited for, within `WAIT_SECONDS`, as long as no text was sent for it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.channel.openai_compat import schemas
from lunogen.channel.openai_compat.errors import NO_RETRY, SERVER_ERROR, OpenAIError
from lunogen.db import read_sessionmaker
from lunogen.kit.crypto import KeyRing
from lunogen.llm.models import UsageRecord
from lunogen.runtime import waiting
from lunogen.runtime.events import Subscription, TurnEvent
from lunogen.runtime.models import Message

WAIT_SECONDS = 300.0  # the longest a request waits for its reply (the openai SDK waits 600 s)
# A stream's HTTP status is chosen when its first event arrives, or after this long: a turn
# refused at once (credits, agent stopped) is then an HTTP error, not an error inside a 200.
FIRST_EVENT_SECONDS = 10.0
TIMEOUT = "timeout"  # the event `follow` ends with when the deadline passes


def ids_headers(message_id: str, thread_id: str) -> dict[str, str]:
    return {"X-LunoGen-Message-Id": message_id, "X-LunoGen-Thread-Id": thread_id}


def failure_error(inbound: Message, thread_id: str) -> OpenAIError:
    """Why `inbound` has no reply, as the client is told. Never retried by the SDKs: the
    message is in the thread already."""
    headers = {**NO_RETRY, **ids_headers(inbound.id, thread_id)}
    failure = inbound.failure or {}
    if inbound.status == "pending":
        return OpenAIError(
            f"The agent has not answered within {WAIT_SECONDS:g} s (the model provider may be "
            f"failing; it is retried). The reply will appear in thread {thread_id}.",
            status_code=504,
            type=SERVER_ERROR,
            code="reply_timeout",
            headers=headers,
        )
    if failure.get("code") == "moderation_blocked":  # kept, not answered (runtime.screening)
        return OpenAIError(
            f"The message was not answered: {inbound.last_error}",
            status_code=400,
            code="content_policy_violation",
            headers=headers,
        )
    if inbound.status == "skipped":
        return OpenAIError(
            f"The message was not answered: {inbound.last_error or 'the agent stopped'}",
            status_code=409,
            code="agent_not_running",
            headers=headers,
        )
    if failure.get("code") == "insufficient_credits":
        return OpenAIError(
            inbound.last_error or "Not enough credits to answer",
            status_code=429,
            type="insufficient_quota",
            code="insufficient_quota",
            headers=headers,
        )
    return OpenAIError(
        f"The agent could not answer: {inbound.last_error or 'the turn failed'}",
        status_code=502,
        type=SERVER_ERROR,
        code="agent_failed",
        headers=headers,
    )


def interrupted_error(thread_id: str) -> OpenAIError:
    """For a stream whose turn failed after some of its text was sent: the turn is retried,
    but what was sent cannot be taken back, so the stream ends here."""
    return OpenAIError(
        "The model provider failed while the reply was being written; the agent will try "
        f"again, and its reply will appear in thread {thread_id}.",
        status_code=502,
        type=SERVER_ERROR,
        code="reply_interrupted",
    )


async def usage_of(
    sessionmaker: async_sessionmaker[AsyncSession], message_id: str
) -> dict[str, Any]:
    async with read_sessionmaker(sessionmaker)() as session:
        rows = await session.execute(
            select(UsageRecord).where(UsageRecord.message_id == message_id)
        )
        return schemas.usage_body(list(rows.scalars()))


def is_failure(event: TurnEvent) -> bool:
    return event.event == TIMEOUT or (event.event == "error" and not event.data.get("retrying"))


def is_retry(event: TurnEvent) -> bool:
    return event.event == "error" and bool(event.data.get("retrying"))


async def follow(
    sessionmaker: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    subscription: Subscription,
    *,
    message_id: str,
    deadline: float,
) -> AsyncGenerator[TurnEvent | None, None]:
    """The turn's events (`delta`, `tool`, `error` with `retrying`) until its end: `done`
    (with the whole `text`), `error` (not retrying), or `timeout` at `deadline`. An end whose
    event went missing is read from the database. None each second nothing happens."""
    last_check = time.monotonic()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            yield TurnEvent(TIMEOUT, {})
            return
        event = await subscription.next(min(left, waiting.CHECK_DATABASE_SECONDS))
        if event is not None:
            yield event
            if event.event == "done" or is_failure(event):
                return
            continue
        if time.monotonic() - last_check >= waiting.CHECK_DATABASE_SECONDS:
            last_check = time.monotonic()
            settled = await waiting.settled(sessionmaker, message_id)
            if settled is not None:
                if settled.reply is not None:
                    text = keyring.decrypt(settled.reply.content)
                    yield TurnEvent("done", {"text": text})
                else:
                    yield TurnEvent("error", {"retrying": False})
                return
        yield None


class ChunkWriter:
    """The SSE lines of one streamed completion."""

    def __init__(self, *, message_id: str, created: int, model: str, include_usage: bool) -> None:
        self.message_id = message_id
        self.created = created
        self.model = model
        self.include_usage = include_usage

    def chunk(
        self,
        delta: dict[str, Any] | None,
        *,
        finish_reason: str | None = None,
        usage: dict[str, Any] | None = None,
    ) -> str:
        body = schemas.chunk_body(
            message_id=self.message_id,
            created=self.created,
            model=self.model,
            delta=delta,
            finish_reason=finish_reason,
            usage=usage,
            with_usage=self.include_usage,
        )
        return data_line(body)


def data_line(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, separators=(',', ':'), ensure_ascii=False)}\n\n"


DONE_LINE = "data: [DONE]\n\n"


class StreamedText:
    """What was sent of the reply, to finish it right when the turn ends.

    Deltas are sent as they come. A step that ran tools may have written text before them;
    the reply is only the last step's text, so that earlier text stays on the client's screen
    (separated by a blank line) but not in the agent's memory. When the turn ends, the part of
    the reply not yet sent (all of it when its deltas went missing) is sent.
    """

    def __init__(self) -> None:
        self.sent = False
        self.step = ""  # the text sent since the last tool ran
        self.new_step = False

    def delta(self, text: str) -> str:
        """What to send for a delta of the model's text."""
        if not text:
            return ""
        sent = "\n\n" + text if self.new_step and self.sent else text
        self.new_step = False
        self.step += text
        self.sent = True
        return sent

    def tool_ran(self) -> None:
        self.new_step = True
        self.step = ""

    def rest_of(self, reply: str) -> str:
        """The part of `reply` the client has not been sent ('' when deltas went astray in the
        middle: what was sent cannot be taken back)."""
        if not reply.startswith(self.step):
            return ""
        rest = reply[len(self.step) :]
        if rest and not self.step and self.sent:
            return "\n\n" + rest
        return rest
