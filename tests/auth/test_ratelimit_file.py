"""The rate-limit windows that `serve --workers N` shares through a SQLite file.

The same `RateLimiter` rules as on memory and Redis (`test_ratelimit.py`), then what only this
storage has to get right: two storages on one file, in this process and in several processes
hitting at once, see one window.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path

import pytest
from limits import parse
from limits.aio.strategies import FixedWindowRateLimiter

from lunogen.auth import ratelimit, ratelimit_file
from lunogen.auth.ratelimit import Backoff, RateLimiter, create_storage
from lunogen.auth.ratelimit_file import SQLiteStorage


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / ratelimit_file.FILE_NAME


@pytest.fixture
def limiter(path: Path) -> RateLimiter:
    storage = create_storage(None, shared_file=path)
    assert isinstance(storage, SQLiteStorage)
    return RateLimiter(storage)


def test_redis_still_wins_over_the_file(path: Path) -> None:
    assert not isinstance(
        create_storage("redis://127.0.0.1:6379/8", shared_file=path), SQLiteStorage
    )


async def test_counts_down_refuses_and_says_when(limiter: RateLimiter) -> None:
    statuses = [await limiter.hit("key", 3) for _ in range(4)]
    assert [s.allowed for s in statuses] == [True, True, True, False]
    assert [s.remaining for s in statuses] == [2, 1, 0, 0]
    assert 1 <= statuses[-1].retry_after <= 60
    assert (await limiter.hit("other", 3)).remaining == 2
    assert (await limiter.hit("key", 5)).allowed  # another limit is another window


async def test_two_storages_on_one_file_share_the_window(path: Path) -> None:
    first, second = RateLimiter(SQLiteStorage(path)), RateLimiter(SQLiteStorage(path))
    assert (await first.hit("key", 2)).allowed
    assert (await second.hit("key", 2)).remaining == 0
    assert not (await first.hit("key", 2)).allowed
    await second.clear_failures("x", Backoff(limit=1, window_seconds=60))  # other keys untouched
    assert not (await second.hit("key", 2)).allowed


async def test_the_window_moves(limiter: RateLimiter, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [time.time()]

    class Clock:
        @staticmethod
        def time() -> float:
            return now[0]

    monkeypatch.setattr(ratelimit_file, "time", Clock)
    monkeypatch.setattr(ratelimit, "time", Clock)
    assert await limiter.allow("key", 2, 10)
    now[0] += 6
    assert await limiter.allow("key", 2, 10)
    assert not await limiter.allow("key", 2, 10)
    now[0] += 4.5  # the first hit has left the window, the second not
    assert await limiter.allow("key", 2, 10)
    assert not await limiter.allow("key", 2, 10)


async def test_failure_backoff_clear_and_reset(limiter: RateLimiter) -> None:
    backoff = Backoff(limit=2, window_seconds=60)
    for _ in range(2):
        assert await limiter.failure_wait("k", backoff) is None
        await limiter.record_failure("k", backoff)
    wait = await limiter.failure_wait("k", backoff)
    assert wait is not None and 1 <= wait <= 60
    await limiter.clear_failures("k", backoff)
    assert await limiter.failure_wait("k", backoff) is None
    await limiter.hit("h", 1)
    assert not (await limiter.hit("h", 1)).allowed
    await limiter.reset()
    assert (await limiter.hit("h", 1)).allowed
    assert await limiter.check_ready()


async def test_expired_hits_are_pruned(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = SQLiteStorage(path)
    limiter = RateLimiter(storage)
    await limiter.hit("old", 5)
    storage._next_prune = 0.0
    later = time.time() + 120
    monkeypatch.setattr(ratelimit_file.time, "time", lambda: later)
    await limiter.hit("new", 5)
    rows = storage.connection.execute("SELECT key FROM hits").fetchall()
    assert [key for (key,) in rows] == ["LIMITER/new/5/1/minute"]


async def test_fixed_window_counters_are_shared_and_expire(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`limits`' fixed-window strategy on the file: two storages count one window, which ends
    `expiry` seconds after its first hit."""
    first, second = SQLiteStorage(path), SQLiteStorage(path)
    limiter = FixedWindowRateLimiter(first)
    other = FixedWindowRateLimiter(second)
    item = parse("2/minute")
    assert await limiter.hit(item, "k") and await other.hit(item, "k")
    assert not await limiter.hit(item, "k") and not await other.hit(item, "k")
    key = item.key_for("k")
    # Four hits, two refused: `limits` counts a refused hit too.
    assert await first.get(key) == 4 and await second.get_expiry(key) > time.time()
    later = time.time() + 61
    monkeypatch.setattr(ratelimit_file.time, "time", lambda: later)
    assert await second.get(key) == 0
    assert await limiter.hit(item, "k")  # a new window
    assert await first.incr(key, 60, amount=3) == 4
    await second.clear(key)
    assert await first.get(key) == 0


def _hammer(path: str, hits: int, start: float, out: multiprocessing.Queue[int]) -> None:
    async def run() -> int:
        limiter = RateLimiter(SQLiteStorage(Path(path)))
        while time.time() < start:
            await asyncio.sleep(0.001)
        return sum([(await limiter.hit("shared", 60)).allowed for _ in range(hits)])

    out.put(asyncio.run(run()))


def test_processes_hitting_at_once_let_exactly_the_limit_through(path: Path) -> None:
    """Four processes, 40 hits each, at the same moment, on a limit of 60 a minute."""
    ratelimit_file.prepare(path)
    context = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[int] = context.Queue()
    start = time.time() + 2.0
    processes = [
        context.Process(target=_hammer, args=(str(path), 40, start, out)) for _ in range(4)
    ]
    for process in processes:
        process.start()
    allowed = [out.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    assert sum(allowed) == 60
