"""Alembic migrations shipped inside the package; run with `lunogen db upgrade`.

Alembic is imported only when there is something to migrate: `needs_upgrade` first reads where
the schema stands (`migrations.state`), which is all a start on a current database needs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lunogen.errors import LunogenError
from lunogen.migrations.state import (
    SchemaStatus,
    UnreadableMigrationsError,
    read_graph,
    schema_state,
)

if TYPE_CHECKING:
    from alembic.config import Config

HERE = Path(__file__).parent


class SchemaAheadError(LunogenError):
    """The database was migrated by newer code: this code must not run against it."""

    error = "Database schema is newer than this LunoGen"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    # Today's stdout: Config's default is the one when alembic.config was first imported.
    config = Config(stdout=sys.stdout)
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


def needs_upgrade(database_url: str) -> bool:
    """Whether migrations are pending; SchemaAheadError when the database is at a revision
    this code does not know (a newer LunoGen migrated it)."""
    try:
        state = schema_state(database_url, read_graph())
    except UnreadableMigrationsError:
        return True  # Alembic reads the scripts itself and says what is wrong, if anything
    if state.status is SchemaStatus.AHEAD:
        raise SchemaAheadError(state.describe())
    return state.status is SchemaStatus.BEHIND
