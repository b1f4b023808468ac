"""Tool calls that wait for the owner's approval, and the one run each approved call gets.

The turn asks (`request`, in the transaction that stores the turn's stop): the message stays
`pending`, due again when the request expires, and the thread waits behind it. The owner
decides (`decide`); once no request of the message is pending, the message is due again and
its turn is replayed from the recorded model calls (nothing is paid twice). In the replay,
`claim` hands an approved call to exactly one turn, which stores the tool's output
(`record_output`); a later replay reuses that output. A denied or expired call is told to the
model as refused. Nothing else runs a gated tool: the model loop is the only caller of tools.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.agent.models import Agent
from lunogen.errors import ConflictError, NotFoundError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import as_utc, utcnow
from lunogen.runtime.approval_models import ToolApproval
from lunogen.runtime.models import Message, Thread
from lunogen.tool.registry import ToolSpec

DEFAULT_EXPIRY_MINUTES = 60
MAX_EXPIRY_MINUTES = 7 * 24 * 60
DECIDED = ("approved", "denied", "expired")


@dataclass(frozen=True)
class Decision:
    """What a turn knows of one gated call of its message."""

    id: str
    status: str
    expires_at: datetime
    result: str | None  # ciphertext of the output, once executed


@dataclass(frozen=True)
class AskedCall:
    """A gated call the model asked for, to put before the owner."""

    step: int
    tool_call_id: str
    tool_name: str
    arguments: str


def requires_approval(agent: Agent, spec: ToolSpec) -> bool:
    chosen = (agent.approval_tools or {}).get(spec.name)
    return spec.requires_approval if chosen is None else bool(chosen)


def gated_tools(agent: Agent, tools: dict[str, ToolSpec | None]) -> frozenset[str]:
    return frozenset(
        name for name, spec in tools.items() if spec is not None and requires_approval(agent, spec)
    )


def expiry_of(agent: Agent) -> timedelta:
    return timedelta(minutes=agent.approval_wait_minutes or DEFAULT_EXPIRY_MINUTES)


async def decisions(session: AsyncSession, message_id: str) -> dict[str, Decision]:
    """The message's gated calls so far, by the model's call id."""
    rows = await session.execute(
        select(
            ToolApproval.id,
            ToolApproval.tool_call_id,
            ToolApproval.status,
            ToolApproval.expires_at,
            ToolApproval.result,
        ).where(ToolApproval.message_id == message_id)
    )
    return {
        row.tool_call_id: Decision(row.id, row.status, as_utc(row.expires_at), row.result)
        for row in rows
    }


async def waits_for(session: AsyncSession, message_id: str) -> bool:
    """Whether a call of the message waits for the owner's decision."""
    found = await session.execute(
        select(ToolApproval.id)
        .where(ToolApproval.message_id == message_id, ToolApproval.status == "pending")
        .limit(1)
    )
    return found.first() is not None


async def request(
    session: AsyncSession,
    keyring: KeyRing,
    *,
    agent_id: str,
    owner_id: str,
    message: Message,
    asked: Sequence[AskedCall],
    expiry: timedelta,
) -> list[ToolApproval]:
    """Put `asked` before the owner (each call once) and make the message due again when the
    requests expire. The caller holds the thread's lease and its row lock."""
    known = await decisions(session, message.id)
    now = utcnow()
    expires_at = now + expiry
    created: list[ToolApproval] = []
    for call in asked:
        if call.tool_call_id in known:
            continue
        row = ToolApproval(
            id=new_id(),
            agent_id=agent_id,
            owner_id=owner_id,
            message_id=message.id,
            thread_id=message.thread_id,
            step=call.step,
            tool_call_id=call.tool_call_id,
            tool_name=call.tool_name,
            arguments=keyring.encrypt(call.arguments),
            status="pending",
            expires_at=expires_at,
            created_at=now,
        )
        session.add(row)
        created.append(row)
    waiting = [d.expires_at for d in known.values() if d.status == "pending"]
    message.next_attempt_at = min([*waiting, expires_at]) if created else min(waiting or [now])
    return created


class ApprovalClosedError(ConflictError):
    """The request was decided already, or expired."""


