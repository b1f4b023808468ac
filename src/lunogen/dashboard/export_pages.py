"""Settings → Export: start an archive of your data, follow it, download it while it lasts.

The page calls the service the API calls (`privacy.export`). While an export is queued or
being built, its status block asks again every 2 seconds (htmx, `GET /settings/export/status`,
which answers the block alone) and stops asking once nothing is in progress; without
JavaScript the "Refresh" link does the same.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import FileResponse, RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.auth.dependencies import FullAccess
from lunogen.dashboard.render import render
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError
from lunogen.privacy import export

router = page_router()

OUTCOMES = {"started": "Export started: it appears below, and you are notified when it is ready."}


async def _context(db: AsyncSession, viewer: Viewer) -> dict[str, Any]:
    rows = await export.list_exports(db, user_id=viewer.user.id)
    return {
        "exports": rows,
        "in_progress": any(row.status in export.IN_PROGRESS for row in rows),
        "archive_days": export.ARCHIVE_DAYS,
        "per_day": export.EXPORTS_PER_DAY,
    }


async def _page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    *,
    status_code: int = 200,
    start_error: str | None = None,
) -> Response:
    outcome = OUTCOMES.get(request.query_params.get("outcome", ""))
    return page(
        request,
        viewer,
        "account/export.html",
        section="settings",
        status_code=status_code,
        flash=outcome,
        start_error=start_error,
        **await _context(db, viewer),
    )


@router.get("/settings/export")
async def export_page(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    return await _page(request, viewer, db)


@router.get("/settings/export/status")
async def export_status(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    """The exports block alone, for the page's polling."""
    return render(
        request,
        "account/export_status.html",
        csrf_token=viewer.csrf_token,
        **await _context(db, viewer),
    )


@router.post("/settings/export")
async def start_export(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/account/export`; a refusal (one in progress, the daily limit) shows
    the page again with the reason."""
    try:
        await export.start_export(db, principal=principal)
    except LunogenError as exc:  # refused before writing anything
        return await _page(
            request, viewer, db, status_code=exc.status_code, start_error=exc.message or exc.error
        )
    return RedirectResponse("/settings/export?outcome=started", status_code=303)


@router.get("/settings/export/{export_id}/download")
async def download_export(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession, export_id: str
) -> Response:
    """As `GET /api/v1/account/exports/{id}/download` (the emailed link leads here, through
    the sign-in page when signed out). Anyone else's export is the 404 page."""
    row, path = await export.open_download(
        db, principal=principal, export_id=export_id, settings=request.app.state.settings
    )
    await db.commit()
    return FileResponse(
        path,
        media_type="application/zip",
        filename=export.download_name(row),
        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
    )
