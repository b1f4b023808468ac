"""Spend caps: how much an agent (a day, a month, a turn) and an account (a month) may spend.

Periods are calendar days and months in UTC. A call counts in the period its hold was placed.

Before a model call of a capped turn, `check` runs in the transaction that places the call's
hold, under the owner's credit account lock (taken first, as every ledger writer does): the
call is refused (`CapReached`, nothing written) when what the period has settled, plus what
calls in flight hold, plus this call's hold, would pass a cap. `track` then ties the new hold to
its agent and periods (`capped_holds`), and `settled` moves a settled call's charge into the
period counters in the settlement's transaction, sending the 80 % notice once per period.
Because all of it happens under one lock per account, concurrent turns at a cap's edge can
overshoot it only by what a hold underestimates (a provider that bills above its catalog
price), never by a call the cap could not cover.

A hold released or expired stops counting by itself: only holds still `active` are summed.
An agent or account without a cap costs its turns nothing here: the plan reads the caps (one
query) and a turn without any skips every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.billing import ledger
from lunogen.billing.models import CreditEntry, CreditHold, EntryKind, HoldStatus
from lunogen.billing.models_caps import CappedHold, SpendCap, SpendCounter
from lunogen.billing.units import micro_to_credits_str
from lunogen.config import Settings
from lunogen.kit.crypto import KeyRing
from lunogen.kit.time import utcnow
from lunogen.llm.models import UsageRecord
from lunogen.notification.service import notify
from lunogen.runlog.logs import log_event

DEFAULT_REPLY = (
    "Sorry, I can't answer right now: this assistant has reached its spending limit. "
    "Please try again later."
)
WARN_PERCENT = 80
MAX_CREDITS = 1_000_000_000  # a cap's largest value, in credits (the ledger's largest amount)
MAX_TURN_TOKENS = 100_000_000
MAX_REPLY_CHARS = 1000

DAILY = "daily"
MONTHLY = "monthly"
ACCOUNT_MONTHLY = "account_monthly"
TURN_CREDITS = "turn_credits"
TURN_TOKENS = "turn_tokens"

_CAP_NAMES = {
    DAILY: "daily spend cap",
    MONTHLY: "monthly spend cap",
    ACCOUNT_MONTHLY: "account's monthly spend cap",
    TURN_CREDITS: "per-turn credit cap",
    TURN_TOKENS: "per-turn token cap",
}


def day_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%d")


def month_of(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m")


def period_bounds(period: str) -> tuple[datetime, datetime]:
    """The UTC start (inclusive) and end (exclusive) of a day ("2026-12-07") or a month."""
    if len(period) == 10:
        start = datetime.strptime(period, "%Y-%m-%d").replace(tzinfo=UTC)
        end = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
        return start, end
    start = datetime.strptime(period, "%Y-%m").replace(tzinfo=UTC)
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start, start.replace(year=year, month=month)


@dataclass(frozen=True)
class TurnCaps:
    """The caps a turn runs under, read with its plan. None of them set: no `TurnCaps`."""

    agent_id: str
    agent_name: str
    owner_id: str
    daily: int | None = None
    monthly: int | None = None
    account_monthly: int | None = None
    turn_micro: int | None = None  # the smaller of the agent's and the message's
    turn_tokens: int | None = None
    reply_text: str = DEFAULT_REPLY

    @property
    def tracked(self) -> bool:
        """Whether the turn's holds count against a period's cap."""
        return any(c is not None for c in (self.daily, self.monthly, self.account_monthly))


class CapReached(Exception):  # a refusal, named like InsufficientCredits
    """A cap cannot cover the next call; nothing was written."""

    def __init__(self, cap: str, *, limit: int, used: int, required: int) -> None:
        self.cap = cap
        self.limit = limit
        self.used = used
        self.required = required
        unit = "tokens" if cap == TURN_TOKENS else "credits"
        show = str if cap == TURN_TOKENS else micro_to_credits_str
        super().__init__(
            f"the {_CAP_NAMES[cap]} of {show(limit)} {unit} is reached "
            f"({show(used)} used, the next call needs up to {show(required)})"
        )

    @property
    def details(self) -> dict[str, Any]:
        show = str if self.cap == TURN_TOKENS else micro_to_credits_str
        return {
            "cap": self.cap,
            "limit": show(self.limit),
            "used": show(self.used),
            "required": show(self.required),
        }


@dataclass(frozen=True)
class Periods:
    day: str
    month: str


# --- reading the caps --------------------------------------------------------------------


async def for_turn(
    session: AsyncSession,
    *,
    agent_id: str,
    agent_name: str,
    owner_id: str,
    message_cap: int | None,
) -> TurnCaps | None:
    """The caps of a turn of `agent_id` (one query), or None when none applies."""
    rows = (
        await session.execute(select(SpendCap).where(SpendCap.subject.in_((agent_id, owner_id))))
    ).scalars()
    agent_cap = account_cap = None
    for row in rows:
        if row.subject == agent_id:
            agent_cap = row
        else:
            account_cap = row
    turn_micro = agent_cap.turn_micro if agent_cap else None
    if message_cap is not None:
        turn_micro = message_cap if turn_micro is None else min(turn_micro, message_cap)
    caps = TurnCaps(
        agent_id=agent_id,
        agent_name=agent_name,
        owner_id=owner_id,
        daily=agent_cap.daily_micro if agent_cap else None,
        monthly=agent_cap.monthly_micro if agent_cap else None,
        account_monthly=account_cap.monthly_micro if account_cap else None,
        turn_micro=turn_micro,
        turn_tokens=agent_cap.turn_tokens if agent_cap else None,
        reply_text=(agent_cap.reply_text if agent_cap and agent_cap.reply_text else DEFAULT_REPLY),
    )
    if not caps.tracked and caps.turn_micro is None and caps.turn_tokens is None:
        return None
    return caps


async def get_cap(session: AsyncSession, subject: str) -> SpendCap | None:
    return await session.get(SpendCap, subject)


async def put_cap(
    session: AsyncSession,
    *,
    subject: str,
    owner_id: str,
    agent_id: str | None,
    values: dict[str, Any],
) -> SpendCap | None:
    """Set a subject's caps to `values` (every field; None clears it). A row left with nothing
    set is deleted. Returns the row (None when deleted)."""
    row = await session.get(SpendCap, subject)
    if all(value is None for value in values.values()):
        if row is not None:
            await session.delete(row)
            await session.flush()
        return None
    if row is None:
        row = SpendCap(subject=subject, owner_id=owner_id, agent_id=agent_id)
        session.add(row)
    for name, value in values.items():
        setattr(row, name, value)
    row.updated_at = utcnow()
    await session.flush()
    return row


@dataclass(frozen=True)
class PeriodSpend:
    period: str
    spent: int  # settled
    held: int  # held by calls in flight
    limit: int | None


async def spend_of(
    session: AsyncSession, *, owner_id: str, agent_id: str | None, now: datetime | None = None
) -> tuple[PeriodSpend | None, PeriodSpend]:
    """What an agent (its day and month) or the account (its month: day is None) has spent in
    the current periods, and the caps, for display (no lock)."""
    now = now or utcnow()
    periods = Periods(day_of(now), month_of(now))
    cap = await session.get(SpendCap, agent_id or owner_id)
    held = await _held(session, owner_id=owner_id, agent_id=agent_id or "", periods=periods)
    # A counter is kept up to date only while its subject has a period cap; otherwise the
    # ledger's figure is the truth.
    counted = cap is not None and (cap.daily_micro is not None or cap.monthly_micro is not None)
    if agent_id is None:
        month = await _spent(session, owner_id, owner_id, None, periods.month, counted)
        return None, PeriodSpend(periods.month, month, held[2], cap.monthly_micro if cap else None)
    day = await _spent(session, agent_id, owner_id, agent_id, periods.day, counted)
    month = await _spent(session, agent_id, owner_id, agent_id, periods.month, counted)
    return (
        PeriodSpend(periods.day, day, held[0], cap.daily_micro if cap else None),
        PeriodSpend(periods.month, month, held[1], cap.monthly_micro if cap else None),
    )


# --- the hot path -------------------------------------------------------------------------


async def check(
    session: AsyncSession, caps: TurnCaps, *, amount: int, now: datetime | None = None
) -> Periods:
    """Raise `CapReached` when a hold of `amount` would pass one of the period caps.

    Locks the owner's credit account first (the hold placed next takes the same lock), and
    creates the period counters it needs (seeded from the ledger when a cap was set during the
    period). Returns the periods to `track` the hold under."""
    now = now or utcnow()
    periods = Periods(day_of(now), month_of(now))
    await ledger.lock_account(session, caps.owner_id)
    counters = await _counters(session, caps, periods, create=True)
    held = await _held(session, owner_id=caps.owner_id, agent_id=caps.agent_id, periods=periods)
    limits = (
        (DAILY, caps.daily, (caps.agent_id, periods.day), held[0]),
        (MONTHLY, caps.monthly, (caps.agent_id, periods.month), held[1]),
        (ACCOUNT_MONTHLY, caps.account_monthly, (caps.owner_id, periods.month), held[2]),
    )
    for name, limit, key, in_flight in limits:
        if limit is None:
            continue
        used = counters[key].spent + in_flight
        if used + amount > limit:
            raise CapReached(name, limit=limit, used=used, required=amount)
    return periods


async def track(
    session: AsyncSession, caps: TurnCaps, periods: Periods, *, hold_id: str, amount: int
) -> None:
    """Count the hold just placed against the periods `check` returned, until it closes."""
    if await session.get(CappedHold, hold_id) is not None:  # a replayed hold key
        return
    session.add(
        CappedHold(
            hold_id=hold_id,
            owner_id=caps.owner_id,
            agent_id=caps.agent_id,
            day=periods.day,
            month=periods.month,
            amount=amount,
        )
    )
    await session.flush()


async def settled(
    session: AsyncSession,
    settings: Settings,
    keyring: KeyRing,
    caps: TurnCaps,
    *,
    hold_id: str,
    charged: int,
) -> None:
    """Add a settled call's charge to its periods' counters, in the settlement's transaction
    (the account is locked by it), and notify the owner once per period at 80 % and 100 %."""
    capped = await session.get(CappedHold, hold_id)
    if capped is None:  # placed before a cap existed
        return
    periods = Periods(capped.day, capped.month)
    counters = await _counters(session, caps, periods, create=False)
    for each in counters.values():
        each.spent += charged
        each.updated_at = utcnow()
    await session.delete(capped)
    await session.flush()
    limits = (
        (DAILY, caps.daily, counters.get((caps.agent_id, periods.day))),
        (MONTHLY, caps.monthly, counters.get((caps.agent_id, periods.month))),
        (ACCOUNT_MONTHLY, caps.account_monthly, counters.get((caps.owner_id, periods.month))),
    )
    for name, limit, counter in limits:
        if limit is None or counter is None:
            continue
        if counter.spent >= limit:
            await _notify_reached(session, settings, keyring, caps, name, counter, limit)
        elif counter.spent * 100 >= limit * WARN_PERCENT and not counter.warned:
            counter.warned = True
            await _notify(
                session,
                settings,
                keyring,
                caps,
                kind="caps.warning",
                key=f"caps-warn:{counter.subject}:{counter.period}",
                title=f"{_whose(caps, name)} has used {WARN_PERCENT} % of its {_period(name)} cap",
                body=f"{_whose(caps, name)} has spent {micro_to_credits_str(counter.spent)} of "
                f"its {micro_to_credits_str(limit)} credits for {counter.period} (UTC). At "
                "100 % its model calls stop until the period ends or you raise the cap.",
            )


async def released(session: AsyncSession, *, hold_id: str) -> None:
    """The hold's call was never made: forget its tie to the periods (it stopped counting when
    it was released)."""
    await session.execute(delete(CappedHold).where(CappedHold.hold_id == hold_id))


async def refused(
    session: AsyncSession,
    settings: Settings,
    keyring: KeyRing,
    caps: TurnCaps,
    *,
    message_id: str,
    reached: CapReached,
) -> None:
    """Log a call a cap refused, and tell the owner once per period that a period cap stopped
    the agent. In the transaction that stores the turn's reply."""
    log_event(
        session,
        agent_id=caps.agent_id,
        event="caps.refused",
        level="warning",
        message=f"Message {message_id} answered with the over-cap reply: {reached}",
        details={"message_id": message_id, **reached.details},
    )
    if reached.cap not in (DAILY, MONTHLY, ACCOUNT_MONTHLY):
        return
    now = utcnow()
    periods = Periods(day_of(now), month_of(now))
    subject = caps.owner_id if reached.cap == ACCOUNT_MONTHLY else caps.agent_id
    period = periods.day if reached.cap == DAILY else periods.month
    await ledger.lock_account(session, caps.owner_id)
    counters = await _counters(session, caps, periods, create=True)
    counter = counters.get((subject, period))
    if counter is not None:
        await _notify_reached(session, settings, keyring, caps, reached.cap, counter, reached.limit)


