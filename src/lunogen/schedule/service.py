"""Schedules of an owner's agents: create, read, change, delete, and their run history.

Every query starts from the owner's live agent (`agent.service.get_agent`, 404 otherwise), so
another owner's agent or schedule id answers 404. A change to when a schedule runs wakes the
scheduler once it commits (`wake.changed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.service import get_agent
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.billing.models import CreditEntry
from lunogen.billing.units import credits_to_micro
from lunogen.errors import NotFoundError, ValidationFailedError
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.llm.models import UsageRecord
from lunogen.runtime.models import Message, Thread
from lunogen.schedule import proactive, schemas, timing, wake
from lunogen.schedule.models import Schedule, ScheduleRun

CHANNEL_KEY = "schedule"
MAX_SCHEDULES_PER_AGENT = 50


def schedule_not_found() -> NotFoundError:
    return NotFoundError(error="Schedule not found")


def rule_of(row: Schedule) -> timing.Rule:
    kind: timing.Kind = (
        "cron" if row.kind == "cron" else "once" if row.kind == "once" else "interval"
    )
    return timing.Rule(
        kind=kind,
        timezone=row.timezone,
        cron=row.cron,
        run_at=row.run_at,
        interval_seconds=row.interval_seconds,
    )


def _checked(rule: timing.Rule, now: datetime) -> None:
    try:
        timing.check(rule, now=now)
    except timing.RuleError as exc:
        raise ValidationFailedError(exc.message, field=exc.field) from None


def new_rule(
    *,
    kind: timing.Kind,
    timezone: str,
    cron: str | None,
    run_at: datetime | None,
    interval_seconds: int | None,
    now: datetime,
) -> timing.Rule:
    """The rule of a new schedule (an interval's first run defaults to one interval from now);
    not checked yet (`timing.check`)."""
    if kind == "interval" and run_at is None and interval_seconds is not None:
        run_at = now + timedelta(seconds=interval_seconds)
    return timing.Rule(
        kind=kind,
        timezone=timezone,
        cron=cron.strip() if cron else None,
        run_at=run_at if kind != "cron" else None,
        interval_seconds=interval_seconds if kind == "interval" else None,
    )


def new_row(
    *,
    agent_id: str,
    owner_id: str,
    name: str,
    rule: timing.Rule,
    prompt: str,
    enabled: bool,
    run_cap_micro: int | None,
    day_cap_micro: int | None,
    channel_id: str | None,
    contact: str | None,
    now: datetime,
) -> tuple[Schedule, Thread]:
    """A schedule with a checked rule, and its own thread (made with it: its id is known from
    the start, and a firing only numbers its message in it, one UPDATE, instead of creating
    it)."""
    row = Schedule(
        id=new_id(),
        agent_id=agent_id,
        owner_id=owner_id,
        name=name,
        kind=rule.kind,
        cron=rule.cron,
        timezone=rule.timezone,
        run_at=rule.run_at,
        interval_seconds=rule.interval_seconds,
        prompt=prompt,
        enabled=enabled,
        next_run_at=_first_run(rule, now) if enabled else None,
        run_cap_micro=run_cap_micro,
        day_cap_micro=day_cap_micro,
        channel_id=channel_id,
        contact=contact,
        created_at=now,
        updated_at=now,
    )
    thread = Thread(
        id=new_id(), agent_id=agent_id, owner_id=owner_id, channel_key=CHANNEL_KEY, contact=row.id
    )
    return row, thread


def micro_of(value: Decimal | None) -> int | None:
    return None if value is None else credits_to_micro(value)


def _first_run(rule: timing.Rule, now: datetime) -> datetime | None:
    return timing.next_after(rule, now, first=True)


async def list_schedules(session: AsyncSession, *, owner_id: str, agent_id: str) -> list[Schedule]:
    agent = await get_agent(session, owner_id=owner_id, agent_id=agent_id, with_channels=False)
    rows = await session.execute(
        select(Schedule)
        .where(Schedule.agent_id == agent.id)
        .order_by(Schedule.created_at, Schedule.id)
    )
    return list(rows.scalars())


async def get_schedule(
    session: AsyncSession, *, owner_id: str, agent_id: str, schedule_id: str
) -> Schedule:
    """One schedule of the owner's live agent, else 404 (whoever owns the id)."""
    agent = await get_agent(session, owner_id=owner_id, agent_id=agent_id, with_channels=False)
    if len(schedule_id) > 36:
        raise schedule_not_found()
    row = (
        await session.execute(
            select(Schedule).where(Schedule.id == schedule_id, Schedule.agent_id == agent.id)
        )
    ).scalar_one_or_none()
    if row is None:
        raise schedule_not_found()
    return row


async def create_schedule(
    session: AsyncSession, *, principal: Principal, agent_id: str, data: schemas.ScheduleCreate
) -> Schedule:
    owner_id = principal.user.id
    agent = await get_agent(session, owner_id=owner_id, agent_id=agent_id, with_channels=False)
    count = await session.scalar(
        select(func.count()).select_from(Schedule).where(Schedule.agent_id == agent.id)
    )
    if (count or 0) >= MAX_SCHEDULES_PER_AGENT:
        raise ValidationFailedError(
            f"An agent has at most {MAX_SCHEDULES_PER_AGENT} schedules", field="kind"
        )
    now = utcnow()
    rule = new_rule(
        kind=data.kind,
        timezone=data.timezone,
        cron=data.cron,
        run_at=data.run_at,
        interval_seconds=data.interval_seconds,
        now=now,
    )
    _checked(rule, now)
    contact = data.contact.strip() if data.contact else data.contact
    await proactive.check_target(
        session, agent_id=agent.id, channel_id=data.channel_id, contact=contact
    )
    row, thread = new_row(
        agent_id=agent.id,
        owner_id=owner_id,
        name=data.name,
        rule=rule,
        prompt=data.prompt,
        enabled=data.enabled,
        run_cap_micro=micro_of(data.run_cap_credits),
        day_cap_micro=micro_of(data.day_cap_credits),
        channel_id=data.channel_id,
        contact=contact,
        now=now,
    )
    session.add(row)
    session.add(thread)
    await session.flush()
    _audit(session, principal, "schedule.created", row)
    wake.changed(session)
    return row


async def update_schedule(
    session: AsyncSession,
    *,
    principal: Principal,
    agent_id: str,
    schedule_id: str,
    data: schemas.ScheduleUpdate,
) -> Schedule:
    row = await get_schedule(
        session, owner_id=principal.user.id, agent_id=agent_id, schedule_id=schedule_id
    )
    sent = data.model_fields_set
    now = utcnow()
    rule = rule_of(row)
    target: tuple[str | None, str | None] | None = None
    if {"channel_id", "contact"} & sent:  # checked before any change: a 422 changes nothing
        channel_id = data.channel_id if "channel_id" in sent else row.channel_id
        contact = (data.contact or "").strip() or None if "contact" in sent else row.contact
        await proactive.check_target(
            session, agent_id=row.agent_id, channel_id=channel_id, contact=contact
        )
        target = (channel_id, contact)
    rule_fields = {"cron", "timezone", "run_at", "interval_seconds"} & sent
    if rule_fields:
        _refuse_foreign_fields(row.kind, rule_fields)
        rule = timing.Rule(
            kind=rule.kind,
            timezone=data.timezone if "timezone" in sent and data.timezone else rule.timezone,
            cron=(data.cron or "").strip() if "cron" in sent else rule.cron,
            run_at=data.run_at if "run_at" in sent else rule.run_at,
            interval_seconds=(
                data.interval_seconds if "interval_seconds" in sent else rule.interval_seconds
            ),
        )
        _checked(rule, now)
        row.cron, row.timezone = rule.cron, rule.timezone
        row.run_at, row.interval_seconds = rule.run_at, rule.interval_seconds
    if target is not None:
        row.channel_id, row.contact = target
    if "name" in sent and data.name is not None:
        row.name = data.name
    if "prompt" in sent and data.prompt is not None:
        row.prompt = data.prompt
    if "run_cap_credits" in sent:
        row.run_cap_micro = micro_of(data.run_cap_credits)
    if "day_cap_credits" in sent:
        row.day_cap_micro = micro_of(data.day_cap_credits)
    enabling = "enabled" in sent and data.enabled is not None and data.enabled != row.enabled
    if enabling and data.enabled and row.kind == "once" and not rule_fields:
        _checked(rule, now)  # a one-off whose time passed cannot be switched on again
    if "enabled" in sent and data.enabled is not None:
        row.enabled = data.enabled
    if rule_fields or enabling:
        row.next_run_at = _first_run(rule, now) if row.enabled else None
        wake.changed(session)
    row.updated_at = now
    await session.flush()
    _audit(session, principal, "schedule.updated", row)
    return row


def _refuse_foreign_fields(kind: str, fields: set[str]) -> None:
    allowed = {
        "cron": {"cron", "timezone"},
        "once": {"run_at", "timezone"},
        "interval": {"run_at", "interval_seconds", "timezone"},
    }[kind]
    for name in sorted(fields - allowed):
        raise ValidationFailedError(f"A {kind} schedule has no {name}", field=name)


async def delete_schedule(
    session: AsyncSession, *, principal: Principal, agent_id: str, schedule_id: str
) -> None:
    """Delete the schedule and its run history (a run already started still answers)."""
    row = await get_schedule(
        session, owner_id=principal.user.id, agent_id=agent_id, schedule_id=schedule_id
    )
    _audit(session, principal, "schedule.deleted", row)
    await session.delete(row)
    await session.flush()
    wake.changed(session)


def _audit(session: AsyncSession, principal: Principal, action: str, row: Schedule) -> None:
    audit.record(
        session,
        action=action,
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="schedule",
        target_id=row.id,
        details={"agent_id": row.agent_id, "name": row.name, "kind": row.kind},
    )


async def thread_ids(session: AsyncSession, *, schedules: list[Schedule]) -> dict[str, str]:
    """The thread each schedule's runs are written to (schedule id -> thread id): its own, or
    a proactive schedule's contact's on its channel."""
    if not schedules:
        return {}
    rows = await session.execute(
        select(Thread.contact, Thread.id).where(
            Thread.agent_id == schedules[0].agent_id,
            Thread.channel_key == CHANNEL_KEY,
            Thread.contact.in_([row.id for row in schedules]),
        )
    )
    found = {contact: thread_id for contact, thread_id in rows.all()}
    targeted = [row for row in schedules if row.channel_id and row.contact]
    if targeted:
        contacts = await session.execute(
            select(Thread.channel_key, Thread.contact, Thread.id).where(
                Thread.agent_id == schedules[0].agent_id,
                Thread.contact.in_({row.contact for row in targeted}),
            )
        )
        by_target = {
            (key.partition(":")[2], contact): thread_id
            for key, contact, thread_id in contacts.all()
        }
        for row in targeted:
            thread_id = by_target.get((row.channel_id or "", row.contact or ""))
            if thread_id is not None:
                found[row.id] = thread_id
            else:
                found.pop(row.id, None)
    return found


@dataclass(frozen=True)
class RunView:
    run: ScheduleRun
    outcome: str
    cost_micro: int


async def message_costs(session: AsyncSession, message_ids: list[str]) -> dict[str, int]:
    """Micro-credits charged for the model calls of each message's turn (from the ledger)."""
    if not message_ids:
        return {}
    rows = await session.execute(
        select(UsageRecord.message_id, func.coalesce(func.sum(-CreditEntry.amount), 0))
        .join(CreditEntry, CreditEntry.reference == UsageRecord.id)
        .where(UsageRecord.message_id.in_(message_ids), CreditEntry.kind == "usage")
        .group_by(UsageRecord.message_id)
    )
    return {str(message_id): int(total) for message_id, total in rows.all()}


async def list_runs(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    schedule_id: str,
    limit: int,
    offset: int,
) -> tuple[list[RunView], int]:
    """The schedule's runs, newest first, with each turn's state and what it cost."""
    row = await get_schedule(session, owner_id=owner_id, agent_id=agent_id, schedule_id=schedule_id)
    total = await session.scalar(
        select(func.count()).select_from(ScheduleRun).where(ScheduleRun.schedule_id == row.id)
    )
    runs = list(
        (
            await session.execute(
                select(ScheduleRun)
                .where(ScheduleRun.schedule_id == row.id)
                .order_by(ScheduleRun.created_at.desc(), ScheduleRun.id)
                .limit(limit)
                .offset(offset)
            )
        ).scalars()
    )
    return await _views(session, runs), int(total or 0)


async def _views(session: AsyncSession, runs: list[ScheduleRun]) -> list[RunView]:
    ids = [run.message_id for run in runs if run.message_id]
    costs = await message_costs(session, ids)
    states: dict[str, str] = {}
    if ids:
        found = await session.execute(select(Message.id, Message.status).where(Message.id.in_(ids)))
        states = {message_id: status for message_id, status in found.all()}
    return [
        RunView(
            run=run,
            outcome="skipped"
            if run.status == "skipped"
            else states.get(run.message_id or "", "deleted"),
            cost_micro=costs.get(run.message_id or "", 0),
        )
        for run in runs
    ]
