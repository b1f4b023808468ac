"""Personal data export over the API: start one, watch its progress, download the archive.

Every route needs full access (a browser session, or an API key with the `full` scope): the
archive holds everything about the person, more than any narrower scope may read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from lunogen.auth.dependencies import FullAccess
from lunogen.config import Settings
from lunogen.db import DbSession
from lunogen.errors import error_responses
from lunogen.privacy import export
from lunogen.privacy.models import DataExport

router = APIRouter(prefix="/api/v1/account", tags=["account"])

Status = Literal["queued", "building", "ready", "failed", "expired"]


class DataExportOut(BaseModel):
    id: str
    status: Status = Field(description="queued → building → ready → expired, or failed.")
    sections_done: int = Field(description="Sections of the archive written so far.")
    sections_total: int
    current_section: str | None = Field(description="The section being written, if building.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None = Field(
        description="When the archive is deleted (7 days after it was built)."
    )
    size: int | None = Field(description="The archive's size in bytes, once ready.")
    sha256: str | None = Field(description="The archive's SHA-256, once ready.")
    error: str | None
    downloads: int
    download_url: str | None = Field(description="Where to download it, while ready.")


class DataExportList(BaseModel):
    data: list[DataExportOut]


def export_out(row: DataExport) -> DataExportOut:
    return DataExportOut(
        id=row.id,
        status=row.status,
        sections_done=row.sections_done,
        sections_total=row.sections_total,
        current_section=row.current_section,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        expires_at=row.expires_at,
        size=row.size,
        sha256=row.sha256,
        error=row.error,
        downloads=row.downloads,
        download_url=f"/api/v1/account/exports/{row.id}/download"
        if row.status == "ready"
        else None,
    )


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.post(
    "/export", status_code=202, response_model=DataExportOut, responses=error_responses(409)
)
async def start_export(principal: FullAccess, db: DbSession) -> DataExportOut:
    """Start building an archive of everything LunoGen holds about you: profile, consents,
    agents and their configuration (secrets only as configured), channels, skills with their
    files, conversations (decrypted), memory notes, logs, usage, ledger, notifications and
    your security log, as JSON files with a README. Follow its progress with
    `GET /api/v1/account/exports/{id}`; when ready you are notified in-app and by email, and
    can download it for 7 days. 409 while another export is in progress; 429 after 3 in 24
    hours. Scope: full access; audited."""
    row = await export.start_export(db, principal=principal)
    return export_out(row)


@router.get("/exports", response_model=DataExportList)
async def list_exports(principal: FullAccess, db: DbSession) -> DataExportList:
    """Your last 20 exports, newest first, with their progress and expiry."""
    rows = await export.list_exports(db, user_id=principal.user.id)
    return DataExportList(data=[export_out(row) for row in rows])


@router.get("/exports/{export_id}", response_model=DataExportOut)
async def get_export(export_id: str, principal: FullAccess, db: DbSession) -> DataExportOut:
    """One of your exports: its status and progress (sections done of the total)."""
    row = await export.get_export(db, user_id=principal.user.id, export_id=export_id)
    return export_out(row)


@router.get(
    "/exports/{export_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "The archive (a zip)."},
        409: {"description": "Not ready yet, or failed."},
        410: {"description": "Expired: the archive is deleted."},
    },
)
async def download_export(
    export_id: str, request: Request, principal: FullAccess, db: DbSession
) -> FileResponse:
    """Download a ready export's zip (yours only). Audited as `privacy.export_downloaded`.
    410 once it has expired (7 days after it was built)."""
    row, path = await export.open_download(
        db, principal=principal, export_id=export_id, settings=_settings(request)
    )
    await db.commit()  # the audit row is written before the first byte goes out
    return FileResponse(
        path,
        media_type="application/zip",
        filename=export.download_name(row),
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
