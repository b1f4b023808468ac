"""`lunogen worker` and `lunogen serve --no-worker` refuse a setup where jobs would never run."""

from __future__ import annotations

from pathlib import Path

from tests.cli.conftest import Cli


def test_a_worker_needs_the_shared_queue(tmp_path: Path) -> None:
    cli = Cli(env={"LUNOGEN_DATA_DIR": str(tmp_path), "LUNOGEN_REDIS_URL": None})
    result = cli.run("worker")
    assert result.exit_code == 2
    assert "set LUNOGEN_REDIS_URL" in result.output


def test_a_worker_needs_the_servers_secrets_key(tmp_path: Path) -> None:
    cli = Cli(
        env={
            "LUNOGEN_DATA_DIR": str(tmp_path / "empty"),
            "LUNOGEN_REDIS_URL": "redis://127.0.0.1:6379/9",
            "LUNOGEN_SECRET_KEYS": None,
        }
    )
    result = cli.run("worker", "--concurrency", "2")
    assert result.exit_code == 2
    assert "LUNOGEN_SECRET_KEYS" in result.output
    assert not (tmp_path / "empty" / "secret_keys").exists()  # no key of its own was made


def test_a_server_without_a_worker_needs_the_shared_queue(tmp_path: Path) -> None:
    cli = Cli(env={"LUNOGEN_DATA_DIR": str(tmp_path), "LUNOGEN_REDIS_URL": None})
    result = cli.run("serve", "--no-worker", "--no-migrate")
    assert result.exit_code == 2
    assert "--no-worker needs a shared job queue" in result.output
    memory = cli.run("serve", "--no-worker", "--no-migrate", LUNOGEN_JOB_BROKER="memory")
    assert memory.exit_code == 2


def test_worker_concurrency_is_validated(tmp_path: Path) -> None:
    result = Cli(env={"LUNOGEN_DATA_DIR": str(tmp_path)}).run("worker", "--concurrency", "0")
    assert result.exit_code == 2
    assert "concurrency" in result.output
