"""The Terms and the Privacy Policy as pages: every version (public), the admin's list and
publish form (`/admin/policies`), and closing the account instead of accepting a change.

The admin pages answer anyone else with the 404 page (`viewer.require_role("admin")`, resolved
before the form's CSRF check). Publishing calls the service the admin API and the CLI call
(`privacy.documents.publish`), audited there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from lunogen.account.models import User
from lunogen.auth.dependencies import FullAccess, SetupFullAccess
from lunogen.dashboard.render import render
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow
from lunogen.privacy import deletion, documents
from lunogen.privacy.policy import KINDS, TITLES

router = page_router()

OUTCOMES = {
    "published": "Published.",
    "published-material": "Published: the notices are on their way.",
}


async def _console_viewer(viewer: SignedIn) -> Viewer:
    viewer.require_role("admin")
    return viewer


ConsoleViewer = Annotated[Viewer, Depends(_console_viewer)]


async def _version_list(request: Request, db: DbSession, kind: str) -> Response:
    versions = await documents.list_versions(db, kind=kind)
    current, _upcoming = await documents.current_and_upcoming(db, kind=kind)
    return render(
        request,
        "policy/versions.html",
        kind=kind,
        title=TITLES[kind],
        versions=list(reversed(versions)),
        current=current,
    )


async def _version_page(request: Request, db: DbSession, kind: str, version: str) -> Response:
    document = await documents.get_version(db, kind=kind, version=version)
    return render(
        request,
        "policy.html",
        title=document.title,
        document=document,
        html=documents.render_html(document.text),
        upcoming=[],
        archive=True,
    )


Version = Annotated[str, Path(max_length=40)]


@router.get("/terms/versions")
async def terms_versions(request: Request, db: DbSession) -> Response:
    return await _version_list(request, db, "terms")


@router.get("/privacy/versions")
async def privacy_versions(request: Request, db: DbSession) -> Response:
    return await _version_list(request, db, "privacy")


@router.get("/terms/versions/{version}")
async def terms_version(request: Request, version: Version, db: DbSession) -> Response:
    return await _version_page(request, db, "terms", version)


@router.get("/privacy/versions/{version}")
async def privacy_version(request: Request, version: Version, db: DbSession) -> Response:
    return await _version_page(request, db, "privacy", version)


async def notice_context(db: DbSession, user: User) -> list[tuple[documents.Document, str]]:
    """The changed documents `user` has not accepted: each version in effect and its HTML."""
    changed = []
    for kind in documents.due_documents(user):
        current, _upcoming = await documents.current_and_upcoming(db, kind=kind)
        changed.append((current, documents.render_html(current.text, heading_shift=1)))
    return changed


@router.post("/onboarding/close")
async def close_instead(request: Request, principal: SetupFullAccess, db: DbSession) -> Response:
    """Not accepting a changed document: withdraw consent by closing the account (the deletion
    flow, cancellable until the purge), from the notice page."""
    form = await request.form()
    password = form.get("password")
    try:
        await db.commit()  # end the authenticator's transaction before argon2
        await deletion.delete_account(
            db,
            principal=principal,
            password=password if isinstance(password, str) else None,
            effects=Effects(settings=request.app.state.settings, keyring=request.app.state.keyring),
        )
    except LunogenError as exc:
        # Drawn before the rollback, while the account's row is loaded; nothing was changed.
        response = render(
            request,
            "onboarding.html",
            status_code=exc.status_code,
            user=principal.user,
            csrf_token=principal.auth_session.csrf_token if principal.auth_session else "",
            changed=await notice_context(db, principal.user),
            close_error=exc.message or exc.error,
        )
        await db.rollback()
        return response
    return RedirectResponse("/login?deleted=1", status_code=303)


async def _admin_page(
    request: Request,
    viewer: Viewer,
    db: DbSession,
    *,
    status_code: int = 200,
    error: str | None = None,
    chosen: dict[str, Any] | None = None,
) -> Response:
    tomorrow = (utcnow() + timedelta(days=1)).date().isoformat()
    return page(
        request,
        viewer,
        "policy/admin.html",
        section="admin",
        status_code=status_code,
        versions=await documents.all_versions(db),
        titles=TITLES,
        kinds=KINDS,
        publish_error=error,
        chosen=chosen or {"kind": "privacy", "effective": tomorrow, "material": True},
        flash=OUTCOMES.get(request.query_params.get("outcome", "")),
    )


@router.get("/admin/policies")
async def admin_policies(request: Request, viewer: ConsoleViewer, db: DbSession) -> Response:
    return await _admin_page(request, viewer, db)


@router.post("/admin/policies")
async def admin_publish(
    request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """The publish form: as `POST /api/v1/admin/policies`."""
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    effective = fields.get("effective", "").strip()[:40]
    material = fields.get("material") == "true"
    kind = fields.get("kind", "")
    version = fields.get("version", "").strip()[:40]
    summary = fields.get("summary", "")[:2000]
    chosen: dict[str, Any] = {
        "kind": kind,
        "version": version,
        "effective": effective,
        "material": material,
        "summary": summary,
        "text": fields.get("text", "")[: documents.MAX_TEXT_CHARS],
    }
    try:
        await documents.publish(
            db,
            data=documents.Publication(
                kind=kind,
                version=version or effective[:10],
                effective=effective,
                material=material,
                text=fields.get("text", ""),
                summary=summary,
            ),
            actor_user_id=principal.user.id,
            client=principal.client,
        )
    except LunogenError as exc:
        # Drawn before the rollback, while the viewer's rows are loaded; nothing was written.
        response = await _admin_page(
            request,
            viewer,
            db,
            status_code=exc.status_code,
            error=exc.message or exc.error,
            chosen=chosen,
        )
        await db.rollback()
        return response
    outcome = "published-material" if material else "published"
    return RedirectResponse(f"/admin/policies?outcome={outcome}", status_code=303)
