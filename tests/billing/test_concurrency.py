"""Concurrent transactions on PostgreSQL: row locks keep holds from overdrawing an account,
and idempotency keys hold across transactions. (SQLite runs one writer at a time.)"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.billing import ledger
from lunogen.billing.ledger import IdempotencyConflict, InsufficientCredits
from lunogen.billing.models import CreditAccount, CreditEntry, CreditHold
from lunogen.billing.verify import verify_all
from lunogen.kit.time import utcnow
from tests.billing.support import Sessions, state, tx
from tests.conftest import PG_URL

pytestmark = pytest.mark.skipif(not PG_URL, reason="concurrent writers need PostgreSQL")

C = 1_000_000
TTL = timedelta(minutes=5)


async def _hold_slowly(sm: Sessions, key: str, amount: int = C) -> str:
    async with tx(sm) as session:
        hold = await ledger.place_hold(
            session, account_id="u1", amount=amount, key=key, reference=key, ttl=TTL
        )
        await asyncio.sleep(0.005)  # keep the lock a while: the others queue behind it
        return hold.id


async def test_fifty_concurrent_holds_never_overdraw(sm: Sessions) -> None:
    async with tx(sm) as session:
        await ledger.post(session, account_id="u1", kind="topup", amount=20 * C + C // 2, key="t")

    results = await asyncio.gather(
        *(_hold_slowly(sm, f"turn:{n}") for n in range(50)), return_exceptions=True
    )
    placed = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, InsufficientCredits)]
    assert len(placed) == 20 and len(set(placed)) == 20
    assert len(refused) == 30, [r for r in results if not isinstance(r, str | InsufficientCredits)]
    assert all(r.required == C and r.available < C for r in refused)

    now = await state(sm, "u1")
    assert (now.balance, now.held, now.entries) == (20 * C + C // 2, 20 * C, 21)
    assert now.held <= now.balance and now.consistent
    async with sm() as session:
        assert await verify_all(session) == []


async def test_a_key_replayed_concurrently_makes_one_hold(sm: Sessions) -> None:
    async with tx(sm) as session:
        await ledger.post(session, account_id="u1", kind="topup", amount=5 * C, key="t")
    hold_ids = await asyncio.gather(*(_hold_slowly(sm, "turn:1") for _ in range(10)))
    assert len(set(hold_ids)) == 1
    now = await state(sm, "u1")
    assert (now.held, now.entries) == (C, 2)


async def _until_a_transaction_waits_for_a_lock(sm: Sessions) -> None:
    deadline = time.monotonic() + 30
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    while True:
        async with sm() as session:
            if (await session.execute(waiting)).scalar_one():
                return
        assert time.monotonic() < deadline, "no transaction ever waited for a lock"
        await asyncio.sleep(0.01)


async def test_a_key_taken_meanwhile_by_another_account_is_a_conflict(
    sm: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B looks the key up before A commits, so only the unique index can stop it: B's insert
    waits for A, fails, and the savepoint turns that into a clean IdempotencyConflict."""
    lookups: list[bool] = []
    real_lookup = ledger._entry_by_key

    async def recording_lookup(session: AsyncSession, key: str) -> CreditEntry | None:
        found = await real_lookup(session, key)
        if key == "pay:1":
            lookups.append(found is not None)
        return found

    monkeypatch.setattr(ledger, "_entry_by_key", recording_lookup)
    async with tx(sm) as session:
        for account_id in ("a", "b"):
            await ledger.post(
                session, account_id=account_id, kind="grant", amount=C, key=account_id
            )

    a_inserted = asyncio.Event()
    b_started = asyncio.Event()

    async def first() -> None:
        async with tx(sm) as session:
            await ledger.post(session, account_id="a", kind="topup", amount=C, key="pay:1")
            a_inserted.set()
            await b_started.wait()
            await _until_a_transaction_waits_for_a_lock(sm)  # B, on the key's index entry

    async def second() -> None:
        await a_inserted.wait()
        b_started.set()
        async with tx(sm) as session:
            with pytest.raises(IdempotencyConflict):
                await ledger.post(session, account_id="b", kind="topup", amount=C, key="pay:1")
            # The savepoint kept B's transaction usable.
            await ledger.post(session, account_id="b", kind="topup", amount=C, key="pay:2")

    await asyncio.gather(first(), second())
    # A's look-up, B's look-up before A committed, B's look-up after its insert failed.
    assert lookups == [False, False, True]
    assert (await state(sm, "a")).balance == 2 * C
    assert (await state(sm, "b")).balance == 2 * C
    async with sm() as session:
        assert await verify_all(session) == []


async def test_concurrent_account_creation_makes_one_account(sm: Sessions) -> None:
    async def create() -> str:
        async with tx(sm) as session:
            account = await ledger.ensure_account(session, "new-user")
            await asyncio.sleep(0.01)
            return account.user_id

    assert set(await asyncio.gather(*(create() for _ in range(10)))) == {"new-user"}
    async with sm() as session:
        count = await session.execute(select(func.count(CreditAccount.user_id)))
        assert count.scalar_one() == 1


async def test_concurrent_expiry_sweeps_release_each_hold_once(sm: Sessions) -> None:
    async with tx(sm) as session:
        for account_id in ("a", "b", "c"):
            await ledger.post(
                session, account_id=account_id, kind="grant", amount=5 * C, key=account_id
            )
            for n in range(3):
                await ledger.place_hold(
                    session,
                    account_id=account_id,
                    amount=C,
                    key=f"{account_id}{n}",
                    reference=None,
                    ttl=TTL,
                )
    later = utcnow() + 2 * TTL

    async def sweep() -> int:
        async with tx(sm) as session:
            return await ledger.expire_holds(session, later)

    assert sum(await asyncio.gather(*(sweep() for _ in range(4)))) == 9
    async with sm() as session:
        active = await session.execute(
            select(func.count(CreditHold.id)).where(CreditHold.status == "active")
        )
        assert active.scalar_one() == 0
        assert await verify_all(session) == []
