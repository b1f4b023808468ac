"""SQLite for SQLAlchemy's asyncio engine without a thread per connection.

aiosqlite runs every call on a connection's own thread: each statement is a hand-off to that
thread and back (~250 µs of CPU on this machine, where the statement itself takes ~5 µs), and
a message's turn makes dozens. Here the same calls run on the event loop's thread, inline, which
is what a statement of a few microseconds wants. The objects below have the shape of
aiosqlite's connection and cursor that SQLAlchemy's `sqlite+aiosqlite` dialect drives, and are
handed to it with `create_async_engine(..., async_creator=...)`.

Running inline means a statement that waits blocks the loop, and on SQLite only one thing
waits: the write lock. So nothing here ever waits for it inside SQLite (`busy_timeout` is 0):

- Write transactions of this process queue on an asyncio lock (per database file and event
  loop) before `BEGIN IMMEDIATE`, and give it back at COMMIT or ROLLBACK; other coroutines run
  meanwhile.
- Another process holding the write lock (`lunogen serve --workers N`, a CLI command) makes
  `BEGIN IMMEDIATE` fail with SQLITE_BUSY at once; it is retried after a short asynchronous
  sleep (0.2 ms growing by half to 5 ms: the other process's transactions take about a
  millisecond, and the first version's 1 ms doubling to 20 ms cost `--workers 2` a fifth of its
  throughput), for up to `timeout` seconds, then fails with "database is locked" as a
  connection with a busy timeout would. A statement outside any transaction is retried
  the same way.

Everything else (WAL readers, statements inside a write transaction) never waits for a lock in
WAL mode. A slow query still runs on the loop's thread; the queries of the hot path are point
lookups, and long reports are read in batches.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

BEGIN_WRITE = "BEGIN IMMEDIATE"
_FIRST_RETRY_SECONDS = 0.0002
_LONGEST_RETRY_SECONDS = 0.005

# database file → event loop → the lock that orders this process's writers on that loop
_write_locks: dict[str, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]] = {}


def _write_lock(database: str) -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    per_loop = _write_locks.setdefault(database, weakref.WeakKeyDictionary())
    lock = per_loop.get(loop)
    if lock is None:
        lock = per_loop[loop] = asyncio.Lock()
    return lock


def _is_busy(error: sqlite3.OperationalError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return bool(code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED))
    return "locked" in str(error) or "busy" in str(error)


class InlineCursor:
    def __init__(self, connection: InlineConnection, cursor: sqlite3.Cursor) -> None:
        self._connection = connection
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        await self._connection._run(self._cursor.execute, sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        await self._connection._run(self._cursor.executemany, sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value


class _CursorOpening:
    """What `connection.cursor()` returns: awaited, or entered with `async with`, like
    aiosqlite's."""

    def __init__(self, connection: InlineConnection) -> None:
        self._connection = connection

    def _open(self) -> InlineCursor:
        return InlineCursor(self._connection, self._connection._conn.cursor())

    def __await__(self) -> Any:
        async def opened() -> InlineCursor:
            return self._open()

        return opened().__await__()

    async def __aenter__(self) -> InlineCursor:
        return self._open()

    async def __aexit__(self, *_exc: object) -> None:
        return None


class _ImmediateQueue:
    """aiosqlite's task queue, as SQLAlchemy's adapter uses it to set `isolation_level`: the
    function runs at once, here."""

    @staticmethod
    def put_nowait(item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except BaseException as error:  # handed to the awaiting caller, as aiosqlite does
            future.set_exception(error)


class InlineConnection:
    """An aiosqlite-shaped connection whose calls run on the calling thread."""

    _tx = _ImmediateQueue()

    def __init__(self, conn: sqlite3.Connection, *, database: str, timeout: float) -> None:
        self._conn = conn
        self._database = database
        self._timeout = timeout
        self._holds_write_lock: asyncio.Lock | None = None

    @property
    def _connection(self) -> sqlite3.Connection:
        return self._conn

    async def _run(self, call: Callable[..., Any], sql: str, parameters: Any) -> Any:
        arguments = (sql,) if parameters is None else (sql, parameters)
        if sql == BEGIN_WRITE:
            await self._take_write_lock()
            try:
                return await self._retrying(call, arguments)
            except BaseException:
                self._give_back_write_lock()
                raise
        if self._conn.in_transaction:
            return call(*arguments)
        return await self._retrying(call, arguments)

    async def _retrying(self, call: Callable[..., Any], arguments: tuple[Any, ...]) -> Any:
        """`call`, again after a short sleep while another process holds the write lock."""
        deadline = time.monotonic() + self._timeout
        pause = _FIRST_RETRY_SECONDS
        while True:
            try:
                return call(*arguments)
            except sqlite3.OperationalError as error:
                if not _is_busy(error) or time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, _LONGEST_RETRY_SECONDS)

    async def _take_write_lock(self) -> None:
        lock = _write_lock(self._database)
        # Not `asyncio.wait_for`: on 3.11 it runs the acquire in a task of its own, and a
        # cancellation arriving as that task gets the lock leaves the lock taken by nobody.
        try:
            async with asyncio.timeout(self._timeout):
                await lock.acquire()
        except TimeoutError:
            raise sqlite3.OperationalError("database is locked") from None
        self._holds_write_lock = lock

    def _give_back_write_lock(self) -> None:
        lock, self._holds_write_lock = self._holds_write_lock, None
        if lock is not None:
            lock.release()

    def cursor(self) -> _CursorOpening:
        return _CursorOpening(self)

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        cursor = InlineCursor(self, self._conn.cursor())
        return await cursor.execute(sql, parameters)

    async def commit(self) -> None:
        try:
            self._conn.commit()
        finally:
            self._give_back_write_lock()

    async def rollback(self) -> None:
        try:
            self._conn.rollback()
        finally:
            self._give_back_write_lock()

    async def close(self) -> None:
        try:
            self._conn.close()
        finally:
            self._give_back_write_lock()

    def stop(self) -> None:
        self._conn.close()
        self._give_back_write_lock()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @isolation_level.setter
    def isolation_level(self, value: Literal["DEFERRED", "EXCLUSIVE", "IMMEDIATE"] | None) -> None:
        self._conn.isolation_level = value


def creator(database: str, *, timeout: float = 30.0) -> Callable[[], Any]:
    """The `async_creator` of an engine on the SQLite file `database`."""

    async def connect() -> InlineConnection:
        conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=0")
        return InlineConnection(conn, database=database, timeout=timeout)

    return connect
