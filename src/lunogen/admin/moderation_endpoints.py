"""Moderation API: the admins' rules and flag queue, and an owner's appeal of a suspension.

`/api/v1/admin/moderation/...` is for admins only (anyone else: 403). Listing flags (other
owners' agents and addresses) and reading a flag's evidence are audited as `admin.viewed`;
every change is audited too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from lunogen.admin import suspension
from lunogen.auth.dependencies import Admin, FullAccess
from lunogen.db import DbSession
from lunogen.errors import error_responses
from lunogen.kit.effects import Effects
from lunogen.kit.pagination import Page, PageParams, page_params
from lunogen.moderation import rule_service, service
from lunogen.moderation.schemas import (
    AppealIn,
    AppealOut,
    CheckOut,
    ChecksOut,
    FlagDetail,
    FlagOut,
    ReviewIn,
    RuleIn,
    RuleOut,
)

router = APIRouter(prefix="/api/v1/admin/moderation", tags=["admin"])
appeal_router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

_FLAG_404: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No flag has this id",
        "content": {"application/json": {"example": {"error": "Flag not found"}}},
    }
}
_RULE_404: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No rule has this id",
        "content": {"application/json": {"example": {"error": "Rule not found"}}},
    }
}
FAILED_SHOWN = 50


@router.get("/rules", response_model=list[RuleOut])
async def list_rules(principal: Admin, db: DbSession) -> list[RuleOut]:
    """Every rule, oldest first."""
    return [RuleOut.of(rule) for rule in await rule_service.list_rules(db)]


@router.post("/rules", response_model=RuleOut, status_code=201, responses=error_responses(409))
async def create_rule(data: RuleIn, principal: Admin, db: DbSession) -> RuleOut:
    """Add a rule; it applies to the next turn of every agent (other server processes within
    `LUNOGEN_MODERATION_RULES_REFRESH_SECONDS`). 422 names what is wrong with a pattern (invalid,
    too long, back-references, nested quantifiers that could backtrack for ever, or matching
    an empty text); 409 for a duplicate. Audited (`moderation.rule_created`)."""
    rule = await rule_service.create_rule(
        db,
        admin=principal,
        kind=data.kind,
        value=data.value,
        direction=data.direction,
        action=data.action,
        note=data.note,
    )
    return RuleOut.of(rule)


@router.delete("/rules/{rule_id}", status_code=204, responses=_RULE_404)
async def delete_rule(rule_id: str, principal: Admin, db: DbSession) -> Response:
    """Delete a rule. Flags it raised stay, naming its id. Audited (`moderation.rule_deleted`)."""
    await rule_service.delete_rule(db, admin=principal, rule_id=rule_id)
    return Response(status_code=204)


@router.get("/flags", response_model=Page[FlagOut])
async def list_flags(
    principal: Admin,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    status: Annotated[Literal["open", "dismissed", "upheld"] | None, Query()] = None,
    direction: Annotated[Literal["inbound", "outbound"] | None, Query()] = None,
    source: Annotated[Literal["rule", "classifier"] | None, Query()] = None,
    agent_id: Annotated[str | None, Query(max_length=36)] = None,
) -> Page[FlagOut]:
    """Flags of every owner's agents, newest first, filtered. No flagged text here: read it on
    one flag. The read is audited (`admin.viewed`)."""
    rows, total = await service.list_flags(
        db,
        status=status,
        direction=direction,
        source=source,
        agent_id=agent_id,
        limit=page.limit,
        offset=page.offset,
    )
    suspension.record_view(
        db,
        actor=principal.user,
        client=principal.client,
        actor_key_id=principal.key_id,
        target_type="moderation_flags",
        target_id=None,
        subject_user_id=None,
        details={"status": status, "agent_id": agent_id, "results": total},
    )
    return Page(data=[FlagOut.of(row) for row in rows], total=total, **page.model_dump())


@router.get("/flags/{flag_id}", response_model=FlagDetail, responses=_FLAG_404)
async def get_flag(flag_id: str, request: Request, principal: Admin, db: DbSession) -> FlagDetail:
    """One flag with its evidence, the flagged text decrypted. Audited (`admin.viewed`, with the
    agent's owner as subject)."""
    row = await service.get_flag(db, flag_id=flag_id)
    text = service.read_evidence(
        db,
        actor=principal.user,
        client=principal.client,
        actor_key_id=principal.key_id,
        row=row,
        keyring=request.app.state.keyring,
    )
    return FlagDetail(**FlagOut.of(row).model_dump(), evidence=text)


async def _review(
    db: DbSession,
    principal: Admin,
    flag_id: str,
    decision: Literal["dismissed", "upheld"],
    note: str,
) -> FlagOut:
    row = await service.review(db, admin=principal, flag_id=flag_id, decision=decision, note=note)
    return FlagOut.of(row)


@router.post(
    "/flags/{flag_id}/dismiss",
    response_model=FlagOut,
    responses={**_FLAG_404, **error_responses(409)},
)
async def dismiss_flag(flag_id: str, data: ReviewIn, principal: Admin, db: DbSession) -> FlagOut:
    """Dismiss an open flag: it no longer counts toward the suspension threshold. A suspension
    it contributed to stays until the agent is reinstated. 409 once reviewed."""
    return await _review(db, principal, flag_id, "dismissed", data.note)


@router.post(
    "/flags/{flag_id}/uphold",
    response_model=FlagOut,
    responses={**_FLAG_404, **error_responses(409)},
)
async def uphold_flag(flag_id: str, data: ReviewIn, principal: Admin, db: DbSession) -> FlagOut:
    """Uphold an open flag: it keeps counting toward the threshold within its window. 409 once
    reviewed."""
    return await _review(db, principal, flag_id, "upheld", data.note)


@router.get("/checks", response_model=ChecksOut)
async def classifier_checks(principal: Admin, db: DbSession) -> ChecksOut:
    """The classifier's checks by status, and the latest that gave up (with their last
    error): messages the classifier could not judge, which were answered all the same."""
    counts = await service.check_counts(db)
    failed = await service.failed_checks(db, limit=FAILED_SHOWN)
    return ChecksOut(counts=counts, failed=[CheckOut.of(check) for check in failed])


@appeal_router.post(
    "/{agent_id}/appeal",
    response_model=AppealOut,
    status_code=201,
    responses={
        404: {"description": "No agent of yours has this id"},
        **error_responses(409),
    },
)
async def appeal_suspension(
    agent_id: str, data: AppealIn, request: Request, principal: FullAccess, db: DbSession
) -> AppealOut:
    """Appeal the suspension of your agent: opens a support ticket naming the agent and the
    reason, with your text; support answers in it and you are emailed each reply. 409 when the
    agent is not suspended, or when this suspension was already appealed (the body names the
    ticket)."""
    effects = Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)
    ticket = await service.appeal(
        db, effects, principal=principal, agent_id=agent_id, text=data.text
    )
    return AppealOut(ticket_id=ticket.id)
