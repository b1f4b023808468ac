from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response

from lunogen.agent import schemas, service, versions
from lunogen.agent.models import Agent
from lunogen.auth.dependencies import AgentsRead, AgentsWrite
from lunogen.channel.service import render_channel
from lunogen.db import DbSession
from lunogen.kit.crypto import KeyRing
from lunogen.kit.pagination import Page, PageParams, page_params

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

Responses = dict[int | str, dict[str, Any]]

_NOT_FOUND: Responses = {
    404: {
        "description": "No agent with this id is visible to you",
        "content": {"application/json": {"example": {"error": "Agent not found"}}},
    }
}
_FORBIDDEN: Responses = {403: {"description": "Missing scope, or over a plan limit"}}
_INVALID: Responses = {422: {"description": "Invalid config; `details` names each field at fault"}}


def _keyring(request: Request) -> KeyRing:
    ring: KeyRing = request.app.state.keyring
    return ring


Keys = Annotated[KeyRing, Depends(_keyring)]


def _render(agent: Agent, revealed: service.Revealed | None = None) -> schemas.Agent:
    revealed = revealed or {}
    return schemas.Agent(
        id=agent.id,
        name=agent.name,
        description=agent.description,
        model=agent.model,
        fallback_models=list(agent.fallback_models),
        instructions=agent.instructions,
        status=schemas.AgentStatus(agent.status),
        status_changed_at=agent.status_changed_at,
        channels=[render_channel(row, revealed.get(row.id)) for row in agent.channels],
        skills=agent.skills,
        tools=agent.tools,
        created_at=agent.created_at,
        updated_at=agent.updated_at,
        latest_version=agent.latest_version,
        deployed_version=agent.deployed_version,
        undeployed_changes=versions.undeployed_changes(agent),
    )


@router.get("", response_model=Page[schemas.Agent])
async def list_agents(
    principal: AgentsRead,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    status: Annotated[
        schemas.AgentStatus | None, Query(description="Only agents in this status")
    ] = None,
) -> Page[schemas.Agent]:
    """Your agents, newest first. Scope: `agents:read`.

    Channel secrets are never returned: each secret field reads `{"configured": true}`.
    """
    agents, total = await service.list_agents(
        db, owner_id=principal.user.id, status=status, limit=page.limit, offset=page.offset
    )
    return Page(data=[_render(a) for a in agents], total=total, **page.model_dump())


@router.post(
    "",
    status_code=201,
    response_model=schemas.Agent,
    responses={**_FORBIDDEN, **_INVALID},
)
async def create_agent(
    data: schemas.AgentCreate, principal: AgentsWrite, db: DbSession, keyring: Keys
) -> schemas.Agent:
    """Create an agent in `draft` status. Scope: `agents:write`.

    `model` must be in `GET /api/v1/models`, `tools` in `GET /api/v1/tools`. Channel secret
    fields (tokens, app secrets) are stored encrypted and never shown again. A `webhook`
    channel gets a generated `whsec_…` signing secret, whose value appears only in this
    response (`channels[].secret.value`): store it now. Plan limits apply to the number of
    agents and of channels per agent (403).
    """
    agent, revealed = await service.create_agent(
        db, principal=principal, data=data, keyring=keyring
    )
    return _render(agent, revealed)


@router.get("/{agent_id}", response_model=schemas.Agent, responses=_NOT_FOUND)
async def get_agent(agent_id: str, principal: AgentsRead, db: DbSession) -> schemas.Agent:
    """One of your agents. Scope: `agents:read`. Secret fields read `{"configured": true}`."""
    return _render(await service.get_agent(db, owner_id=principal.user.id, agent_id=agent_id))


@router.patch(
    "/{agent_id}",
    response_model=schemas.Agent,
    responses={**_NOT_FOUND, **_FORBIDDEN, **_INVALID},
)
async def update_agent(
    agent_id: str,
    data: schemas.AgentUpdate,
    principal: AgentsWrite,
    db: DbSession,
    keyring: Keys,
) -> schemas.Agent:
    """Change the fields you send. Scope: `agents:write`.

    `channels`, `skills` and `tools` replace their lists. To keep a channel, send it with its
    `id`: secret fields you leave out keep their stored values, so you can edit public fields
    without resending tokens. Channels you leave out are removed; channels without an `id` are
    added (a new webhook channel's secret is shown once, in this response).
    """
    agent, revealed = await service.update_agent(
        db, principal=principal, agent_id=agent_id, data=data, keyring=keyring
    )
    return _render(agent, revealed)


@router.delete("/{agent_id}", status_code=204, responses=_NOT_FOUND)
async def delete_agent(
    agent_id: str, request: Request, principal: AgentsWrite, db: DbSession
) -> Response:
    """Delete an agent. Scope: `agents:write`.

    It disappears at once (every endpoint answers 404 for it) and stops if it was running;
    its data is purged after LUNOGEN_PURGE_AFTER_DAYS (30 at most).
    """
    await service.delete_agent(
        db,
        principal=principal,
        agent_id=agent_id,
        purge_after_days=request.app.state.settings.purge_after_days,
    )
    return Response(status_code=204)
