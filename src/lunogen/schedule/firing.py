"""Fire due schedules, each exactly once, from any number of processes.

A firing is owned by whoever advances the schedule's `next_run_at` from the value it read
(a conditional UPDATE: on PostgreSQL a second process's UPDATE waits for the first to commit,
then matches no row). The same transaction writes the run row (unique on the schedule and the
planned time, so a second firing would roll back with it) and, for a run that starts, its
inbound message through the runtime's inbox (`runtime.service.accept_inbound`) with the run's
cap in `messages.turn_cap_micro`; the turn is enqueued after commit and runs through the normal
engine, metered and capped like any turn.

A schedule missed while nothing was firing runs once (`catch_up`) and then goes on at its next
time after now. A run is skipped, with a history row and a log line saying why, when the agent
is not running (paused, stopped, draft, suspended, deleted), when one of its spend caps (the
agent's day or month, the account's month) is spent, when the previous run's turn is still
pending, or when the schedule's day cap is spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.agent.models import Agent, AgentChannel
from lunogen.billing import caps as spend_caps
from lunogen.billing.models_caps import SpendCap
from lunogen.billing.units import micro_to_credits_str
from lunogen.channel import delivery
from lunogen.channel.contract import channel_type
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.runlog.logs import log_event
from lunogen.runtime import context
from lunogen.runtime.models import Message
from lunogen.runtime.service import accept_inbound
from lunogen.runtime.tasks import enqueue_thread
from lunogen.schedule import proactive, timing
from lunogen.schedule.models import Schedule, ScheduleRun
from lunogen.schedule.service import CHANNEL_KEY, message_costs, rule_of

log = structlog.get_logger(__name__)

# A run that starts later than this after its time was missed (no process was firing).
CATCH_UP_AFTER = timedelta(seconds=60)
BATCH = 200  # firings per transaction


@dataclass(frozen=True)
class Fired:
    schedule_id: str
    run_id: str
    status: str  # started | skipped
    reason: str | None
    thread_id: str | None
    late_ms: int  # when it fired, after its planned time


async def earliest(session: AsyncSession) -> datetime | None:
    """The soonest `next_run_at` of any schedule (one indexed MIN)."""
    return await session.scalar(select(func.min(Schedule.next_run_at)))


async def _due(session: AsyncSession, now: datetime, limit: int) -> list[Schedule]:
    """Due schedules, soonest first; ties in id order, so that processes firing concurrently
    lock rows in the same order (PostgreSQL) and never deadlock."""
    rows = await session.execute(
        select(Schedule)
        .where(Schedule.next_run_at <= now)
        .order_by(Schedule.next_run_at, Schedule.id)
        .limit(limit),
        execution_options={"populate_existing": True},
    )
    return list(rows.scalars())


@dataclass
class _Known:
    """What a batch of firings reads once: the schedules' agents, which runs still go, and
    the spend caps of the agents and their owners."""

    agents: dict[str, Agent]
    going: set[str]
    caps: dict[str, SpendCap]


async def _known(session: AsyncSession, rows: list[Schedule]) -> _Known:
    agent_ids = {row.agent_id for row in rows}
    subjects = agent_ids | {row.owner_id for row in rows}
    agents = await session.execute(select(Agent).where(Agent.id.in_(agent_ids)))
    caps = await session.execute(select(SpendCap).where(SpendCap.subject.in_(subjects)))
    going = await session.execute(
        select(ScheduleRun.schedule_id)
        .join(Message, Message.id == ScheduleRun.message_id)
        .where(
            ScheduleRun.schedule_id.in_([row.id for row in rows]),
            Message.status == "pending",
        )
    )
    return _Known(
        {agent.id: agent for agent in agents.scalars()},
        set(going.scalars()),
        {cap.subject: cap for cap in caps.scalars()},
    )


async def fire_due(
    sessionmaker: async_sessionmaker[AsyncSession],
    keyring: KeyRing,
    *,
    now: datetime | None = None,
) -> list[Fired]:
    """Fire every schedule due at `now` (default: the clock, read again for each firing);
    what this process fired (others may fire some of the same rows concurrently: each once).

    Up to `BATCH` firings share a transaction, their reads done once for the batch and their
    rows written in one flush; the turns are enqueued when it commits, so runs due at the same
    second are all written before their turns compete for the database. Should the batch fail,
    it is rolled back and fired again one schedule at a time, each in a SAVEPOINT of its own
    (a failing one is rolled back alone and moved on to its next time, so it is not retried hot).
    """
    fired: list[Fired] = []
    while True:
        async with sessionmaker() as session:
            rows = await _due(session, now or utcnow(), BATCH)
            if not rows:
                return fired
            due = [(row.id, row.next_run_at) for row in rows]
            try:
                batch = await _fire_batch(session, rows, now=now, keyring=keyring)
                await session.commit()
            except Exception:
                log.exception("schedule_batch_failed", schedules=len(due))
                await session.rollback()
                batch = await _fire_singly(session, due, now=now, keyring=keyring)
        for result in batch:
            log.info(
                "schedule_fired",
                schedule_id=result.schedule_id,
                status=result.status,
                reason=result.reason,
                late_ms=result.late_ms,
            )
        fired += batch
        if len(due) < BATCH:
            return fired


async def _fire_batch(
    session: AsyncSession, rows: list[Schedule], *, now: datetime | None, keyring: KeyRing
) -> list[Fired]:
    known = await _known(session, rows)
    batch: list[Fired] = []
    for row in rows:
        assert row.next_run_at is not None
        result = await _claim_and_run(
            session, row, row.next_run_at, now=now or utcnow(), keyring=keyring, known=known
        )
        if result is not None:
            batch.append(result)
    await session.flush()
    return batch


async def _fire_singly(
    session: AsyncSession,
    due: list[tuple[str, datetime | None]],
    *,
    now: datetime | None,
    keyring: KeyRing,
) -> list[Fired]:
    batch: list[Fired] = []
    for schedule_id, planned in due:
        assert planned is not None
        at = now or utcnow()
        try:
            async with session.begin_nested():
                result = await fire_one(
                    session, schedule_id=schedule_id, planned=planned, now=at, keyring=keyring
                )
        except Exception:
            log.exception("schedule_fire_failed", schedule_id=schedule_id)
            async with session.begin_nested():
                await _step_over(session, schedule_id, planned, at)
            continue
        if result is not None:
            batch.append(result)
    await session.commit()
    return batch


async def _step_over(
    session: AsyncSession, schedule_id: str, planned: datetime, now: datetime
) -> None:
    """After a firing failed: move the schedule to its next time, so it is not retried hot
    (a rule that cannot say when, say a time zone this system lost, stops the schedule)."""
    row = await session.get(Schedule, schedule_id, populate_existing=True)
    if row is None:
        return
    try:
        following = timing.next_after(rule_of(row), max(now, planned))
    except Exception:
        log.exception("schedule_stopped", schedule_id=schedule_id)
        following = None
    await session.execute(
        update(Schedule)
        .where(Schedule.id == schedule_id, Schedule.next_run_at == planned)
        .values(next_run_at=following)
        .execution_options(synchronize_session=False)
    )


async def fire_one(
    session: AsyncSession,
    *,
    schedule_id: str,
    planned: datetime,
    now: datetime,
    keyring: KeyRing,
) -> Fired | None:
    """Claim the firing of `schedule_id` planned at `planned` and start or skip its run, in the
    caller's transaction (which commits; the turn is enqueued then).

    None: another process claimed it first (or the schedule changed since it was read).
    """
    found = await session.execute(
        select(Schedule).where(Schedule.id == schedule_id, Schedule.next_run_at == planned),
        execution_options={"populate_existing": True},
    )
    row = found.scalar_one_or_none()
    if row is None:
        return None
    result = await _claim_and_run(
        session, row, planned, now=now, keyring=keyring, known=await _known(session, [row])
    )
    await session.flush()
    return result


async def _claim_and_run(
    session: AsyncSession,
    row: Schedule,
    planned: datetime,
    *,
    now: datetime,
    keyring: KeyRing,
    known: _Known,
) -> Fired | None:
    """Advance `row` from `planned` (None if another process did first), then write its run:
    skipped with the reason, or started with its inbound message and its turn enqueued."""
    following = timing.next_after(rule_of(row), max(now, planned))
    claimed = await session.execute(
        update(Schedule)
        .where(Schedule.id == row.id, Schedule.next_run_at == planned)
        .values(next_run_at=following)
        .execution_options(synchronize_session=False)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        return None
    run = ScheduleRun(
        id=new_id(),
        schedule_id=row.id,
        agent_id=row.agent_id,
        owner_id=row.owner_id,
        planned_at=planned,
        created_at=now,
        status="started",
        catch_up=now - planned > CATCH_UP_AFTER,
    )
    agent = known.agents[row.agent_id]  # the foreign key cascades: the agent is there
    reason, detail, cap = await _verdict(session, row, agent, now, known=known)
    target: _Target | None = None
    if reason is None and row.channel_id is not None:
        found = await _target(session, row, now)
        if isinstance(found, _Target):
            target = found
        else:
            reason, detail = found
    thread_id: str | None = None
    if reason is not None:
        run.status, run.reason, run.detail = "skipped", reason, detail
        if reason == "agent_deleted":
            await session.execute(
                update(Schedule)
                .where(Schedule.id == row.id)
                .values(next_run_at=None)
                .execution_options(synchronize_session=False)
            )
        session.add(run)
        log_event(
            session,
            agent_id=row.agent_id,
            event="schedule.skipped",
            level="warning",
            message=f"Schedule {row.name!r} skipped its {planned:%Y-%m-%d %H:%M} UTC run: {detail}",
            details={"schedule_id": row.id, "run_id": run.id, "reason": reason},
        )
    else:
        accepted = await accept_inbound(
            session,
            agent=agent,
            channel_key=CHANNEL_KEY if target is None else target.channel_key,
            contact=row.id if target is None else target.contact,
            text=row.prompt,
            keyring=keyring,
            # A proactive run: when the contact last wrote, so that the channel's own check
            # at send time (a service window) counts from their message, not from this one.
            sent_at=None if target is None else target.last_inbound_at,
        )
        accepted.message.turn_cap_micro = cap
        if target is not None:
            # The owner's task, not the contact's words (the turn labels it so); the channel
            # sends the reply to the contact like any reply it pushes.
            accepted.message.source = context.SCHEDULED
            await session.flush()  # the message before its delivery (no mapped relationship)
            session.add(
                delivery.new_delivery(
                    inbound_id=accepted.message.id, agent_id=agent.id, channel_id=target.channel_id
                )
            )
        run.message_id, run.cap_micro = accepted.message.id, cap
        thread_id = accepted.thread.id
        session.add(run)
        late = " (catch-up for missed times)" if run.catch_up else ""
        log_event(
            session,
            agent_id=row.agent_id,
            event="schedule.run",
            message=f"Schedule {row.name!r} started its {planned:%Y-%m-%d %H:%M} UTC run{late}",
            details={"schedule_id": row.id, "run_id": run.id, "message_id": run.message_id},
        )
        enqueue_thread(session, thread_id)
    late_ms = int((now - planned).total_seconds() * 1000)
    return Fired(row.id, run.id, run.status, run.reason, thread_id, late_ms)


@dataclass(frozen=True)
class _Target:
    """Where a proactive run's message goes."""

    channel_id: str
    channel_key: str
    contact: str
    last_inbound_at: datetime | None


