"""Every test gets a freshly migrated database and its own app instance.

SQLite (default): the migrations run once into a template file, copied for each test.
PostgreSQL: set LUNOGEN_TEST_DATABASE_URL (a database of its own for this run); the migrations
run once, and before each test the tables the last one used are emptied (`_PostgresReset`).
LUNOGEN_TEST_REDIS_URL puts the rate limiter on Redis.

Tests that use a database (through the `database_url` fixture) are marked `db` at collection,
so CI's PostgreSQL pass runs `-m db` and the database-free tests run once; tests that drive
Chromium (the `browser` fixture) are marked `chromium`: they check pages, not the database, and
run in the SQLite pass only. Passwords are hashed
with a cheap argon2id profile unless a test is marked `production_hashing`. A test's app resolves
its routes as requests reach them, without the start-up warm-up, unless the test is marked
`route_warm_up` or uses `live_server` (`lazy_route_resolution`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from openai._base_client import BaseClient
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import lunogen.app
from lunogen.app import create_app
from lunogen.auth import passwords
from lunogen.config import Settings
from lunogen.db import create_engine, create_sessionmaker
from lunogen.migrations import upgrade
from lunogen.models import metadata
from tests.helpers import Api
from tests.sandbox.support import mounts_under


def _for_this_worker(pg_url: str | None, redis_url: str | None) -> tuple[str | None, str | None]:
    """Under pytest-xdist each worker gets a database of its own (`<name>_gw<n>`, created on
    first use) and the next Redis database numbers, so workers never see each other's rows,
    job streams or rate-limit counters."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return pg_url, redis_url
    number = int(worker.removeprefix("gw"))
    if pg_url:
        pg_url = f"{pg_url}_{worker}"
    if redis_url:
        base, _, db = redis_url.rpartition("/")
        redis_url = f"{base}/{int(db or 0) + number}"
    return pg_url, redis_url


PG_URL, REDIS_URL = _for_this_worker(
    os.environ.get("LUNOGEN_TEST_DATABASE_URL"), os.environ.get("LUNOGEN_TEST_REDIS_URL")
)
BASE_URL = "http://testserver"
# argon2id at its lowest cost: the production profile (64 MiB, t=3) spends ~0.2 s per hash,
# which was over half the time of an ordinary API test. One test pins the production profile.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "route_warm_up: the app resolves every route at start, as a server does (see"
        " lazy_route_resolution)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "database_url" in fixtures:
            item.add_marker(pytest.mark.db)
        if "browser" in fixtures:
            item.add_marker(pytest.mark.chromium)


