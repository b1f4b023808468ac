"""Rate limits with the `limits` library: moving windows, in memory or in Redis.

One `RateLimiter` per app. Memory storage is per process (embedded shape, one server
process); `lunogen serve --workers N` shares the windows of its processes through a SQLite file in
the data dir (`ratelimit_file`); with `LUNOGEN_REDIS_URL` every server process shares them in Redis.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from limits import RateLimitItem, RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter


@dataclass(frozen=True)
class RateLimitStatus:
    """A snapshot taken at `checked_at`, so headers and body always agree."""

    allowed: bool
    limit: int
    remaining: int
    reset_time: float  # epoch seconds when the oldest counted request leaves the window
    checked_at: float = field(default_factory=time.time)

    @property
    def reset_at(self) -> int:
        return math.ceil(self.reset_time)

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_time - self.checked_at))

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


@dataclass(frozen=True)
class Backoff:
    """Failure budgets that widen step by step: `limit` per `window_seconds`, then twice as many
    per four times as long, and so on for `steps` steps.

    Every failure counts in every step, so a first burst waits at most one window, and an attacker
    who keeps going waits longer and longer (5 per 15 min, 10 per hour, 20 per 4 h, 40 per 16 h
    with the defaults), while the long-run rate stays bounded by the widest step.
    """

    limit: int
    window_seconds: int
    steps: int = 4

    def items(self) -> list[RateLimitItem]:
        return [
            RateLimitItemPerSecond(self.limit * 2**step, self.window_seconds * 4**step)
            for step in range(self.steps)
        ]

    def scaled(self, factor: int) -> Backoff:
        return Backoff(self.limit * factor, self.window_seconds, self.steps)


def create_storage(redis_url: str | None, *, shared_file: Path | None = None) -> Storage:
    """Redis when configured; else the file `shared_file` when several processes serve; else
    this process's memory."""
    if redis_url:
        scheme, sep, rest = redis_url.partition("://")
        return RedisStorage(
            f"async+{scheme}{sep}{rest}", key_prefix="lunogen", implementation="redispy"
        )
    if shared_file is not None:
        from lunogen.auth.ratelimit_file import SQLiteStorage

        return SQLiteStorage(shared_file)
    return MemoryStorage()


class RateLimiter:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)

    async def hit(self, key: str, per_minute: int) -> RateLimitStatus:
        """Count one request for `key` against `per_minute`, unless the window is full."""
        return await self._hit(RateLimitItemPerMinute(per_minute), key)

    async def _hit(self, item: RateLimitItem, key: str) -> RateLimitStatus:
        allowed = await self.strategy.hit(item, key)
        stats = await self.strategy.get_window_stats(item, key)
        return RateLimitStatus(
            allowed=allowed,
            limit=item.amount,
            remaining=max(0, stats.remaining),
            reset_time=stats.reset_time,
        )

    async def hit_window(self, key: str, limit: int, window_seconds: int) -> RateLimitStatus:
        """Count one use of `limit` per moving window of `window_seconds`, unless it is full."""
        return await self._hit(RateLimitItemPerSecond(limit, window_seconds), key)

    async def failure_wait(self, key: str, backoff: Backoff) -> int | None:
        """Seconds to wait if `key` has used up a step of `backoff`, else None."""
        waits = []
        for item in backoff.items():
            if not await self.strategy.test(item, key):
                stats = await self.strategy.get_window_stats(item, key)
                waits.append(max(1, math.ceil(stats.reset_time - time.time())))
        return max(waits, default=None)

    async def record_failure(self, key: str, backoff: Backoff) -> None:
        for item in backoff.items():
            await self.strategy.hit(item, key)

    async def clear_failures(self, key: str, backoff: Backoff) -> None:
        for item in backoff.items():
            await self.strategy.clear(item, key)

    async def allow(self, key: str, limit: int, window_seconds: int) -> bool:
        """Spend one of `limit` uses per moving window of `window_seconds`; False when none left."""
        return await self.strategy.hit(RateLimitItemPerSecond(limit, window_seconds), key)

    async def check_ready(self) -> bool:
        return await self.storage.check()

    async def reset(self) -> None:
        await self.storage.reset()
