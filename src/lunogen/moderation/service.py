"""Flags, the suspension threshold, the review queue and appeals (the caller commits).

Flags are written in the transaction that ends the message (`record_turn`, from the runtime's
screening hook) or that stores the classifier's verdict (`flag_from_classifier`); in either,
`apply_threshold` then counts the agent's open and upheld flags within the window and, at
`LUNOGEN_MODERATION_SUSPEND_AFTER`, suspends the agent through the admin suspension service
(its owner is notified in the app and by email with the reason and the appeal page).

Tenancy: the queue (`list_flags`, `get_flag`, `review`) is for admins only, behind the admin
check of its routes; an owner reaches only their own agents' appeals (`appeal`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.admin import suspension, tickets
from lunogen.admin.models import Ticket
from lunogen.agent.models import Agent
from lunogen.agent.service import get_agent
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.config import Settings
from lunogen.errors import ConflictError, NotFoundError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.effects import Effects
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.kit.web import ClientInfo
from lunogen.moderation.models import ModerationCheck, ModerationFlag, ModerationSuspension
from lunogen.runtime.screening import Screened, TurnScreening

FlagStatus = Literal["open", "dismissed", "upheld"]
FLAG_STATUSES: tuple[FlagStatus, ...] = ("open", "dismissed", "upheld")
COUNTING: tuple[FlagStatus, ...] = ("open", "upheld")  # toward the suspension threshold


def _is_id(value: str) -> bool:
    return 0 < len(value) <= 36


def _flags_of(
    screened: Screened | None,
    *,
    agent_id: str,
    owner_id: str,
    message_id: str | None,
    keyring: KeyRing,
) -> list[ModerationFlag]:
    if screened is None or not screened.hits or message_id is None:
        return []
    evidence = keyring.encrypt(screened.text)
    return [
        ModerationFlag(
            agent_id=agent_id,
            owner_id=owner_id,
            message_id=message_id,
            direction=screened.direction,
            source="rule",
            rule=hit.rule,
            action=hit.action,
            categories=[],
            scores={},
            evidence=evidence,
            status="open",
        )
        for hit in screened.hits
    ]


def _check(
    session: AsyncSession, *, agent_id: str, owner_id: str, message_id: str, direction: str
) -> ModerationCheck:
    check = ModerationCheck(
        id=new_id(),  # known now: its job is enqueued before the flush
        agent_id=agent_id,
        owner_id=owner_id,
        message_id=message_id,
        direction=direction,
        status="queued",
        attempts=0,
        next_attempt_at=utcnow(),
    )
    session.add(check)
    return check


async def record_turn(
    session: AsyncSession, screening: TurnScreening, *, settings: Settings, keyring: KeyRing
) -> list[ModerationCheck]:
    """In the transaction that ends a message: its flags, the threshold, and its classifier
    checks (returned: the caller enqueues their jobs, sent after commit)."""
    ids = {"agent_id": screening.agent_id, "owner_id": screening.owner_id}
    hits = any(s is not None and s.hits for s in (screening.inbound, screening.outbound))
    if not hits and not settings.moderation_url:
        return []
    await session.flush()  # the reply first: the rows below refer to it
    flags = _flags_of(screening.inbound, message_id=screening.inbound_id, keyring=keyring, **ids)
    flags += _flags_of(screening.outbound, message_id=screening.reply_id, keyring=keyring, **ids)
    session.add_all(flags)
    checks: list[ModerationCheck] = []
    if settings.moderation_url:
        if screening.inbound is not None:
            checks.append(
                _check(session, message_id=screening.inbound_id, direction="inbound", **ids)
            )
        withheld = screening.outbound is not None and screening.outbound.blocked
        if screening.reply_id is not None and not withheld:
            checks.append(
                _check(session, message_id=screening.reply_id, direction="outbound", **ids)
            )
    if flags:
        await session.flush()
        await apply_threshold(
            session, agent_id=screening.agent_id, settings=settings, keyring=keyring
        )
    return checks


async def flag_from_classifier(
    session: AsyncSession,
    check: ModerationCheck,
    *,
    text: str,
    categories: list[str],
    scores: dict[str, float],
    settings: Settings,
    keyring: KeyRing,
) -> ModerationFlag:
    flag = ModerationFlag(
        agent_id=check.agent_id,
        owner_id=check.owner_id,
        message_id=check.message_id,
        direction=check.direction,
        source="classifier",
        rule=None,
        action="flag",
        categories=categories,
        scores=scores,
        evidence=keyring.encrypt(text),
        status="open",
    )
    session.add(flag)
    await session.flush()
    await apply_threshold(session, agent_id=check.agent_id, settings=settings, keyring=keyring)
    return flag


async def counting_flags(session: AsyncSession, *, agent_id: str, settings: Settings) -> int:
    """Open and upheld flags within the window, after the agent's last moderation suspension
    (the flags that led to one do not count again once an admin reinstates the agent)."""
    since = utcnow() - timedelta(hours=settings.moderation_window_hours)
    last = await latest_suspension(session, agent_id=agent_id)
    if last is not None and last.created_at > since:
        since = last.created_at
    count = await session.execute(
        select(func.count())
        .select_from(ModerationFlag)
        .where(
            ModerationFlag.agent_id == agent_id,
            ModerationFlag.status.in_(COUNTING),
            ModerationFlag.created_at >= since,
        )
    )
    return int(count.scalar_one())


def _hours(settings: Settings) -> str:
    hours = settings.moderation_window_hours
    return f"{hours:g} hour{'' if hours == 1 else 's'}"


async def apply_threshold(
    session: AsyncSession, *, agent_id: str, settings: Settings, keyring: KeyRing
) -> ModerationSuspension | None:
    """Suspend the agent when its open and upheld flags within the window reach the setting."""
    limit = settings.moderation_suspend_after
    if limit <= 0:
        return None
    count = await counting_flags(session, agent_id=agent_id, settings=settings)
    if count < limit:
        return None
    agent = (
        await session.execute(select(Agent).where(Agent.id == agent_id).with_for_update())
    ).scalar_one_or_none()
    if agent is None or agent.deleted_at is not None or agent.status == "suspended":
        return None
    reason = (
        f"acceptable-use policy: {count} of its messages were flagged within {_hours(settings)}"
    )
    link = f"{settings.public_url}/agents/{agent.id}/appeal"
    notice = f"{reason}. An administrator will review the flags; to appeal, open {link}"
    effects = Effects(settings=settings, keyring=keyring)
    previous = await suspension.put_in_suspension(
        session, agent=agent, reason=reason, effects=effects, notice=notice
    )
    record = ModerationSuspension(
        agent_id=agent.id, owner_id=agent.owner_id, reason=reason, flags=count
    )
    session.add(record)
    audit.record(
        session,
        action="moderation.agent_suspended",
        actor_user_id=None,
        subject_user_id=agent.owner_id,
        target_type="agent",
        target_id=agent.id,
        details={"reason": reason, "from": previous, "flags": count},
    )
    await session.flush()
    return record


# The admin's queue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FlagRow:
    flag: ModerationFlag
    agent_name: str
    owner_email: str


async def list_flags(
    session: AsyncSession,
    *,
    status: str | None,
    direction: str | None,
    source: str | None,
    agent_id: str | None,
    limit: int,
    offset: int,
) -> tuple[list[FlagRow], int]:
    """Flags of every owner, newest first, filtered; and their total. No evidence is read."""
    query = (
        select(ModerationFlag, Agent.name, User.email)
        .join(Agent, Agent.id == ModerationFlag.agent_id)
        .join(User, User.id == ModerationFlag.owner_id)
    )
    if status:
        query = query.where(ModerationFlag.status == status)
    if direction:
        query = query.where(ModerationFlag.direction == direction)
    if source:
        query = query.where(ModerationFlag.source == source)
    if agent_id:
        query = query.where(ModerationFlag.agent_id == agent_id)
    total = await session.execute(select(func.count()).select_from(query.subquery()))
    rows = await session.execute(
        query.order_by(ModerationFlag.created_at.desc(), ModerationFlag.id.desc())
        .limit(limit)
        .offset(offset)
    )
    found = [FlagRow(flag, name, email) for flag, name, email in rows.all()]
    return found, int(total.scalar_one())


def flag_not_found() -> NotFoundError:
    return NotFoundError(error="Flag not found")


async def get_flag(session: AsyncSession, *, flag_id: str, for_update: bool = False) -> FlagRow:
    if not _is_id(flag_id):
        raise flag_not_found()
    query = (
        select(ModerationFlag, Agent.name, User.email)
        .join(Agent, Agent.id == ModerationFlag.agent_id)
        .join(User, User.id == ModerationFlag.owner_id)
        .where(ModerationFlag.id == flag_id)
    )
    if for_update:
        query = query.with_for_update(of=ModerationFlag)
    row = (await session.execute(query)).first()
    if row is None:
        raise flag_not_found()
    return FlagRow(row[0], row[1], row[2])


def read_evidence(
    session: AsyncSession,
    *,
    actor: User,
    client: ClientInfo | None,
    actor_key_id: str | None = None,
    row: FlagRow,
    keyring: KeyRing,
) -> str:
    """The flagged text, decrypted; the read is audited as `admin.viewed`."""
    suspension.record_view(
        session,
        actor=actor,
        client=client,
        actor_key_id=actor_key_id,
        target_type="moderation_flag",
        target_id=row.flag.id,
        subject_user_id=row.flag.owner_id,
        details={"agent_id": row.flag.agent_id, "message_id": row.flag.message_id},
    )
    return keyring.decrypt(row.flag.evidence)


async def review(
    session: AsyncSession,
    *,
    admin: Principal,
    flag_id: str,
    decision: Literal["dismissed", "upheld"],
    note: str,
) -> FlagRow:
    """Dismiss or uphold an open flag (409 once reviewed); audited as `moderation.flag_<decision>`.
    Dismissing never lifts a suspension by itself: reinstating the agent is its own action."""
    row = await get_flag(session, flag_id=flag_id, for_update=True)
    flag = row.flag
    if flag.status != "open":
        raise ConflictError(f"The flag was already {flag.status}", error="Flag already reviewed")
    flag.status, flag.reviewer_id = decision, admin.user.id
    flag.reviewed_at, flag.review_note = utcnow(), note or None
    audit.record(
        session,
        action=f"moderation.flag_{decision}",
        actor_user_id=admin.user.id,
        actor_key_id=admin.key_id,
        client=admin.client,
        subject_user_id=flag.owner_id,
        target_type="moderation_flag",
        target_id=flag.id,
        details={"agent_id": flag.agent_id, "note": note},
    )
    await session.flush()
    return row


async def check_counts(session: AsyncSession) -> dict[str, int]:
    """The classifier's checks by status (queued, checked, flagged, failed)."""
    rows = await session.execute(
        select(ModerationCheck.status, func.count()).group_by(ModerationCheck.status)
    )
    counts = {"queued": 0, "checked": 0, "flagged": 0, "failed": 0}
    counts.update({status: int(n) for status, n in rows.all()})
    return counts


