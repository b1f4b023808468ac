"""Kill -9 under load, shared by the embedded (tests/runtime/test_crash_kill.py) and the scaled
(tests/worker/test_scaled.py) tests: messages in flight, turns of several model calls, and what
the database says afterwards about replies and charges."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.billing.models import CreditEntry
from lunogen.billing.verify import verify_all
from lunogen.runtime.models import Message, RecordedCall
from tests.fakes.openrouter import FakeOpenRouter, FakeToolCall, Reply

IN_FLIGHT = 20
TOOL_STEPS = 2  # each turn: two calls asking for `remember`, then the answer
CALLS_PER_TURN = TOOL_STEPS + 1
MODEL_LATENCY = 0.3  # seconds: the kill lands while calls are in flight


def remember_twice(body: dict[str, Any]) -> Reply:
    """The fake's answer to one request of a turn: `remember` until the turn has TOOL_STEPS tool
    results after its user message, then an echo. `remember` answers with a new note id each
    time it runs, as a real tool's answer may differ when a turn is run again."""
    results = 0
    for message in reversed(body["messages"]):
        if message["role"] == "user":
            break
        results += message["role"] == "tool"
    if body.get("tools") and results < TOOL_STEPS:
        return Reply(tool_calls=[FakeToolCall("remember", {"note": "likes tea"})])
    return Reply(echo=True)


def script_turns(openrouter: FakeOpenRouter) -> None:
    openrouter.latency = MODEL_LATENCY
    openrouter.script = remember_twice


async def send_in_flight(http: httpx.AsyncClient, agent_id: str) -> list[str]:
    """IN_FLIGHT messages at once, one per contact (a thread each), accepted with a 202."""

    async def send(n: int) -> str:
        response = await http.post(
            f"/api/v1/agents/{agent_id}/messages",
            json={"text": f"Message {n}: I like tea", "contact": f"c{n}", "wait_seconds": 0},
        )
        assert response.status_code == 202, response.text
        return str(response.json()["message"]["id"])

    return list(await asyncio.gather(*(send(n) for n in range(IN_FLIGHT))))


async def wait_until(predicate: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


async def midway(sessionmaker: async_sessionmaker[AsyncSession], message_ids: list[str]) -> int:
    """Messages still pending with paid calls recorded: turns the kill cut in the middle."""
    async with sessionmaker() as session:
        found = await session.execute(
            select(func.count(func.distinct(RecordedCall.message_id)))
            .join(Message, Message.id == RecordedCall.message_id)
            .where(Message.id.in_(message_ids), Message.status == "pending")
        )
        return int(found.scalar_one())


async def settled(sessionmaker: async_sessionmaker[AsyncSession], message_ids: list[str]) -> bool:
    async with sessionmaker() as session:
        pending = await session.execute(
            select(func.count()).where(Message.id.in_(message_ids), Message.status == "pending")
        )
        return int(pending.scalar_one()) == 0


@dataclass(frozen=True)
class Outcome:
    statuses: dict[str, str]
    replies: dict[str, int]  # message → replies to it
    charges: dict[tuple[str, int], int]  # (message, step) → usage entries in the ledger
    problems: list[str]  # what billing.verify found


async def outcome(
    sessionmaker: async_sessionmaker[AsyncSession], message_ids: list[str]
) -> Outcome:
    async with sessionmaker() as session:
        statuses = await session.execute(
            select(Message.id, Message.status).where(Message.id.in_(message_ids))
        )
        replies = await session.execute(
            select(Message.reply_to_id, func.count())
            .where(Message.reply_to_id.in_(message_ids))
            .group_by(Message.reply_to_id)
        )
        keys = await session.execute(
            select(CreditEntry.idempotency_key).where(CreditEntry.kind == "usage")
        )
        charges: dict[tuple[str, int], int] = {}
        for key in keys.scalars():
            _, message_id, step, _ = key.split(":", 3)
            charges[(message_id, int(step))] = charges.get((message_id, int(step)), 0) + 1
        problems = [str(p) for p in await verify_all(session)]
    return Outcome(
        statuses={str(m): str(s) for m, s in statuses.all()},
        replies={str(m): int(n) for m, n in replies.all()},
        charges=charges,
        problems=problems,
    )


def assert_answered_once_and_charged_once(result: Outcome, message_ids: list[str]) -> None:
    assert result.statuses == dict.fromkeys(message_ids, "done")
    assert result.replies == dict.fromkeys(message_ids, 1)
    twice = {pair: n for pair, n in result.charges.items() if n > 1}
    assert twice == {}, f"charged more than once: {twice}"
    expected = {(m, step) for m in message_ids for step in range(CALLS_PER_TURN)}
    assert set(result.charges) == expected
    assert result.problems == []
