"""Jobs and log wake-ups go out only when the OUTERMOST transaction commits, with SAVEPOINTs.

SQLAlchemy fires `after_commit` for a released SAVEPOINT and `after_rollback` for a rolled-back
one. These tests open savepoints around deferred work, exactly as the services do
(`begin_nested`), and check on the real database (SQLite, and PostgreSQL in its pass) that work
is sent once, after the COMMIT, only for what the commit made durable. A sender checks whether
another connection can already see the row that the work is about.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from taskiq import AsyncTaskiqDecoratedTask

from lunogen.account.models import User
from lunogen.agent.models import Agent
from lunogen.db import create_read_sessionmaker
from lunogen.kit.ids import new_id
from lunogen.notification.models import OutboundEmail
from lunogen.runlog import logs as agent_logs
from lunogen.runlog.models import AgentLogEvent
from lunogen.worker import enqueue

LABELS = ("outer", "middle", "inner", "later")


@dataclass
class Sent:
    """What went out, in order: (label, whether another connection saw its row then)."""

    items: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.items]


class _Probe:
    """A job stand-in: records each send and whether its email row was committed by then."""

    task_name = "tests.after_commit_probe"

    def __init__(self, read: async_sessionmaker[AsyncSession], sent: Sent) -> None:
        self.read = read
        self.sent = sent

    async def kiq(self, label: str) -> None:
        async with self.read() as session:
            found = await session.execute(
                select(OutboundEmail.id).where(OutboundEmail.subject == label)
            )
            self.sent.items.append((label, found.first() is not None))


class _RecordingBus(agent_logs.LogBus):
    """A log bus that records each wake-up and whether its log row was committed by then."""

    def __init__(
        self, read: async_sessionmaker[AsyncSession], sent: Sent, labels: dict[str, str]
    ) -> None:
        super().__init__()
        self.read = read
        self.sent = sent
        self.labels = labels  # agent id -> label

    async def publish(self, agent_id: str) -> None:
        async with self.read() as session:
            found = await session.execute(
                select(AgentLogEvent.id).where(AgentLogEvent.agent_id == agent_id)
            )
            self.sent.items.append((self.labels[agent_id], found.first() is not None))


@dataclass
class Work:
    """One kind of after-commit work: `add` defers one item; `settle` waits for the sends."""

    name: str
    add: Callable[[AsyncSession, str], Awaitable[None]]
    settle: Callable[[], Awaitable[None]]
    sent: Sent


async def _job_work(engine: AsyncEngine) -> Work:
    sent = Sent()
    probe = cast(AsyncTaskiqDecoratedTask[Any, Any], _Probe(create_read_sessionmaker(engine), sent))

    async def add(session: AsyncSession, label: str) -> None:
        session.add(
            OutboundEmail(
                id=new_id(),
                to_address=f"{label}@example.com",
                subject=label,
                body_encrypted="-",
                status="queued",
            )
        )
        await session.flush()
        enqueue.enqueue(session, probe, label)

    return Work("job", add, enqueue.drain, sent)


async def _log_work(
    engine: AsyncEngine, sm: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Work]:
    sent = Sent()
    agents = {label: new_id() for label in LABELS}
    async with sm() as session:
        owner = User(email="after-commit@example.com", name="Owner")
        session.add(owner)
        await session.flush()
        for label, agent_id in agents.items():
            session.add(Agent(id=agent_id, owner_id=owner.id, name=label, model="m/m"))
        await session.commit()
    bus = _RecordingBus(
        create_read_sessionmaker(engine), sent, {a: label for label, a in agents.items()}
    )

    async def add(session: AsyncSession, label: str) -> None:
        agent_logs.log_event(session, agent_id=agents[label], event="test.probe", message=label)
        await session.flush()

    previous = agent_logs.bus()
    agent_logs.set_bus(bus)
    try:
        yield Work("log", add, agent_logs.drain, sent)
    finally:
        agent_logs.set_bus(previous)


@pytest.fixture(params=["job", "log"])
async def work(
    request: pytest.FixtureRequest, engine: AsyncEngine, sm: async_sessionmaker[AsyncSession]
) -> AsyncIterator[Work]:
    if request.param == "job":
        yield await _job_work(engine)
        return
    async for made in _log_work(engine, sm):
        yield made


async def test_released_savepoint_then_outer_rollback_sends_nothing(
    work: Work, sm: async_sessionmaker[AsyncSession]
) -> None:
    async with sm() as session:
        await work.add(session, "outer")
        async with session.begin_nested():
            await work.add(session, "inner")
        await work.settle()  # a send started by the RELEASE would have run by now
        await session.rollback()
    await work.settle()
    assert work.sent.items == []


async def test_rolled_back_savepoint_drops_only_its_own_work(
    work: Work, sm: async_sessionmaker[AsyncSession]
) -> None:
    async with sm() as session:
        await work.add(session, "outer")
        savepoint = await session.begin_nested()
        await work.add(session, "inner")
        await savepoint.rollback()
        await work.add(session, "later")
        await session.commit()
    await work.settle()
    assert sorted(work.sent.items) == [("later", True), ("outer", True)]


async def test_work_of_a_released_savepoint_is_sent_once_after_the_commit(
    work: Work, sm: async_sessionmaker[AsyncSession]
) -> None:
    async with sm() as session:
        async with session.begin_nested():
            await work.add(session, "inner")
        await work.settle()
        assert work.sent.items == []  # not at the RELEASE
        await session.commit()
        await work.settle()
        assert work.sent.items == [("inner", True)]  # the row was visible when it went out

        await work.add(session, "later")  # the same session, a new transaction
        await session.commit()
    await work.settle()
    assert work.sent.items == [("inner", True), ("later", True)]


async def test_released_inner_savepoint_follows_its_rolled_back_parent(
    work: Work, sm: async_sessionmaker[AsyncSession]
) -> None:
    async with sm() as session:
        await work.add(session, "outer")
        middle = await session.begin_nested()
        await work.add(session, "middle")
        async with session.begin_nested():
            await work.add(session, "inner")
        await middle.rollback()  # takes the released inner savepoint's work with it
        await session.commit()
    await work.settle()
    assert work.sent.items == [("outer", True)]


async def test_a_failed_savepoint_keeps_the_work_queued_before_it(
    work: Work, sm: async_sessionmaker[AsyncSession]
) -> None:
    """The services' pattern: `begin_nested()` around an INSERT that may hit a unique key."""
    async with sm() as session:
        owner = User(email="taken@example.com", name="First")
        session.add(owner)
        await session.flush()
        await work.add(session, "outer")
        with pytest.raises(IntegrityError):
            async with session.begin_nested():
                session.add(User(email="taken@example.com", name="Second"))
        await session.commit()
    await work.settle()
    assert work.sent.items == [("outer", True)]


async def test_closing_without_commit_sends_nothing_later(
    work: Work, sm: async_sessionmaker[AsyncSession]
) -> None:
    session = sm()
    await work.add(session, "outer")
    await session.close()  # rolled back by closing, no rollback() call
    await work.add(session, "later")
    await session.commit()
    await session.close()
    await work.settle()
    assert work.sent.items == [("later", True)]
