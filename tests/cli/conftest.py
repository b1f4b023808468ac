"""Run the `lunogen` CLI in-process against the test's database and data dir."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from click.testing import Result
from typer.testing import CliRunner

from lunogen.cli import app as cli_app
from lunogen.config import Settings


@dataclass
class Cli:
    env: dict[str, str | None] = field(default_factory=dict)

    def run(self, *args: str, input: str | None = None, **env: str | None) -> Result:
        return CliRunner().invoke(
            cli_app, list(args), input=input, env={**self.env, **env}, catch_exceptions=True
        )

    async def __call__(self, *args: str, input: str | None = None, **env: str | None) -> Result:
        """From an async test: the CLI runs its own event loop, so it needs its own thread."""
        return await asyncio.to_thread(self.run, *args, input=input, **env)


def cli_env(settings: Settings) -> dict[str, str | None]:
    return {
        "LUNOGEN_DATABASE_URL": settings.effective_database_url,
        "LUNOGEN_DATA_DIR": str(settings.data_dir),
        "LUNOGEN_SECRET_KEYS": settings.secret_keys,
        "LUNOGEN_REDIS_URL": None,
        "LUNOGEN_SMTP_URL": None,
    }


@pytest.fixture
def cli(settings: Settings) -> Cli:
    """The CLI pointed at the same database and data dir as the `app` fixture."""
    return Cli(env=cli_env(settings))
