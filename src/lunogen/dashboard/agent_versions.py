"""An agent's versions in the dashboard: the history (who, when, what), one version with its
diff to the version before, and the buttons to deploy a version or roll back to it.

Calls `agent.version_actions`, as the API does. Outcomes are shown after a redirect by a fixed
word in the query (`?outcome=`), never by text taken from the URL.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.agent import lifecycle, version_actions, versions
from lunogen.agent.models import Agent
from lunogen.auth.dependencies import AgentsExecute
from lunogen.auth.principal import Principal
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError
from lunogen.kit.effects import Effects
from lunogen.skill.service import list_skills

router = page_router()
PER_PAGE = 50
Number = Annotated[int, Path(ge=1, le=1_000_000_000)]

OUTCOMES = {
    "deployed": "Deployed: the agent serves this version.",
    "rolled_back": "Rolled back: the restored configuration is the newest version.",
    "unchanged": "The configuration already was this version's; it is the deployed one now.",
}
LABELS = {
    "name": "Name",
    "description": "Description",
    "model": "Model",
    "fallback_models": "Fallback models",
    "instructions": "Instructions",
    "tools": "Tools",
    "skills": "Skills",
    "max_output_tokens": "Maximum output tokens",
}


def _can_deploy(agent: Agent) -> bool:
    return agent.status in lifecycle.ALLOWED_FROM["deploy"] or agent.status in (
        "running",
        "paused",
    )


async def _skill_names(db: AsyncSession, owner_id: str) -> dict[str, str]:
    skills, _total = await list_skills(db, owner_id=owner_id, status=None, limit=100, offset=0)
    return {skill.id: skill.name for skill in skills}


def _show(value: Any, names: dict[str, str], field: str) -> str:
    """A field's value as text (skills by name; a deleted skill by its id)."""
    if isinstance(value, list):
        items = [str(names.get(v, v)) if field == "skills" else str(v) for v in value]
        return ", ".join(items) if items else "none"
    if value in (None, ""):
        return "empty"
    return str(value)


@router.get("/agents/{agent_id}/versions")
async def versions_page(
    agent_id: str,
    request: Request,
    viewer: SignedIn,
    db: DbSession,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    agent, rows, total = await version_actions.list_versions(
        db, owner_id=viewer.user.id, agent_id=agent_id, limit=PER_PAGE, offset=offset
    )
    outcome = request.query_params.get("outcome", "")
    error = None
    if outcome == "failed" and agent.status == "error":
        error = f"Deploy failed: {agent.last_error or 'see the agent log'}"
    return page(
        request,
        viewer,
        "versions/list.html",
        section="agents",
        agent=agent,
        rows=rows,
        total=total,
        offset=offset,
        per_page=PER_PAGE,
        undeployed=versions.undeployed_changes(agent),
        can_deploy=_can_deploy(agent),
        flash=OUTCOMES.get(outcome),
        error=error,
    )


async def _version_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    *,
    agent_id: str,
    number: int,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    agent, row, before = await version_actions.get_version(
        db, owner_id=viewer.user.id, agent_id=agent_id, number=number
    )
    names = await _skill_names(db, viewer.user.id)
    changes = versions.diff(before.config if before else None, row.config)
    return page(
        request,
        viewer,
        "versions/detail.html",
        section="agents",
        status_code=status_code,
        agent=agent,
        version=row,
        config=[
            (LABELS[field], field, row.config.get(field))
            for field in versions.VERSIONED
            if field in row.config
        ],
        changes=changes,
        labels=LABELS,
        show=lambda value, field: _show(value, names, field),
        can_deploy=_can_deploy(agent) and row.number != agent.deployed_version,
        can_roll_back=row.number < agent.latest_version and agent.status != "deploying",
        error=error,
    )


@router.get("/agents/{agent_id}/versions/{number}")
async def version_page(
    agent_id: str, number: Number, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    return await _version_page(request, viewer, db, agent_id=agent_id, number=number)


async def _act(
    request: Request,
    viewer: Viewer,
    principal: Principal,
    db: AsyncSession,
    *,
    agent_id: str,
    number: int,
    action: str,
) -> Response:
    """Deploy or roll back; a failed deploy is committed in `error` (as the API does before
    its 502) and shown with its reason. A refusal shows the version's page with the message;
    nothing was written."""
    effects = Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)
    outcome = "deployed"
    try:
        if action == "deploy":
            agent, problem = await version_actions.deploy_version(
                db, principal=principal, agent_id=agent_id, number=number, effects=effects
            )
        else:
            agent, made, problem = await version_actions.rollback(
                db, principal=principal, agent_id=agent_id, number=number, effects=effects
            )
            outcome = "rolled_back" if made is not None else "unchanged"
    except LunogenError as exc:
        if exc.status_code == 404 or (exc.status_code >= 500 and exc.status_code != 502):
            raise
        # A refusal after a first write (a pin before a 402) must not be committed with the
        # page: undo it, then reload what the page shows of the viewer.
        await db.rollback()
        await db.refresh(viewer.user)
        await db.refresh(viewer.session)
        return await _version_page(
            request,
            viewer,
            db,
            agent_id=agent_id,
            number=number,
            error=exc.error if exc.status_code == 502 else exc.message or exc.error,
            status_code=exc.status_code,
        )
    if problem is not None:
        await db.commit()  # the error state, its log line and notification stay
        outcome = "failed"
    return RedirectResponse(f"/agents/{agent.id}/versions?outcome={outcome}", status_code=303)


@router.post("/agents/{agent_id}/versions/{number}/deploy")
async def deploy_version(
    agent_id: str,
    number: Number,
    request: Request,
    viewer: SignedIn,
    principal: AgentsExecute,
    db: DbSession,
) -> Response:
    return await _act(
        request, viewer, principal, db, agent_id=agent_id, number=number, action="deploy"
    )


@router.post("/agents/{agent_id}/versions/{number}/rollback")
async def roll_back(
    agent_id: str,
    number: Number,
    request: Request,
    viewer: SignedIn,
    principal: AgentsExecute,
    db: DbSession,
) -> Response:
    return await _act(
        request, viewer, principal, db, agent_id=agent_id, number=number, action="rollback"
    )
