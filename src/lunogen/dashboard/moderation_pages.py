"""The admin console's moderation queue (flags to review, the rules, the classifier's state) and
an owner's appeal page for a suspended agent.

Console pages are for admins only (`ConsoleViewer`: anyone else, GET or POST, gets the 404
page). They call the services the moderation API calls; listing the queue and reading a flag's
evidence are audited as `admin.viewed`, like the API. The appeal page is the owner's: another
owner's agent is the 404 page.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.responses import Response

from lunogen.admin import suspension
from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import FullAccess
from lunogen.auth.principal import Principal
from lunogen.dashboard.account_pages import page_number
from lunogen.dashboard.admin_pages import (
    PAGE_SIZE,
    ConsoleViewer,
    _effects,
    _pager,
    _pages,
)
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError
from lunogen.kit.forms import form_fields
from lunogen.kit.web import ClientInfo
from lunogen.moderation import rule_service, service
from lunogen.moderation.schemas import AppealIn, RuleIn

router = page_router()

OUTCOMES = {
    "dismissed": "Flag dismissed: it no longer counts toward the suspension threshold.",
    "upheld": "Flag upheld: it keeps counting toward the threshold within its window.",
    "rule-added": "Rule added: it applies to the next message of every agent.",
    "rule-deleted": "Rule deleted.",
}
FILTERS = {
    "status": ("open", "dismissed", "upheld"),
    "direction": ("inbound", "outbound"),
    "source": ("rule", "classifier"),
}


def _flash(request: Request) -> str | None:
    return OUTCOMES.get(request.query_params.get("outcome", ""))


def _choice(value: str, name: str) -> str:
    return value if value in FILTERS[name] else ""


@router.get("/admin/moderation")
async def moderation_queue(
    request: Request,
    viewer: ConsoleViewer,
    db: DbSession,
    status: Annotated[str, Query(max_length=20)] = "open",
    direction: Annotated[str, Query(max_length=20)] = "",
    source: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    """The flags to review (open ones first by default), newest first; audited."""
    status, direction, source = (
        _choice(status, "status"),
        _choice(direction, "direction"),
        _choice(source, "source"),
    )
    number = page_number(request.query_params.get("page"))
    rows, total = await service.list_flags(
        db,
        status=status or None,
        direction=direction or None,
        source=source or None,
        agent_id=None,
        limit=PAGE_SIZE,
        offset=(number - 1) * PAGE_SIZE,
    )
    suspension.record_view(
        db,
        actor=viewer.user,
        client=ClientInfo.from_request(request),
        target_type="moderation_flags",
        target_id=None,
        subject_user_id=None,
        details={"status": status, "results": total},
    )
    filters = {"status": status, "direction": direction, "source": source}
    return page(
        request,
        viewer,
        "admin/moderation/queue.html",
        section="moderation",
        rows=rows,
        total=total,
        filters=filters,
        choices=FILTERS,
        pager=_pager("/admin/moderation", _pages(number, total), **filters),
        checks=await service.check_counts(db),
        failed=await service.failed_checks(db, limit=10),
        classifier=bool(request.app.state.settings.moderation_url),
    )


async def _flag_page(request: Request, viewer: Viewer, db: DbSession, flag_id: str) -> Response:
    row = await service.get_flag(db, flag_id=flag_id)
    evidence = service.read_evidence(
        db,
        actor=viewer.user,
        client=ClientInfo.from_request(request),
        row=row,
        keyring=request.app.state.keyring,
    )
    return page(
        request,
        viewer,
        "admin/moderation/flag.html",
        section="moderation",
        row=row,
        evidence=evidence,
        flash=_flash(request),
    )


@router.get("/admin/moderation/flags/{flag_id}")
async def flag_page(
    flag_id: str, request: Request, viewer: ConsoleViewer, db: DbSession
) -> Response:
    """One flag with the flagged text (the read is audited) and the review form."""
    return await _flag_page(request, viewer, db, flag_id)


async def _review(
    flag_id: str,
    decision: str,
    request: Request,
    viewer: Viewer,
    principal: Principal,
    db: DbSession,
) -> Response:
    note = (await form_fields(request)).get("note", "").strip()[:500]
    await service.review(  # a flag reviewed already: the 409 page says so
        db,
        admin=principal,
        flag_id=flag_id,
        decision="upheld" if decision == "uphold" else "dismissed",
        note=note,
    )
    outcome = "upheld" if decision == "uphold" else "dismissed"
    return RedirectResponse(f"/admin/moderation/flags/{flag_id}?outcome={outcome}", status_code=303)


@router.post("/admin/moderation/flags/{flag_id}/dismiss")
async def dismiss_flag(
    flag_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/moderation/flags/{id}/dismiss`."""
    return await _review(flag_id, "dismiss", request, viewer, principal, db)