# --- internals ----------------------------------------------------------------------------


async def _notify_reached(
    session: AsyncSession,
    settings: Settings,
    keyring: KeyRing,
    caps: TurnCaps,
    name: str,
    counter: SpendCounter,
    limit: int,
) -> None:
    if counter.reached:
        return
    counter.reached = True
    counter.warned = True
    await session.flush()
    await _notify(
        session,
        settings,
        keyring,
        caps,
        kind="caps.reached",
        key=f"caps-reached:{counter.subject}:{counter.period}",
        title=f"{_whose(caps, name)} reached its {_period(name)} spend cap",
        body=f"{_whose(caps, name)} has used its {micro_to_credits_str(limit)} credits for "
        f"{counter.period} (UTC). Its model calls are stopped, and contacts get the over-cap "
        "reply, until the period ends or you raise the cap.",
    )


async def _notify(
    session: AsyncSession,
    settings: Settings,
    keyring: KeyRing,
    caps: TurnCaps,
    *,
    kind: str,
    key: str,
    title: str,
    body: str,
) -> None:
    owner = await session.get(User, caps.owner_id)
    if owner is None:
        return
    await notify(
        session,
        user=owner,
        kind=kind,
        title=title,
        body=body,
        dedupe_key=key,
        settings=settings,
        keyring=keyring,
        agent_id=caps.agent_id,
    )