async def failed_checks(session: AsyncSession, *, limit: int) -> list[ModerationCheck]:
    rows = await session.execute(
        select(ModerationCheck)
        .where(ModerationCheck.status == "failed")
        .order_by(ModerationCheck.created_at.desc())
        .limit(limit)
    )
    return list(rows.scalars())


# The owner's appeal ---------------------------------------------------------------------------


async def latest_suspension(session: AsyncSession, *, agent_id: str) -> ModerationSuspension | None:
    rows = await session.execute(
        select(ModerationSuspension)
        .where(ModerationSuspension.agent_id == agent_id)
        .order_by(ModerationSuspension.created_at.desc(), ModerationSuspension.id.desc())
        .limit(1)
    )
    return rows.scalar_one_or_none()


async def appeal(
    session: AsyncSession, effects: Effects, *, principal: Principal, agent_id: str, text: str
) -> Ticket:
    """Appeal the suspension of one of the caller's agents: a support ticket naming the agent
    and the reason, linked to the moderation suspension. 404 for another owner's agent; 409
    when the agent is not suspended or this suspension was already appealed."""
    agent = await get_agent(
        session, owner_id=principal.user.id, agent_id=agent_id, with_channels=False
    )
    if agent.status != "suspended":
        raise ConflictError("The agent is not suspended", error="Agent not suspended")
    record = await latest_suspension(session, agent_id=agent.id)
    since = agent.suspended_at
    current = record if record and since and record.created_at >= since else None
    if current is not None and current.ticket_id is not None:
        raise ConflictError(
            f"This suspension was already appealed: see ticket {current.ticket_id}",
            error="Already appealed",
            extra={"ticket_id": current.ticket_id},
        )
    body = (
        f"Appeal of the suspension of agent {agent.name!r} ({agent.id}).\n"
        f"Reason given: {agent.suspended_reason or 'none recorded'}\n\n{text}"
    )
    ticket = await tickets.open_ticket(
        session,
        effects,
        principal=principal,
        subject=f"Appeal: agent {agent.name} suspended"[:200],
        body=body,
    )
    if current is not None:
        current.ticket_id, current.appealed_at = ticket.id, utcnow()
    audit.record(
        session,
        action="moderation.appealed",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent.id,
        details={"ticket_id": ticket.id},
    )
    await session.flush()
    return ticket
