"""Rate-limit windows in a SQLite file that every server process on the machine shares.

For `lunogen serve --workers N` in the embedded shape (no Redis): per-process memory would give
each process its own windows, so a plan's limit would let N times as many requests through. The
file is its own database (`ratelimits.db` in the data dir), never `lunogen.db`: a limit check
never queues behind a turn's write lock, nor holds one.

Each hit is one short `BEGIN IMMEDIATE` transaction on a connection owned by this process, run
on the event loop (tens of microseconds: no thread hop). Processes take turns on the file lock;
one that finds it taken waits in SQLite's busy handler (about a millisecond). The windows are
moving windows with `limits`' semantics: a hit is refused when `limit` entries already fall in
the last `expiry` seconds. Nothing here needs to survive a power cut (`synchronous=OFF`): a lost
window only forgets some recent requests.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from limits.aio.storage import MovingWindowSupport, Storage

FILE_NAME = "ratelimits.db"
PRUNE_EVERY_SECONDS = 60.0
BUSY_TIMEOUT_SECONDS = 5.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS hits ( key TEXT NOT NULL, at REAL NOT NULL, expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS ix_hits_key_at ON hits (key, at)",
    "CREATE INDEX IF NOT EXISTS ix_hits_expires ON hits (expires)",
    "CREATE TABLE IF NOT EXISTS counters ("
    " key TEXT PRIMARY KEY, value INTEGER NOT NULL, expires REAL NOT NULL)",
)


def prepare(path: Path) -> None:
    """Create the file and its table (the serve parent does it once, before its children)."""
    connection = _connect(path)
    try:
        for statement in _SCHEMA:
            connection.execute(statement)
    finally:
        connection.close()


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    return connection


class SQLiteStorage(Storage, MovingWindowSupport):
    """A `limits` storage shared through a SQLite file: the moving windows the app's limiter
    uses (`hits`), and the fixed-window counters of `limits`' other strategies (`counters`), so
    that any strategy put on it counts across processes."""

    STORAGE_SCHEME = ["lunogen+sqlite"]

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._next_prune = 0.0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    @property
    def connection(self) -> sqlite3.Connection:
        """Opened at first use, so a forked process never shares its parent's connection."""
        if self._connection is None:
            prepare(self.path)
            self._connection = _connect(self.path)
        return self._connection

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = time.time()
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            (used,) = db.execute(
                "SELECT count(*) FROM hits WHERE key = ? AND at >= ?", (key, now - expiry)
            ).fetchone()
            allowed = used + amount <= limit
            if allowed:
                db.executemany(
                    "INSERT INTO hits (key, at, expires) VALUES (?, ?, ?)",
                    [(key, now, now + expiry)] * amount,
                )
            if now >= self._next_prune:
                self._next_prune = now + PRUNE_EVERY_SECONDS
                db.execute("DELETE FROM hits WHERE expires < ?", (now,))
                db.execute("DELETE FROM counters WHERE expires <= ?", (now,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return bool(allowed)

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """(when the oldest entry of the window was made, how many entries it holds)."""
        now = time.time()
        oldest, count = self.connection.execute(
            "SELECT min(at), count(*) FROM hits WHERE key = ? AND at >= ?", (key, now - expiry)
        ).fetchone()
        return (float(oldest), int(count)) if count else (now, 0)

    async def clear(self, key: str) -> None:
        self.connection.execute("DELETE FROM hits WHERE key = ?", (key,))
        self.connection.execute("DELETE FROM counters WHERE key = ?", (key,))

    async def reset(self) -> int | None:
        hits = self.connection.execute("DELETE FROM hits").rowcount
        return int(hits + self.connection.execute("DELETE FROM counters").rowcount)

    async def check(self) -> bool:
        try:
            self.connection.execute("SELECT 1 FROM hits LIMIT 1").fetchall()
        except sqlite3.Error:
            return False
        return True

    async def get_expiry(self, key: str) -> float:
        """When the key's fixed-window counter ends (now when it has none)."""
        row = self.connection.execute(
            "SELECT expires FROM counters WHERE key = ? AND expires > ?", (key, time.time())
        ).fetchone()
        return float(row[0]) if row else time.time()

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add `amount` to the key's counter, which starts at 0 and lasts `expiry` seconds from
        its first increment; returns the new value."""
        now = time.time()
        db = self.connection
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("DELETE FROM counters WHERE key = ? AND expires <= ?", (key, now))
            db.execute(
                "INSERT INTO counters (key, value, expires) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                (key, amount, now + expiry),
            )
            (value,) = db.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(value)

    async def get(self, key: str) -> int:
        row = self.connection.execute(
            "SELECT value FROM counters WHERE key = ? AND expires > ?", (key, time.time())
        ).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