@pytest.fixture(scope="session", autouse=True)
def no_mount_left_in_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Workspace images (loop mounts under pytest's tmp dirs) never outlive the run."""
    yield
    assert mounts_under(tmp_path_factory.getbasetemp()) == []


@pytest.fixture(autouse=True)
def short_model_retry_waits(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The openai SDK's retries wait 1/1000 of the back-off it computes: tests that retry a
    failed model call keep the retry, not the 0.5-2 s sleep. `retry_delays` (tests/llm)
    records the computed waits itself."""
    if "retry_delays" in request.fixturenames:
        return
    computed = BaseClient._calculate_retry_timeout

    def shortened(self: Any, *args: Any, **kwargs: Any) -> float:
        return float(computed(self, *args, **kwargs)) / 1000

    monkeypatch.setattr(BaseClient, "_calculate_retry_timeout", shortened)


@pytest.fixture(autouse=True)
def lazy_route_resolution(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app of a test resolves its routes when a request first scans them (FastAPI's lazy
    path, what the warm-up only does ahead of time), not all ~260 in a thread after start:
    `lunogen.app._resolve_routes` is a first-request latency measure for a server, and per test
    it was half the CPU of an ordinary API test (~0.3 s, competing for the GIL with the test
    itself). The real server (`live_server`) and tests marked `route_warm_up` keep it;
    tests/api/test_route_warm_up.py checks it."""
    if "live_server" in request.fixturenames or request.node.get_closest_marker("route_warm_up"):
        return
    monkeypatch.setattr(lunogen.app, "_resolve_routes", lambda _app: None)


@pytest.fixture(autouse=True)
def cheap_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("production_hashing") is None:
        monkeypatch.setattr(passwords, "_hasher", CHEAP_HASHER)


async def _create_worker_database(url: str) -> None:
    """The worker's own database, beside the run's (which `.ci/run` created and will drop with
    every `<name>_gw<n>`)."""
    own = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    base_url, _, name = own.rpartition("/")
    conn = await asyncpg.connect(f"{base_url}/{name.rsplit('_gw', 1)[0]}")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    if PG_URL:
        if os.environ.get("PYTEST_XDIST_WORKER"):
            asyncio.run(_create_worker_database(PG_URL))
        upgrade(PG_URL)
        return None
    path = tmp_path_factory.mktemp("template") / "lunogen.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


def _used_tables_query() -> str:
    """One round trip: the tables that hold rows or whose id sequence has moved."""
    parts = [
        f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM \"{name}\") OR EXISTS (SELECT 1 FROM"
        f" pg_sequences WHERE sequencename = '{name}_id_seq' AND last_value IS NOT NULL)"
        for name in (table.name for table in metadata.sorted_tables)
    ]
    return " UNION ALL ".join(parts)


class _PostgresReset:
    """Empties the tables the previous test used and restarts their id sequences, over one
    connection kept for the worker's session on an event loop of its own.

    Measured per test on the CI machine: a fresh connection's first run of the used-tables
    query (45 tables, `pg_sequences`) costs ~70 ms of catalog loading, a warm one ~7 ms; and
    `TRUNCATE ... RESTART IDENTITY CASCADE` of a few tables ~0.5 s (new files for every table),
    where `DELETE` of their few rows takes ~30 ms. The deletes run with
    `session_replication_role = replica`, so neither the append-only triggers (audit events,
    credit entries) nor the foreign keys' checks apply, as with TRUNCATE: every table that holds
    a row is in the list, so nothing is left that refers to a deleted row."""

    def __init__(self, url: str) -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection | None = None
        self.query = _used_tables_query()

    def run(self) -> None:
        self.loop.run_until_complete(self._reset())

    async def _reset(self) -> None:
        try:
            await self._reset_on(await self._connection())
        except (
            asyncpg.InterfaceError,
            asyncpg.PostgresConnectionError,
            asyncpg.InvalidCachedStatementError,
            OSError,
        ):
            # A test that cut off the server's connections, or migrated down and up: again, anew.
            await self._drop_connection()
            await self._reset_on(await self._connection())

    async def _connection(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(self.dsn)
        return self.conn

    async def _reset_on(self, conn: asyncpg.Connection) -> None:
        used = [row[0] for row in await conn.fetch(self.query)]
        if not used:
            return
        sequences = {row[0] for row in await conn.fetch("SELECT sequencename FROM pg_sequences")}
        statements = ["SET LOCAL session_replication_role = replica"]
        statements += [f'DELETE FROM "{name}"' for name in used]
        statements += [
            f'ALTER SEQUENCE "{name}_id_seq" RESTART'
            for name in used
            if f"{name}_id_seq" in sequences
        ]
        async with conn.transaction():  # rolled back on an error: the connection stays usable
            await conn.execute(";\n".join(statements))

    async def _drop_connection(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.terminate()

    def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            self.loop.run_until_complete(self.conn.close())
        self.loop.close()


@pytest.fixture(scope="session")
def postgres_reset(migrated_template: Path | None) -> Iterator[_PostgresReset | None]:
    if not PG_URL:
        yield None
        return
    reset = _PostgresReset(PG_URL)
    yield reset
    reset.close()


@pytest.fixture
def database_url(
    migrated_template: Path | None,
    postgres_reset: _PostgresReset | None,
    tmp_path: Path,
) -> Iterator[str]:
    if PG_URL:
        assert postgres_reset is not None
        postgres_reset.run()
        yield PG_URL
        return
    assert migrated_template is not None
    target = tmp_path / "data" / "lunogen.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(migrated_template, target)
    yield f"sqlite+aiosqlite:///{target}"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the test's database, for tests that work below the app."""
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def sm(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """Override in a test module to change settings for its app."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, database_url: str, settings_overrides: dict[str, object]) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "database_url": database_url,
        "public_url": BASE_URL,
        "redis_url": REDIS_URL,
        "log_json": False,
        "smtp_url": None,
        "google_client_id": None,
        "google_client_secret": None,
        "catalog_refresh_hours": 0,  # never reach for the real OpenRouter from a test
        "job_broker": "memory",  # tests/worker runs the Redis Streams shape on purpose
        # Every test registers from 127.0.0.1; tests/account/test_registration_throttle.py
        # checks the real default.
        "registrations_per_ip_per_hour": 10_000,
    }
    values.update(settings_overrides)
    return Settings(**values)  # type: ignore[arg-type,unused-ignore]


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        if REDIS_URL:
            await application.state.rate_limiter.reset()
        yield application


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[Api]:
    """A factory of API clients (each with its own cookie jar) against `app`."""
    clients: list[httpx.AsyncClient] = []

    def new_client() -> httpx.AsyncClient:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
        clients.append(client)
        return client

    yield Api(app=app, new_client=new_client)
    for client in clients:
        await client.aclose()


@pytest.fixture
async def client(api: Api) -> httpx.AsyncClient:
    return api.new_client()


@pytest.fixture
def live_server(settings: Settings) -> Iterator[str]:
    """The real app served by uvicorn on 127.0.0.1, for a real browser."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound here and handed over: no other process can take it
    port = int(sock.getsockname()[1])
    base = f"http://127.0.0.1:{port}"
    live_settings = settings.model_copy(update={"public_url": base})
    server = uvicorn.Server(uvicorn.Config(create_app(live_settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        raise RuntimeError("live server did not start")
    yield base
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
