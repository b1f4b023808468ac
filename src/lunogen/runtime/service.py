"""Threads and messages: accept an inbound message, claim a thread, store a reply.

Ordering: each thread numbers its messages (`seq`) under a row lock; a turn takes the lowest
pending `seq`. Exclusivity: a worker holds the thread's lease (a conditional UPDATE) while it
answers; a duplicate job finds the lease taken and does nothing; an expired lease is taken
over by the sweeper's job, so a crashed worker's turn is answered by another.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Update, and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from lunogen.agent.models import Agent
from lunogen.billing import metering
from lunogen.billing.models import CreditHold, HoldStatus
from lunogen.errors import ConflictError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.runlog.logs import log_event
from lunogen.runtime.models import Message, Thread

LEASE = timedelta(seconds=120)
FRESH_WORK_GRACE = timedelta(seconds=5)


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
    reply_id: str | None = None  # answered at once (`InstantAnswer`)


@dataclass(frozen=True)
class InstantAnswer:
    """A reply stored with the message, without a model turn (a greeting, a refusal)."""

    text: str
    why: str
    status: str = "done"  # the inbound message's status: `done`, or `refused` (access policy)


async def _numbered_thread(
    session: AsyncSession, *, agent: Agent, channel_key: str, contact: str
) -> tuple[Thread, int]:
    """The thread (created if need be) and the number of the message that arrives in it.

    An existing thread is found and numbered by one UPDATE, which locks its row until commit on
    PostgreSQL (as `next_seq` does).
    """
    numbered = await session.execute(
        update(Thread)
        .where(
            Thread.agent_id == agent.id,
            Thread.channel_key == channel_key,
            Thread.contact == contact,
        )
        .values(next_seq=Thread.next_seq + 1, last_message_at=utcnow())
        .returning(Thread),
        execution_options={"populate_existing": True},
    )
    thread = numbered.scalar_one_or_none()
    if thread is not None:
        return thread, thread.next_seq - 1
    thread = await _new_thread(session, agent=agent, channel_key=channel_key, contact=contact)
    return thread, await next_seq(session, thread)


async def _new_thread(
    session: AsyncSession, *, agent: Agent, channel_key: str, contact: str
) -> Thread:
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
        query = select(Thread).where(
            Thread.agent_id == agent.id,
            Thread.channel_key == channel_key,
            Thread.contact == contact,
        )
        thread = (await session.execute(query)).scalar_one()
    return thread


async def next_seq(session: AsyncSession, thread: Thread) -> int:
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
    external_id: str | None = None,
    sent_at: datetime | None = None,
    answer: InstantAnswer | None = None,
) -> Accepted:
    """Store an inbound message as pending work. A repeated `dedupe_key` is a no-op.

    The caller enqueues `runtime.run_thread` for the thread after commit. With `answer`, the
    message is answered at once, without a turn: it is stored with `answer.status` and the
    answer's text as its reply (`Accepted.reply_id`).
    """
    if dedupe_key is not None:
        existing = await find_by_dedupe_key(session, dedupe_key)
        if existing is not None:
            return Accepted(existing, await _thread(session, existing.thread_id), duplicate=True)
    if agent.status != "running":
        raise AgentNotRunningError(agent)
    thread, seq = await _numbered_thread(
        session, agent=agent, channel_key=channel_key, contact=contact
    )
    message = Message(
        id=new_id(),
        thread_id=thread.id,
        agent_id=agent.id,
        seq=seq,
        role="user",
        content=keyring.encrypt(text),
        status="pending" if answer is None else answer.status,
        dedupe_key=dedupe_key,
        external_id=external_id,
        sent_at=sent_at,
        # A person answers this contact now: no turn until then (`runtime.takeover`).
        next_attempt_at=(thread.taken_over_until or utcnow()) if answer is None else None,
        completed_at=None if answer is None else utcnow(),
    )
    if dedupe_key is None:
        # Nothing can collide (the number is ours under the row lock): the INSERT goes out with
        # the caller's commit, without a savepoint around it.
        session.add(message)
    else:
        try:
            async with session.begin_nested():
                session.add(message)
        except IntegrityError:
            existing = await find_by_dedupe_key(session, dedupe_key)
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
    if answer is None:
        return Accepted(message, thread, duplicate=False)
    reply = Message(
        id=new_id(),
        thread_id=thread.id,
        agent_id=agent.id,
        seq=await next_seq(session, thread),
        role="assistant",
        content=keyring.encrypt(answer.text),
        status="done",
        reply_to_id=message.id,
        completed_at=utcnow(),
    )
    session.add(reply)
    log_event(
        session,
        agent_id=agent.id,
        event="reply.instant",
        message=f"Answered {message.id} without a turn ({answer.why})",
        details={"message_id": message.id, "reply_id": reply.id},
    )
    return Accepted(message, thread, duplicate=False, reply_id=reply.id)


async def contact_messages(
    session: AsyncSession, *, agent_id: str, channel_key: str, contact: str, limit: int = 50
) -> list[Message]:
    """The last `limit` messages of the agent's thread with `contact` on `channel_key`, oldest
    first; none while they have no thread."""
    query = (
        select(Message)
        .join(Thread, Thread.id == Message.thread_id)
        .where(
            Thread.agent_id == agent_id,
            Thread.channel_key == channel_key,
            Thread.contact == contact,
        )
        .order_by(Message.seq.desc())
        .limit(limit)
    )
    return list(reversed((await session.execute(query)).scalars().all()))


async def find_by_dedupe_key(session: AsyncSession, dedupe_key: str) -> Message | None:
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
    result = await session.execute(claim_statement(thread_id, worker_id, lease))
    await session.commit()
    return bool(getattr(result, "rowcount", 0))


async def release_thread(session: AsyncSession, *, thread_id: str, worker_id: str) -> None:
    await session.execute(release_statement(thread_id, worker_id))
    await session.commit()


@dataclass(frozen=True)
class Pending:
    """The oldest pending message of a thread: enough to decide whether to answer it now."""

    id: str
    next_attempt_at: datetime | None

    @property
    def due(self) -> bool:
        return self.next_attempt_at is None or self.next_attempt_at <= utcnow()


@dataclass(frozen=True)
class Claim:
    """Whether we hold the thread's lease, and its oldest pending message when one was seen."""

    held: bool
    pending: Pending | None


