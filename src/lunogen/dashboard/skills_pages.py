"""Skills in the dashboard: the list, a skill with its findings, files and versions; create or
edit a SKILL.md with text files, or upload a zip; approve a flagged version; delete.

The same service calls as the API (`skill.service`, `skill.package`), and, as there, the package
is read and scanned with no transaction open: the scan can take seconds of CPU."""

from __future__ import annotations

from typing import Annotated, Any

import yaml
from fastapi import Form, Query, Request, UploadFile
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.auth.dependencies import SkillsWrite
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError
from lunogen.kit.forms import form_fields
from lunogen.skill import package, service
from lunogen.skill.models import Skill
from lunogen.skill.schemas import SkillStatus
from lunogen.skill.service import ScannedPackage

router = page_router()
FILE_SLOTS = 5  # text files a form edits at once (more: upload a zip)
STARTER = """---
name: my-skill
description: What this skill does and when the agent should use it.
---

# My skill

Steps the agent follows, in plain words.
"""


def _skill_md(front_matter: dict[str, Any], body: str) -> str:
    front = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True).strip()
    return f"---\n{front}\n---\n\n{body.lstrip()}"


def _files_from(form: dict[str, str]) -> dict[str, str]:
    files: dict[str, str] = {}
    for slot in range(FILE_SLOTS):
        path = form.get(f"path_{slot}", "").strip()
        if path:
            files[path] = form.get(f"content_{slot}", "")
    return files


async def _scanned_zip(upload: UploadFile | None) -> ScannedPackage:
    if upload is None or not upload.filename:
        raise package.PackageError("file", "choose a .zip file with a SKILL.md in it")
    data = await upload.read(package.MAX_ZIP_BYTES + 1)
    if len(data) > package.MAX_ZIP_BYTES:
        raise package.UploadTooLargeError(f"the zip must be at most {package.MAX_ZIP_BYTES} bytes")
    return await service.scan(package.from_zip(data))


def _editor(
    request: Request,
    viewer: Viewer,
    *,
    skill: Skill | None,
    skill_md: str,
    files: dict[str, str],
    error: str | None = None,
    status_code: int = 200,
    binary: list[str] | None = None,
) -> Response:
    slots = [*files.items(), *[("", "")] * max(FILE_SLOTS - len(files), 0)][:FILE_SLOTS]
    return page(
        request,
        viewer,
        "skills/edit.html",
        section="skills",
        skill=skill,
        skill_md=skill_md,
        slots=list(enumerate(slots)),
        error=error,
        status_code=status_code,
        binary=binary or [],
        max_zip=package.MAX_ZIP_BYTES,
    )


async def _refused(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    exc: LunogenError,
    *,
    skill: Skill | None,
    skill_md: str,
    files: dict[str, str],
    binary: list[str] | None = None,
) -> Response:
    """The editor again, with why the package was refused; nothing of it was stored."""
    await db.rollback()
    return _editor(
        request,
        viewer,
        skill=skill,
        skill_md=skill_md,
        files=files,
        binary=binary,
        error=exc.message or exc.error,
        status_code=exc.status_code,
    )


@router.get("/skills")
async def skill_list(
    request: Request,
    viewer: SignedIn,
    db: DbSession,
    status: Annotated[SkillStatus | None, Query()] = None,
) -> Response:
    skills, total = await service.list_skills(
        db, owner_id=viewer.user.id, status=status, limit=200, offset=0
    )
    return page(
        request,
        viewer,
        "skills/list.html",
        section="skills",
        skills=skills,
        total=total,
        status=status.value if status else "",
        statuses=[s.value for s in SkillStatus],
    )


@router.get("/skills/new")
async def new_skill(request: Request, viewer: SignedIn) -> Response:
    return _editor(request, viewer, skill=None, skill_md=STARTER, files={})


@router.post("/skills/new")
async def create_skill(
    request: Request, viewer: SignedIn, principal: SkillsWrite, db: DbSession
) -> Response:
    form = await form_fields(request)
    skill_md, files = form.get("skill_md", ""), _files_from(form)
    await db.commit()  # nothing held while the package is scanned
    try:
        scanned = await service.scan(package.from_json(skill_md, files))
        skill = await service.create_skill(db, principal=principal, scanned=scanned)
    except LunogenError as exc:
        return await _refused(request, viewer, db, exc, skill=None, skill_md=skill_md, files=files)
    return RedirectResponse(f"/skills/{skill.id}", status_code=303)


