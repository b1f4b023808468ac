"""Threads and messages: accept an inbound message, claim a thread, store a reply.

Ordering: each thread numbers its messages (`seq`) under a row lock; a turn takes the lowest
pending `seq`. Exclusivity: a worker holds the thread's lease (a conditional UPDATE) while it
answers; a duplicate job finds the lease taken and does nothing; an expired lease is taken
over by the sweeper's job, so a crashed worker's turn is answered by another.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.logs import log_event
from lunogen.agent.models import Agent
from lunogen.errors import ConflictError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.runtime.models import Message, Thread

LEASE = timedelta(seconds=120)


class AgentNotRunningError(ConflictError):
    def __init__(self, agent: Agent) -> None:
        super().__init__(
            f"The agent is {agent.status}; it answers messages only while running",
            error=f"Agent is {agent.status}",
            extra={"status": agent.status},
        )


@dataclass(frozen=True)
class Accepted:
    message: Message
    thread: Thread
    duplicate: bool


async def _thread_for(
    session: AsyncSession, *, agent: Agent, channel_key: str, contact: str
) -> Thread:
    query = select(Thread).where(
        Thread.agent_id == agent.id, Thread.channel_key == channel_key, Thread.contact == contact
    )
    thread = (await session.execute(query)).scalar_one_or_none()
    if thread is not None:
        return thread
    thread = Thread(
        id=new_id(),
        agent_id=agent.id,
        owner_id=agent.owner_id,
        channel_key=channel_key,
        contact=contact,
    )
    try:
        async with session.begin_nested():
            session.add(thread)
    except IntegrityError:  # created concurrently by another request
        thread = (await session.execute(query)).scalar_one()
    return thread


async def _next_seq(session: AsyncSession, thread: Thread) -> int:
    """Take the thread's next number; the UPDATE locks the row until commit on PostgreSQL."""
    result = await session.execute(
        update(Thread)
        .where(Thread.id == thread.id)
        .values(next_seq=Thread.next_seq + 1, last_message_at=utcnow())
        .returning(Thread.next_seq)
    )
    return int(result.scalar_one()) - 1


async def accept_inbound(
    session: AsyncSession,
    *,
    agent: Agent,
    channel_key: str,
    contact: str,
    text: str,
    keyring: KeyRing,
    dedupe_key: str | None = None,
) -> Accepted:
    """Store an inbound message as pending work. A repeated `dedupe_key` is a no-op.

    The caller enqueues `runtime.run_thread` for the thread after commit.
    """
    if dedupe_key is not None:
        existing = await _by_dedupe_key(session, dedupe_key)
        if existing is not None:
            return Accepted(existing, await _thread(session, existing.thread_id), duplicate=True)
    if agent.status != "running":
        raise AgentNotRunningError(agent)
    thread = await _thread_for(session, agent=agent, channel_key=channel_key, contact=contact)
    message = Message(
        id=new_id(),
        thread_id=thread.id,
        agent_id=agent.id,
        seq=await _next_seq(session, thread),
        role="user",
        content=keyring.encrypt(text),
        status="pending",
        dedupe_key=dedupe_key,
        next_attempt_at=utcnow(),
    )
    try:
        async with session.begin_nested():
            session.add(message)
    except IntegrityError:
        existing = await _by_dedupe_key(session, dedupe_key) if dedupe_key else None
        if existing is None:
            raise
        return Accepted(existing, await _thread(session, existing.thread_id), duplicate=True)
    log_event(
        session,
        agent_id=agent.id,
        event="inbound",
        message=f"Message {message.id} from {contact} on {channel_key}",
        details={"message_id": message.id, "thread_id": thread.id, "chars": len(text)},
    )
    return Accepted(message, thread, duplicate=False)


async def _by_dedupe_key(session: AsyncSession, dedupe_key: str) -> Message | None:
    query = select(Message).where(Message.dedupe_key == dedupe_key)
    return (await session.execute(query)).scalar_one_or_none()


async def _thread(session: AsyncSession, thread_id: str) -> Thread:
    thread = await session.get(Thread, thread_id)
    assert thread is not None
    return thread


async def claim_thread(
    session: AsyncSession, *, thread_id: str, worker_id: str, lease: timedelta = LEASE
) -> bool:
    """Take (or extend) the thread's lease if it is free, expired or already ours. Commits."""
    now = utcnow()
    result = await session.execute(
        update(Thread)
        .where(
            Thread.id == thread_id,
            or_(
                Thread.lease_owner.is_(None),
                Thread.lease_owner == worker_id,
                Thread.lease_expires_at < now,
            ),
        )
        .values(lease_owner=worker_id, lease_expires_at=now + lease)
    )
    await session.commit()
    return bool(getattr(result, "rowcount", 0))


async def release_thread(session: AsyncSession, *, thread_id: str, worker_id: str) -> None:
    await session.execute(
        update(Thread)
        .where(Thread.id == thread_id, Thread.lease_owner == worker_id)
        .values(lease_owner=None, lease_expires_at=None)
    )
    await session.commit()


async def next_pending(session: AsyncSession, *, thread_id: str) -> Message | None:
    query = (
        select(Message)
        .where(Message.thread_id == thread_id, Message.status == "pending")
        .order_by(Message.seq)
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def threads_needing_work(session: AsyncSession, *, limit: int = 100) -> list[str]:
    """Threads with due pending messages and no live lease: what the sweeper re-enqueues."""
    now = utcnow()
    query = (
        select(Thread.id)
        .join(Message, Message.thread_id == Thread.id)
        .where(
            Message.status == "pending",
            Message.next_attempt_at <= now,
            or_(Thread.lease_owner.is_(None), Thread.lease_expires_at < now),
        )
        .distinct()
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def history(
    session: AsyncSession, *, thread_id: str, before_seq: int
) -> list[tuple[Message, Message | None]]:
    """The answered exchanges before `before_seq`, oldest first: (inbound, its reply or None).

    Replies are paired with what they answer rather than sorted by their own `seq`, since a
    reply is numbered when it is written, after messages that arrived during its turn.
    """
    inbound = list(
        (
            await session.execute(
                select(Message)
                .where(
                    Message.thread_id == thread_id,
                    Message.role == "user",
                    Message.status == "done",
                    Message.seq < before_seq,
                )
                .order_by(Message.seq)
            )
        ).scalars()
    )
    if not inbound:
        return []
    replies = {
        m.reply_to_id: m
        for m in (
            await session.execute(
                select(Message).where(
                    Message.thread_id == thread_id,
                    Message.role == "assistant",
                    Message.reply_to_id.in_([m.id for m in inbound]),
                )
            )
        ).scalars()
    }
    return [(m, replies.get(m.id)) for m in inbound]