def _whose(caps: TurnCaps, name: str) -> str:
    return "Your account" if name == ACCOUNT_MONTHLY else f"Agent {caps.agent_name!r}"


def _period(name: str) -> str:
    return "daily" if name == DAILY else "monthly"


async def _counters(
    session: AsyncSession, caps: TurnCaps, periods: Periods, *, create: bool
) -> dict[tuple[str, str], SpendCounter]:
    """The agent's day and month counters, and the account's month counter when the account
    has a cap (otherwise other agents' calls go uncounted), by (subject, period). With
    `create`, missing ones are created, seeded from the ledger. Call under the account lock."""
    keys: list[tuple[str, str, str | None]] = [
        (caps.agent_id, periods.day, caps.agent_id),
        (caps.agent_id, periods.month, caps.agent_id),
    ]
    if caps.account_monthly is not None:
        keys.append((caps.owner_id, periods.month, None))
    wanted = or_(*(and_(SpendCounter.subject == s, SpendCounter.period == p) for s, p, _ in keys))
    query = select(SpendCounter).where(wanted).execution_options(populate_existing=True)
    found = {(row.subject, row.period): row for row in (await session.execute(query)).scalars()}
    if not create:
        return found
    for subject, period, agent_id in keys:
        if (subject, period) not in found:
            found[(subject, period)] = await _new_counter(
                session, subject, period, caps.owner_id, agent_id
            )
    await session.flush()
    return found


