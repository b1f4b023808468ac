"""Spend caps over HTTP: an agent's caps (`/api/v1/agents/{id}/caps`) and the account's
monthly cap over all its agents (`/api/v1/billing/cap`). See docs/spend-caps.md."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lunogen.agent import service
from lunogen.auth.dependencies import AgentsRead, AgentsWrite, AnyUser, FullAccess
from lunogen.billing import caps_service
from lunogen.billing.caps_schemas import AccountCapIn, AccountCapOut, AgentCapsIn, AgentCapsOut
from lunogen.db import DbSession

agent_caps_router = APIRouter(prefix="/api/v1/agents", tags=["agents"])
account_cap_router = APIRouter(prefix="/api/v1/billing", tags=["billing"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No agent with this id is visible to you",
        "content": {"application/json": {"example": {"error": "Agent not found"}}},
    }
}


@agent_caps_router.get("/{agent_id}/caps", response_model=AgentCapsOut, responses=_NOT_FOUND)
async def get_agent_caps(agent_id: str, principal: AgentsRead, db: DbSession) -> AgentCapsOut:
    """The agent's spend caps, its over-cap reply, and what it has spent today and this month
    (UTC), settled and held by calls in progress. Scope: `agents:read`."""
    agent = await service.get_agent(
        db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False
    )
    return await caps_service.agent_caps(db, owner_id=agent.owner_id, agent_id=agent.id)


@agent_caps_router.put("/{agent_id}/caps", response_model=AgentCapsOut, responses=_NOT_FOUND)
async def set_agent_caps(
    agent_id: str, data: AgentCapsIn, principal: AgentsWrite, db: DbSession
) -> AgentCapsOut:
    """Replace the agent's spend caps. Scope: `agents:write`.

    `daily_credits` and `monthly_credits` cap what the agent spends per UTC day and month;
    `turn_credits` and `turn_tokens` cap one turn (one answered message). A field left out or
    null is no cap. When a cap cannot cover the next model call, the call is not made and the
    contact gets `reply_text` (null: a default text) as the agent's reply, free of charge.
    """
    agent = await service.get_agent(
        db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False
    )
    return await caps_service.set_agent_caps(db, principal, agent_id=agent.id, data=data)


@account_cap_router.get("/cap", response_model=AccountCapOut)
async def get_account_cap(principal: AnyUser, db: DbSession) -> AccountCapOut:
    """Your account's monthly spend cap over all your agents, and this UTC month's spend.
    Any key of yours can read it."""
    return await caps_service.account_cap(db, owner_id=principal.user.id)


@account_cap_router.put("/cap", response_model=AccountCapOut)
async def set_account_cap(
    data: AccountCapIn, principal: FullAccess, db: DbSession
) -> AccountCapOut:
    """Set your account's monthly spend cap in credits (null: none). When it cannot cover the
    next model call of any of your agents, the call is not made and the contact gets that
    agent's over-cap reply. Scope: `full`."""
    return await caps_service.set_account_cap(db, principal, data=data)
