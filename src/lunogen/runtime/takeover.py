"""Human takeover: the owner answers a conversation as the agent, and the agent stays silent
for that contact until handed back or until the takeover runs out.

While a thread is taken over its new messages wait (`next_attempt_at` = the takeover's end:
no turn is started for them); the owner's reply answers the oldest waiting message through the
same path as a turn's reply (stored, then sent by the channel), so a contact sees one answer per
message and never a second one. Handing back makes the waiting messages due at once; a takeover
that runs out makes them due by itself. A reply a turn was already writing when the takeover
began still goes out.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.models import Agent
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.errors import ConflictError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import as_utc, utcnow
from lunogen.runlog.logs import log_event
from lunogen.runtime import replies, service
from lunogen.runtime.approval_models import ToolApproval
from lunogen.runtime.models import Message, Thread

DEFAULT_MINUTES = 60
MAX_MINUTES = 7 * 24 * 60


def taken_over_until(thread: Thread, now: datetime | None = None) -> datetime | None:
    """The end of the thread's takeover, if one is on now."""
    until = thread.taken_over_until
    if until is None or as_utc(until) <= (now or utcnow()):
        return None
    return as_utc(until)


def _waiting_messages(thread_id: str) -> Any:
    """The thread's pending messages, except those waiting for a tool approval (they keep their
    own time: the request's expiry)."""
    asked = select(ToolApproval.id).where(
        ToolApproval.message_id == Message.id, ToolApproval.status == "pending"
    )
    return and_(Message.thread_id == thread_id, Message.status == "pending", ~asked.exists())


async def take_over(
    session: AsyncSession, principal: Principal, *, agent: Agent, thread: Thread, minutes: int
) -> datetime:
    """Start (or extend) a takeover of `minutes`; returns its end."""
    until = utcnow() + timedelta(minutes=minutes)
    thread.taken_over_until = until
    thread.taken_over_by = principal.user.id
    await session.execute(
        update(Message)
        .where(_waiting_messages(thread.id))
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )
    log_event(
        session,
        agent_id=agent.id,
        event="takeover.started",
        message=f"You answer {thread.contact} yourself until {until:%Y-%m-%d %H:%M} UTC",
        details={"thread_id": thread.id, "until": until.isoformat()},
    )
    _audit(session, principal, agent, "agent.thread_taken_over", thread, minutes=minutes)
    await session.flush()
    return until


async def hand_back(
    session: AsyncSession, principal: Principal, *, agent: Agent, thread: Thread
) -> int:
    """End the takeover: the agent answers the messages still waiting, from now. Returns how
    many were waiting."""
    thread.taken_over_until = None
    thread.taken_over_by = None
    due = await session.execute(
        update(Message)
        .where(_waiting_messages(thread.id))
        .values(next_attempt_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    waiting = int(getattr(due, "rowcount", 0) or 0)
    log_event(
        session,
        agent_id=agent.id,
        event="takeover.ended",
        message=f"{agent.name} answers {thread.contact} again",
        details={"thread_id": thread.id, "waiting": waiting},
    )
    _audit(session, principal, agent, "agent.thread_handed_back", thread, waiting=waiting)
    await session.flush()
    return waiting


class NothingToAnswerError(ConflictError):
    """No message of the contact waits for an answer."""


async def reply_as_agent(
    session: AsyncSession,
    principal: Principal,
    keyring: KeyRing,
    *,
    agent: Agent,
    thread: Thread,
    text: str,
) -> Message:
    """The owner's answer to the oldest waiting message of the thread, sent by its channel as
    the agent's. Takes the thread over (for the default time) if it was not. `thread` was read
    for update. Raises `NothingToAnswerError` when nothing waits, or while a turn is answering."""
    now = utcnow()
    if thread.lease_owner is not None and as_utc(thread.lease_expires_at or now) > now:
        raise NothingToAnswerError(
            f"{agent.name} is answering {thread.contact} right now; try again in a moment."
        )
    if taken_over_until(thread, now) is None:
        await take_over(session, principal, agent=agent, thread=thread, minutes=DEFAULT_MINUTES)
    oldest = (
        await session.execute(
            select(Message)
            .where(Message.thread_id == thread.id, Message.status == "pending")
            .order_by(Message.seq)
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if oldest is None:
        raise NothingToAnswerError(
            f"Nothing to answer: {thread.contact} has not written since the last reply."
        )
    reply = Message(
        id=new_id(),
        thread_id=thread.id,
        agent_id=agent.id,
        seq=await service.next_seq(session, thread),
        role="assistant",
        content=keyring.encrypt(text),
        status="done",
        reply_to_id=oldest.id,
        completed_at=now,
    )
    session.add(reply)
    oldest.status = "done"
    oldest.completed_at = now
    oldest.last_error = None
    await session.execute(  # the owner answered instead: those calls will never run
        update(ToolApproval)
        .where(ToolApproval.message_id == oldest.id, ToolApproval.status == "pending")
        .values(status="denied", decided_at=now, decided_by=principal.user.id)
        .execution_options(synchronize_session=False)
    )
    await replies.turn_ended(
        session, replies.TurnEnd(oldest.id, thread.id, thread.channel_key, answered=True)
    )
    log_event(
        session,
        agent_id=agent.id,
        event="takeover.reply",
        message=f"You answered {oldest.id} as {agent.name} ({len(text)} chars)",
        details={"message_id": oldest.id, "reply_id": reply.id, "thread_id": thread.id},
    )
    _audit(session, principal, agent, "agent.thread_replied", thread, message_id=oldest.id)
    await session.flush()
    return reply


def _audit(
    session: AsyncSession,
    principal: Principal,
    agent: Agent,
    action: str,
    thread: Thread,
    **details: Any,
) -> None:
    audit.record_by(
        session,
        principal,
        action=action,
        target_type="agent",
        target_id=agent.id,
        details={"thread_id": thread.id, **details},
    )
