"""The owner's side of tool approvals: which tools wait for a decision, the requests, and the
decision that lets a stopped turn go on."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.endpoints import Keys
from lunogen.agent.models import Agent
from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsRead, AgentsWrite
from lunogen.db import DbSession
from lunogen.kit.pagination import Page, PageParams, page_params
from lunogen.runtime import approval_actions as actions
from lunogen.runtime import approvals

router = APIRouter(prefix="/api/v1/agents", tags=["approvals"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No agent with this id is visible to you, or no such request"}
}

Status = Literal["pending", "approved", "denied", "expired", "running", "executed"]


class ApprovalOut(BaseModel):
    id: str
    agent_id: str
    message_id: str = Field(description="The inbound message whose turn waits.")
    thread_id: str
    tool_call_id: str = Field(description="The model's id of the call.")
    tool: str
    arguments: str = Field(description="The call's arguments, as the model wrote them (JSON).")
    status: Status = Field(
        description="`pending` until decided; `approved` calls run once (`running`, then "
        "`executed`); `denied` and `expired` ones are told to the model as refused."
    )
    created_at: datetime
    expires_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    executed_at: datetime | None


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["approve", "deny"]


class ApprovalPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expiry_minutes: int = Field(
        approvals.DEFAULT_EXPIRY_MINUTES,
        ge=1,
        le=approvals.MAX_EXPIRY_MINUTES,
        description="How long a request waits for a decision before it counts as denied.",
    )
    tools: dict[str, bool] = Field(
        default_factory=dict,
        description="Per tool name, whether its calls wait for approval. A tool left out "
        "keeps its default (on for `run_code` and for MCP tools that write).",
    )


class ApprovalPolicyOut(BaseModel):
    expiry_minutes: int
    tools: dict[str, bool] = Field(description="The choices made for this agent.")
    gated: list[str] = Field(description="The agent's enabled tools that wait for approval now.")


async def _policy(db: AsyncSession, agent: Agent) -> ApprovalPolicyOut:
    return ApprovalPolicyOut(
        expiry_minutes=agent.approval_wait_minutes or approvals.DEFAULT_EXPIRY_MINUTES,
        tools=dict(agent.approval_tools or {}),
        gated=await actions.gated_now(db, agent),
    )


@router.get("/{agent_id}/approval-policy", response_model=ApprovalPolicyOut, responses=_NOT_FOUND)
async def get_approval_policy(
    agent_id: str, principal: AgentsRead, db: DbSession
) -> ApprovalPolicyOut:
    """Which of the agent's tools wait for your approval, and for how long. Scope:
    `agents:read`."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    return await _policy(db, agent)


@router.put("/{agent_id}/approval-policy", response_model=ApprovalPolicyOut, responses=_NOT_FOUND)
async def set_approval_policy(
    agent_id: str, data: ApprovalPolicy, principal: AgentsWrite, db: DbSession
) -> ApprovalPolicyOut:
    """Choose which tools wait for your approval and how long a request waits. Applies from
    the agent's next tool call on. Scope: `agents:write`."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, for_update=True)
    await actions.set_policy(
        db, principal, agent=agent, tools=data.tools, expiry_minutes=data.expiry_minutes
    )
    return await _policy(db, agent)


@router.get("/{agent_id}/approvals", response_model=Page[ApprovalOut], responses=_NOT_FOUND)
async def list_approvals(
    agent_id: str,
    principal: AgentsRead,
    db: DbSession,
    keyring: Keys,
    page: Annotated[PageParams, Depends(page_params)],
    status: Annotated[Status | None, Query(description="Only requests in this state")] = None,
) -> Page[ApprovalOut]:
    """The agent's tool calls that asked for approval, newest first. Scope: `agents:read`."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    rows, total = await approvals.list_approvals(
        db,
        owner_id=principal.user.id,
        agent_id=agent.id,
        status=status,
        limit=page.limit,
        offset=page.offset,
    )
    data = [ApprovalOut.model_validate(approvals.describe(row, keyring)) for row in rows]
    return Page(data=data, total=total, limit=page.limit, offset=page.offset)


@router.post(
    "/{agent_id}/approvals/{approval_id}",
    response_model=ApprovalOut,
    responses={
        **_NOT_FOUND,
        409: {"description": "The request was decided already, or it expired"},
    },
)
async def decide_approval(
    agent_id: str,
    approval_id: str,
    data: DecisionIn,
    principal: AgentsWrite,
    db: DbSession,
    keyring: Keys,
) -> ApprovalOut:
    """Approve or deny a tool call. Once no call of its message waits any more, the turn goes
    on: an approved call runs once, a denied one is told to the model as refused. Scope:
    `agents:write`."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    row = await actions.decide(
        db, principal, agent=agent, approval_id=approval_id, approve=data.decision == "approve"
    )
    return ApprovalOut.model_validate(approvals.describe(row, keyring))
