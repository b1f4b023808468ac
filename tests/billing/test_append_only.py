"""credit_entries refuses UPDATE and DELETE at the database (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from lunogen.billing import ledger
from lunogen.billing.models import CreditEntry
from tests.billing.support import Sessions, state, tx

C = 1_000_000


async def _entries(sm: Sessions) -> list[tuple[int, str, int, int]]:
    async with sm() as session:
        rows = await session.execute(select(CreditEntry).order_by(CreditEntry.id))
        return [(e.id, e.kind, e.amount, e.balance_after) for e in rows.scalars()]


@pytest.fixture
async def history(sm: Sessions) -> list[tuple[int, str, int, int]]:
    async with tx(sm) as session:
        await ledger.post(session, account_id="u1", kind="grant", amount=5 * C, key="g")
        hold = await ledger.place_hold(
            session, account_id="u1", amount=C, key="h", reference=None, ttl=timedelta(minutes=1)
        )
        await ledger.settle_hold(session, hold_id=hold.id, actual=C, key="s")
    return await _entries(sm)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE credit_entries SET amount = 1000000000",
        "UPDATE credit_entries SET description = 'x' WHERE kind = 'usage'",
        "DELETE FROM credit_entries",
        "DELETE FROM credit_entries WHERE kind = 'usage'",
    ],
)
async def test_raw_update_or_delete_fails(
    engine: AsyncEngine, sm: Sessions, history: list[tuple[int, str, int, int]], statement: str
) -> None:
    async with engine.connect() as conn:
        with pytest.raises(DBAPIError, match="append-only"):
            await conn.execute(text(statement))
        await conn.rollback()
    assert await _entries(sm) == history


async def test_orm_update_fails_too(sm: Sessions, history: list[tuple[int, str, int, int]]) -> None:
    async with sm() as session:
        entry = (await session.execute(select(CreditEntry).limit(1))).scalar_one()
        entry.amount = 10**9
        with pytest.raises(DBAPIError, match="append-only"):
            await session.commit()
    async with sm() as session:
        entry = (await session.execute(select(CreditEntry).limit(1))).scalar_one()
        await session.delete(entry)
        with pytest.raises(DBAPIError, match="append-only"):
            await session.commit()
    assert await _entries(sm) == history
    assert (await state(sm, "u1")).consistent
