"""Read-only sessions: on SQLite they begin deferred and never wait for the write lock; they
refuse to write; elsewhere they are the main sessions under another name."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from lunogen.db import (
    ReadOnlyWriteError,
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
    read_sessionmaker,
)


class _Base(DeclarativeBase):  # its own metadata: nothing added to the app's tables
    pass


class Thread(_Base):
    __tablename__ = "read_test_threads"

    id: Mapped[str] = mapped_column(String(10), primary_key=True)
    contact: Mapped[str] = mapped_column(String(20))


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'read.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    async with create_sessionmaker(engine)() as session:
        session.add(Thread(id="t1", contact="c"))
        await session.commit()
    yield engine
    await engine.dispose()


def _begins(engine: AsyncEngine) -> list[str]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("BEGIN"):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return seen


async def test_sqlite_reads_begin_deferred_and_writes_immediate(sqlite: AsyncEngine) -> None:
    begins = _begins(sqlite)
    async with create_read_sessionmaker(sqlite)() as session:
        assert (await session.execute(select(Thread.id))).scalar_one() == "t1"
    async with create_sessionmaker(sqlite)() as session:
        await session.execute(select(Thread.id))
    assert begins == ["BEGIN", "BEGIN IMMEDIATE"]


async def test_a_read_does_not_wait_for_a_writer(sqlite: AsyncEngine) -> None:
    async def main_session_read() -> str | None:
        async with create_sessionmaker(sqlite)() as session:
            return await session.scalar(select(Thread.contact))

    writer = create_sessionmaker(sqlite)()
    await writer.execute(update(Thread).values(contact="changed"))  # holds the write lock
    try:
        async with create_read_sessionmaker(sqlite)() as session:
            contact = await asyncio.wait_for(
                session.scalar(select(Thread.contact).where(Thread.id == "t1")), timeout=5
            )
        assert contact == "c"  # the snapshot before the writer's uncommitted change
        # A session of the main sessionmaker queues behind the writer.
        queued = asyncio.create_task(main_session_read())
        await asyncio.sleep(0.5)
        assert not queued.done()
    finally:
        await writer.commit()
        await writer.close()
    assert await asyncio.wait_for(queued, timeout=5) == "changed"


async def test_a_read_session_refuses_to_write(sqlite: AsyncEngine) -> None:
    reads = create_read_sessionmaker(sqlite)
    async with reads() as session:
        thread = await session.get(Thread, "t1")
        assert thread is not None
        thread.contact = "changed"
        with pytest.raises(ReadOnlyWriteError):
            await session.commit()
    async with reads() as session:
        with pytest.raises(ReadOnlyWriteError):
            await session.execute(update(Thread).values(contact="changed"))
    async with create_sessionmaker(sqlite)() as session:
        assert await session.scalar(select(Thread.contact)) == "c"


async def test_read_sessionmaker_is_made_once_per_sessionmaker(sqlite: AsyncEngine) -> None:
    main = create_sessionmaker(sqlite)
    assert read_sessionmaker(main) is read_sessionmaker(main)
    assert read_sessionmaker(main) is not main
    assert read_sessionmaker(create_sessionmaker(sqlite)) is not read_sessionmaker(main)


async def test_elsewhere_reads_use_the_same_engine() -> None:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")  # never connects
    try:
        assert create_read_sessionmaker(engine).kw["bind"] is engine
    finally:
        await engine.dispose()
