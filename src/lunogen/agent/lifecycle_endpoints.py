"""Deploy, start, stop, restart, status, and the agent's runtime log (list and live stream)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel
from starlette.responses import StreamingResponse

from lunogen.agent import lifecycle
from lunogen.agent.endpoints import _render
from lunogen.agent.schemas import Agent as AgentOut
from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsExecute, AgentsRead, LogsRead
from lunogen.db import DbSession
from lunogen.kit.time import UtcDateTimeIn
from lunogen.runlog import logs
from lunogen.runlog.models import AgentLogEvent
from lunogen.runtime.activity import activity_today

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

_LIFECYCLE_ERRORS: dict[int | str, dict[str, Any]] = {
    402: {
        "description": "The agent is paused for lack of credits and the balance cannot pay "
        "for one call of its model; `required_credits` and `available_credits` say by how much"
    },
    404: {"description": "No agent with this id is visible to you"},
    409: {"description": "The agent's current state forbids this action"},
    502: {"description": "Deploy failed; the reason is in `error` and in the agent's log"},
}


def _effects(request: Request) -> lifecycle.Effects:
    return lifecycle.Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


async def _run_deploy(
    request: Request, principal: AgentsExecute, db: DbSession, agent_id: str, action: str
) -> AgentOut:
    agent, problem = await lifecycle.deploy(
        db, owner_id=principal.user.id, agent_id=agent_id, effects=_effects(request), action=action
    )
    if problem is not None:
        await db.commit()  # the error state, its log line and notification stay
        raise lifecycle.DeployFailedError(problem)
    return _render(agent)


@router.post("/{agent_id}/deploy", response_model=AgentOut, responses=_LIFECYCLE_ERRORS)
async def deploy_agent(
    agent_id: str, request: Request, principal: AgentsExecute, db: DbSession
) -> AgentOut:
    """Validate the agent's configuration and run it (from `draft`, `stopped` or `error`)."""
    return await _run_deploy(request, principal, db, agent_id, "deploy")


@router.post("/{agent_id}/start", response_model=AgentOut, responses=_LIFECYCLE_ERRORS)
async def start_agent(
    agent_id: str, request: Request, principal: AgentsExecute, db: DbSession
) -> AgentOut:
    """Run a `stopped` or `paused` agent again (its configuration is checked as at deploy)."""
    return await _run_deploy(request, principal, db, agent_id, "start")


@router.post("/{agent_id}/restart", response_model=AgentOut, responses=_LIFECYCLE_ERRORS)
async def restart_agent(
    agent_id: str, request: Request, principal: AgentsExecute, db: DbSession
) -> AgentOut:
    """Stop and deploy again a `running` agent, retry one in `error`, or resume a `paused` one."""
    return await _run_deploy(request, principal, db, agent_id, "restart")


@router.post("/{agent_id}/stop", response_model=AgentOut, responses=_LIFECYCLE_ERRORS)
async def stop_agent(
    agent_id: str, request: Request, principal: AgentsExecute, db: DbSession
) -> AgentOut:
    """Stop the agent: it answers no messages until started again."""
    agent = await lifecycle.stop(
        db, owner_id=principal.user.id, agent_id=agent_id, effects=_effects(request)
    )
    return _render(agent)


class AgentStatusOut(BaseModel):
    status: str
    since: datetime
    uptime_seconds: int | None
    last_error: str | None
    threads_today: int
    messages_today: int


@router.get("/{agent_id}/status", response_model=AgentStatusOut)
async def get_agent_status(agent_id: str, principal: AgentsRead, db: DbSession) -> AgentStatusOut:
    """The agent's state, since when, uptime while running, last error, and today's counts."""
    report = await lifecycle.status_report(db, owner_id=principal.user.id, agent_id=agent_id)
    activity = await activity_today(db, agent_id=agent_id)
    return AgentStatusOut(**report.__dict__, **activity.__dict__)


class LogEventOut(BaseModel):
    id: int
    created_at: datetime
    level: str
    event: str
    message: str
    details: dict[str, Any]


class LogPage(BaseModel):
    data: list[LogEventOut]
    next_cursor: int | None


def _event_out(row: AgentLogEvent) -> LogEventOut:
    return LogEventOut(
        id=row.id,
        created_at=row.created_at,
        level=row.level,
        event=row.event,
        message=row.message,
        details=row.details,
    )


@router.get("/{agent_id}/logs", response_model=LogPage)
async def list_agent_logs(
    agent_id: str,
    principal: LogsRead,
    db: DbSession,
    level: Annotated[logs.Level | None, Query(description="Minimum level")] = None,
    since: Annotated[
        UtcDateTimeIn | None, Query(description="Only events at or after this time")
    ] = None,
    cursor: Annotated[int, Query(ge=0, le=2**62, description="`next_cursor` of the last page")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> LogPage:
    """The agent's runtime log, oldest first, from `cursor` on."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    rows = await logs.read_events(
        db, agent_id=agent.id, after_id=cursor, min_level=level, since=since, limit=limit
    )
    return LogPage(
        data=[_event_out(r) for r in rows],
        next_cursor=rows[-1].id if len(rows) == limit else None,
    )


@router.get(
    "/{agent_id}/logs/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_agent_logs(
    agent_id: str,
    request: Request,
    principal: LogsRead,
    db: DbSession,
    level: Annotated[logs.Level | None, Query(description="Minimum level")] = None,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**62)] = None,
    cursor: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> StreamingResponse:
    """Server-sent events (`event: log`), live. Resumes after `Last-Event-ID` or `cursor`;
    without either it starts with the newest events."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    start = last_event_id if last_event_id is not None else cursor
    if start is None:
        start = await logs.latest_event_id(db, agent_id=agent.id)
    return StreamingResponse(
        _log_stream(request, agent.id, start, level),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _log_stream(
    request: Request, agent_id: str, cursor: int, level: logs.Level | None
) -> AsyncIterator[str]:
    yield ": connected\n\n"
    sessionmaker = request.app.state.sessionmaker
    idle = 0
    async for _ in logs.bus().follow(agent_id, poll_seconds=2.0):
        if await request.is_disconnected():
            return
        async with sessionmaker() as session:
            rows = await logs.read_events(
                session, agent_id=agent_id, after_id=cursor, min_level=level, limit=200
            )
        if not rows:
            idle += 1
            if idle % 8 == 0:  # a comment every ~16 s keeps proxies from closing the stream
                yield ": keep-alive\n\n"
            continue
        idle = 0
        for row in rows:
            cursor = row.id
            payload = json.dumps(_event_out(row).model_dump(mode="json"))
            yield f"id: {row.id}\nevent: log\ndata: {payload}\n\n"
        await asyncio.sleep(0)
