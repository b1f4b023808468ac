"""Where a database's schema stands against this code's migrations, without loading Alembic.

Alembic costs ~0.1 s of imports and script loading at every start, to learn in most starts that
there is nothing to do. Here the revision graph is read from the migration files' `revision` /
`down_revision` lines (literals; anything else makes the caller fall back to Alembic) and
compared with the `alembic_version` rows.
"""

from __future__ import annotations

import ast
import asyncio
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from lunogen.db import create_engine

VERSIONS_DIR = Path(__file__).parent / "versions"
VERSION_TABLE = "alembic_version"
_ASSIGNMENT = re.compile(r"^(revision|down_revision)\s*(?::[^=\n]*)?=\s*(.+?)\s*$", re.MULTILINE)


class SchemaStatus(Enum):
    CURRENT = "current"  # at the newest revision: nothing to do
    BEHIND = "behind"  # known revision(s) with migrations still to apply, or an empty database
    AHEAD = "ahead"  # a revision this code does not know: migrated by a newer LunoGen


class UnreadableMigrationsError(Exception):
    """A migration file's revision lines are not plain literals: ask Alembic instead."""


@dataclass(frozen=True)
class RevisionGraph:
    parents: dict[str, tuple[str, ...]]

    @property
    def heads(self) -> frozenset[str]:
        children_of = {parent for parents in self.parents.values() for parent in parents}
        return frozenset(self.parents) - children_of


@dataclass(frozen=True)
class SchemaState:
    status: SchemaStatus
    database: frozenset[str]  # the revisions in `alembic_version` (empty: none yet)
    heads: frozenset[str]

    def describe(self) -> str:
        """Why the server refuses a database migrated by newer code, in words for an operator."""
        found = ", ".join(sorted(self.database)) or "none"
        newest = ", ".join(sorted(self.heads))
        return (
            f"the database schema is at revision {found}, which this LunoGen does not know "
            f"(its newest migration is {newest}): the database was migrated by a newer "
            "LunoGen. Run that version (or newer), or restore a backup taken before its upgrade."
        )


def _literal(value: str, path: Path) -> tuple[str, ...]:
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError) as exc:
        raise UnreadableMigrationsError(f"{path.name}: {value!r} is not a literal") from exc
    if parsed is None:
        return ()
    if isinstance(parsed, str):
        return (parsed,)
    if isinstance(parsed, tuple | list) and all(isinstance(item, str) for item in parsed):
        return tuple(parsed)
    raise UnreadableMigrationsError(f"{path.name}: {value!r} is not a revision id")


def read_graph(directory: Path = VERSIONS_DIR) -> RevisionGraph:
    """The revision graph of the migration files in `directory`."""
    parents: dict[str, tuple[str, ...]] = {}
    for path in sorted(directory.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        found = {name: _literal(value, path) for name, value in _ASSIGNMENT.findall(source)}
        revision = found.get("revision", ())
        if len(revision) != 1 or "down_revision" not in found:
            raise UnreadableMigrationsError(f"{path.name}: no revision / down_revision lines")
        parents[revision[0]] = found["down_revision"]
    if not parents:
        raise UnreadableMigrationsError(f"no migrations in {directory}")
    return RevisionGraph(parents)


def _database_revisions(connection: Connection) -> frozenset[str]:
    if not inspect(connection).has_table(VERSION_TABLE):
        return frozenset()
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))  # noqa: S608
    return frozenset(str(row[0]) for row in rows)


async def database_revisions(database_url: str) -> frozenset[str]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_database_revisions)
    finally:
        await engine.dispose()


def schema_state(database_url: str, graph: RevisionGraph | None = None) -> SchemaState:
    """Run outside an event loop (as the CLI does before the server starts)."""
    graph = graph or read_graph()
    database = asyncio.run(database_revisions(database_url))
    if database == graph.heads:
        status = SchemaStatus.CURRENT
    elif database - graph.parents.keys():
        status = SchemaStatus.AHEAD
    else:
        status = SchemaStatus.BEHIND
    return SchemaState(status=status, database=database, heads=graph.heads)