@router.post("/skills/upload")
async def upload_skill(
    request: Request,
    viewer: SignedIn,
    principal: SkillsWrite,
    db: DbSession,
    file: Annotated[UploadFile | None, Form()] = None,
) -> Response:
    await db.commit()
    try:
        scanned = await _scanned_zip(file)
        skill = await service.create_skill(db, principal=principal, scanned=scanned)
    except LunogenError as exc:
        return await _refused(request, viewer, db, exc, skill=None, skill_md=STARTER, files={})
    return RedirectResponse(f"/skills/{skill.id}", status_code=303)


@router.get("/skills/{skill_id}")
async def skill_page(skill_id: str, request: Request, viewer: SignedIn, db: DbSession) -> Response:
    skill = await service.get_skill(db, owner_id=viewer.user.id, skill_id=skill_id)
    version = await service.current_version(db, skill)
    return page(
        request,
        viewer,
        "skills/skill.html",
        section="skills",
        skill=skill,
        version=version,
        skill_md=_skill_md(version.front_matter, version.body),
        files=await service.file_sizes(db, version_id=version.id),
        versions=await service.list_versions(db, skill_id=skill.id),
        agents=await service.agents_using(db, owner_id=viewer.user.id, skill_id=skill.id),
        outcome=request.query_params.get("outcome", ""),
    )


@router.get("/skills/{skill_id}/edit")
async def edit_skill(skill_id: str, request: Request, viewer: SignedIn, db: DbSession) -> Response:
    skill = await service.get_skill(db, owner_id=viewer.user.id, skill_id=skill_id)
    version = await service.current_version(db, skill)
    texts, binary = await service.file_texts(db, version_id=version.id)
    return _editor(
        request,
        viewer,
        skill=skill,
        skill_md=_skill_md(version.front_matter, version.body),
        files=texts,
        binary=binary,
    )


@router.post("/skills/{skill_id}/edit")
async def save_skill(
    skill_id: str, request: Request, viewer: SignedIn, principal: SkillsWrite, db: DbSession
) -> Response:
    skill = await service.get_skill(db, owner_id=viewer.user.id, skill_id=skill_id)
    form = await form_fields(request)
    skill_md, files = form.get("skill_md", ""), _files_from(form)
    await db.commit()
    try:
        scanned = await service.scan(package.from_json(skill_md, files))
        await service.update_skill(db, principal=principal, skill_id=skill.id, scanned=scanned)
    except LunogenError as exc:
        return await _refused(request, viewer, db, exc, skill=skill, skill_md=skill_md, files=files)
    return RedirectResponse(f"/skills/{skill.id}?outcome=saved", status_code=303)


@router.post("/skills/{skill_id}/upload")
async def upload_version(
    skill_id: str,
    request: Request,
    viewer: SignedIn,
    principal: SkillsWrite,
    db: DbSession,
    file: Annotated[UploadFile | None, Form()] = None,
) -> Response:
    skill = await service.get_skill(db, owner_id=viewer.user.id, skill_id=skill_id)
    await db.commit()
    try:
        scanned = await _scanned_zip(file)
        await service.update_skill(db, principal=principal, skill_id=skill.id, scanned=scanned)
    except LunogenError as exc:
        await db.rollback()
        version = await service.current_version(db, skill)
        texts, binary = await service.file_texts(db, version_id=version.id)
        current = _skill_md(version.front_matter, version.body)
        return await _refused(
            request, viewer, db, exc, skill=skill, skill_md=current, files=texts, binary=binary
        )
    return RedirectResponse(f"/skills/{skill.id}?outcome=saved", status_code=303)


@router.post("/skills/{skill_id}/approve")
async def approve(
    skill_id: str,
    principal: SkillsWrite,
    db: DbSession,
    version: Annotated[int, Form(ge=1)],
) -> Response:
    skill = await service.approve_skill(db, principal=principal, skill_id=skill_id, version=version)
    return RedirectResponse(f"/skills/{skill.id}?outcome=approved", status_code=303)


@router.post("/skills/{skill_id}/delete")
async def delete(skill_id: str, principal: SkillsWrite, db: DbSession) -> Response:
    await service.delete_skill(db, principal=principal, skill_id=skill_id)
    return RedirectResponse("/skills?outcome=deleted", status_code=303)