async def decide(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    approval_id: str,
    approve: bool,
    decided_by: str,
) -> tuple[ToolApproval, bool]:
    """Approve or deny a pending request of the owner's agent. Returns the row and whether the
    message's turn can go on now (no request of it pending any more): the caller then enqueues
    its thread after commit."""
    row = await session.get(ToolApproval, approval_id)
    if row is None or row.owner_id != owner_id or row.agent_id != agent_id:
        raise NotFoundError(error="Approval not found")
    now = utcnow()
    changed = await session.execute(
        update(ToolApproval)
        .where(
            ToolApproval.id == approval_id,
            ToolApproval.status == "pending",
            ToolApproval.expires_at > now,
        )
        .values(status="approved" if approve else "denied", decided_at=now, decided_by=decided_by)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(row)
    if not getattr(changed, "rowcount", 0):
        state = "expired" if row.status == "pending" else row.status
        raise ApprovalClosedError(
            f"This request can no longer be decided: it is {state}.", extra={"status": state}
        )
    still = await session.execute(
        select(func.count())
        .select_from(ToolApproval)
        .where(ToolApproval.message_id == row.message_id, ToolApproval.status == "pending")
    )
    ready = int(still.scalar_one()) == 0
    if ready:  # due now, or when a person stops answering the contact (`runtime.takeover`)
        thread = await session.get(Thread, row.thread_id)
        until = thread.taken_over_until if thread is not None else None
        await session.execute(
            update(Message)
            .where(Message.id == row.message_id, Message.status == "pending")
            .values(next_attempt_at=max(now, as_utc(until)) if until is not None else now)
        )
    return row, ready


Claim = tuple[str, str | None]  # (what to do: `run`, `reuse`, `refused`, `unknown`, `wait`; output)


async def claim(
    sessionmaker: async_sessionmaker[AsyncSession], decision: Decision, keyring: KeyRing
) -> Claim:
    """Whether this turn runs the approved call (exactly one turn gets `run`), reuses the
    output an earlier run stored, tells the model it was refused (denied, or expired now), or
    cannot know what happened to it (a run that never stored its output)."""
    async with sessionmaker() as session:
        now = utcnow()
        taken = await session.execute(
            update(ToolApproval)
            .where(ToolApproval.id == decision.id, ToolApproval.status == "approved")
            .values(status="running", executed_at=now)
            .execution_options(synchronize_session=False)
        )
        if getattr(taken, "rowcount", 0):
            await session.commit()
            return "run", None
        await session.execute(
            update(ToolApproval)
            .where(
                ToolApproval.id == decision.id,
                ToolApproval.status == "pending",
                ToolApproval.expires_at <= now,
            )
            .values(status="expired", decided_at=now)
            .execution_options(synchronize_session=False)
        )
        row = (
            await session.execute(
                select(ToolApproval.status, ToolApproval.result).where(
                    ToolApproval.id == decision.id
                )
            )
        ).one()
        await session.commit()
    if row.status == "executed":
        return "reuse", keyring.decrypt(row.result or "")
    if row.status in ("denied", "expired"):
        return "refused", row.status
    if row.status == "running":
        return "unknown", None
    return "wait", None


async def record_output(
    sessionmaker: async_sessionmaker[AsyncSession], keyring: KeyRing, approval_id: str, output: str
) -> None:
    async with sessionmaker() as session:
        await session.execute(
            update(ToolApproval)
            .where(ToolApproval.id == approval_id, ToolApproval.status == "running")
            .values(status="executed", result=keyring.encrypt(output))
            .execution_options(synchronize_session=False)
        )
        await session.commit()


async def list_approvals(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    status: str | None,
    limit: int,
    offset: int,
) -> tuple[list[ToolApproval], int]:
    query = select(ToolApproval).where(
        ToolApproval.owner_id == owner_id, ToolApproval.agent_id == agent_id
    )
    if status is not None:
        query = query.where(ToolApproval.status == status)
    total = await session.execute(select(func.count()).select_from(query.subquery()))
    rows = await session.execute(
        query.order_by(ToolApproval.created_at.desc(), ToolApproval.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(rows.scalars()), int(total.scalar_one())


def shown_status(row: ToolApproval) -> str:
    """`expired` for a request still pending past its time (the next turn will mark it)."""
    if row.status == "pending" and as_utc(row.expires_at) <= utcnow():
        return "expired"
    return row.status


def describe(row: ToolApproval, keyring: KeyRing) -> dict[str, Any]:
    return {
        "id": row.id,
        "agent_id": row.agent_id,
        "message_id": row.message_id,
        "thread_id": row.thread_id,
        "tool_call_id": row.tool_call_id,
        "tool": row.tool_name,
        "arguments": keyring.decrypt(row.arguments),
        "status": shown_status(row),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "decided_at": row.decided_at,
        "decided_by": row.decided_by,
        "executed_at": row.executed_at,
    }
