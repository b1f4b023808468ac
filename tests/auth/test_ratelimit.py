"""Per-key rate limits by plan, on the memory storage and on Redis.

Each HTTP test runs twice: with the storage the test run chose (Redis when
LUNOGEN_TEST_REDIS_URL is set, else memory) and explicitly on Redis, so the Redis storage is
covered in every run. The unit tests of `RateLimiter` run on both storages.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.storage import memory as limits_memory
from limits.aio.storage.redis import redispy as limits_redispy

from lunogen.auth import ratelimit
from lunogen.auth.ratelimit import Backoff, RateLimiter, create_storage
from tests.conftest import REDIS_URL as RUN_REDIS_URL
from tests.helpers import Api, Signed

# Without a run's Redis (the SQLite pass), each pytest-xdist worker takes a database of its own
# (12, 13, ...): two workers counting in one would see each other's requests.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0"
REDIS_URL = RUN_REDIS_URL or f"redis://127.0.0.1:6379/{12 + int(_WORKER)}"
RUN_USES_REDIS = bool(RUN_REDIS_URL)


@pytest.fixture(params=["run-default", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings_overrides(storage: str) -> dict[str, object]:
    if storage != "redis":
        return {}
    # This Redis database is not emptied between tests: keep sign-ups from one IP unthrottled.
    return {"redis_url": REDIS_URL, "registrations_per_ip_per_hour": 10_000}


def _expected_storage(storage: str) -> type:
    return RedisStorage if storage == "redis" or RUN_USES_REDIS else MemoryStorage


async def _keyed(api: Api, person: Signed | None = None) -> tuple[Signed, httpx.AsyncClient, str]:
    person = person or await api.sign_up()
    key = await api.create_key(person)
    return person, api.key_client(key), key


def _assert_limit_headers(response: httpx.Response, *, limit: int, remaining: int) -> None:
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Remaining"] == str(remaining)
    reset = int(response.headers["X-RateLimit-Reset"])
    assert time.time() - 5 <= reset <= time.time() + 61


async def test_free_key_gets_30_requests_then_429(api: Api, app: FastAPI, storage: str) -> None:
    assert isinstance(app.state.rate_limiter.storage, _expected_storage(storage))
    person, keyed, _key = await _keyed(api)
    for n in range(30):
        response = await keyed.get("/api/v1/me")
        assert response.status_code == 200, (n, response.text)
        _assert_limit_headers(response, limit=30, remaining=29 - n)
        assert "Retry-After" not in response.headers

    limited = await keyed.get("/api/v1/me")
    assert limited.status_code == 429
    _assert_limit_headers(limited, limit=30, remaining=0)
    retry_after = int(limited.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    body = limited.json()
    assert set(body) == {"error", "message", "retry_after"}
    assert body["error"] == "Too many requests"
    assert body["retry_after"] == retry_after
    assert "30 requests per minute" in body["message"]

    # Every endpoint behind the key is limited, not just the one that was hammered.
    assert (await keyed.get("/api/v1/tools")).status_code == 429

    # Another user's key has its own window.
    _other, other_keyed, _ = await _keyed(api)
    fresh = await other_keyed.get("/api/v1/me")
    assert fresh.status_code == 200
    _assert_limit_headers(fresh, limit=30, remaining=29)

    # The person's browser session is not the key, so it still works.
    assert (await person.client.get("/api/v1/me")).status_code == 200


async def test_limit_is_per_key(api: Api, storage: str) -> None:
    person, keyed, _key = await _keyed(api)
    for _ in range(30):
        assert (await keyed.get("/api/v1/me")).status_code == 200
    assert (await keyed.get("/api/v1/me")).status_code == 429

    key_id = (await person.client.get("/api/v1/keys")).json()["data"][0]["id"]
    revoked = await person.client.delete(f"/api/v1/keys/{key_id}", headers=person.headers)
    assert revoked.status_code == 204
    _, second, _ = await _keyed(api, person)
    response = await second.get("/api/v1/me")
    assert response.status_code == 200
    _assert_limit_headers(response, limit=30, remaining=29)


async def test_switching_plan_changes_the_limit_at_once(api: Api, storage: str) -> None:
    person, keyed, _key = await _keyed(api)
    for _ in range(30):
        assert (await keyed.get("/api/v1/me")).status_code == 200
    assert (await keyed.get("/api/v1/me")).status_code == 429

    await api.set_plan(person, "pro")
    upgraded = await keyed.get("/api/v1/me")
    assert upgraded.status_code == 200
    assert upgraded.json()["plan"] == "pro"
    _assert_limit_headers(upgraded, limit=2000, remaining=1999)

    await api.set_plan(person, "free")
    again = await keyed.get("/api/v1/me")
    assert again.status_code == 429
    assert again.headers["X-RateLimit-Limit"] == "30"


async def test_limited_requests_do_not_reach_the_endpoint(api: Api, storage: str) -> None:
    """A 429 is decided before the endpoint runs: a limited key cannot even revoke itself."""
    person, keyed, _key = await _keyed(api)
    key_id = (await person.client.get("/api/v1/keys")).json()["data"][0]["id"]
    for _ in range(30):
        assert (await keyed.get("/api/v1/me")).status_code == 200
    response = await keyed.delete(f"/api/v1/keys/{key_id}")
    assert response.status_code == 429
    assert [k["id"] for k in (await person.client.get("/api/v1/keys")).json()["data"]] == [key_id]


async def test_browser_sessions_share_the_plan_limit_per_user(api: Api, storage: str) -> None:
    person = await api.sign_up()
    for n in range(30):
        response = await person.client.get("/api/v1/me")
        assert response.status_code == 200, (n, response.text)
        _assert_limit_headers(response, limit=30, remaining=29 - n)
    limited = await person.client.get("/api/v1/me")
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) == limited.json()["retry_after"] >= 1
    assert (
        "30 requests per minute exceeded for your browser sessions" in (limited.json()["message"])
    )
    # Writes too, before their CSRF check; and a second session of the same user shares it.
    refused = await person.client.post("/api/v1/keys", json={"name": "k"}, headers=person.headers)
    assert refused.status_code == 429
    second = await api.sign_in(api.new_client(), person.email)
    assert (await second.client.get("/api/v1/tools")).status_code == 429

    # Someone else's session, and the person's own key, have budgets of their own.
    other = await api.sign_up()
    assert (await other.client.get("/api/v1/me")).status_code == 200
    await api.set_plan(person, "pro")  # the Pro budget is larger: a key can be made now
    key = await api.create_key(person)
    assert (await api.key_client(key).get("/api/v1/me")).status_code == 200
    assert (await person.client.get("/api/v1/me")).headers["X-RateLimit-Limit"] == "2000"


# --- RateLimiter unit tests on both storages -------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    storage = create_storage(REDIS_URL if request.param == "redis" else None)
    expected = RedisStorage if request.param == "redis" else MemoryStorage
    assert isinstance(storage, expected)
    yield RateLimiter(storage)


def _name() -> str:
    return f"test:{uuid.uuid4()}"


async def test_limiter_counts_down_and_refuses(limiter: RateLimiter) -> None:
    key = _name()
    statuses = [await limiter.hit(key, 3) for _ in range(4)]
    assert [s.allowed for s in statuses] == [True, True, True, False]
    assert [s.remaining for s in statuses] == [2, 1, 0, 0]
    assert all(s.limit == 3 for s in statuses)
    refused = statuses[-1]
    assert 1 <= refused.retry_after <= 60
    assert refused.headers()["Retry-After"] == str(refused.retry_after)
    assert "Retry-After" not in statuses[0].headers()
    assert statuses[0].headers()["X-RateLimit-Remaining"] == "2"

    other = await limiter.hit(_name(), 3)
    assert other.allowed and other.remaining == 2
    # A different limit for the same key is a different window.
    assert (await limiter.hit(key, 5)).allowed


class MovedClock:
    """Stands in for the `time` module where `limits` and the limiter read the clock."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> MovedClock:
    moved = MovedClock()
    for module in (limits_memory, limits_redispy, ratelimit):
        monkeypatch.setattr(module, "time", moved)
    return moved


