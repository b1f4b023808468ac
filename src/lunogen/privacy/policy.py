"""Which versions of the Terms and the Privacy Policy a person must have accepted, now.

The documents live in `policy_versions` (`privacy.documents`). Every process keeps a small
snapshot of their (kind, version, effective date, material) rows so that the synchronous
checks on every request (`account.service.setup_problem`) need no query: the snapshot is
loaded when the process starts (a `worker.resources` provider), reloaded every
`REFRESH_SECONDS` (a version published on another machine is seen within that time; a
material one is published at least a day ahead), and at once after a publish in this process.

A version becomes current at its effective date. The version a person must have accepted
(`required`) is the newest *material* one in effect, or the first of its kind; a person who
accepted it or any later version is up to date. A non-material change is shown from its
effective date but asks nobody again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.config import Settings
from lunogen.kit.time import utcnow
from lunogen.privacy.models import PolicyVersion
from lunogen.worker import after_commit
from lunogen.worker.resources import Resource, provide

log = structlog.get_logger(__name__)

KINDS = ("terms", "privacy")
TITLES = {"terms": "Terms of Service", "privacy": "Privacy Policy"}
AGE_ATTESTATION_VERSION = "18+"
MINIMUM_AGE = 18
# The version the migration seeds for both documents (from `privacy/texts/`): what a database
# holds before any `lunogen policy publish`.
BUNDLED_VERSION = "2026-11-01"
BUNDLED_EFFECTIVE_AT = datetime(2026, 11, 1, tzinfo=UTC)
TERMS_VERSION = BUNDLED_VERSION
PRIVACY_VERSION = BUNDLED_VERSION
REFRESH_SECONDS = 30.0


@dataclass(frozen=True)
class VersionInfo:
    kind: str
    version: str
    effective_at: datetime
    material: bool


class Versions:
    """An immutable view of every published version, oldest first per kind."""

    def __init__(self, rows: Iterable[VersionInfo]) -> None:
        ordered = sorted(rows, key=lambda r: (r.effective_at, r.version))
        self._by_kind: dict[str, list[VersionInfo]] = {
            kind: [r for r in ordered if r.kind == kind] for kind in KINDS
        }

    def all(self, kind: str) -> list[VersionInfo]:
        return list(self._by_kind.get(kind, []))

    def find(self, kind: str, version: str | None) -> VersionInfo | None:
        return next((r for r in self._by_kind.get(kind, []) if r.version == version), None)

    def current(self, kind: str, now: datetime | None = None) -> VersionInfo | None:
        """The version in effect at `now` (the newest whose effective date has come)."""
        now = now or utcnow()
        effective = [r for r in self._by_kind.get(kind, []) if r.effective_at <= now]
        return effective[-1] if effective else None

    def upcoming(self, kind: str, now: datetime | None = None) -> list[VersionInfo]:
        now = now or utcnow()
        return [r for r in self._by_kind.get(kind, []) if r.effective_at > now]

    def required(self, kind: str, now: datetime | None = None) -> VersionInfo | None:
        """The version a person must have accepted at `now` (module docstring)."""
        now = now or utcnow()
        effective = [r for r in self._by_kind.get(kind, []) if r.effective_at <= now]
        if not effective:
            return None
        material = [r for r in effective if r.material]
        return material[-1] if material else effective[0]

    def accepted(self, kind: str, version: str | None, now: datetime | None = None) -> bool:
        """Whether having accepted `version` of `kind` is enough at `now`."""
        needed = self.required(kind, now)
        if needed is None:
            return True
        given = self.find(kind, version)
        return given is not None and given.effective_at >= needed.effective_at

    def due(self, terms: str | None, privacy: str | None, now: datetime | None = None) -> list[str]:
        """The kinds whose required version is not covered by the accepted ones."""
        given = {"terms": terms, "privacy": privacy}
        return [kind for kind in KINDS if not self.accepted(kind, given[kind], now)]


BUNDLED = Versions(
    VersionInfo(kind, BUNDLED_VERSION, BUNDLED_EFFECTIVE_AT, material=True) for kind in KINDS
)
_snapshot: Versions = BUNDLED


def versions() -> Versions:
    """This process's snapshot (the bundled versions until the first load)."""
    return _snapshot


async def load(session: AsyncSession) -> Versions:
    """Every version as `session` sees it (its own uncommitted rows included)."""
    rows = await session.execute(
        select(
            PolicyVersion.kind,
            PolicyVersion.version,
            PolicyVersion.effective_at,
            PolicyVersion.material,
        )
    )
    loaded = [
        VersionInfo(kind, version, at, bool(material)) for kind, version, at, material in rows
    ]
    return Versions(loaded) if loaded else BUNDLED


async def refresh(session: AsyncSession) -> Versions:
    """Reload the snapshot from the database; returns it."""
    global _snapshot
    _snapshot = await load(session)
    return _snapshot


async def refresh_after_commit(session: AsyncSession) -> None:
    """Install the versions `session` sees once its transaction commits (nothing if it rolls
    back), so this process applies a publish at once and never one that was undone."""
    after_commit.defer(session, _AFTER_COMMIT, await load(session))


def _install(snapshots: list[Versions]) -> None:
    global _snapshot
    _snapshot = snapshots[-1]


_AFTER_COMMIT = "policy_versions"
after_commit.register(_AFTER_COMMIT, _install)


@dataclass
class Refresher:
    task: asyncio.Task[None]


async def _refresh_forever(sessionmaker: async_sessionmaker[AsyncSession]) -> None:
    while True:
        await asyncio.sleep(REFRESH_SECONDS)
        try:
            async with sessionmaker() as session:
                await refresh(session)
        except Exception:  # the database is away for a moment: keep the last snapshot
            log.warning("policy_versions_refresh_failed", exc_info=True)


async def _open(_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> Refresher:
    try:
        async with sessionmaker() as session:
            await refresh(session)
    except Exception:  # a database not migrated yet (tests of the worker): bundled versions
        log.warning("policy_versions_load_failed", exc_info=True)
    return Refresher(asyncio.create_task(_refresh_forever(sessionmaker)))


async def _close(refresher: Refresher) -> None:
    refresher.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await refresher.task


POLICY_VERSIONS: Resource[Refresher] = Resource("policy_versions")
provide(POLICY_VERSIONS, open=_open, close=_close)
