"""`verify_all` and `lunogen billing verify` find ledgers that do not add up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from lunogen.billing import ledger
from lunogen.billing.models import CreditAccount, CreditHold
from lunogen.billing.verify import verify_accounts, verify_all
from lunogen.config import Settings
from tests.billing.support import Sessions, tx
from tests.cli.conftest import Cli, cli_env

C = 1_000_000


@pytest.fixture
def cli(settings: Settings) -> Cli:
    return Cli(env=cli_env(settings))


async def _busy_accounts(sm: Sessions, count: int) -> list[str]:
    """Accounts with a top-up, a settled, a released and an active hold; every 7th refunded
    below zero."""
    ids = [f"user-{n:04d}" for n in range(count)]
    ttl = timedelta(minutes=5)
    async with tx(sm) as session:
        for n, account_id in enumerate(ids):
            await ledger.post(
                session, account_id=account_id, kind="topup", amount=(n + 3) * C, key=f"t{n}"
            )
            holds = [
                await ledger.place_hold(
                    session,
                    account_id=account_id,
                    amount=C,
                    key=f"h{n}.{k}",
                    reference=None,
                    ttl=ttl,
                )
                for k in range(3)
            ]
            await ledger.settle_hold(session, hold_id=holds[0].id, actual=C // 3, key=f"s{n}")
            await ledger.release_hold(session, hold_id=holds[1].id, key=f"r{n}")
            if n % 7 == 0:
                await ledger.post(
                    session, account_id=account_id, kind="refund", amount=-(n + 3) * C, key=f"f{n}"
                )
    return ids


async def _verify(sm: Sessions, batch_size: int = 500) -> list[str]:
    async with sm() as session:
        return [str(p) for p in await verify_all(session, batch_size=batch_size)]


async def test_a_sound_ledger_has_no_problems_and_reports_progress(sm: Sessions) -> None:
    ids = await _busy_accounts(sm, 23)
    seen: list[int] = []
    async with sm() as session:
        assert await verify_all(session, seen.append, batch_size=5) == []
    assert seen == [5, 5, 5, 5, 3]
    async with sm() as session:
        account = await session.get(CreditAccount, ids[0])
        assert account is not None and account.balance < 0 and account.held == C


async def test_a_corrupted_balance_is_found(engine: AsyncEngine, sm: Sessions) -> None:
    ids = await _busy_accounts(sm, 12)
    async with engine.begin() as conn:
        await conn.execute(
            update(CreditAccount).where(CreditAccount.user_id == ids[3]).values(balance=999 * C)
        )
    found = await _verify(sm, batch_size=5)
    assert found == [f"{ids[3]}: balance: balance 999 != sum of entries 5.666667"]


async def test_corrupted_holds_are_found(engine: AsyncEngine, sm: Sessions) -> None:
    ids = await _busy_accounts(sm, 3)
    async with engine.begin() as conn:
        await conn.execute(
            update(CreditAccount).where(CreditAccount.user_id == ids[1]).values(held=0)
        )
        await conn.execute(
            update(CreditHold)
            .where(CreditHold.account_id == ids[2], CreditHold.status == "active")
            .values(status="released")
        )
    async with sm() as session:
        problems = await verify_accounts(session, ids)
    assert [(p.account_id, p.check) for p in problems] == [
        (ids[1], "active_holds"),
        (ids[1], "held"),
        (ids[2], "active_holds"),
        (ids[2], "hold"),
    ]


async def test_entries_that_do_not_add_up_are_found(engine: AsyncEngine, sm: Sessions) -> None:
    """Entries written behind the ledger's back (inserts are allowed; the API is bypassed)."""
    await _busy_accounts(sm, 1)
    async with tx(sm) as session:
        await ledger.ensure_account(session, "victim")
    insert = text(
        "INSERT INTO credit_entries (account_id, kind, amount, held_delta, balance_after, "
        "held_after, idempotency_key, description, created_at) VALUES "
        "(:account, :kind, :amount, 0, :after, 0, :key, '', CURRENT_TIMESTAMP)"
    )
    async with engine.begin() as conn:
        # A "grant" that takes credits away, to below zero, and a wrong running total.
        await conn.execute(
            insert, {"account": "victim", "kind": "grant", "amount": -C, "after": -C, "key": "x1"}
        )
        await conn.execute(
            insert, {"account": "victim", "kind": "topup", "amount": C, "after": 5, "key": "x2"}
        )
        await conn.execute(
            update(CreditAccount).where(CreditAccount.user_id == "victim").values(balance=0)
        )
    async with sm() as session:
        problems = await verify_accounts(session, ["victim"])
    assert sorted(p.check for p in problems) == [
        "entry_shape",
        "negative_balance",
        "running_totals",
    ]
    running = next(p for p in problems if p.check == "running_totals")
    assert "expected 0 / 0" in running.message


async def test_cli_verify_exit_codes(engine: AsyncEngine, sm: Sessions, cli: Cli) -> None:
    ids = await _busy_accounts(sm, 4)
    result = await cli("billing", "verify")
    assert result.exit_code == 0, result.output
    assert "4 accounts verified" in result.output

    async with engine.begin() as conn:
        await conn.execute(
            update(CreditAccount).where(CreditAccount.user_id == ids[2]).values(balance=1)
        )
    result = await cli("billing", "verify")
    assert result.exit_code == 1, result.output
    assert f"{ids[2]}: balance: balance 0.000001 != sum of entries 4.666667" in result.output
    assert "1 problem(s)" in result.output
