"""Personal data export: one zip of everything held about a person, built by a job.

`start_export` writes a `DataExport` row (at most one in progress per person, at most
`EXPORTS_PER_DAY` a day) and enqueues `privacy.build_export` after commit. The job claims the
row with a conditional UPDATE (a lease, refreshed after each section), then runs the
registered sections (`privacy.export_sections`) with read-only sessions, no write transaction
open, into `<data dir>/exports/<user>/<id>.<attempt>.part`, renamed to `<id>.zip` when whole (and
only while the claim is still its own). It marks the
row ready (expiring `ARCHIVE_DAYS` later) and tells the person in-app and by email. A lost job
is re-sent by the sweep `data_exports`; an attempt cut short is claimed again once its lease
ends, up to `MAX_ATTEMPTS`.

The periodic step `data_export_expiry` deletes archives past their expiry (the row says
`expired`) and any file under `exports/` that no ready row owns (a purged person's included).
Downloads are the owner's only (404 for anyone else, 410 once expired) and audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.account.models import User
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.config import Settings
from lunogen.db import read_sessionmaker
from lunogen.errors import ConflictError, LunogenError, NotFoundError, TooManyRequestsError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.notification.service import notify
from lunogen.privacy import export_sections  # noqa: F401  registers the sections
from lunogen.privacy.export_archive import Archive, ExportContext, readme, sections
from lunogen.privacy.models import DataExport
from lunogen.worker.broker import JobRuntime, job, runtime
from lunogen.worker.enqueue import enqueue
from lunogen.worker.maintenance import register_periodic
from lunogen.worker.queues import Queue, register_queue
from lunogen.worker.sweeps import register_sweep

log = structlog.get_logger(__name__)

ARCHIVE_DAYS = 7  # a ready archive is downloadable this long, then deleted
EXPORTS_PER_DAY = 3  # started (and not failed) in any 24 hours
RATE_WINDOW = timedelta(hours=24)
LEASE = timedelta(minutes=30)  # a claim lasts this long after its last section
MAX_ATTEMPTS = 3
RESEND_AFTER = timedelta(minutes=2)  # a queued row older than this lost its job
IN_PROGRESS = ("queued", "building")
EXPORTS_DIR = "exports"


class ExportGoneError(LunogenError):
    status_code = 410
    error = "Export expired"


def exports_root(settings: Settings) -> Path:
    return settings.data_dir / EXPORTS_DIR


def archive_path(settings: Settings, row: DataExport) -> Path | None:
    """The archive's absolute path, only if it lies under `exports/` (else None)."""
    if row.path is None:
        return None
    root = exports_root(settings).resolve()
    full = (settings.data_dir / row.path).resolve()
    return full if full.is_relative_to(root) else None


# The person's side ------------------------------------------------------------------------


async def start_export(
    session: AsyncSession, *, principal: Principal, now: datetime | None = None
) -> DataExport:
    """Queue an export of the caller's data. 409 while one is queued or building; 429 after
    `EXPORTS_PER_DAY` in 24 hours (with Retry-After). Audited; the job starts after commit.

    Locks the person's row (PostgreSQL) so that two requests at once cannot both pass the
    checks; SQLite serialises writers anyway."""
    now = now or utcnow()
    user_id = principal.user.id
    await session.execute(select(User.id).where(User.id == user_id).with_for_update())
    busy = await session.execute(
        select(DataExport.id).where(
            DataExport.user_id == user_id, DataExport.status.in_(IN_PROGRESS)
        )
    )
    if busy.first() is not None:
        raise ConflictError(
            "An export of your data is already being prepared; wait for it to finish",
            error="Export in progress",
        )
    recent = list(
        (
            await session.execute(
                select(DataExport.created_at)
                .where(
                    DataExport.user_id == user_id,
                    DataExport.status != "failed",
                    DataExport.created_at > now - RATE_WINDOW,
                )
                .order_by(DataExport.created_at)
            )
        ).scalars()
    )
    if len(recent) >= EXPORTS_PER_DAY:
        wait = max(1, int((recent[0] + RATE_WINDOW - now).total_seconds()) + 1)
        raise TooManyRequestsError(
            f"At most {EXPORTS_PER_DAY} exports a day; try again in {wait} s",
            headers={"Retry-After": str(wait)},
            extra={"retry_after": wait},
        )
    row = DataExport(
        id=new_id(),
        user_id=user_id,
        status="queued",
        created_at=now,
        sections_total=len(sections()),
    )
    session.add(row)
    audit.record(
        session,
        action="privacy.export_requested",
        actor_user_id=user_id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="data_export",
        target_id=row.id,
    )
    await session.flush()
    enqueue(session, build_export, row.id)
    return row


