"""Your privacy requests: object to a use of your data, ask about it, or ask for a correction.
Support handles each one and emails you whenever its status changes. Account-level: a browser
session, or a key with `full`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from lunogen.admin import privacy_requests as requests
from lunogen.admin.schemas import PrivacyRequestIn, PrivacyRequestOut, request_fields
from lunogen.auth.dependencies import FullAccess
from lunogen.db import DbSession
from lunogen.kit.effects import Effects
from lunogen.kit.pagination import Page, PageParams, page_params

router = APIRouter(prefix="/api/v1/privacy/requests", tags=["privacy"])


@router.post("", response_model=PrivacyRequestOut, status_code=201)
async def file_privacy_request(
    data: PrivacyRequestIn, request: Request, principal: FullAccess, db: DbSession
) -> PrivacyRequestOut:
    """File a privacy request. `kind`: `objection` (to a use of your data), `access_question`
    (about what we hold and why), `correction`, or `other`. You get an email receipt, and an
    email at every status change with our response."""
    effects = Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)
    row = await requests.create_request(
        db, effects, principal=principal, kind=data.kind, body=data.body
    )
    return PrivacyRequestOut(**request_fields(row, effects.keyring))


@router.get("", response_model=Page[PrivacyRequestOut])
async def list_privacy_requests(
    request: Request,
    principal: FullAccess,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[PrivacyRequestOut]:
    """Your privacy requests, newest first."""
    found, total = await requests.list_own_requests(
        db, user_id=principal.user.id, limit=page.limit, offset=page.offset
    )
    keyring = request.app.state.keyring
    return Page(
        data=[PrivacyRequestOut(**request_fields(row, keyring)) for row in found],
        total=total,
        **page.model_dump(),
    )


@router.get(
    "/{request_id}",
    response_model=PrivacyRequestOut,
    responses={404: {"description": "No such privacy request of yours"}},
)
async def get_privacy_request(
    request_id: str, request: Request, principal: FullAccess, db: DbSession
) -> PrivacyRequestOut:
    """One of your privacy requests, with our response once there is one."""
    row = await requests.get_own_request(db, user_id=principal.user.id, request_id=request_id)
    return PrivacyRequestOut(**request_fields(row, request.app.state.keyring))