async def _new_counter(
    session: AsyncSession, subject: str, period: str, owner_id: str, agent_id: str | None
) -> SpendCounter:
    counter = SpendCounter(
        subject=subject,
        period=period,
        owner_id=owner_id,
        spent=await _ledger_spent(session, owner_id, agent_id, period),
        warned=False,
        reached=False,
        updated_at=utcnow(),
    )
    session.add(counter)
    return counter


async def resync(
    session: AsyncSession, *, owner_id: str, agent_id: str | None, now: datetime | None = None
) -> None:
    """Set the current periods' counters of an agent (or the account) to what the ledger
    charged, keeping the notices sent. Run when its caps change: while no cap applied, its
    calls were not counted."""
    now = now or utcnow()
    await ledger.lock_account(session, owner_id)
    periods = [day_of(now), month_of(now)] if agent_id else [month_of(now)]
    for period in periods:
        subject = agent_id or owner_id
        counter = await session.get(SpendCounter, (subject, period), populate_existing=True)
        if counter is None:
            await _new_counter(session, subject, period, owner_id, agent_id)
        else:
            counter.spent = await _ledger_spent(session, owner_id, agent_id, period)
            counter.updated_at = utcnow()
    await session.flush()


async def _spent(
    session: AsyncSession,
    subject: str,
    owner_id: str,
    agent_id: str | None,
    period: str,
    counted: bool,
) -> int:
    counter = await session.get(SpendCounter, (subject, period)) if counted else None
    if counter is not None:
        return counter.spent
    return await _ledger_spent(session, owner_id, agent_id, period)


