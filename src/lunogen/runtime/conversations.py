"""Reading and forgetting an agent's conversations: threads, their messages, the memory notes the
agent keeps. The API (`runtime.endpoints`, `runtime.memory_endpoints`) and the dashboard call
these; every function takes an agent the caller already found through `get_agent`, so tenancy
is checked once, there."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.models import Agent
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.errors import ConflictError, NotFoundError
from lunogen.runtime.models import MemoryNote, Message, Thread


@dataclass(frozen=True)
class ThreadSummary:
    thread: Thread
    messages: int


async def list_threads(
    session: AsyncSession, *, agent: Agent, limit: int, offset: int
) -> tuple[list[ThreadSummary], int]:
    """The agent's threads, most recently active first, with their message counts."""
    base = select(Thread).where(Thread.agent_id == agent.id)
    total = int(
        (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    )
    counts = (
        select(Message.thread_id, func.count().label("n"))
        .where(Message.agent_id == agent.id)
        .group_by(Message.thread_id)
        .subquery()
    )
    rows = await session.execute(
        select(Thread, counts.c.n)
        .outerjoin(counts, counts.c.thread_id == Thread.id)
        .where(Thread.agent_id == agent.id)
        .order_by(Thread.last_message_at.desc(), Thread.id)
        .limit(limit)
        .offset(offset)
    )
    return [ThreadSummary(thread, n or 0) for thread, n in rows.all()], total


async def get_thread(session: AsyncSession, *, agent: Agent, thread_id: str) -> Thread:
    """One of the agent's threads, else `404 Thread not found`."""
    thread = await session.get(Thread, thread_id) if len(thread_id) <= 36 else None
    if thread is None or thread.agent_id != agent.id:
        raise NotFoundError(error="Thread not found")
    return thread


async def thread_messages(
    session: AsyncSession, *, thread: Thread, limit: int, offset: int, newest_first: bool = False
) -> tuple[list[Message], int]:
    base = select(Message).where(Message.thread_id == thread.id)
    total = int(
        (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    )
    ordering = Message.seq.desc() if newest_first else Message.seq.asc()
    rows = await session.execute(base.order_by(ordering).limit(limit).offset(offset))
    return list(rows.scalars()), total


async def delete_thread(
    session: AsyncSession, *, principal: Principal, agent: Agent, thread: Thread
) -> int:
    """Forget a conversation: the thread and its messages (409 while a turn answers it or a
    message waits for one), audited. Returns how many messages went."""
    if thread.lease_owner is not None and thread.lease_expires_at is not None:
        raise _busy()
    pending = (
        await session.execute(
            select(Message.id).where(Message.thread_id == thread.id, Message.status == "pending")
        )
    ).first()
    if pending is not None:
        raise _busy()
    thread_id, channel = thread.id, thread.channel_key
    gone = await session.execute(delete(Message).where(Message.thread_id == thread.id))
    await session.delete(thread)
    await session.flush()
    removed = int(getattr(gone, "rowcount", 0) or 0)
    _audit(
        session,
        principal,
        agent,
        "agent.thread_deleted",
        {"thread_id": thread_id, "channel": channel, "messages": removed},
    )
    return removed


def _audit(
    session: AsyncSession, principal: Principal, agent: Agent, action: str, details: dict[str, Any]
) -> None:
    audit.record_by(
        session, principal, action=action, target_type="agent", target_id=agent.id, details=details
    )


def _busy() -> ConflictError:
    return ConflictError(
        "The agent is answering in this conversation; delete it once the reply is sent",
        error="Conversation in use",
    )


async def memory_notes(
    session: AsyncSession,
    *,
    agent: Agent,
    limit: int,
    offset: int,
    contact: str | None = None,
    about: str | None = None,
) -> tuple[list[MemoryNote], int]:
    """The agent's notes, newest first: about `contact`, or only agent-wide (`about="agent"`)
    or only about contacts (`about="contact"`)."""
    query = select(MemoryNote).where(MemoryNote.agent_id == agent.id)
    if contact is not None:
        query = query.where(MemoryNote.contact == contact)
    if about == "agent":
        query = query.where(MemoryNote.contact.is_(None))
    elif about == "contact":
        query = query.where(MemoryNote.contact.is_not(None))
    total = int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )
    rows = await session.execute(
        query.order_by(MemoryNote.created_at.desc(), MemoryNote.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars()), total


async def delete_memory_note(
    session: AsyncSession, *, principal: Principal, agent: Agent, note_id: str
) -> MemoryNote:
    """Delete one of the agent's notes, audited."""
    note = (
        await session.execute(
            select(MemoryNote).where(MemoryNote.id == note_id, MemoryNote.agent_id == agent.id)
        )
    ).scalar_one_or_none()
    if note is None:
        raise NotFoundError(error="Memory note not found")
    await session.delete(note)
    await session.flush()
    details = {"note_id": note.id, "about": about_of(note)}
    _audit(session, principal, agent, "agent.memory_note_deleted", details)
    return note


def about_of(note: MemoryNote) -> str:
    return "agent" if note.contact is None else "contact"
