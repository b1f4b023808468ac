"""The credit ledger: every change of a balance is an append-only entry with a unique key.

Every function works in the caller's transaction and never commits: an entry and the balance
it changes are written together or not at all. Each one first locks the account row
(`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite every transaction already holds the write
lock from `BEGIN IMMEDIATE`). Replaying an idempotency key returns the first result and changes
nothing; the same key with different parameters is an `IdempotencyConflict`. Keys are looked up
under the lock, and on PostgreSQL the insert also survives a concurrent insert of the same key
(another account's transaction) in a savepoint.

Invariants (checked by `billing.verify`): `balance == sum(amount)` and
`held == sum(held_delta) == sum(amount of active holds)` for every account.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.billing.models import (
    DEFAULT_LOW_CREDIT_THRESHOLD,
    POSTABLE_KINDS,
    CreditAccount,
    CreditEntry,
    CreditHold,
    CreditPause,
    EntryKind,
    HoldStatus,
)
from lunogen.billing.units import micro_to_credits_str
from lunogen.errors import LunogenError
from lunogen.kit.ids import new_id
from lunogen.kit.time import as_utc, utcnow

log = structlog.get_logger(__name__)

MAX_AMOUNT = 10**15  # micro-credits in one entry: a billion credits
MAX_KEY_LENGTH = 200
MAX_REFERENCE_LENGTH = 255
MAX_DESCRIPTION_LENGTH = 500
MAX_PAGE = 500


class LedgerError(LunogenError, ValueError):
    """Bad input to the ledger (a caller's bug or a bad request); nothing was written."""

    status_code = 400
    error = "Bad request"


class HoldNotFound(LedgerError):
    status_code = 404
    error = "Not found"


class HoldClosed(LedgerError):
    status_code = 409
    error = "Conflict"


class IdempotencyConflict(LedgerError):
    """The key was already used for a different operation."""

    status_code = 409
    error = "Conflict"


class InsufficientCredits(LunogenError):
    """The account cannot cover `required` micro-credits; nothing was written."""

    status_code = 402
    error = "Insufficient credits"

    def __init__(self, required: int, available: int) -> None:
        self.required = required
        self.available = available
        super().__init__(
            f"This needs {micro_to_credits_str(required)} credits; "
            f"{micro_to_credits_str(max(available, 0))} are available.",
            extra={
                "required_credits": micro_to_credits_str(required),
                "available_credits": micro_to_credits_str(available),
            },
        )


def available(account: CreditAccount) -> int:
    """Micro-credits that can still be reserved: balance minus active holds."""
    return account.balance - account.held


# --- accounts ---------------------------------------------------------------------------


async def ensure_account(
    session: AsyncSession,
    user_id: str,
    *,
    low_credit_threshold: int = DEFAULT_LOW_CREDIT_THRESHOLD,
) -> CreditAccount:
    """The user's account, created (empty) if missing; safe against a concurrent creation."""
    _check_id(user_id, "user_id")
    account = await session.get(CreditAccount, user_id)
    if account is not None:
        return account
    now = utcnow()
    account = CreditAccount(
        user_id=user_id,
        balance=0,
        held=0,
        low_credit_threshold=low_credit_threshold,
        low_alert_sent=False,
        created_at=now,
        updated_at=now,
    )
    try:
        async with session.begin_nested():
            session.add(account)
    except IntegrityError:  # created concurrently
        query = select(CreditAccount).where(CreditAccount.user_id == user_id)
        account = (await session.execute(query)).scalar_one()
    return account


async def get_account(session: AsyncSession, account_id: str) -> CreditAccount | None:
    """The account as committed now (not locked; for display)."""
    query = (
        select(CreditAccount)
        .where(CreditAccount.user_id == account_id)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def lock_account(session: AsyncSession, account_id: str) -> CreditAccount | None:
    """The account row (None before it exists), locked for this transaction."""
    query = (
        select(CreditAccount)
        .where(CreditAccount.user_id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def claim_low_credit_alert(session: AsyncSession, account_id: str) -> bool:
    """True once when the available credits fall to the threshold or below: send the alert.

    The flag re-arms by itself when a ledger change lifts the available credits above the
    threshold again. Call it in the transaction of the change that may have crossed it.
    """
    account = await lock_account(session, account_id)
    return account is not None and claim_low_credit_alert_of(account)


def claim_low_credit_alert_of(account: CreditAccount) -> bool:
    """`claim_low_credit_alert` for an account this transaction has already locked (and so
    holds as it is now): no query."""
    if account.low_alert_sent or available(account) > account.low_credit_threshold:
        return False
    account.low_alert_sent = True
    return True


# --- entries ----------------------------------------------------------------------------


async def post(
    session: AsyncSession,
    *,
    account_id: str,
    kind: str,
    amount: int,
    key: str,
    reference: str | None = None,
    description: str = "",
) -> CreditEntry:
    """Add or take credits: grant, topup and plan are positive, refund is negative (and may take
    the balance below zero), adjustment is either sign. Creates the account if missing.
    """
    _check_id(account_id, "account_id")
    entry_kind = _postable_kind(kind)
    _check_amount(amount, "amount")
    if entry_kind == EntryKind.REFUND and amount >= 0:
        raise LedgerError("amount: a refund takes credits away, so it must be negative")
    if entry_kind in (EntryKind.GRANT, EntryKind.TOPUP, EntryKind.PLAN) and amount <= 0:
        raise LedgerError(f"amount: a {entry_kind} must be positive")
    if amount == 0:
        raise LedgerError("amount: must not be zero")
    _check_key(key)
    _check_text(reference, description)

    account = await lock_account(session, account_id)
    if account is None:
        await ensure_account(session, account_id)
        account = await lock_account(session, account_id)
        assert account is not None
    replayed = await _entry_by_key(session, key)
    entry = CreditEntry(
        account_id=account_id,
        kind=entry_kind.value,
        amount=amount,
        held_delta=0,
        idempotency_key=key,
        reference=reference,
        description=description,
    )
    if replayed is not None:
        _require_same(replayed, entry)
        return replayed
    first = await _append(session, account, entry)
    if first is not entry:
        _require_same(first, entry)
    return first


async def place_hold(
    session: AsyncSession,
    *,
    account_id: str,
    amount: int,
    key: str,
    reference: str | None,
    ttl: timedelta,
    description: str = "",
) -> CreditHold:
    """Reserve `amount` for a model call, or raise `InsufficientCredits` writing nothing.

    A replayed key returns the hold it created, whatever its status is now.
    """
    _check_id(account_id, "account_id")
    _check_amount(amount, "amount")
    if amount <= 0:
        raise LedgerError("amount: a hold must be positive")
    if ttl <= timedelta(0):
        raise LedgerError("ttl: must be positive")
    _check_key(key)
    _check_text(reference, description)

    account = await lock_account(session, account_id)
    if account is None:
        raise InsufficientCredits(amount, 0)
    replayed = await _entry_by_key(session, key)
    if replayed is not None:
        return await _hold_of(session, replayed, account_id=account_id, amount=amount)
    if available(account) < amount:
        raise InsufficientCredits(amount, available(account))
    now = utcnow()
    hold = CreditHold(
        id=new_id(),
        account_id=account_id,
        amount=amount,
        status=HoldStatus.ACTIVE.value,
        reference=reference,
        created_at=now,
        expires_at=now + ttl,
    )
    entry = CreditEntry(
        account_id=account_id,
        kind=EntryKind.HOLD.value,
        amount=0,
        held_delta=amount,
        idempotency_key=key,
        hold_id=hold.id,
        reference=reference,
        description=description,
    )
    first = await _append(session, account, entry, hold)
    if first is not entry:
        return await _hold_of(session, first, account_id=account_id, amount=amount)
    return hold


async def settle_hold(
    session: AsyncSession,
    *,
    hold_id: str,
    actual: int,
    key: str,
    reference: str | None = None,
    description: str = "",
) -> CreditEntry:
    """Charge `actual` for the call the hold was for, and end the hold, in one `usage` entry
    (amount = -actual, held_delta = -hold amount).

    `actual` may exceed the hold (the provider reported more than the worst case): it is charged
    in full, the balance may then go below zero, and a warning names both figures. A hold that
    was released or expired before
    its call finished is still charged (its held credits were already returned, so held_delta is
    0). Settling an already settled hold under another key is a `HoldClosed` error.
    """
    _check_amount(actual, "actual")
    if actual < 0:
        raise LedgerError("actual: must not be negative")
    _check_key(key)
    _check_text(reference, description)
    account, hold = await _lock_hold(session, hold_id)

    entry = CreditEntry(
        account_id=account.user_id,
        kind=EntryKind.USAGE.value,
        amount=-actual,
        held_delta=-hold.amount if hold.status == HoldStatus.ACTIVE else 0,
        idempotency_key=key,
        hold_id=hold.id,
        reference=reference or hold.reference,
        description=description,
    )
    replayed = await _entry_by_key(session, key)
    if replayed is not None:
        _require_same(replayed, entry)
        return replayed
    if hold.status == HoldStatus.SETTLED:
        raise HoldClosed(f"hold {hold.id} is already settled")
    first = await _append(session, account, entry)
    if first is not entry:
        _require_same(first, entry)
        return first
    hold.status = HoldStatus.SETTLED.value
    hold.closed_at = utcnow()
    await session.flush()
    if actual > hold.amount:
        log.warning(
            "usage_above_hold",
            account_id=account.user_id,
            hold_id=hold.id,
            held=hold.amount,
            charged=actual,
            over=actual - hold.amount,
            balance_after=entry.balance_after,
        )
    return entry


async def release_hold(
    session: AsyncSession, *, hold_id: str, key: str, description: str = ""
) -> CreditEntry | None:
    """End a hold without a charge (the call was never made). None if it was no longer active."""
    _check_key(key)
    _check_text(None, description)
    account, hold = await _lock_hold(session, hold_id)
    replayed = await _entry_by_key(session, key)
    if replayed is not None:
        _require_same(replayed, _release_entry(account, hold, key, description))
        return replayed
    if hold.status != HoldStatus.ACTIVE:
        return None
    return await _release(session, account, hold, key, description, HoldStatus.RELEASED)


async def expire_holds(
    session: AsyncSession, now: datetime | None = None, *, limit: int = 500
) -> int:
    """Release up to `limit` active holds past their expiry (their worker died mid-call).

    Accounts are locked in a fixed order, so two sweepers cannot deadlock.
    """
    now = as_utc(now) if now else utcnow()
    query = (
        select(CreditHold.id, CreditHold.account_id)
        .where(CreditHold.status == HoldStatus.ACTIVE, CreditHold.expires_at <= now)
        .order_by(CreditHold.expires_at)
        .limit(limit)
    )
    due = (await session.execute(query)).all()
    expired = 0
    for account_id in sorted({row.account_id for row in due}):
        account = await lock_account(session, account_id)
        assert account is not None
        hold_ids = [row.id for row in due if row.account_id == account_id]
        holds = await _holds(session, hold_ids)
        for hold in holds:
            if hold.status == HoldStatus.ACTIVE and hold.expires_at <= now:
                key = f"expire:{hold.id}"
                await _release(session, account, hold, key, "expired", HoldStatus.EXPIRED)
                expired += 1
    return expired


async def entries(
    session: AsyncSession,
    account_id: str,
    *,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    after_id: int | None = None,
    limit: int = 50,
) -> list[CreditEntry]:
    """An account's entries, newest first. Page back with `before_id` (the last id you got);
    `after_id` keeps only newer entries. `since` is inclusive, `until` exclusive.
    """
    if not 1 <= limit <= MAX_PAGE:
        raise LedgerError(f"limit: must be between 1 and {MAX_PAGE}")
    query = select(CreditEntry).where(CreditEntry.account_id == account_id)
    if kind is not None:
        query = query.where(CreditEntry.kind == _kind(kind).value)
    if since is not None:
        query = query.where(CreditEntry.created_at >= since)
    if until is not None:
        query = query.where(CreditEntry.created_at < until)
    if before_id is not None:
        query = query.where(CreditEntry.id < before_id)
    if after_id is not None:
        query = query.where(CreditEntry.id > after_id)
    query = query.order_by(CreditEntry.id.desc()).limit(limit)
    return list((await session.execute(query)).scalars())


async def active_holds(session: AsyncSession, account_id: str) -> list[CreditHold]:
    query = (
        select(CreditHold)
        .where(CreditHold.account_id == account_id, CreditHold.status == HoldStatus.ACTIVE)
        .order_by(CreditHold.created_at)
    )
    return list((await session.execute(query)).scalars())


# --- agents paused for lack of credits ----------------------------------------------------


async def pause_agent(
    session: AsyncSession, *, account_id: str, agent_id: str, required: int
) -> bool:
    """Record `agent_id` as paused for lack of credits; False (nothing recorded) when the
    settled balance can pay for `required` (the agent's cheapest call) by now, so a top-up that
    raced the refusal never leaves the agent paused. Active holds do not count: their calls end
    and give them back. Run it in the transaction that changes the agent's status.
    """
    account = await lock_account(session, account_id)
    if account is not None and account.balance >= required:
        return False
    if account is None:
        account = await ensure_account(session, account_id)
    if await session.get(CreditPause, agent_id) is not None:
        return True
    try:
        async with session.begin_nested():
            session.add(CreditPause(agent_id=agent_id, account_id=account_id, paused_at=utcnow()))
    except IntegrityError:  # paused concurrently
        pass
    return True


async def paused_agents(session: AsyncSession, account_id: str) -> list[str]:
    """The agents recorded as paused for lack of credits on this account, oldest pause first."""
    query = (
        select(CreditPause.agent_id)
        .where(CreditPause.account_id == account_id)
        .order_by(CreditPause.paused_at, CreditPause.agent_id)
    )
    return list((await session.execute(query)).scalars())


async def is_paused_for_credits(session: AsyncSession, agent_id: str) -> bool:
    return await session.get(CreditPause, agent_id) is not None


async def forget_pause(session: AsyncSession, agent_id: str) -> None:
    """The agent left the paused state another way (resumed by hand, stopped, deleted)."""
    await session.execute(delete(CreditPause).where(CreditPause.agent_id == agent_id))


# --- internals ----------------------------------------------------------------------------


async def _append(
    session: AsyncSession, account: CreditAccount, entry: CreditEntry, *rows: object
) -> CreditEntry:
    """Insert `entry` (after `rows`) and apply it to the locked `account`.

    Returns the entry already holding the key when a concurrent transaction took it between
    the caller's look-up and this insert. That race exists on PostgreSQL only (an SQLite
    transaction holds the database's write lock from its start), so only there is the insert
    wrapped in a savepoint, which undoes it cleanly; nothing else was changed yet.
    """
    entry.balance_after = account.balance + entry.amount
    entry.held_after = account.held + entry.held_delta
    entry.created_at = utcnow()
    if session.get_bind().dialect.name == "sqlite":
        await _insert(session, *rows, entry)
    else:
        try:
            async with session.begin_nested():
                await _insert(session, *rows, entry)
        except IntegrityError:
            first = await _entry_by_key(session, entry.idempotency_key)
            if first is None:
                raise
            return first
    account.balance = entry.balance_after
    account.held = entry.held_after
    account.updated_at = entry.created_at
    if account.low_alert_sent and available(account) > account.low_credit_threshold:
        account.low_alert_sent = False
    await session.flush()
    return entry


async def _insert(session: AsyncSession, *rows: object) -> None:
    """In this order: an entry's hold must exist before it (the models have no relationships
    to tell the unit of work)."""
    for row in rows:
        session.add(row)
        await session.flush()


async def _release(
    session: AsyncSession,
    account: CreditAccount,
    hold: CreditHold,
    key: str,
    description: str,
    status: HoldStatus,
) -> CreditEntry:
    entry = _release_entry(account, hold, key, description)
    first = await _append(session, account, entry)
    if first is not entry:
        _require_same(first, entry)
        return first
    hold.status = status.value
    hold.closed_at = utcnow()
    await session.flush()
    return entry


def _release_entry(
    account: CreditAccount, hold: CreditHold, key: str, description: str
) -> CreditEntry:
    return CreditEntry(
        account_id=account.user_id,
        kind=EntryKind.RELEASE.value,
        amount=0,
        held_delta=-hold.amount,
        idempotency_key=key,
        hold_id=hold.id,
        reference=hold.reference,
        description=description,
    )


async def _lock_hold(session: AsyncSession, hold_id: str) -> tuple[CreditAccount, CreditHold]:
    """Lock the hold's account, then read the hold (holds only change under that lock)."""
    _check_id(hold_id, "hold_id")
    owner = select(CreditHold.account_id).where(CreditHold.id == hold_id).scalar_subquery()
    query = (
        select(CreditAccount)
        .where(CreditAccount.user_id == owner)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    account = (await session.execute(query)).scalar_one_or_none()
    if account is None:
        raise HoldNotFound(f"no hold {hold_id}")
    (hold,) = await _holds(session, [hold_id])
    return account, hold


async def _holds(session: AsyncSession, hold_ids: Iterable[str]) -> Sequence[CreditHold]:
    query = (
        select(CreditHold)
        .where(CreditHold.id.in_(list(hold_ids)))
        .order_by(CreditHold.expires_at, CreditHold.id)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(query)).scalars().all()


async def _entry_by_key(session: AsyncSession, key: str) -> CreditEntry | None:
    query = select(CreditEntry).where(CreditEntry.idempotency_key == key)
    return (await session.execute(query)).scalar_one_or_none()


async def _hold_of(
    session: AsyncSession, entry: CreditEntry, *, account_id: str, amount: int
) -> CreditHold:
    hold = (await _holds(session, [entry.hold_id]))[0] if entry.hold_id else None
    if (
        entry.kind != EntryKind.HOLD
        or hold is None
        or entry.account_id != account_id
        or hold.amount != amount
    ):
        raise _conflict(entry)
    return hold


_COMPARED = ("account_id", "kind", "amount", "held_delta", "hold_id")


def _require_same(first: CreditEntry, wanted: CreditEntry) -> None:
    """A replayed key must describe the same operation as the entry that holds it.

    `held_delta` of a settlement depends on the hold's state, which the first settlement
    changed, so it is not compared for usage entries.
    """
    fields = [f for f in _COMPARED if not (f == "held_delta" and wanted.kind == EntryKind.USAGE)]
    if any(getattr(first, f) != getattr(wanted, f) for f in fields):
        raise _conflict(first)


def _conflict(entry: CreditEntry) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"idempotency key {entry.idempotency_key!r} was already used for another operation"
    )


def _kind(kind: Any) -> EntryKind:
    try:
        return EntryKind(kind)
    except ValueError:
        raise LedgerError(f"kind: unknown entry kind {kind!r}") from None


def _postable_kind(kind: Any) -> EntryKind:
    entry_kind = _kind(kind)
    if entry_kind not in POSTABLE_KINDS:
        allowed = ", ".join(sorted(POSTABLE_KINDS))
        raise LedgerError(f"kind: post() takes {allowed}; holds have their own functions")
    return entry_kind


def _check_amount(amount: Any, name: str) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise LedgerError(f"{name}: must be an integer number of micro-credits")
    if abs(amount) > MAX_AMOUNT:
        raise LedgerError(f"{name}: must be at most {MAX_AMOUNT} micro-credits")


def _check_key(key: Any) -> None:
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise LedgerError(f"key: must be 1 to {MAX_KEY_LENGTH} characters")


def _check_id(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 36:
        raise LedgerError(f"{name}: must be 1 to 36 characters")


def _check_text(reference: str | None, description: str) -> None:
    if reference is not None and (not reference or len(reference) > MAX_REFERENCE_LENGTH):
        raise LedgerError(f"reference: must be 1 to {MAX_REFERENCE_LENGTH} characters")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise LedgerError(f"description: must be at most {MAX_DESCRIPTION_LENGTH} characters")
