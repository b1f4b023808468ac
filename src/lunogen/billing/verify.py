"""Check the ledger invariants for every account, a batch of accounts per round of queries.

For each account: `balance == sum(amount)`, `held == sum(held_delta)`, `held == sum of its active
holds`, `held >= 0`; every entry's `balance_after`/`held_after` equal the running sums up to it;
every entry has the shape of its kind (credits never taken away by a grant, a hold never
charged...), so a balance only goes below zero through a refund, an adjustment or a usage
charge; and each hold's entries net to its amount while active and to zero once closed.

Every check concerns one account, so each batch needs its own consistent snapshot:
`verify_all_in_batches` (the CLI) takes one per batch (REPEATABLE READ on PostgreSQL; an SQLite
transaction is one already).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.billing.models import CreditAccount, CreditEntry, CreditHold, EntryKind, HoldStatus
from lunogen.billing.units import micro_to_credits_str as credits

BATCH_SIZE = 500
NEGATIVE_KINDS = (EntryKind.REFUND, EntryKind.ADJUSTMENT, EntryKind.USAGE)


@dataclass(frozen=True)
class Problem:
    account_id: str
    check: str
    message: str
    entry_id: int | None = None

    def __str__(self) -> str:
        where = f" (entry {self.entry_id})" if self.entry_id is not None else ""
        return f"{self.account_id}: {self.check}: {self.message}{where}"


async def count_accounts(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count(CreditAccount.user_id)))).scalar_one())


async def verify_all(
    session: AsyncSession,
    progress: Callable[[int], None] | None = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> list[Problem]:
    """Every problem found, accounts in id order. `progress(n)` after each batch of n accounts."""
    problems: list[Problem] = []
    last: str | None = None
    while batch := await _next_batch(session, last, batch_size):
        problems.extend(await verify_accounts(session, batch))
        last = batch[-1]
        if progress is not None:
            progress(len(batch))
    return problems


async def verify_all_in_batches(
    sessionmaker: async_sessionmaker[AsyncSession],
    progress: Callable[[int], None] | None = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> list[Problem]:
    """Like `verify_all`, one short snapshot per batch of accounts, for a live database.

    Every check is about one account, so a snapshot per batch answers as well as one for the
    whole run, without holding SQLite's write lock (or PostgreSQL's oldest snapshot) throughout.
    """
    problems: list[Problem] = []
    last: str | None = None
    while True:
        async with sessionmaker() as session:
            if session.get_bind().dialect.name == "postgresql":
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            batch = await _next_batch(session, last, batch_size)
            if not batch:
                return problems
            problems.extend(await verify_accounts(session, batch))
        last = batch[-1]
        if progress is not None:
            progress(len(batch))


async def _next_batch(session: AsyncSession, last: str | None, size: int) -> list[str]:
    query = select(CreditAccount.user_id).order_by(CreditAccount.user_id).limit(size)
    if last is not None:
        query = query.where(CreditAccount.user_id > last)
    return list((await session.execute(query)).scalars())


async def verify_accounts(session: AsyncSession, account_ids: Sequence[str]) -> list[Problem]:
    ids = list(account_ids)
    problems = [
        *await _totals(session, ids),
        *await _chains(session, ids),
        *await _shapes(session, ids),
        *await _negatives(session, ids),
        *await _holds(session, ids),
    ]
    order = {account_id: n for n, account_id in enumerate(ids)}
    return sorted(problems, key=lambda p: (order[p.account_id], p.entry_id or 0, p.check))


async def _totals(session: AsyncSession, ids: list[str]) -> list[Problem]:
    accounts = await session.execute(
        select(CreditAccount.user_id, CreditAccount.balance, CreditAccount.held).where(
            CreditAccount.user_id.in_(ids)
        )
    )
    sums = await _by_account(
        session,
        select(
            CreditEntry.account_id,
            func.sum(CreditEntry.amount),
            func.sum(CreditEntry.held_delta),
        )
        .where(CreditEntry.account_id.in_(ids))
        .group_by(CreditEntry.account_id),
    )
    holds = await _by_account(
        session,
        select(CreditHold.account_id, func.sum(CreditHold.amount))
        .where(CreditHold.account_id.in_(ids), CreditHold.status == HoldStatus.ACTIVE)
        .group_by(CreditHold.account_id),
    )
    problems = []
    for account_id, balance, held in accounts.all():
        entry_balance, entry_held = (int(v or 0) for v in sums.get(account_id, (0, 0)))
        active = int(holds.get(account_id, (0,))[0] or 0)
        if balance != entry_balance:
            problems.append(
                Problem(
                    account_id,
                    "balance",
                    f"balance {credits(balance)} != sum of entries {credits(entry_balance)}",
                )
            )
        if held != entry_held:
            problems.append(
                Problem(
                    account_id,
                    "held",
                    f"held {credits(held)} != sum of entries' held_delta {credits(entry_held)}",
                )
            )
        if held != active:
            problems.append(
                Problem(
                    account_id,
                    "active_holds",
                    f"held {credits(held)} != sum of active holds {credits(active)}",
                )
            )
        if held < 0:
            problems.append(Problem(account_id, "held", f"held {credits(held)} is negative"))
    return problems


async def _chains(session: AsyncSession, ids: list[str]) -> list[Problem]:
    """The first entry per account whose stored running totals are not the running sums."""
    running = (
        select(
            CreditEntry.id,
            CreditEntry.account_id,
            CreditEntry.balance_after,
            CreditEntry.held_after,
            func.sum(CreditEntry.amount)
            .over(partition_by=CreditEntry.account_id, order_by=CreditEntry.id)
            .label("balance_sum"),
            func.sum(CreditEntry.held_delta)
            .over(partition_by=CreditEntry.account_id, order_by=CreditEntry.id)
            .label("held_sum"),
        )
        .where(CreditEntry.account_id.in_(ids))
        .subquery()
    )
    query = (
        select(running)
        .where(
            or_(
                running.c.balance_after != running.c.balance_sum,
                running.c.held_after != running.c.held_sum,
                running.c.held_after < 0,
            )
        )
        .order_by(running.c.id)
    )
    problems: dict[str, Problem] = {}
    for row in (await session.execute(query)).all():
        if row.account_id in problems:
            continue
        problems[row.account_id] = Problem(
            row.account_id,
            "running_totals",
            f"balance_after {credits(row.balance_after)} / held_after "
            f"{credits(row.held_after)}, expected {credits(int(row.balance_sum))} / "
            f"{credits(int(row.held_sum))}",
            row.id,
        )
    return list(problems.values())


def _shape_is_valid() -> ColumnElement[bool]:
    e = CreditEntry
    credit_kinds = (EntryKind.GRANT, EntryKind.TOPUP, EntryKind.PLAN)
    return or_(
        and_(e.kind.in_(credit_kinds), e.amount > 0, e.held_delta == 0),
        and_(e.kind == EntryKind.REFUND, e.amount < 0, e.held_delta == 0),
        and_(e.kind == EntryKind.ADJUSTMENT, e.amount != 0, e.held_delta == 0),
        and_(e.kind == EntryKind.HOLD, e.amount == 0, e.held_delta > 0, e.hold_id.is_not(None)),
        and_(e.kind == EntryKind.RELEASE, e.amount == 0, e.held_delta < 0, e.hold_id.is_not(None)),
        and_(e.kind == EntryKind.USAGE, e.amount <= 0, e.held_delta <= 0, e.hold_id.is_not(None)),
    )


async def _shapes(session: AsyncSession, ids: list[str]) -> list[Problem]:
    query = (
        select(CreditEntry.id, CreditEntry.account_id, CreditEntry.kind)
        .where(CreditEntry.account_id.in_(ids), not_(_shape_is_valid()))
        .order_by(CreditEntry.id)
    )
    return [
        Problem(
            row.account_id, "entry_shape", f"a {row.kind!r} entry with impossible amounts", row.id
        )
        for row in (await session.execute(query)).all()
    ]


async def _negatives(session: AsyncSession, ids: list[str]) -> list[Problem]:
    """Credits taken below zero by an entry of a kind that must never do that."""
    query = (
        select(CreditEntry.id, CreditEntry.account_id, CreditEntry.kind, CreditEntry.balance_after)
        .where(
            CreditEntry.account_id.in_(ids),
            CreditEntry.amount < 0,
            CreditEntry.balance_after < 0,
            CreditEntry.kind.not_in(NEGATIVE_KINDS),
        )
        .order_by(CreditEntry.id)
    )
    return [
        Problem(
            row.account_id,
            "negative_balance",
            f"a {row.kind!r} entry took the balance to {credits(row.balance_after)}",
            row.id,
        )
        for row in (await session.execute(query)).all()
    ]


async def _holds(session: AsyncSession, ids: list[str]) -> list[Problem]:
    """While active, a hold's entries hold its amount; once closed they net to zero."""
    expected = case((CreditHold.status == HoldStatus.ACTIVE, CreditHold.amount), else_=0)
    netted = func.coalesce(func.sum(CreditEntry.held_delta), 0)
    query = (
        select(CreditHold.id, CreditHold.account_id, CreditHold.status, expected, netted)
        .select_from(CreditHold)
        .outerjoin(CreditEntry, CreditEntry.hold_id == CreditHold.id)
        .where(CreditHold.account_id.in_(ids))
        .group_by(CreditHold.id, CreditHold.account_id, CreditHold.status, CreditHold.amount)
        .having(netted != expected)
    )
    return [
        Problem(
            account_id,
            "hold",
            f"{status} hold {hold_id}: its entries hold {credits(int(held))}, "
            f"expected {credits(int(want))}",
        )
        for hold_id, account_id, status, want, held in (await session.execute(query)).all()
    ]


async def _by_account(session: AsyncSession, query: Any) -> dict[str, tuple[Any, ...]]:
    return {row[0]: tuple(row[1:]) for row in (await session.execute(query)).all()}
