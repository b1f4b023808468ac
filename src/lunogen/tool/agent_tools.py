"""The tools of one agent: which registry tools it has enabled, and toggling them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from lunogen.agent import versions
from lunogen.agent.models import Agent
from lunogen.agent.service import get_agent
from lunogen.audit import service as audit
from lunogen.auth.dependencies import ToolsRead, ToolsWrite
from lunogen.db import DbSession
from lunogen.errors import NotFoundError
from lunogen.tool.registry import ToolSpec, registry

router = APIRouter(prefix="/api/v1/agents", tags=["tools"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No agent with this id is visible to you, or no tool of this name"}
}


class AgentToolOut(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]
    enabled: bool


class AgentToolList(BaseModel):
    data: list[AgentToolOut]


class ToolToggle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


def _render(spec: ToolSpec, agent: Agent) -> AgentToolOut:
    return AgentToolOut(
        name=spec.name,
        description=spec.description,
        parameters=spec.parameters,
        enabled=spec.name in agent.tools,
    )


@router.get("/{agent_id}/tools", response_model=AgentToolList, responses=_NOT_FOUND)
async def list_agent_tools(agent_id: str, principal: ToolsRead, db: DbSession) -> AgentToolList:
    """Every tool of the registry, and whether this agent has it enabled. Scope: `tools:read`."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    return AgentToolList(data=[_render(spec, agent) for spec in registry.all()])


@router.patch("/{agent_id}/tools/{name}", response_model=AgentToolOut, responses=_NOT_FOUND)
async def toggle_agent_tool(
    agent_id: str, name: str, data: ToolToggle, principal: ToolsWrite, db: DbSession
) -> AgentToolOut:
    """Enable or disable one tool for this agent. Scope: `tools:write`.

    The change is a new version of the agent: a running agent offers it to its model once
    that version is deployed (`POST /api/v1/agents/{id}/versions/{n}/deploy`).
    """
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, for_update=True)
    spec = registry.get(name)
    if spec is None:
        raise NotFoundError(error="Tool not found")
    was_enabled = name in agent.tools
    if data.enabled != was_enabled:
        if data.enabled:
            agent.tools = [*agent.tools, name]
        else:
            agent.tools = [t for t in agent.tools if t != name]
        await versions.record(db, agent=agent, principal=principal)
        audit.record(
            db,
            action="agent.tool_toggled",
            actor_user_id=principal.user.id,
            actor_key_id=principal.key_id,
            client=principal.client,
            target_type="agent",
            target_id=agent.id,
            details={"tool": name, "enabled": data.enabled},
        )
        await db.flush()
    return _render(spec, agent)