async def list_exports(session: AsyncSession, *, user_id: str, limit: int = 20) -> list[DataExport]:
    """The person's exports, newest first."""
    rows = await session.execute(
        select(DataExport)
        .where(DataExport.user_id == user_id)
        .order_by(DataExport.created_at.desc(), DataExport.id)
        .limit(limit)
    )
    return list(rows.scalars())


async def get_export(session: AsyncSession, *, user_id: str, export_id: str) -> DataExport:
    """One of the person's exports; `404 Export not found` for anyone else's."""
    row = await session.get(DataExport, export_id) if len(export_id) <= 36 else None
    if row is None or row.user_id != user_id:
        raise NotFoundError(error="Export not found")
    return row


async def open_download(
    session: AsyncSession,
    *,
    principal: Principal,
    export_id: str,
    settings: Settings,
    now: datetime | None = None,
) -> tuple[DataExport, Path]:
    """The archive file of one of the caller's ready exports, the download audited
    (`privacy.export_downloaded`) and counted. 404 for anyone else's, 409 while it is built
    or when it failed, 410 once expired."""
    now = now or utcnow()
    row = await get_export(session, user_id=principal.user.id, export_id=export_id)
    if row.status == "expired" or (row.expires_at is not None and row.expires_at <= now):
        raise ExportGoneError("This export has expired and its archive is deleted; start a new one")
    if row.status != "ready":
        raise ConflictError(
            "This export is not ready" + (" (it failed)" if row.status == "failed" else ""),
            error="Export not ready",
        )
    path = archive_path(settings, row)
    if path is None or not await asyncio.to_thread(path.is_file):
        raise ExportGoneError("The archive is no longer on the server; start a new export")
    row.downloads += 1
    row.last_downloaded_at = now
    audit.record(
        session,
        action="privacy.export_downloaded",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="data_export",
        target_id=row.id,
        details={"size": row.size, "sha256": row.sha256},
    )
    return row, path


def download_name(row: DataExport) -> str:
    return f"lunogen-data-{row.created_at:%Y-%m-%d}-{row.id[:8]}.zip"


# The job ----------------------------------------------------------------------------------


async def _claim(
    sessionmaker: async_sessionmaker[AsyncSession], export_id: str, worker: str, total: int
) -> bool:
    now = utcnow()
    claimable = (DataExport.status == "queued") | (
        (DataExport.status == "building") & (DataExport.claim_expires_at <= now)
    )
    async with sessionmaker() as session:
        result = await session.execute(
            update(DataExport)
            .where(DataExport.id == export_id, claimable, DataExport.attempts < MAX_ATTEMPTS)
            .values(
                status="building",
                claimed_worker=worker,
                claim_expires_at=now + LEASE,
                attempts=DataExport.attempts + 1,
                started_at=func.coalesce(DataExport.started_at, now),
                sections_done=0,
                sections_total=total,
                current_section=None,
            )
        )
        claimed = bool(getattr(result, "rowcount", 0))
        if not claimed:  # out of attempts: fail it for good, once
            await session.execute(
                update(DataExport)
                .where(DataExport.id == export_id, claimable)
                .values(
                    status="failed",
                    finished_at=now,
                    claimed_worker=None,
                    claim_expires_at=None,
                    error="The export was interrupted too many times",
                )
            )
        await session.commit()
    return claimed


async def _progress(
    sessionmaker: async_sessionmaker[AsyncSession],
    export_id: str,
    worker: str,
    *,
    done: int,
    current: str | None,
) -> bool:
    """Record progress and extend the lease; False when the claim was lost."""
    async with sessionmaker() as session:
        result = await session.execute(
            update(DataExport)
            .where(
                DataExport.id == export_id,
                DataExport.status == "building",
                DataExport.claimed_worker == worker,
            )
            .values(sections_done=done, current_section=current, claim_expires_at=utcnow() + LEASE)
        )
        await session.commit()
    return bool(getattr(result, "rowcount", 0))


class ClaimLost(Exception):
    """Another attempt took the export over (this one outlived its lease)."""


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return path.stat().st_size, digest.hexdigest()


def _open_archive(part: Path) -> Archive:
    """A new zip at `part`, its folder made first (again, if the expiry step removed it
    as empty in between)."""
    for _ in range(3):
        part.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            return Archive(part)
        except FileNotFoundError:
            continue
    raise FileNotFoundError(f"cannot create {part}")


async def _write_archive(
    rt_sessionmaker: async_sessionmaker[AsyncSession],
    ctx: ExportContext,
    export_id: str,
    worker: str,
    part: Path,
) -> None:
    listed = sections()
    async with ctx.reader() as session:
        user = await session.get(User, ctx.user_id)
        assert user is not None
        email = user.email
    archive = await asyncio.to_thread(_open_archive, part)
    try:
        await archive.write_bytes(
            "README.md", readme(listed, user_email=email, built_at=utcnow()).encode()
        )
        for index, section in enumerate(listed):
            if not await _progress(
                rt_sessionmaker, export_id, worker, done=index, current=section.name
            ):
                raise ClaimLost
            await section.produce(ctx, archive)
    finally:
        await archive.close()