def claim_statement(thread_id: str, worker_id: str, lease: timedelta) -> Update:
    now = utcnow()
    return (
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


def release_statement(thread_id: str, worker_id: str) -> Update:
    return (
        update(Thread)
        .where(Thread.id == thread_id, Thread.lease_owner == worker_id)
        .values(lease_owner=None, lease_expires_at=None)
    )


async def oldest_pending(session: AsyncSession, thread_id: str) -> Pending | None:
    query = (
        select(Message.id, Message.next_attempt_at)
        .where(Message.thread_id == thread_id, Message.status == "pending")
        .order_by(Message.seq)
        .limit(1)
    )
    row = (await session.execute(query)).first()
    return None if row is None else Pending(row.id, row.next_attempt_at)


async def claim_next(
    session: AsyncSession, *, thread_id: str, worker_id: str, lease: timedelta = LEASE
) -> Claim:
    """Take the thread's lease and find its oldest pending message, in one transaction. Commits.

    Held only when there is a message due: otherwise the lease is given back in the same
    transaction, so nobody ever sees it taken.
    """
    claimed = await session.execute(claim_statement(thread_id, worker_id, lease))
    if not getattr(claimed, "rowcount", 0):
        await session.commit()
        return Claim(held=False, pending=None)
    pending = await oldest_pending(session, thread_id)
    if pending is None or not pending.due:
        await session.execute(release_statement(thread_id, worker_id))
        await session.commit()
        return Claim(held=False, pending=pending)
    await session.commit()
    return Claim(held=True, pending=pending)


async def release_and_next(
    session: AsyncSession,
    *,
    thread_id: str,
    worker_id: str,
    lease: timedelta = LEASE,
    reclaim: bool = True,
) -> Claim:
    """Give the lease back, look for the oldest pending message and, if it is due and `reclaim`,
    take the lease again (as `claim_thread` would: free, expired or ours). One transaction.

    The release comes first: it locks the thread's row (PostgreSQL; on SQLite the transaction
    holds the write lock), so a message whose job was refused while we held the lease is either
    seen by our SELECT or committed after it, and then its job's claim waits for our commit
    and finds the lease free. Commits.
    """
    await session.execute(release_statement(thread_id, worker_id))
    pending = await oldest_pending(session, thread_id)
    held = False
    if reclaim and pending is not None and pending.due:
        claimed = await session.execute(claim_statement(thread_id, worker_id, lease))
        held = bool(getattr(claimed, "rowcount", 0))
    await session.commit()
    return Claim(held=held, pending=pending)


async def next_pending(session: AsyncSession, *, thread_id: str) -> Message | None:
    query = (
        select(Message)
        .where(Message.thread_id == thread_id, Message.status == "pending")
        .order_by(Message.seq)
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def release_dead_leases(session: AsyncSession, *, host: str) -> int:
    """Give back the live leases held by processes of this host that are gone (killed, or
    crashed): their threads are answered again now rather than when the leases run out.

    Lease tokens start with the holder's `host:pid:` (`worker.process.worker_id`); only this
    host's pids can be checked, and a pid in use again is left to expire. Commits.
    """
    prefix = f"{host}:"
    held = await session.execute(
        select(Thread.id, Thread.lease_owner).where(
            Thread.lease_owner.startswith(prefix, autoescape=True),
            Thread.lease_expires_at >= utcnow(),
        )
    )
    released = 0
    for thread_id, owner in held.all():
        if owner is None or _alive(owner.removeprefix(prefix).split(":", 1)[0]):
            continue
        result = await session.execute(release_statement(thread_id, owner))
        released += getattr(result, "rowcount", 0)
    await session.commit()
    return released


def _alive(pid_text: str) -> bool:
    if not pid_text.isdigit():
        return True  # not a pid we can check: leave it to expire
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


async def release_orphan_holds(session: AsyncSession, *, thread_ids: list[str]) -> int:
    """Release the active credit holds of pending messages on `thread_ids` that nobody holds
    now: the attempt that placed them died (killed, crashed, or its lease ran out) with its call
    in flight, and they would otherwise keep the owner's credits from use until they expire
    (`credit_hold_seconds`). The threads are locked and checked again first, so a hold a runner
    places as it takes a thread is never touched; a late settlement of a released hold is still
    charged (`ledger.settle_hold`). Commits.
    """
    now = utcnow()
    unheld = (
        select(Thread.id)
        .where(
            Thread.id.in_(thread_ids),
            or_(Thread.lease_owner.is_(None), Thread.lease_expires_at < now),
        )
        .with_for_update()
    )
    free = list((await session.execute(unheld)).scalars())
    if not free:
        await session.commit()
        return 0
    pending = select(Message.id).where(Message.thread_id.in_(free), Message.status == "pending")
    orphans = await session.execute(
        select(CreditHold.id).where(
            CreditHold.status == HoldStatus.ACTIVE, CreditHold.reference.in_(pending)
        )
    )
    released = 0
    for hold_id in orphans.scalars().all():
        await metering.release(session, hold_id=hold_id)
        released += 1
    await session.commit()
    return released


async def threads_needing_work(session: AsyncSession, *, limit: int = 100) -> list[str]:
    """Threads with due pending messages and no live lease: what the sweeper re-enqueues.

    A message accepted less than `FRESH_WORK_GRACE` ago and not tried yet, on a thread nobody
    holds, is left to the process that accepted it, which is about to take the lease: a sweeper
    in another process would otherwise run its turn, and the waiting request would learn of the
    reply only at its next database check. Retries that come due, and threads whose lease ran
    out, are swept at once.
    """
    now = utcnow()
    query = (
        select(Thread.id)
        .join(Message, Message.thread_id == Thread.id)
        .where(
            Message.status == "pending",
            Message.next_attempt_at <= now,
            or_(
                and_(
                    Thread.lease_owner.is_(None),
                    or_(Message.attempts > 0, Message.created_at <= now - FRESH_WORK_GRACE),
                ),
                Thread.lease_expires_at < now,
            ),
        )
        .distinct()
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


@dataclass(frozen=True)
class Said:
    """What the turn needs of an earlier message: its text, encrypted as stored."""

    content: str
    source: str | None = None  # `Message.source`: who wrote it when not the contact


# Made once: a new alias per call would miss SQLAlchemy's compiled-statement cache every time.
_Reply = aliased(Message, name="reply")


async def history(
    session: AsyncSession, *, thread_id: str, before_seq: int, after_seq: int = -1
) -> list[tuple[int, Said, Said | None]]:
    """The answered exchanges between `after_seq` and `before_seq` (both excluded), oldest
    first: (the inbound's seq, the inbound, its reply or None).

    Replies are paired with what they answer rather than sorted by their own `seq`, since a
    reply is numbered when it is written, after messages that arrived during its turn. One
    query for the texts only: each inbound message joined to its reply (at most one, by the
    unique `reply_to_id`).
    """
    rows = await session.execute(
        select(Message.seq, Message.content, Message.source, _Reply.content)
        .outerjoin(
            _Reply,
            and_(
                _Reply.reply_to_id == Message.id,
                _Reply.thread_id == thread_id,
                _Reply.role == "assistant",
            ),
        )
        .where(
            Message.thread_id == thread_id,
            Message.role == "user",
            Message.status == "done",
            Message.seq < before_seq,
            Message.seq > after_seq,
        )
        .order_by(Message.seq)
    )
    return [
        (seq, Said(question, source), None if answer is None else Said(answer))
        for seq, question, source, answer in rows
    ]