async def _ledger_spent(
    session: AsyncSession, owner_id: str, agent_id: str | None, period: str
) -> int:
    """Credits the ledger charged in `period` for the account, or for one agent's calls (their
    usage entries name the usage row, which names the agent)."""
    start, end = period_bounds(period)
    query = select(func.coalesce(func.sum(-CreditEntry.amount), 0)).where(
        CreditEntry.account_id == owner_id,
        CreditEntry.kind == EntryKind.USAGE.value,
        CreditEntry.created_at >= start,
        CreditEntry.created_at < end,
    )
    if agent_id is not None:
        query = query.join(UsageRecord, UsageRecord.id == CreditEntry.reference).where(
            UsageRecord.agent_id == agent_id
        )
    return int((await session.execute(query)).scalar_one())


async def _held(
    session: AsyncSession, *, owner_id: str, agent_id: str, periods: Periods
) -> tuple[int, int, int]:
    """Credits held by calls in flight: the agent's today, the agent's this month, and the
    account's this month. One query."""
    mine = CappedHold.agent_id == agent_id
    query = (
        select(
            func.coalesce(
                func.sum(case((and_(mine, CappedHold.day == periods.day), CappedHold.amount))),
                0,
            ),
            func.coalesce(func.sum(case((mine, CappedHold.amount))), 0),
            func.coalesce(func.sum(CappedHold.amount), 0),
        )
        .join(CreditHold, CreditHold.id == CappedHold.hold_id)
        .where(
            CappedHold.owner_id == owner_id,
            CappedHold.month == periods.month,
            CreditHold.status == HoldStatus.ACTIVE.value,
        )
    )
    day, month, account = (await session.execute(query)).one()
    return int(day), int(month), int(account)
