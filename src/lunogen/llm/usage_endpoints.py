from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsRead
from lunogen.db import DbSession
from lunogen.llm import usage_service
from lunogen.llm.usage_service import GroupBy

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])


class UsageFigures(BaseModel):
    calls: int = Field(description="Model calls, failed ones included")
    failed_calls: int = Field(description="Calls that failed; they cost nothing")
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = Field(description="Part of prompt_tokens")
    reasoning_tokens: int = Field(description="Part of completion_tokens")
    cost_usd: str = Field(description="USD as an exact decimal string", examples=["0.000123000"])
    cost_nano_usd: int = Field(description="The same cost in integer units of 1e-9 USD")
    unpriced_calls: int = Field(
        description="Successful calls of unknown cost, left out of cost_usd"
    )


class UsageGroupOut(UsageFigures):
    key: str = Field(
        description="The UTC day (YYYY-MM-DD), the model id (answering, else requested) or the "
        "agent id"
    )
    name: str | None = Field(description="The agent's name when grouped by agent")


class UsageOut(BaseModel):
    since: datetime
    until: datetime
    group_by: GroupBy
    agent_id: str | None
    totals: UsageFigures
    groups: list[UsageGroupOut]


def _figures(figures: usage_service.Figures) -> dict[str, Any]:
    return {
        "calls": figures.calls,
        "failed_calls": figures.failed_calls,
        "prompt_tokens": figures.prompt_tokens,
        "completion_tokens": figures.completion_tokens,
        "cached_tokens": figures.cached_tokens,
        "reasoning_tokens": figures.reasoning_tokens,
        "cost_usd": figures.cost_usd,
        "cost_nano_usd": figures.cost_nano_usd,
        "unpriced_calls": figures.unpriced_calls,
    }


@router.get(
    "",
    response_model=UsageOut,
    responses={
        404: {
            "description": "`agent_id` names no agent visible to you",
            "content": {"application/json": {"example": {"error": "Agent not found"}}},
        }
    },
)
async def get_usage(
    principal: AgentsRead,
    db: DbSession,
    since: Annotated[
        datetime | None, Query(description="Start, inclusive (default: 30 days before until)")
    ] = None,
    until: Annotated[datetime | None, Query(description="End, exclusive (default: now)")] = None,
    agent_id: Annotated[str | None, Query(description="Only this agent's calls")] = None,
    group_by: Annotated[GroupBy, Query(description="Group by UTC day, model or agent")] = "day",
) -> UsageOut:
    """Model calls of your agents, with tokens and cost, totalled and grouped.
    Scope: `agents:read` (usage is what your agents consumed).

    Times without an offset are UTC. The range is `[since, until)`, at most 366 days; `until`
    must be later than `since` (else 422). Only days, models or agents with calls appear.
    Costs are as the provider reported them, or computed from catalog prices; failed calls
    count in `calls` and `failed_calls` and cost nothing.
    """
    start, end = usage_service.resolve_range(since=since, until=until)
    owner_id = principal.user.id
    if agent_id is not None:
        await get_agent(db, owner_id=owner_id, agent_id=agent_id)
    report = await usage_service.usage_report(
        db, owner_id=owner_id, since=start, until=end, group_by=group_by, agent_id=agent_id
    )
    return UsageOut(
        since=report.since,
        until=report.until,
        group_by=report.group_by,
        agent_id=report.agent_id,
        totals=UsageFigures(**_figures(report.totals)),
        groups=[
            UsageGroupOut(key=g.key, name=g.name, **_figures(g.figures)) for g in report.groups
        ],
    )
