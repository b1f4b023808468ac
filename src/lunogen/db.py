from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import JSON, DateTime, MetaData, String, TypeDecorator, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, ORMExecuteState, Session, mapped_column

from lunogen.kit import sqlite_inline
from lunogen.kit.ids import new_id
from lunogen.kit.time import as_utc, utcnow

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class IdMixin:
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)


class CreatedMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def create_engine(url: str, *, echo: bool = False, lock_timeout: float = 30) -> AsyncEngine:
    """The engine every process uses. Its errors and echo never include bound parameters:
    they carry emails, password hashes and message text (`hide_parameters`). On SQLite, a
    writer waits up to `lock_timeout` seconds for the write lock."""
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":  # statements run on the loop's thread
            kwargs["async_creator"] = sqlite_inline.creator(database, timeout=lock_timeout)
        else:
            kwargs["connect_args"] = {"timeout": lock_timeout}
    else:
        kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # aiosqlite opens in autocommit-off mode; issue BEGIN ourselves so that
        # writers take the lock up front (no upgrade deadlocks between readers).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if not isinstance(dbapi_connection.driver_connection, sqlite_inline.InlineConnection):
            cursor.execute("PRAGMA busy_timeout=30000")  # the inline driver never waits in SQLite
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A read-only session's transaction never writes, so it need not queue for the write
        # lock: in WAL mode a deferred transaction reads a snapshot while a writer works.
        if conn.get_execution_options().get(READ_ONLY_OPTION):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


READ_ONLY_OPTION = "lunogen_read_only"


class ReadOnlyWriteError(RuntimeError):
    """A session from a read sessionmaker tried to write."""


class ReadOnlySession(Session):
    """The sync session behind `create_read_sessionmaker`: refuses every write it can see."""


@event.listens_for(ReadOnlySession, "before_flush")
def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlyWriteError("a read-only session cannot write; use the main sessionmaker")


@event.listens_for(ReadOnlySession, "do_orm_execute")
def _refuse_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlyWriteError("a read-only session cannot write; use the main sessionmaker")


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for work that only reads.

    On SQLite their transactions begin with a plain (deferred) `BEGIN` instead of
    `BEGIN IMMEDIATE`, so they never wait for the write lock, nor make writers wait. On other
    databases they behave exactly like `create_sessionmaker`'s. Either way they refuse to write:
    a deferred SQLite transaction that tries to would fail with "database is locked" at once
    rather than wait its turn.
    """
    if engine.dialect.name == "sqlite":
        engine = engine.execution_options(**{READ_ONLY_OPTION: True})
    return async_sessionmaker(
        engine, expire_on_commit=False, autoflush=False, sync_session_class=ReadOnlySession
    )


_read_sessionmakers: weakref.WeakKeyDictionary[Any, async_sessionmaker[AsyncSession]] = (
    weakref.WeakKeyDictionary()
)


def read_sessionmaker(
    sessionmaker: async_sessionmaker[AsyncSession],
) -> async_sessionmaker[AsyncSession]:
    """A read sessionmaker on the engine `sessionmaker` is bound to (made once, then reused).

    For code that is handed only the main sessionmaker. Keyed weakly on it: the entry goes when
    the sessionmaker does.
    """
    found = _read_sessionmakers.get(sessionmaker)
    if found is None:
        bind = sessionmaker.kw.get("bind")
        if not isinstance(bind, AsyncEngine):
            return sessionmaker  # bound to a connection or to nothing: no separate reads
        found = _read_sessionmakers[sessionmaker] = create_read_sessionmaker(bind)
    return found


async def _request_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: services flush, this boundary commits or rolls back."""
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


DbSession = Annotated[AsyncSession, Depends(_request_session, scope="function")]
