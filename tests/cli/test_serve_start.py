"""`lunogen serve` starting: the cheap schema check, and a real server that answers.

The schema check reads `alembic_version` and the migration files' revision lines; Alembic is
loaded only when migrations are pending. A database migrated by newer code is refused.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import text

from lunogen.config import Settings
from lunogen.db import create_engine
from lunogen.migrations import alembic_config, needs_upgrade, upgrade
from lunogen.migrations.state import UnreadableMigrationsError, read_graph
from tests.cli.conftest import Cli, cli_env
from tests.helpers import PASSWORD

FUTURE_REVISION = "9999_from_a_newer_lunogen"
NEWER_MESSAGE = "migrated by a newer LunoGen"


def _head() -> str:
    [head] = read_graph().heads
    return head


async def _versions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT version_num FROM alembic_version"))
            return [str(row[0]) for row in rows]
    finally:
        await engine.dispose()


async def _set_version(url: str, revision: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})
    finally:
        await engine.dispose()


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUNOGEN_")}
    env.update({k: v for k, v in cli_env(settings).items() if v is not None})
    # No reaching for the real OpenRouter from a test (the maintenance task refreshes prices).
    env["LUNOGEN_CATALOG_REFRESH_HOURS"] = "0"
    return env


def _lunogen(*args: str) -> list[str]:
    return [sys.executable, "-c", "from lunogen.cli import app; app()", *args]


def _words(output: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(output.split())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the migration files as the check reads them ------------------------------------------------


def test_the_revision_graph_read_from_the_files_is_alembics() -> None:
    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    graph = read_graph()
    assert graph.heads == frozenset(scripts.get_heads())
    assert set(graph.parents) == {script.revision for script in scripts.walk_revisions()}
    for script in scripts.walk_revisions():
        down = script.down_revision
        expected = () if down is None else (down,) if isinstance(down, str) else tuple(down)
        assert graph.parents[script.revision] == expected


def test_migration_files_that_are_not_plain_literals_are_left_to_alembic(tmp_path: Path) -> None:
    (tmp_path / "0001_first.py").write_text('revision = "0001"\ndown_revision = None\n')
    (tmp_path / "0002_computed.py").write_text('revision = make_id()\ndown_revision = "0001"\n')
    with pytest.raises(UnreadableMigrationsError, match=r"0002_computed\.py"):
        read_graph(tmp_path)


# -- the check against a database --------------------------------------------------------------


def test_a_current_schema_is_recognised_without_loading_alembic(settings: Settings) -> None:
    code = (
        "import sys\n"
        "from lunogen.cli import app\n"
        "app(['db', 'upgrade'], standalone_mode=False)\n"
        "print('alembic loaded:', 'alembic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Database is up to date." in result.stdout
    assert "alembic loaded: False" in result.stdout
    assert asyncio.run(_versions(settings.effective_database_url)) == [_head()]


def test_a_database_one_revision_behind_is_migrated(settings: Settings, cli: Cli) -> None:
    url = settings.effective_database_url
    head = _head()
    [previous] = read_graph().parents[head]
    try:
        command.downgrade(alembic_config(url), previous)
        assert asyncio.run(_versions(url)) == [previous]
        assert needs_upgrade(url)

        result = cli.run("db", "upgrade")
        assert result.exit_code == 0, result.output
        assert asyncio.run(_versions(url)) == [head]
        assert not needs_upgrade(url)
    finally:
        upgrade(url)  # the PostgreSQL database is shared by the run's tests


@pytest.fixture
def schema_from_the_future(settings: Settings) -> Iterator[str]:
    url = settings.effective_database_url
    asyncio.run(_set_version(url, FUTURE_REVISION))
    try:
        yield url
    finally:
        asyncio.run(_set_version(url, _head()))


def test_db_upgrade_refuses_a_database_migrated_by_newer_code(
    schema_from_the_future: str, cli: Cli
) -> None:
    result = cli.run("db", "upgrade")
    assert result.exit_code == 1
    said = _words(result.output)
    assert NEWER_MESSAGE in said
    assert FUTURE_REVISION in said and _head() in said
    assert asyncio.run(_versions(schema_from_the_future)) == [FUTURE_REVISION]


def test_serve_refuses_to_start_on_a_database_migrated_by_newer_code(
    schema_from_the_future: str, settings: Settings
) -> None:
    result = subprocess.run(
        _lunogen("serve", "--port", str(_free_port())),
        env=_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert NEWER_MESSAGE in _words(result.stderr)
    assert "Traceback" not in result.stderr
    assert asyncio.run(_versions(schema_from_the_future)) == [FUTURE_REVISION]


# -- a real server ------------------------------------------------------------------------------


def _wait_healthy(server: subprocess.Popen[str], base: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the server did not become healthy within {seconds} s")


def test_serve_becomes_healthy_and_answers_authenticated_calls(
    settings: Settings, cli: Cli, tmp_path: Path
) -> None:
    created = cli.run("user", "create", "ada@example.com", "--password-stdin", input=PASSWORD)
    assert created.exit_code == 0, created.output
    keyed = cli.run("apikey", "create", "ada@example.com")
    assert keyed.exit_code == 0, keyed.output
    key = keyed.stdout.strip().splitlines()[-1]

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            _lunogen("serve", "--host", "127.0.0.1", "--port", str(port)),
            env=_env(settings) | {"LUNOGEN_PUBLIC_URL": base},
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            _wait_healthy(server, base)
            with httpx.Client(base_url=base, timeout=30) as keyed_client:
                keyed_client.headers["Authorization"] = f"Bearer {key}"
                me = keyed_client.get("/api/v1/me")
                assert me.status_code == 200, me.text
                assert me.json()["email"] == "ada@example.com"
                assert httpx.get(f"{base}/api/v1/me", timeout=30).status_code == 401

                with httpx.Client(base_url=base, timeout=30) as browser:
                    login = {"email": "ada@example.com", "password": PASSWORD}
                    signed_in = browser.post("/api/v1/auth/login", json=login)
                    assert signed_in.status_code == 200, signed_in.text
                    consented = browser.post(
                        "/api/v1/auth/consent",
                        json={"age_confirmed": True, "accept_terms": True, "accept_privacy": True},
                        headers={"X-CSRF-Token": browser.cookies["lg_csrf"]},
                    )
                    assert consented.status_code == 200, consented.text

                agents = keyed_client.get("/api/v1/agents")
                assert agents.status_code == 200, agents.text
                assert agents.json()["data"] == []
        finally:
            server.terminate()
            server.wait(timeout=60)
    logged = log.read_text()
    assert "Application shutdown complete" in logged  # uvicorn then re-raises the SIGTERM
    # Logged once the sandbox probe (run after the server answers) has its verdict.
    assert "lunogen_started" in logged