async def test_failure_backoff_counts_clears_and_is_per_key(limiter: RateLimiter) -> None:
    key, backoff = _name(), Backoff(limit=2, window_seconds=60)
    assert await limiter.failure_wait(key, backoff) is None
    await limiter.record_failure(key, backoff)
    assert await limiter.failure_wait(key, backoff) is None
    await limiter.record_failure(key, backoff)
    wait = await limiter.failure_wait(key, backoff)
    assert wait is not None and 1 <= wait <= 60
    assert await limiter.failure_wait(_name(), backoff) is None
    await limiter.clear_failures(key, backoff)
    assert await limiter.failure_wait(key, backoff) is None


async def test_failure_backoff_waits_longer_for_a_persistent_guesser(
    limiter: RateLimiter, clock: MovedClock
) -> None:
    """2 failures per 10 s, 4 per 40 s, 8 per 160 s: each burst is let through once its own
    window has moved on, until the widest step is used up and the wait is far longer."""
    key, backoff = _name(), Backoff(limit=2, window_seconds=10, steps=3)
    waits = []
    for _ in range(4):
        wait = await limiter.failure_wait(key, backoff)
        if wait is not None:
            clock.now += wait + 0.5
            assert await limiter.failure_wait(key, backoff) is None
        for _ in range(2):
            await limiter.record_failure(key, backoff)
        waits.append(await limiter.failure_wait(key, backoff))
    first, *_, last = waits
    # Redis keeps timestamps to 0.1 ms, so rounding up can add a second to the 10 s window.
    assert first is not None and first <= 11
    assert last is not None and last > 100  # the 160 s step is full: its oldest failure rules


async def test_limiter_ready_and_reset(limiter: RateLimiter) -> None:
    assert await limiter.check_ready()
    key = _name()
    await limiter.hit(key, 1)
    assert not (await limiter.hit(key, 1)).allowed
    await limiter.reset()
    assert (await limiter.hit(key, 1)).allowed


def test_create_storage_picks_the_backend() -> None:
    assert isinstance(create_storage(None), MemoryStorage)
    assert isinstance(create_storage(""), MemoryStorage)
    assert isinstance(create_storage("redis://127.0.0.1:6379/8"), RedisStorage)
