"""The inline SQLite driver: statements on the loop's thread, and never a wait inside SQLite."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from lunogen.db import create_engine, create_sessionmaker
from lunogen.kit.sqlite_inline import InlineConnection


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'inline.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INTEGER)"))
        await conn.execute(text("INSERT INTO counter VALUES (1, 0)"))
    yield engine
    await engine.dispose()


async def test_the_engine_runs_sqlite_inline_in_wal_mode(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.driver_connection, InlineConnection)
        mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
        timeout = (await conn.execute(text("PRAGMA busy_timeout"))).scalar_one()
    assert (mode, timeout) == ("wal", 0)


async def test_writers_of_one_process_take_turns_without_blocking_the_loop(
    engine: AsyncEngine,
) -> None:
    """Twenty transactions that read, yield to the loop, then write: none is lost, none waits
    inside SQLite (which would stall the loop and every other transaction with it)."""
    sessions = create_sessionmaker(engine)

    async def add_one() -> None:
        async with sessions() as session:
            n = (await session.execute(text("SELECT n FROM counter"))).scalar_one()
            await asyncio.sleep(0.005)  # another writer runs now if it can
            await session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})
            await session.commit()

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(add_one() for _ in range(20))), timeout=10)
    assert time.monotonic() - started < 5
    async with sessions() as session:
        assert (await session.execute(text("SELECT n FROM counter"))).scalar_one() == 20


async def test_a_write_lock_held_by_another_process_is_waited_for_without_blocking(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """Another process holds the write lock for 0.6 s: our transaction starts once it is
    released, and the event loop keeps running meanwhile."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE'); c.execute('UPDATE counter SET n = 100')\n"
            "print('locked', flush=True); time.sleep(0.6); c.execute('COMMIT')\n",
            str(tmp_path / "inline.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.to_thread(holder.stdout.readline) == "locked\n"
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        async with create_sessionmaker(engine)() as session:
            await session.execute(text("UPDATE counter SET n = n + 1"))
            await session.commit()
        waited = time.monotonic() - started
        ticker.cancel()
        assert waited > 0.3  # it did wait for the other process
        assert ticks >= 10  # and the loop ran while it waited
    finally:
        holder.wait(timeout=10)
    async with create_sessionmaker(engine)() as session:
        assert (await session.execute(text("SELECT n FROM counter"))).scalar_one() == 101


async def test_waiting_longer_than_the_timeout_fails_as_locked(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE t (x INTEGER)")
    other.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite+aiosqlite:///{path}", lock_timeout=0.2)
    try:
        with pytest.raises(OperationalError, match="locked"):
            async with create_sessionmaker(engine)() as session:
                await session.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        other.execute("ROLLBACK")
        other.close()
        await engine.dispose()


async def test_a_nested_writer_of_the_same_process_fails_instead_of_hanging(
    tmp_path: Path,
) -> None:
    """A transaction that waits for another of its own process to write would wait forever;
    it fails after the timeout, as SQLite's busy timeout made it fail before."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'nested.db'}", lock_timeout=0.2)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
        sessions = create_sessionmaker(engine)
        async with sessions() as outer:
            await outer.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(OperationalError, match="locked"):
                async with sessions() as inner:
                    await inner.execute(text("INSERT INTO t VALUES (2)"))
            await outer.commit()
        async with sessions() as session:
            assert (await session.execute(text("SELECT count(*) FROM t"))).scalar_one() == 1
    finally:
        await engine.dispose()