async def build(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    keyring: KeyRing,
    export_id: str,
    *,
    worker: str = "embedded",
) -> str | None:
    """One attempt at building export `export_id`, if it can be claimed; its final status."""
    worker = f"{worker}:{new_id()[:8]}"
    if not await _claim(sessionmaker, export_id, worker, len(sections())):
        return None
    async with sessionmaker() as session:
        row = await session.get(DataExport, export_id)
        assert row is not None
        user_id = row.user_id
    relative = f"{EXPORTS_DIR}/{user_id}/{export_id}.zip"
    final = settings.data_dir / relative
    part = final.with_name(f"{export_id}.{worker.rpartition(':')[2]}.part")  # this attempt's
    ctx = ExportContext(
        user_id=user_id,
        reader=read_sessionmaker(sessionmaker),
        keyring=keyring,
        settings=settings,
    )
    error: str | None = None
    try:
        await _write_archive(sessionmaker, ctx, export_id, worker, part)
        size, sha256 = await asyncio.to_thread(_digest, part)
        total = len(sections())
        if not await _progress(sessionmaker, export_id, worker, done=total, current=None):
            raise ClaimLost  # another attempt took over: its archive is the one to keep
        await asyncio.to_thread(os.replace, part, final)
    except ClaimLost:
        await asyncio.to_thread(part.unlink, missing_ok=True)
        log.warning("data_export_claim_lost", export_id=export_id)
        return None
    except Exception as exc:  # a bug or a full disk: failed, told, never stuck
        log.exception("data_export_failed", export_id=export_id)
        await asyncio.to_thread(part.unlink, missing_ok=True)
        error = f"{type(exc).__name__}: {exc}"[:2000]
    return await _finish(
        sessionmaker,
        settings,
        keyring,
        export_id,
        worker,
        error=error,
        relative=relative,
        digest=None if error else (size, sha256),
    )


async def _finish(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    keyring: KeyRing,
    export_id: str,
    worker: str,
    *,
    error: str | None,
    relative: str,
    digest: tuple[int, str] | None,
) -> str | None:
    now = utcnow()
    async with sessionmaker() as session:
        row = await session.get(DataExport, export_id)
        if row is None or row.status != "building" or row.claimed_worker != worker:
            return None  # the person is gone, or another attempt took over
        user = await session.get(User, row.user_id)
        row.finished_at, row.claimed_worker, row.claim_expires_at = now, None, None
        row.current_section = None
        if error is None and digest is not None:
            row.status, row.path, (row.size, row.sha256) = "ready", relative, digest
            row.sections_done = row.sections_total
            row.expires_at = now + timedelta(days=ARCHIVE_DAYS)
        else:
            row.status, row.error = "failed", "The archive could not be built"
            log.error("data_export_failed_for_good", export_id=export_id, reason=error)
        if user is not None and user.deleted_at is None:
            await _tell(session, settings, keyring, user=user, row=row)
        status = row.status
        await session.commit()
    if status == "failed" and digest is not None:  # written, but not ours to keep
        await asyncio.to_thread((settings.data_dir / relative).unlink, missing_ok=True)
    return status


async def _tell(
    session: AsyncSession, settings: Settings, keyring: KeyRing, *, user: User, row: DataExport
) -> None:
    link = f"{settings.public_url}/settings/export"
    if row.status == "ready":
        assert row.expires_at is not None
        await notify(
            session,
            user=user,
            kind="privacy.export_ready",
            title="Your data export is ready",
            body=f"The archive of your LunoGen data is ready: {link}/{row.id}/download "
            f"(only you can download it, signed in to your account) until "
            f"{row.expires_at:%Y-%m-%d %H:%M} UTC; then it is deleted.",
            dedupe_key=f"export:{row.id}:ready",
            settings=settings,
            keyring=keyring,
        )
    else:
        await notify(
            session,
            user=user,
            kind="privacy.export_failed",
            title="Your data export failed",
            body=f"The archive of your LunoGen data could not be built. Start a new export at "
            f"{link}; if it fails again, contact support.",
            dedupe_key=f"export:{row.id}:failed",
            settings=settings,
            keyring=keyring,
        )


@job("privacy.build_export")
async def build_export(export_id: str) -> None:
    rt = runtime()
    await build(rt.sessionmaker, rt.settings, rt.keyring, export_id, worker=rt.worker_id)


register_queue(
    Queue("data_exports", "Personal data archives being built", DataExport, ("queued", "building"))
)


