"""An agent's versions: history, one version with its diff, deploy a version, roll back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field, Strict

from lunogen.agent import lifecycle, version_actions, versions
from lunogen.agent.endpoints import _render
from lunogen.agent.models import AgentVersion
from lunogen.agent.schemas import Agent as AgentOut
from lunogen.auth.dependencies import AgentsExecute, AgentsRead
from lunogen.db import DbSession
from lunogen.kit.effects import Effects
from lunogen.kit.pagination import Page, PageParams, page_params

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

Number = Annotated[int, Path(ge=1, le=1_000_000_000, description="The version's number")]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No agent with this id is visible to you, or it has no such version"}
}
_RUN_ERRORS: dict[int | str, dict[str, Any]] = {
    **_NOT_FOUND,
    402: {"description": "The agent is paused for lack of credits (see `POST .../start`)"},
    409: {"description": "The agent is deploying or suspended"},
    502: {"description": "Deploy failed; the reason is in `error` and in the agent's log"},
}


class VersionOut(BaseModel):
    number: int
    created_at: datetime
    created_by: str | None = Field(description="The id of the person who made the change.")
    via: str = Field(description="`api` (an API key) or `dashboard`.")
    summary: str
    restored_from: int | None = Field(description="For a rollback: the version it restored.")
    deployed: bool = Field(description="Whether this is the version the agent serves.")


class ChangeOut(BaseModel):
    field: str
    before: Any
    after: Any
    added: list[Any] = Field(description="For lists: the items added.")
    removed: list[Any] = Field(description="For lists: the items removed.")
    diff: list[str] = Field(
        description="For text (instructions, description): a unified diff, line by line."
    )


class VersionDetail(VersionOut):
    config: dict[str, Any] = Field(description="The configuration of this version (no secrets).")
    changes: list[ChangeOut] = Field(description="What changed from the version before it.")


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Strict()] = Field(
        ge=1, le=1_000_000_000, description="An earlier version's number."
    )


class RollbackOut(BaseModel):
    agent: AgentOut
    version: int | None = Field(
        description="The new version made from the restored one (null when the configuration "
        "already was that version's)."
    )


def _version(row: AgentVersion, deployed: int | None) -> VersionOut:
    return VersionOut(
        number=row.number,
        created_at=row.created_at,
        created_by=row.created_by,
        via="api" if row.created_by_key_id else "dashboard",
        summary=row.summary,
        restored_from=row.restored_from,
        deployed=row.number == deployed,
    )


def change_out(change: versions.Change) -> ChangeOut:
    return ChangeOut(
        field=change.field,
        before=change.before,
        after=change.after,
        added=list(change.added),
        removed=list(change.removed),
        diff=list(change.lines),
    )


def _effects(request: Request) -> Effects:
    return Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


@router.get("/{agent_id}/versions", response_model=Page[VersionOut], responses=_NOT_FOUND)
async def list_agent_versions(
    agent_id: str,
    principal: AgentsRead,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[VersionOut]:
    """The agent's versions, newest first. Scope: `agents:read`.

    Every change of the configuration (name, description, model, fallbacks, instructions,
    tools, skills) makes a version; channels and spend caps are not versioned.
    """
    agent, rows, total = await version_actions.list_versions(
        db, owner_id=principal.user.id, agent_id=agent_id, limit=page.limit, offset=page.offset
    )
    return Page(
        data=[_version(row, agent.deployed_version) for row in rows],
        total=total,
        **page.model_dump(),
    )


@router.get("/{agent_id}/versions/{number}", response_model=VersionDetail, responses=_NOT_FOUND)
async def get_agent_version(
    agent_id: str, number: Number, principal: AgentsRead, db: DbSession
) -> VersionDetail:
    """One version: its configuration and what changed from the version before. Scope:
    `agents:read`."""
    agent, row, before = await version_actions.get_version(
        db, owner_id=principal.user.id, agent_id=agent_id, number=number
    )
    changes = versions.diff(before.config if before else None, row.config)
    return VersionDetail(
        **_version(row, agent.deployed_version).model_dump(),
        config=row.config,
        changes=[change_out(change) for change in changes],
    )


@router.post("/{agent_id}/versions/{number}/deploy", response_model=AgentOut, responses=_RUN_ERRORS)
async def deploy_agent_version(
    agent_id: str, number: Number, request: Request, principal: AgentsExecute, db: DbSession
) -> AgentOut:
    """Serve this version: a `draft`, `stopped` or failed agent is deployed on it; a `running`
    or `paused` one is checked on it and restarted on it (if the check fails: 502 and the
    agent keeps serving its version). Scope: `agents:execute`."""
    agent, problem = await version_actions.deploy_version(
        db, principal=principal, agent_id=agent_id, number=number, effects=_effects(request)
    )
    if problem is not None:
        await db.commit()  # the error state, its log line and notification stay
        raise lifecycle.DeployFailedError(problem)
    return _render(agent)


@router.post(
    "/{agent_id}/rollback",
    response_model=RollbackOut,
    responses={
        **_RUN_ERRORS,
        422: {"description": "Not an earlier version, or it names what no longer exists"},
    },
)
async def rollback_agent(
    agent_id: str, data: RollbackIn, request: Request, principal: AgentsExecute, db: DbSession
) -> RollbackOut:
    """Roll back to an earlier version in one call. Scope: `agents:execute`.

    Its configuration becomes the working configuration as a new version ("Rolled back to
    version K"), and a deployed agent serves it at once (a running one is restarted on it).
    Channels are left as they are.
    """
    agent, made, problem = await version_actions.rollback(
        db, principal=principal, agent_id=agent_id, number=data.version, effects=_effects(request)
    )
    if problem is not None:
        await db.commit()  # the rollback stands; the failed restart's error state too
        raise lifecycle.DeployFailedError(problem)
    return RollbackOut(agent=_render(agent), version=made.number if made else None)
