"""Helpers for ledger tests: transactions, and the database's own view of an account."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.billing import ledger
from lunogen.billing.models import CreditAccount, CreditEntry, CreditHold, HoldStatus

Sessions = async_sessionmaker[AsyncSession]


@asynccontextmanager
async def tx(sm: Sessions) -> AsyncIterator[AsyncSession]:
    """One transaction, committed when the block ends normally, rolled back otherwise."""
    async with sm() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


@dataclass(frozen=True)
class State:
    balance: int
    held: int
    entry_sum: int
    held_delta_sum: int
    active_holds: int
    entries: int

    @property
    def consistent(self) -> bool:
        return (
            self.balance == self.entry_sum
            and self.held == self.held_delta_sum == self.active_holds
            and self.held >= 0
        )


async def state(sm: Sessions, account_id: str) -> State:
    async with sm() as session:
        return await state_in(session, account_id)


async def state_in(session: AsyncSession, account_id: str) -> State:
    account = await session.get(CreditAccount, account_id, populate_existing=True)
    sums = (
        await session.execute(
            select(
                func.coalesce(func.sum(CreditEntry.amount), 0),
                func.coalesce(func.sum(CreditEntry.held_delta), 0),
                func.count(CreditEntry.id),
            ).where(CreditEntry.account_id == account_id)
        )
    ).one()
    active = (
        await session.execute(
            select(func.coalesce(func.sum(CreditHold.amount), 0)).where(
                CreditHold.account_id == account_id, CreditHold.status == HoldStatus.ACTIVE
            )
        )
    ).scalar_one()
    return State(
        balance=account.balance if account else 0,
        held=account.held if account else 0,
        entry_sum=int(sums[0]),
        held_delta_sum=int(sums[1]),
        active_holds=int(active),
        entries=int(sums[2]),
    )


async def set_available(sm: Sessions, user_id: str, micro: int) -> None:
    """An adjustment that leaves exactly `micro` micro-credits."""
    async with sm() as session:
        account = await ledger.ensure_account(session, user_id)
        await ledger.post(
            session,
            account_id=user_id,
            kind="adjustment",
            amount=micro - account.balance,
            key=f"test-adjust:{user_id}:{micro}",
            description="test",
        )
        await session.commit()
