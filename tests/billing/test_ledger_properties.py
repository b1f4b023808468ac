"""Any sequence of ledger operations, with keys replayed at random, against a model of the
ledger: the balance always equals the sum of the entries, held always equals the active holds,
and no key is ever applied twice. Runs on whichever database the suite uses."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from lunogen.billing import ledger
from lunogen.billing.ledger import HoldClosed, IdempotencyConflict, InsufficientCredits
from lunogen.billing.verify import verify_accounts
from lunogen.db import create_engine, create_sessionmaker
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from tests.billing.support import State, state_in, tx

T = TypeVar("T")
C = 1_000_000
TTL = timedelta(minutes=5)

account_numbers = st.sampled_from([0, 1])
keys = st.sampled_from([f"k{n}" for n in range(6)])  # few keys: replays are common
amounts = st.integers(min_value=1, max_value=4 * C)


@dataclass
class Account:
    balance: int = 0
    held: int = 0
    entries: int = 0


@dataclass
class Hold:
    account: str
    amount: int
    status: str = "active"


@dataclass
class Model:
    accounts: dict[str, Account] = field(default_factory=dict)
    holds: dict[str, Hold] = field(default_factory=dict)
    # key -> (what it was used for, the id of the entry or hold it made)
    keys: dict[str, tuple[tuple[Any, ...], str | int]] = field(default_factory=dict)


class LedgerMachine(RuleBasedStateMachine):
    database_url: ClassVar[str]
    holds = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.engine = create_engine(self.database_url)
        self.sm = create_sessionmaker(self.engine)
        run = new_id()[:8]  # examples share the database: their own accounts and keys
        self.prefix = f"{run}:"
        self.names = [f"{run}-a", f"{run}-b"]
        self.model = Model(accounts={name: Account() for name in self.names})
        self.run(self._create_accounts())

    def run(self, work: Awaitable[T]) -> T:
        return self.runner.run(work)  # type: ignore[arg-type]

    async def _create_accounts(self) -> None:
        async with tx(self.sm) as session:
            for name in self.names:
                await ledger.ensure_account(session, name)

    def teardown(self) -> None:
        async def check_and_close() -> None:
            async with self.sm() as session:
                assert await verify_accounts(session, self.names) == []
            await self.engine.dispose()

        try:
            self.run(check_and_close())
        finally:
            self.runner.close()

    # --- the model's answer to a replayed key ---------------------------------------------

    def replay(self, key: str, signature: tuple[Any, ...]) -> str | int | None:
        """The id made by the key's first use, None when the key is new; raises when the key
        was used for something else (the ledger must raise IdempotencyConflict then)."""
        if key not in self.model.keys:
            return None
        used_for, made = self.model.keys[key]
        if used_for != signature:
            raise IdempotencyConflict("expected")
        return made

    def expect_conflict(self, key: str, signature: tuple[Any, ...]) -> bool:
        try:
            self.replay(key, signature)
        except IdempotencyConflict:
            return True
        return False

    # --- rules ----------------------------------------------------------------------------

    @rule(
        number=account_numbers,
        kind=st.sampled_from(["grant", "topup", "plan", "refund", "adjustment"]),
        amount=amounts,
        negative=st.booleans(),
        key=keys,
    )
    def post(self, number: int, kind: str, amount: int, negative: bool, key: str) -> None:
        name = self.names[number]
        if kind == "refund" or (kind == "adjustment" and negative):
            amount = -amount
        signature = ("post", name, kind, amount)

        async def work() -> int:
            async with tx(self.sm) as session:
                entry = await ledger.post(
                    session, account_id=name, kind=kind, amount=amount, key=self.prefix + key
                )
                return entry.id

        if self.expect_conflict(key, signature):
            self.assert_raises(IdempotencyConflict, work())
            return
        entry_id = self.run(work())
        first = self.replay(key, signature)
        if first is not None:
            assert entry_id == first, "a replayed key made a new entry"
            return
        self.model.keys[key] = (signature, entry_id)
        account = self.model.accounts[name]
        account.balance += amount
        account.entries += 1

    @rule(target=holds, number=account_numbers, amount=amounts, key=keys)
    def place(self, number: int, amount: int, key: str) -> Any:
        name = self.names[number]
        signature = ("hold", name, amount)

        async def work() -> str:
            async with tx(self.sm) as session:
                hold = await ledger.place_hold(
                    session,
                    account_id=name,
                    amount=amount,
                    key=self.prefix + key,
                    reference=None,
                    ttl=TTL,
                )
                return hold.id

        if self.expect_conflict(key, signature):
            self.assert_raises(IdempotencyConflict, work())
            return multiple()
        first = self.replay(key, signature)
        account = self.model.accounts[name]
        if first is None and account.balance - account.held < amount:
            self.assert_raises(InsufficientCredits, work())
            return multiple()
        hold_id = self.run(work())
        if first is not None:
            assert hold_id == first, "a replayed key made a new hold"
            return hold_id
        self.model.keys[key] = (signature, hold_id)
        self.model.holds[hold_id] = Hold(name, amount)
        account.held += amount
        account.entries += 1
        return hold_id

    @rule(hold_id=holds, actual=st.integers(min_value=0, max_value=5 * C), key=keys)
    def settle(self, hold_id: str, actual: int, key: str) -> None:
        hold = self.model.holds[hold_id]
        signature = ("settle", hold_id, actual)

        async def work() -> int:
            async with tx(self.sm) as session:
                entry = await ledger.settle_hold(
                    session, hold_id=hold_id, actual=actual, key=self.prefix + key
                )
                return entry.id

        if self.expect_conflict(key, signature):
            self.assert_raises(IdempotencyConflict, work())
            return
        first = self.replay(key, signature)
        if first is None and hold.status == "settled":
            self.assert_raises(HoldClosed, work())
            return
        entry_id = self.run(work())
        if first is not None:
            assert entry_id == first, "a replayed key charged twice"
            return
        self.model.keys[key] = (signature, entry_id)
        account = self.model.accounts[hold.account]
        account.balance -= actual
        if hold.status == "active":
            account.held -= hold.amount
        account.entries += 1
        hold.status = "settled"

    @rule(hold_id=holds, key=keys)
    def release(self, hold_id: str, key: str) -> None:
        hold = self.model.holds[hold_id]
        signature = ("release", hold_id)

        async def work() -> int | None:
            async with tx(self.sm) as session:
                entry = await ledger.release_hold(session, hold_id=hold_id, key=self.prefix + key)
                return None if entry is None else entry.id

        if self.expect_conflict(key, signature):
            self.assert_raises(IdempotencyConflict, work())
            return
        first = self.replay(key, signature)
        entry_id = self.run(work())
        if first is not None:
            assert entry_id == first
            return
        if hold.status != "active":
            assert entry_id is None, "a closed hold was released again"
            return
        assert entry_id is not None
        self.model.keys[key] = (signature, entry_id)
        account = self.model.accounts[hold.account]
        account.held -= hold.amount
        account.entries += 1
        hold.status = "released"

    @rule()
    def expire(self) -> None:
        mine = [h for h in self.model.holds.values() if h.status == "active"]

        async def work() -> int:
            async with tx(self.sm) as session:
                return await ledger.expire_holds(session, utcnow() + 2 * TTL, limit=10_000)

        # Earlier examples may have left active holds of their own accounts behind.
        assert self.run(work()) >= len(mine)
        for hold in mine:
            account = self.model.accounts[hold.account]
            account.held -= hold.amount
            account.entries += 1
            hold.status = "expired"

    def assert_raises(self, error: type[Exception], work: Awaitable[Any]) -> None:
        try:
            self.run(work)
        except error:
            return
        raise AssertionError(f"expected {error.__name__}")

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        async def states() -> list[State]:
            async with self.sm() as session:
                return [await state_in(session, name) for name in self.names]

        for expected, actual in zip(self.model.accounts.values(), self.run(states()), strict=True):
            assert actual.consistent, actual
            assert (actual.balance, actual.held, actual.entries) == (
                expected.balance,
                expected.held,
                expected.entries,
            )


def test_any_sequence_of_operations_keeps_the_ledger_sound(database_url: str) -> None:
    class Machine(LedgerMachine):
        pass

    Machine.database_url = database_url
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=15,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
