"""The ledger on the real database: idempotent keys, holds, refunds, expiry, listing, alerts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from lunogen.billing import ledger
from lunogen.billing.ledger import (
    HoldClosed,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    LedgerError,
)
from lunogen.billing.models import CreditAccount, CreditEntry, CreditHold, HoldStatus
from lunogen.billing.verify import verify_all
from lunogen.kit.time import utcnow
from tests.billing.support import Sessions, state, tx
from tests.conftest import PG_URL

C = 1_000_000  # micro-credits in a credit
TTL = timedelta(minutes=5)


async def grant(sm: Sessions, account: str, amount: int, key: str) -> CreditEntry:
    async with tx(sm) as session:
        return await ledger.post(session, account_id=account, kind="grant", amount=amount, key=key)


async def hold(sm: Sessions, account: str, amount: int, key: str) -> CreditHold:
    async with tx(sm) as session:
        return await ledger.place_hold(
            session, account_id=account, amount=amount, key=key, reference="msg:1", ttl=TTL
        )


async def settle(sm: Sessions, hold_id: str, actual: int, key: str) -> CreditEntry:
    async with tx(sm) as session:
        return await ledger.settle_hold(session, hold_id=hold_id, actual=actual, key=key)


async def problems(sm: Sessions) -> list[str]:
    async with sm() as session:
        return [str(p) for p in await verify_all(session)]


async def test_a_grant_replayed_under_its_key_is_applied_once(sm: Sessions) -> None:
    first = await grant(sm, "u1", 100 * C, "signup:u1")
    again = await grant(sm, "u1", 100 * C, "signup:u1")
    assert again.id == first.id
    assert (first.kind, first.amount, first.balance_after, first.held_after) == (
        "grant",
        100 * C,
        100 * C,
        0,
    )
    now = await state(sm, "u1")
    assert (now.balance, now.entries) == (100 * C, 1)
    assert now.consistent


async def test_a_key_reused_for_another_operation_is_a_conflict(sm: Sessions) -> None:
    await grant(sm, "u1", 5 * C, "k")
    async with tx(sm) as session:
        await ledger.ensure_account(session, "u2")
    attempts = [
        {"account_id": "u1", "kind": "grant", "amount": 6 * C},
        {"account_id": "u1", "kind": "topup", "amount": 5 * C},
        {"account_id": "u2", "kind": "grant", "amount": 5 * C},
    ]
    for attempt in attempts:
        with pytest.raises(IdempotencyConflict):
            async with tx(sm) as session:
                await ledger.post(session, key="k", **attempt)
    with pytest.raises(IdempotencyConflict):
        await hold(sm, "u1", 1 * C, "k")
    assert (await state(sm, "u1")).entries == 1
    assert (await state(sm, "u2")).entries == 0


@pytest.mark.parametrize(
    ("kind", "amount", "field"),
    [
        ("grant", 0, "amount"),
        ("grant", -C, "amount"),
        ("topup", -C, "amount"),
        ("plan", 0, "amount"),
        ("refund", C, "amount"),
        ("adjustment", 0, "amount"),
        ("grant", 1.5, "amount"),
        ("grant", True, "amount"),
        ("grant", 10**16, "amount"),
        ("gift", C, "kind"),
        ("hold", C, "kind"),
        ("usage", -C, "kind"),
    ],
)
async def test_bad_posts_are_refused_and_write_nothing(
    sm: Sessions, kind: str, amount: int, field: str
) -> None:
    with pytest.raises(LedgerError, match=f"^{field}:"):
        async with tx(sm) as session:
            await ledger.post(session, account_id="u1", kind=kind, amount=amount, key="k")
    async with sm() as session:
        assert await session.get(CreditAccount, "u1") is None


async def test_bad_keys_and_texts_are_refused(sm: Sessions) -> None:
    cases = [
        ({"key": ""}, "key"),
        ({"key": "k" * 201}, "key"),
        ({"key": "k", "description": "d" * 501}, "description"),
        ({"key": "k", "reference": ""}, "reference"),
    ]
    for kwargs, field in cases:
        with pytest.raises(LedgerError, match=f"^{field}:"):
            async with tx(sm) as session:
                await ledger.post(session, account_id="u1", kind="grant", amount=C, **kwargs)


async def test_a_ledger_change_is_undone_with_the_callers_transaction(sm: Sessions) -> None:
    async with sm() as session:
        await ledger.post(session, account_id="u1", kind="topup", amount=C, key="t1")
        await session.rollback()
    assert (await state(sm, "u1")).entries == 0
    await grant(sm, "u1", C, "t1")  # the key was never taken
    assert (await state(sm, "u1")).balance == C


async def test_ensure_account_creates_once(sm: Sessions) -> None:
    async with tx(sm) as session:
        created = await ledger.ensure_account(session, "u1", low_credit_threshold=3 * C)
        assert (created.balance, created.held, created.low_credit_threshold) == (0, 0, 3 * C)
    async with tx(sm) as session:
        again = await ledger.ensure_account(session, "u1")
        assert again.low_credit_threshold == 3 * C
    async with sm() as session:
        count = await session.execute(select(func.count(CreditAccount.user_id)))
        assert count.scalar_one() == 1


async def test_hold_then_settle_charges_the_actual_cost(sm: Sessions) -> None:
    await grant(sm, "u1", 10 * C, "g")
    placed = await hold(sm, "u1", 3 * C, "turn:1:hold")
    assert placed.status == HoldStatus.ACTIVE
    now = await state(sm, "u1")
    assert (now.balance, now.held) == (10 * C, 3 * C)

    charged = await settle(sm, placed.id, 2 * C, "turn:1:settle")
    assert (charged.kind, charged.amount, charged.held_delta) == ("usage", -2 * C, -3 * C)
    assert (charged.balance_after, charged.held_after, charged.hold_id) == (8 * C, 0, placed.id)
    assert charged.reference == "msg:1"  # the hold's reference by default

    assert (await settle(sm, placed.id, 2 * C, "turn:1:settle")).id == charged.id
    with pytest.raises(IdempotencyConflict):
        await settle(sm, placed.id, 1 * C, "turn:1:settle")
    with pytest.raises(HoldClosed):
        await settle(sm, placed.id, 2 * C, "turn:1:settle-again")
    async with tx(sm) as session:
        assert await ledger.release_hold(session, hold_id=placed.id, key="turn:1:release") is None

    now = await state(sm, "u1")
    assert (now.balance, now.held, now.entries) == (8 * C, 0, 3)
    assert now.consistent
    assert await problems(sm) == []


async def test_a_replayed_hold_returns_the_first_hold(sm: Sessions) -> None:
    await grant(sm, "u1", 5 * C, "g")
    first = await hold(sm, "u1", 4 * C, "h")
    # Replays succeed even though 4 more credits are no longer available.
    assert (await hold(sm, "u1", 4 * C, "h")).id == first.id
    await settle(sm, first.id, 4 * C, "s")
    replayed = await hold(sm, "u1", 4 * C, "h")
    assert (replayed.id, replayed.status) == (first.id, HoldStatus.SETTLED)
    with pytest.raises(IdempotencyConflict):
        await hold(sm, "u1", 3 * C, "h")
    now = await state(sm, "u1")
    assert (now.balance, now.held, now.entries) == (1 * C, 0, 3)


async def test_insufficient_credits_writes_nothing(sm: Sessions) -> None:
    await grant(sm, "u1", 5 * C, "g")
    await hold(sm, "u1", 2 * C, "h1")
    before = await state(sm, "u1")
    with pytest.raises(InsufficientCredits) as caught:
        await hold(sm, "u1", 4 * C, "h2")
    assert (caught.value.required, caught.value.available) == (4 * C, 3 * C)
    assert caught.value.status_code == 402
    assert caught.value.body()["available_credits"] == "3"
    assert await state(sm, "u1") == before
    async with sm() as session:
        holds = await session.execute(select(func.count(CreditHold.id)))
        assert holds.scalar_one() == 1

    async with tx(sm) as session:
        await ledger.post(session, account_id="u1", kind="topup", amount=C, key="t")
    assert (await hold(sm, "u1", 4 * C, "h2")).amount == 4 * C  # the key was never taken


async def test_a_hold_on_an_unknown_account_is_refused(sm: Sessions) -> None:
    with pytest.raises(InsufficientCredits) as caught:
        await hold(sm, "nobody", C, "h")
    assert caught.value.available == 0
    async with sm() as session:
        assert await session.get(CreditAccount, "nobody") is None


async def test_bad_holds_and_settlements_are_refused(sm: Sessions) -> None:
    await grant(sm, "u1", 5 * C, "g")
    for amount, ttl in ((0, TTL), (-C, TTL), (C, timedelta(0))):
        with pytest.raises(LedgerError):
            async with tx(sm) as session:
                await ledger.place_hold(
                    session, account_id="u1", amount=amount, key="h", reference=None, ttl=ttl
                )
    placed = await hold(sm, "u1", C, "h")
    with pytest.raises(LedgerError, match=r"^actual:"):
        await settle(sm, placed.id, -1, "s")
    with pytest.raises(HoldNotFound):
        await settle(sm, "no-such-hold", 1, "s")
    assert (await state(sm, "u1")).entries == 2


async def test_usage_above_the_hold_is_charged_and_may_go_negative(sm: Sessions) -> None:
    await grant(sm, "u1", 1 * C, "g")
    placed = await hold(sm, "u1", 1 * C, "h")
    entry = await settle(sm, placed.id, 1_500_000, "s")
    assert (entry.amount, entry.balance_after, entry.held_after) == (-1_500_000, -500_000, 0)
    with pytest.raises(InsufficientCredits):
        await hold(sm, "u1", 1, "h2")
    assert (await state(sm, "u1")).consistent
    assert await problems(sm) == []


async def test_refunds_may_take_the_balance_below_zero(sm: Sessions) -> None:
    async with tx(sm) as session:
        await ledger.post(
            session, account_id="u1", kind="topup", amount=10 * C, key="t", reference="ch_1"
        )
    placed = await hold(sm, "u1", 4 * C, "h")
    await settle(sm, placed.id, 4 * C, "s")
    async with tx(sm) as session:
        refund = await ledger.post(
            session, account_id="u1", kind="refund", amount=-10 * C, key="r", reference="ch_1"
        )
    assert (refund.balance_after, refund.reference) == (-4 * C, "ch_1")
    async with tx(sm) as session:
        account = await ledger.get_account(session, "u1")
        assert account is not None
        assert ledger.available(account) == account.available == -4 * C
    async with tx(sm) as session:
        fix = await ledger.post(
            session, account_id="u1", kind="adjustment", amount=4 * C, key="a", description="ok"
        )
    assert fix.balance_after == 0
    assert await problems(sm) == []


async def test_release_returns_the_held_credits_once(sm: Sessions) -> None:
    await grant(sm, "u1", 5 * C, "g")
    placed = await hold(sm, "u1", 2 * C, "h")
    async with tx(sm) as session:
        released = await ledger.release_hold(session, hold_id=placed.id, key="r")
    assert released is not None
    assert (released.kind, released.amount, released.held_delta) == ("release", 0, -2 * C)
    async with tx(sm) as session:
        again = await ledger.release_hold(session, hold_id=placed.id, key="r")
        assert again is not None and again.id == released.id
        assert await ledger.release_hold(session, hold_id=placed.id, key="r2") is None
    now = await state(sm, "u1")
    assert (now.balance, now.held, now.entries) == (5 * C, 0, 3)
    async with sm() as session:
        stored = await session.get(CreditHold, placed.id)
        assert stored is not None and stored.status == HoldStatus.RELEASED
        assert stored.closed_at is not None


async def test_expired_holds_are_released_and_a_late_settle_still_charges(sm: Sessions) -> None:
    await grant(sm, "u1", 5 * C, "g")
    await grant(sm, "u2", 5 * C, "g2")
    stale = await hold(sm, "u1", 2 * C, "h1")
    other = await hold(sm, "u2", 1 * C, "h2")
    async with tx(sm) as session:
        assert await ledger.expire_holds(session, utcnow()) == 0
    async with tx(sm) as session:
        assert await ledger.expire_holds(session, utcnow() + TTL + timedelta(seconds=1)) == 2
    async with tx(sm) as session:
        assert await ledger.expire_holds(session, utcnow() + 2 * TTL) == 0
    for account in ("u1", "u2"):
        now = await state(sm, account)
        assert (now.balance, now.held) == (5 * C, 0)
    async with sm() as session:
        expired = await session.get(CreditHold, stale.id)
        assert expired is not None and expired.status == HoldStatus.EXPIRED

    # The worker was only slow: its call was made and is charged, with nothing left to release.
    late = await settle(sm, stale.id, 2 * C, "s1")
    assert (late.amount, late.held_delta, late.balance_after, late.held_after) == (
        -2 * C,
        0,
        3 * C,
        0,
    )
    async with tx(sm) as session:
        released = await ledger.release_hold(session, hold_id=other.id, key="r2")
        assert released is None  # already expired
    assert await problems(sm) == []


async def test_expiry_is_bounded_per_call(sm: Sessions) -> None:
    await grant(sm, "u1", 5 * C, "g")
    for n in range(3):
        await hold(sm, "u1", C, f"h{n}")
    later = utcnow() + 2 * TTL
    async with tx(sm) as session:
        assert await ledger.expire_holds(session, later, limit=2) == 2
    async with tx(sm) as session:
        assert await ledger.expire_holds(session, later, limit=2) == 1
    assert (await state(sm, "u1")).held == 0


async def test_entries_are_listed_newest_first_with_filters(sm: Sessions) -> None:
    await grant(sm, "u1", 5 * C, "g")
    await grant(sm, "u2", 5 * C, "other")
    placed = await hold(sm, "u1", C, "h")
    await settle(sm, placed.id, C // 2, "s")
    async with tx(sm) as session:
        await ledger.post(session, account_id="u1", kind="topup", amount=C, key="t")
    async with sm() as session:
        listed = await ledger.entries(session, "u1")
        assert [e.kind for e in listed] == ["topup", "usage", "hold", "grant"]
        assert [e.kind for e in await ledger.entries(session, "u1", kind="usage")] == ["usage"]
        page = await ledger.entries(session, "u1", limit=2)
        rest = await ledger.entries(session, "u1", before_id=page[-1].id, limit=2)
        assert [e.id for e in page + rest] == [e.id for e in listed]
        newer = await ledger.entries(session, "u1", after_id=listed[2].id)
        assert [e.id for e in newer] == [e.id for e in listed[:2]]
        assert await ledger.entries(session, "u1", since=utcnow() + timedelta(seconds=1)) == []
        assert len(await ledger.entries(session, "u1", until=utcnow() + TTL)) == 4
        with pytest.raises(LedgerError, match=r"^kind:"):
            await ledger.entries(session, "u1", kind="gift")
        with pytest.raises(LedgerError, match=r"^limit:"):
            await ledger.entries(session, "u1", limit=0)


async def test_the_low_credit_alert_fires_once_and_rearms_on_top_up(sm: Sessions) -> None:
    async def claim() -> bool:
        async with tx(sm) as session:
            return await ledger.claim_low_credit_alert(session, "u1")

    assert not await claim()  # no account yet
    await grant(sm, "u1", 20 * C, "g")
    assert not await claim()
    placed = await hold(sm, "u1", 11 * C, "h")  # available 9 <= 10
    assert await claim()
    assert not await claim()
    await settle(sm, placed.id, 11 * C, "s")  # still 9 available
    assert not await claim()
    async with tx(sm) as session:
        await ledger.post(session, account_id="u1", kind="topup", amount=5 * C, key="t")
        account = await session.get(CreditAccount, "u1")
        assert account is not None and not account.low_alert_sent  # re-armed at 14 credits
    assert not await claim()
    placed = await hold(sm, "u1", 4 * C, "h2")
    assert await claim()


@pytest.mark.skipif(not PG_URL, reason="the race exists on PostgreSQL only")
async def test_a_key_taken_by_a_concurrent_transaction_returns_its_entry(
    sm: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the check-first lookup cannot see: the insert's unique violation is caught in a
    savepoint and the first entry is returned, with the account unchanged by the replay."""
    first = await grant(sm, "u1", 5 * C, "g")
    real_lookup = ledger._entry_by_key
    blind = {"calls": 0}

    async def lookup_missing_once(session: object, key: str) -> CreditEntry | None:
        blind["calls"] += 1
        if blind["calls"] == 1:
            return None
        return await real_lookup(session, key)

    monkeypatch.setattr(ledger, "_entry_by_key", lookup_missing_once)
    async with tx(sm) as session:
        replayed = await ledger.post(session, account_id="u1", kind="grant", amount=5 * C, key="g")
        assert replayed.id == first.id
        assert blind["calls"] == 2  # the insert failed, then the first entry was found
        await ledger.post(session, account_id="u1", kind="grant", amount=C, key="g2")
    now = await state(sm, "u1")
    assert (now.balance, now.entries) == (6 * C, 2)
    assert now.consistent