async def _target(session: AsyncSession, row: Schedule, now: datetime) -> _Target | tuple[str, str]:
    """A proactive schedule's target, or (reason, words) why the run is skipped: the channel
    is gone or disabled, the contact blocked the agent, or the channel's rules refuse a
    message the contact did not ask for now (the contract's words)."""
    assert row.channel_id is not None and row.contact is not None
    channel = await session.get(AgentChannel, row.channel_id)
    kind = None if channel is None else channel_type(channel.type)
    if channel is None or channel.agent_id != row.agent_id or kind is None:
        return "channel_gone", "the schedule's channel was removed"
    if not kind.pushes_replies:
        return "channel_gone", f"a {channel.type} channel cannot send messages on its own"
    if channel.disabled_at is not None:
        why = channel.disabled_reason or "its receiver is gone"
        return "channel_disabled", f"the channel is disabled ({why})"
    met = await proactive.met(session, channel=channel, kind=kind, contact=row.contact)
    if met.blocked_at is not None:
        return "contact_blocked", f"{row.contact} blocked the agent on {channel.type}"
    refusal = kind.proactive_refusal(last_inbound_at=met.last_inbound_at, now=now)
    if refusal is not None:
        return "channel_rules", f"{channel.type} does not allow it now: {refusal}"
    return _Target(channel.id, kind.channel_key(channel.id), row.contact, met.last_inbound_at)