@router.post("/admin/moderation/flags/{flag_id}/uphold")
async def uphold_flag(
    flag_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/moderation/flags/{id}/uphold`."""
    return await _review(flag_id, "uphold", request, viewer, principal, db)


async def _rules_page(
    request: Request,
    viewer: Viewer,
    db: DbSession,
    *,
    status_code: int = 200,
    problem: str | None = None,
    form: dict[str, str] | None = None,
) -> Response:
    return page(
        request,
        viewer,
        "admin/moderation/rules.html",
        section="moderation",
        status_code=status_code,
        rules=await rule_service.list_rules(db),
        problem=problem,
        form=form or {"kind": "term", "direction": "both", "action": "flag"},
        flash=_flash(request),
    )


@router.get("/admin/moderation/rules")
async def rules_page(request: Request, viewer: ConsoleViewer, db: DbSession) -> Response:
    """The blocked terms and patterns, and the form to add one."""
    return await _rules_page(request, viewer, db)


def _rule_problem(exc: ValidationError) -> str:
    words = {
        "kind": "Kind: choose term or pattern.",
        "value": "Term or pattern: 1 to 200 characters.",
        "direction": "Applies to: choose inbound, outbound or both.",
        "action": "Action: choose flag or block.",
        "note": "Note: at most 200 characters.",
    }
    fields = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    return " ".join(words[name] for name in words if name in fields) or "Check the form."


@router.post("/admin/moderation/rules")
async def add_rule(
    request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/moderation/rules`: a problem is shown on the form (422)."""
    form = await form_fields(request)
    fields = {
        key: form.get(key, "")[:300] for key in ("kind", "value", "direction", "action", "note")
    }
    try:
        data = RuleIn.model_validate(fields)
        await rule_service.create_rule(
            db,
            admin=principal,
            kind=data.kind,
            value=data.value,
            direction=data.direction,
            action=data.action,
            note=data.note,
        )
    except (ValidationError, LunogenError) as exc:
        if isinstance(exc, ValidationError):
            problem, status = _rule_problem(exc), 422
        else:
            problem, status = exc.message or exc.error, exc.status_code
        response = await _rules_page(
            request, viewer, db, status_code=status, problem=problem, form=fields
        )
        await db.rollback()
        return response
    return RedirectResponse("/admin/moderation/rules?outcome=rule-added", status_code=303)


@router.post("/admin/moderation/rules/{rule_id}/delete")
async def delete_rule(
    rule_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `DELETE /api/v1/admin/moderation/rules/{id}`."""
    await rule_service.delete_rule(db, admin=principal, rule_id=rule_id)
    return RedirectResponse("/admin/moderation/rules?outcome=rule-deleted", status_code=303)


# The owner's appeal ---------------------------------------------------------------------------


async def _appeal_page(
    request: Request,
    viewer: Viewer,
    db: DbSession,
    agent_id: str,
    *,
    status_code: int = 200,
    problem: str | None = None,
    text: str = "",
) -> Response:
    agent = await get_agent(db, owner_id=viewer.user.id, agent_id=agent_id, with_channels=False)
    record = await service.latest_suspension(db, agent_id=agent.id)
    since = agent.suspended_at
    current = record if record and since and record.created_at >= since else None
    return page(
        request,
        viewer,
        "agents/appeal.html",
        section="agents",
        status_code=status_code,
        agent=agent,
        appealed=current.ticket_id if current is not None else None,
        problem=problem,
        text=text,
    )


@router.get("/agents/{agent_id}/appeal")
async def appeal_page(agent_id: str, request: Request, viewer: SignedIn, db: DbSession) -> Response:
    """Why the agent is suspended, and the form to appeal (a support ticket)."""
    return await _appeal_page(request, viewer, db, agent_id)


@router.post("/agents/{agent_id}/appeal")
async def appeal(
    agent_id: str, request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/agents/{id}/appeal`: opens the ticket and shows it."""
    text = (await form_fields(request)).get("text", "")[:6000]
    try:
        data = AppealIn.model_validate({"text": text})
        ticket = await service.appeal(
            db, _effects(request), principal=principal, agent_id=agent_id, text=data.text
        )
    except (ValidationError, LunogenError) as exc:
        if isinstance(exc, LunogenError) and exc.status_code == 404:
            raise
        if isinstance(exc, ValidationError):
            problem, status = "Your appeal: 1 to 5000 characters.", 422
        else:
            problem, status = exc.message or exc.error, exc.status_code
        response = await _appeal_page(
            request, viewer, db, agent_id, status_code=status, problem=problem, text=text
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/help/tickets/{ticket.id}", status_code=303)
