"""What the owner does about approvals, the same from the API and the dashboard: decide on a
request (its turn's thread enqueued after commit once nothing of it waits) and choose which
tools wait for a decision. Each action is audited in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.models import Agent
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.errors import ValidationFailedError
from lunogen.runtime import approvals
from lunogen.runtime.approval_models import ToolApproval
from lunogen.runtime.tasks import enqueue_thread
from lunogen.tool.mcp import tools as mcp_tools
from lunogen.tool.registry import ToolSpec, registry


async def decide(
    db: AsyncSession, principal: Principal, *, agent: Agent, approval_id: str, approve: bool
) -> ToolApproval:
    row, ready = await approvals.decide(
        db,
        owner_id=principal.user.id,
        agent_id=agent.id,
        approval_id=approval_id,
        approve=approve,
        decided_by=principal.user.id,
    )
    decision = "approve" if approve else "deny"
    _audit(
        db, principal, agent, "agent.approval_decided", {"approval": row.id, "decision": decision}
    )
    if ready:
        enqueue_thread(db, row.thread_id)
    await db.flush()
    return row


async def set_policy(
    db: AsyncSession,
    principal: Principal,
    *,
    agent: Agent,
    tools: dict[str, bool],
    expiry_minutes: int,
) -> None:
    """`agent` was read for update. Tool names must be registered tools or the agent's
    allowed MCP tools."""
    known = await agent_tools(db, agent)
    unknown = [name for name in tools if registry.get(name) is None and name not in known]
    if unknown:
        raise ValidationFailedError(f"Unknown tool: {unknown[0]!r}", field="tools")
    agent.approval_tools = dict(tools) or None
    agent.approval_wait_minutes = expiry_minutes
    details = {"tools": tools, "expiry_minutes": expiry_minutes}
    _audit(db, principal, agent, "agent.approval_policy_set", details)
    await db.flush()


async def agent_tools(db: AsyncSession, agent: Agent) -> dict[str, ToolSpec | None]:
    """The agent's enabled tools and allowed MCP tools, as a turn offers them."""
    tools: dict[str, ToolSpec | None] = {name: registry.get(name) for name in agent.tools}
    tools.update(await mcp_tools.for_turn(db, agent_id=agent.id))
    return tools


async def gated_now(db: AsyncSession, agent: Agent) -> list[str]:
    """The agent's tools whose calls wait for approval."""
    return sorted(approvals.gated_tools(agent, await agent_tools(db, agent)))


def _audit(
    db: AsyncSession, principal: Principal, agent: Agent, action: str, details: dict[str, Any]
) -> None:
    audit.record_by(
        db, principal, action=action, target_type="agent", target_id=agent.id, details=details
    )
