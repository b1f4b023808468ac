"""An agent's approvals in the dashboard: the tool calls waiting for the owner's decision (with
Approve and Deny), the decisions taken, and which tools wait for one. Calls the same actions as
`POST /api/v1/agents/{id}/approvals/{id}` and `PUT .../approval-policy`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsWrite
from lunogen.dashboard.shell import SignedIn, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.forms import form_fields
from lunogen.runtime import approval_actions as actions
from lunogen.runtime import approvals

router = page_router()
PER_PAGE = 50
OUTCOMES = {
    "approved": "Approved: the agent goes on and runs the call once.",
    "denied": "Denied: the agent is told the call was refused.",
    "closed": "That request can no longer be decided: it was decided already or it expired.",
    "saved": "Saved: from the next tool call on, these tools wait for your decision.",
}


@router.get("/agents/{agent_id}/approvals")
async def approval_list(
    agent_id: str,
    request: Request,
    viewer: SignedIn,
    db: DbSession,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    keyring: KeyRing = request.app.state.keyring
    agent = await get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    waiting, _ = await approvals.list_approvals(
        db, owner_id=viewer.user.id, agent_id=agent.id, status="pending", limit=100, offset=0
    )
    history, total = await approvals.list_approvals(
        db, owner_id=viewer.user.id, agent_id=agent.id, status=None, limit=PER_PAGE, offset=offset
    )
    chosen = agent.approval_tools or {}
    tools = [
        (name, approvals.requires_approval(agent, spec), name in chosen)
        for name, spec in (await actions.agent_tools(db, agent)).items()
        if spec is not None
    ]
    return page(
        request,
        viewer,
        "agents/approvals.html",
        section="agents",
        agent=agent,
        waiting=[approvals.describe(row, keyring) for row in waiting],
        history=[approvals.describe(row, keyring) for row in history],
        total=total,
        offset=offset,
        per_page=PER_PAGE,
        tools=tools,
        expiry_minutes=agent.approval_wait_minutes or approvals.DEFAULT_EXPIRY_MINUTES,
        max_expiry=approvals.MAX_EXPIRY_MINUTES,
        flash=OUTCOMES.get(request.query_params.get("outcome", "")),
    )


@router.post("/agents/{agent_id}/approvals/{approval_id}")
async def decide(
    agent_id: str, approval_id: str, request: Request, principal: AgentsWrite, db: DbSession
) -> Response:
    decision = (await form_fields(request)).get("decision", "")
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    back = f"/agents/{agent.id}/approvals"
    if decision not in ("approve", "deny"):
        return RedirectResponse(back, status_code=303)
    try:
        await actions.decide(
            db, principal, agent=agent, approval_id=approval_id, approve=decision == "approve"
        )
    except approvals.ApprovalClosedError:
        return RedirectResponse(f"{back}?outcome=closed", status_code=303)
    outcome = "approved" if decision == "approve" else "denied"
    return RedirectResponse(f"{back}?outcome={outcome}", status_code=303)


@router.post("/agents/{agent_id}/approval-policy")
async def save_policy(
    agent_id: str, request: Request, viewer: SignedIn, principal: AgentsWrite, db: DbSession
) -> Response:
    form = await form_fields(request)
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, for_update=True)
    minutes = form.get("expiry_minutes", "").strip()
    if not minutes.isdigit() or not 1 <= int(minutes) <= approvals.MAX_EXPIRY_MINUTES:
        raise LunogenError(
            f"Give the waiting time in whole minutes, from 1 to {approvals.MAX_EXPIRY_MINUTES}.",
            status_code=422,
            error="Validation failed",
        )
    tools = {
        name: form.get(f"gate_{name}") == "on"
        for name, spec in (await actions.agent_tools(db, agent)).items()
        if spec is not None
    }
    await actions.set_policy(db, principal, agent=agent, tools=tools, expiry_minutes=int(minutes))
    return RedirectResponse(f"/agents/{agent.id}/approvals?outcome=saved", status_code=303)