@register_sweep("data_exports")
async def requeue_exports(
    sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 50
) -> int:
    """Re-send the job of exports queued for a while (their job was lost) or whose builder
    stopped renewing its lease (it died)."""
    now = utcnow()
    async with sessionmaker() as session:
        due = list(
            (
                await session.execute(
                    select(DataExport.id)
                    .where(
                        (
                            (DataExport.status == "queued")
                            & (DataExport.created_at <= now - RESEND_AFTER)
                        )
                        | ((DataExport.status == "building") & (DataExport.claim_expires_at <= now))
                    )
                    .limit(limit)
                )
            ).scalars()
        )
    for export_id in due:
        await build_export.kiq(export_id)
    return len(due)


# Expiry -----------------------------------------------------------------------------------


@dataclass
class ExpiryReport:
    expired: int = 0
    files_removed: int = 0


async def expire_exports(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    now: datetime | None = None,
    batch: int = 200,
) -> ExpiryReport:
    """Mark ready exports past `expires_at` expired and delete their archives; then delete
    every file under `exports/` that no ready or building export owns (an expired one whose
    file outlived a crash, a failed attempt's part file, a purged person's archives).

    `now` is the clock (tests move it). Idempotent: safe in several processes at once."""
    now = now or utcnow()
    report = ExpiryReport()
    async with sessionmaker() as session:
        due = list(
            (
                await session.execute(
                    select(DataExport)
                    .where(DataExport.status == "ready", DataExport.expires_at <= now)
                    .limit(batch)
                )
            ).scalars()
        )
        paths: list[Path] = []
        for row in due:
            path = archive_path(settings, row)
            result = await session.execute(
                update(DataExport)
                .where(DataExport.id == row.id, DataExport.status == "ready")
                .values(status="expired", path=None)
                .execution_options(synchronize_session=False)
            )
            if getattr(result, "rowcount", 0):
                report.expired += 1
                if path is not None:
                    paths.append(path)
        await session.commit()
    for path in paths:  # after the commit: a crash in between leaves a file the next run finds
        if await asyncio.to_thread(_remove, path):
            report.files_removed += 1
    report.files_removed += await remove_orphans(sessionmaker, settings)
    return report


def _remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _files(root: Path) -> list[tuple[str, Path]]:
    """(folder name, file) of every file one level below the user folders of `root`."""
    if not root.is_dir():
        return []
    found: list[tuple[str, Path]] = []
    for folder in root.iterdir():
        if folder.is_dir():
            found.extend((folder.name, item) for item in folder.iterdir())
        else:
            found.append(("", folder))
    return found


async def remove_orphans(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """Delete files under `exports/` that no ready or building export owns, and empty
    folders. Returns how many files went."""
    root = exports_root(settings)
    files = await asyncio.to_thread(_files, root)
    if not files:
        await asyncio.to_thread(_drop_empty_folders, root)
        return 0
    async with read_sessionmaker(sessionmaker)() as session:
        live = {
            (user_id, export_id, status)
            for export_id, user_id, status in (
                await session.execute(
                    select(DataExport.id, DataExport.user_id, DataExport.status).where(
                        DataExport.status.in_(("ready", "building", "queued"))
                    )
                )
            ).all()
        }
    ready = {f"{u}/{i}.zip" for u, i, s in live if s == "ready"}
    in_progress = {(u, i) for u, i, s in live if s in IN_PROGRESS}
    removed = 0
    for folder, path in files:
        if f"{folder}/{path.name}" in ready:
            continue
        if (folder, path.name.partition(".")[0]) in in_progress:
            continue  # being written (a part file), or renamed and about to be marked ready
        if path.is_dir():
            await asyncio.to_thread(shutil.rmtree, path, True)
        elif not await asyncio.to_thread(_remove, path):
            continue
        removed += 1
    await asyncio.to_thread(_drop_empty_folders, root)
    return removed


def _drop_empty_folders(root: Path) -> None:
    if not root.is_dir():
        return
    for folder in root.iterdir():
        if folder.is_dir() and not any(folder.iterdir()):
            with contextlib.suppress(OSError):  # a build put a file in it meanwhile
                folder.rmdir()


async def remove_exports_of(settings: Settings, user_id: str) -> None:
    """Delete every archive of one person at once (for the account purge; the expiry step
    would otherwise do it within the hour)."""
    folder = exports_root(settings) / user_id
    if folder.resolve().parent == exports_root(settings).resolve():
        await asyncio.to_thread(shutil.rmtree, folder, True)


@register_periodic("data_export_expiry", every=3600.0)
async def expire_due(rt: JobRuntime) -> int:
    report = await expire_exports(rt.sessionmaker, rt.settings)
    if report.expired or report.files_removed:
        log.info("data_exports_expired", **vars(report))
    return report.expired