async def _verdict(
    session: AsyncSession, row: Schedule, agent: Agent, now: datetime, *, known: _Known
) -> tuple[str | None, str, int | None]:
    """(why the run is skipped or None, the reason in words, the run's cap in micro-credits)."""
    if agent.deleted_at is not None:
        return "agent_deleted", "the agent was deleted", None
    if agent.status != "running":
        return "agent_not_running", f"the agent is {agent.status}", None
    if row.id in known.going:
        return "previous_run_going", "the previous run is still going", None
    over = await _over_cap(session, row, known, now)
    if over is not None:
        return "agent_over_cap", over, None
    cap = row.run_cap_micro
    if row.day_cap_micro is not None:
        spent = await day_spent(session, row, now)
        left = row.day_cap_micro - spent
        if left <= 0:
            used = micro_to_credits_str(spent)
            return "day_cap_reached", f"today's cap is spent ({used} credits)", None
        cap = left if cap is None else min(cap, left)
    return None, "", cap


async def _over_cap(
    session: AsyncSession, row: Schedule, known: _Known, now: datetime
) -> str | None:
    """Which spend cap (the agent's day or month, the account's month) is spent, if any: the
    turn could make no model call until the period rolls over or the owner raises the cap."""
    agent_cap, account_cap = known.caps.get(row.agent_id), known.caps.get(row.owner_id)
    if agent_cap is not None and (
        agent_cap.daily_micro is not None or agent_cap.monthly_micro is not None
    ):
        day, month = await spend_caps.spend_of(
            session, owner_id=row.owner_id, agent_id=row.agent_id, now=now
        )
        for label, period in (("daily", day), ("monthly", month)):
            if period is not None and period.limit is not None and period.spent >= period.limit:
                return f"the agent's {label} spend cap is reached"
    if account_cap is not None and account_cap.monthly_micro is not None:
        _, month = await spend_caps.spend_of(session, owner_id=row.owner_id, agent_id=None, now=now)
        if month.limit is not None and month.spent >= month.limit:
            return "the account's monthly spend cap is reached"
    return None


async def day_spent(session: AsyncSession, row: Schedule, now: datetime) -> int:
    """Micro-credits charged today (in the schedule's time zone) for the schedule's runs."""
    local = now.astimezone(timing.zone(row.timezone))
    start = local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    ids = list(
        (
            await session.execute(
                select(ScheduleRun.message_id).where(
                    ScheduleRun.schedule_id == row.id,
                    ScheduleRun.created_at >= start,
                    ScheduleRun.message_id.is_not(None),
                )
            )
        ).scalars()
    )
    return sum((await message_costs(session, [i for i in ids if i])).values())
