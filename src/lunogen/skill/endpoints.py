"""The skills API (owners). Admins review and block skills through `admin.skills_endpoints`."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import Response

from lunogen.auth.dependencies import SkillsRead, SkillsWrite
from lunogen.db import DbSession
from lunogen.errors import BadRequestError, LunogenError, body_too_large, error_responses
from lunogen.kit.pagination import Page, PageParams, page_params
from lunogen.skill import package, schemas, service
from lunogen.skill.views import detail_out, summary_out, version_info

router = APIRouter(prefix="/api/v1/skills", tags=["skills"])

MAX_JSON_BYTES = 8 * 1024 * 1024  # JSON-escaped text of a package at the size limit
_MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the zip
MAX_MULTIPART_BYTES = package.MAX_ZIP_BYTES + _MULTIPART_SLACK
# The create and update routes' cap in BodyLimitMiddleware (app.py), above the default one.
MAX_BODY_BYTES = max(MAX_JSON_BYTES, MAX_MULTIPART_BYTES)

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No skill with this id is visible to you",
        "content": {"application/json": {"example": {"error": "Skill not found"}}},
    }
}

_PACKAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": schemas.SkillIn.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "A zip with SKILL.md at its root or in one top "
                            f"folder; at most {package.MAX_ZIP_BYTES} bytes",
                        }
                    },
                }
            },
        },
    }
}


class UnsupportedMediaTypeError(LunogenError):
    status_code = 415
    error = "Unsupported media type"


async def _read_capped(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes `limit` (before reading it all)."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared[:19]) > limit:
        raise body_too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise body_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def _zip_bytes(request: Request) -> bytes:
    try:
        raw = await _read_capped(request, MAX_MULTIPART_BYTES)
    except RuntimeError:  # the form was parsed already (a browser session's CSRF field)
        form = await request.form()
    else:

        async def replay() -> AsyncGenerator[bytes, None]:
            yield raw
            yield b""

        try:
            form = await MultiPartParser(
                request.headers, replay(), max_files=1, max_fields=10
            ).parse()
        except MultiPartException as exc:
            raise BadRequestError(f"Malformed multipart body: {exc.message}") from exc
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise package.PackageError("file", "send the zip as the form field 'file'")
        data = await upload.read(package.MAX_ZIP_BYTES + 1)
    finally:
        await form.close()
    if len(data) > package.MAX_ZIP_BYTES:
        raise package.UploadTooLargeError(f"the zip must be at most {package.MAX_ZIP_BYTES} bytes")
    return data


async def _read_package(request: Request) -> package.ParsedSkill:
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        return package.from_zip(await _zip_bytes(request))
    if not content_type.startswith("application/json"):
        raise UnsupportedMediaTypeError(
            "Send the skill as application/json ({skill_md, files}) or as multipart/form-data "
            "with a zip in the field 'file'"
        )
    raw = await _read_capped(request, MAX_JSON_BYTES)
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BadRequestError("Malformed JSON body", error="Invalid JSON") from exc
    try:
        body = schemas.SkillIn.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from exc
    return package.from_json(body.skill_md, body.files)


async def _receive_and_scan(request: Request, db: DbSession) -> service.ScannedPackage:
    """Read, parse and scan the package with no transaction open: the upload and the scan
    take seconds, and the authentication's transaction (on SQLite, the write lock) must not
    wait for them. The write that follows opens a short transaction of its own."""
    await db.commit()
    return await service.scan(await _read_package(request))


StatusFilter = Annotated[
    schemas.SkillStatus | None, Query(description="Only skills in this status")
]


@router.get("", response_model=Page[schemas.SkillSummary])
async def list_skills(
    principal: SkillsRead,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    status: StatusFilter = None,
) -> Page[schemas.SkillSummary]:
    """Your skills, newest first. Scope: `skills:read`."""
    skills, total = await service.list_skills(
        db, owner_id=principal.user.id, status=status, limit=page.limit, offset=page.offset
    )
    return Page(data=[summary_out(s) for s in skills], total=total, **page.model_dump())


@router.post(
    "",
    status_code=201,
    response_model=schemas.Skill,
    openapi_extra=_PACKAGE_BODY,
    responses=error_responses(409, 413, 415),
)
async def create_skill(request: Request, principal: SkillsWrite, db: DbSession) -> schemas.Skill:
    """Create a skill from a SKILL.md package. Scope: `skills:write`.

    Send JSON `{"skill_md": "...", "files": {"scripts/x.py": "<text>"}}`, or a zip as the
    multipart form field `file` (SKILL.md at its root or in one top folder; binary assets
    only this way). Front matter keys: `name` (lowercase letters, digits, single hyphens; 1-64;
    unique among your skills), `description` (1-1024), optional `license`, `compatibility`,
    `metadata` (string map), `allowed-tools`; any other key is refused. Files live under
    `scripts/`, `references/` or `assets/`. Limits: 100 files, 2 MiB a file, 5 MiB in all,
    5 MiB zip; a request body of at most 8 MiB as JSON, or the zip plus 64 KiB as a form
    (413 beyond). The package is scanned: with findings the skill is `flagged` and no agent
    can deploy with it until you approve it (`POST /api/v1/skills/{id}/approve`).
    """
    scanned = await _receive_and_scan(request, db)
    skill = await service.create_skill(db, principal=principal, scanned=scanned)
    return await detail_out(db, skill)


@router.get("/{skill_id}", response_model=schemas.Skill, responses=NOT_FOUND)
async def get_skill(skill_id: str, principal: SkillsRead, db: DbSession) -> schemas.Skill:
    """One of your skills with its current body, files (paths and sizes), scanner findings and
    stored versions. Scope: `skills:read`."""
    skill = await service.get_skill(db, owner_id=principal.user.id, skill_id=skill_id)
    return await detail_out(db, skill)


@router.put(
    "/{skill_id}",
    response_model=schemas.Skill,
    openapi_extra=_PACKAGE_BODY,
    responses={**NOT_FOUND, **error_responses(409, 413, 415)},
)
async def update_skill(
    skill_id: str, request: Request, principal: SkillsWrite, db: DbSession
) -> schemas.Skill:
    """Replace the skill's package (same inputs as create): a new version, scanned again.
    Scope: `skills:write`.

    An approval covers only the version it approved: a new version with findings is `flagged`
    again. A blocked skill stays blocked. Sending the current package again changes nothing.
    """
    scanned = await _receive_and_scan(request, db)
    skill = await service.update_skill(db, principal=principal, skill_id=skill_id, scanned=scanned)
    return await detail_out(db, skill)


@router.delete(
    "/{skill_id}",
    status_code=204,
    responses={**NOT_FOUND, **error_responses(409)},
)
async def delete_skill(skill_id: str, principal: SkillsWrite, db: DbSession) -> Response:
    """Delete the skill and all its versions. Scope: `skills:write`.

    Refused with 409 (naming them in `agents`) while any of your agents lists it in `skills`.
    """
    await service.delete_skill(db, principal=principal, skill_id=skill_id)
    return Response(status_code=204)


@router.get(
    "/{skill_id}/versions", response_model=list[schemas.SkillVersionInfo], responses=NOT_FOUND
)
async def list_skill_versions(
    skill_id: str, principal: SkillsRead, db: DbSession
) -> list[schemas.SkillVersionInfo]:
    """The skill's stored versions, newest first (the newest 20 are kept). Scope:
    `skills:read`."""
    skill = await service.get_skill(db, owner_id=principal.user.id, skill_id=skill_id)
    return [version_info(v) for v in await service.list_versions(db, skill_id=skill.id)]


@router.post(
    "/{skill_id}/approve",
    response_model=schemas.Skill,
    responses={**NOT_FOUND, **error_responses(409)},
)
async def approve_skill(
    skill_id: str,
    principal: SkillsWrite,
    db: DbSession,
    data: schemas.SkillApprove | None = None,
) -> schemas.Skill:
    """Approve a `flagged` skill's findings, for its current version only. Scope:
    `skills:write`.

    Send `{"version": n}` to make sure you approve the version you reviewed. A later update
    is scanned again and needs a new approval. A clean, approved or blocked skill answers 409.
    """
    skill = await service.approve_skill(
        db, principal=principal, skill_id=skill_id, version=data.version if data else None
    )
    return await detail_out(db, skill)
