"""`/api/v1/agents/{agent_id}/schedules`: an agent's schedules and the history of their runs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.responses import Response

from lunogen.auth.dependencies import AgentsRead, AgentsWrite
from lunogen.billing.units import micro_to_credits_str
from lunogen.db import DbSession
from lunogen.kit.pagination import Page, PageParams, page_params
from lunogen.schedule import schemas, service, timing
from lunogen.schedule.models import Schedule

router = APIRouter(prefix="/api/v1/agents", tags=["schedules"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No agent with this id is visible to you, or no such schedule",
        "content": {"application/json": {"example": {"error": "Schedule not found"}}},
    }
}
_INVALID: dict[int | str, dict[str, Any]] = {
    422: {
        "description": "A rule that cannot run: bad cron expression, unknown time zone, a "
        "one-off time in the past, an interval under 60 s, a proactive channel that is not the "
        "agent's or cannot send on its own, a contact it never met; `details` names the field"
    }
}

NEXT_RUNS = 3


def _credits(micro: int | None) -> str | None:
    return None if micro is None else micro_to_credits_str(micro)


def render(row: Schedule, thread_id: str | None) -> schemas.Schedule:
    return schemas.Schedule(
        id=row.id,
        agent_id=row.agent_id,
        name=row.name,
        kind=row.kind,
        cron=row.cron,
        timezone=row.timezone,
        run_at=row.run_at,
        interval_seconds=row.interval_seconds,
        prompt=row.prompt,
        enabled=row.enabled,
        next_run_at=row.next_run_at,
        next_runs=timing.upcoming(service.rule_of(row), row.next_run_at, count=NEXT_RUNS),
        run_cap_credits=_credits(row.run_cap_micro),
        day_cap_credits=_credits(row.day_cap_micro),
        channel_id=row.channel_id,
        contact=row.contact,
        thread_id=thread_id,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def render_run(view: service.RunView) -> schemas.ScheduleRun:
    run = view.run
    return schemas.ScheduleRun(
        id=run.id,
        schedule_id=run.schedule_id,
        planned_at=run.planned_at,
        started_at=run.created_at,
        status="skipped" if run.status == "skipped" else "started",
        outcome=view.outcome,
        reason=run.reason,
        detail=run.detail,
        catch_up=run.catch_up,
        message_id=run.message_id,
        cap_credits=_credits(run.cap_micro),
        cost_credits=micro_to_credits_str(view.cost_micro),
    )


async def _one(db: DbSession, row: Schedule) -> schemas.Schedule:
    threads = await service.thread_ids(db, schedules=[row])
    return render(row, threads.get(row.id))


@router.get("/{agent_id}/schedules", response_model=list[schemas.Schedule], responses=_NOT_FOUND)
async def list_schedules(
    agent_id: str, principal: AgentsRead, db: DbSession
) -> list[schemas.Schedule]:
    """The agent's schedules, oldest first, each with its next three run times. Scope:
    `agents:read`."""
    rows = await service.list_schedules(db, owner_id=principal.user.id, agent_id=agent_id)
    threads = await service.thread_ids(db, schedules=rows)
    return [render(row, threads.get(row.id)) for row in rows]


@router.post(
    "/{agent_id}/schedules",
    status_code=201,
    response_model=schemas.Schedule,
    responses={**_NOT_FOUND, **_INVALID},
)
async def create_schedule(
    agent_id: str, data: schemas.ScheduleCreate, principal: AgentsWrite, db: DbSession
) -> schemas.Schedule:
    """Run the agent unattended. Scope: `agents:write`.

    `kind` is `cron` (`cron`, five fields, read in `timezone`, an IANA name), `once`
    (`run_at`, in the future) or `interval` (`interval_seconds` ≥ 60, first run at `run_at`
    or one interval from now). Each run sends `prompt` to the agent as a message on the
    schedule's own thread and is metered like any turn; `run_cap_credits` caps one run and
    `day_cap_credits` the schedule's runs per day. Runs of an agent that is not running are
    skipped, never queued.
    """
    row = await service.create_schedule(db, principal=principal, agent_id=agent_id, data=data)
    return await _one(db, row)


@router.get(
    "/{agent_id}/schedules/{schedule_id}",
    response_model=schemas.Schedule,
    responses=_NOT_FOUND,
)
async def get_schedule(
    agent_id: str, schedule_id: str, principal: AgentsRead, db: DbSession
) -> schemas.Schedule:
    """One schedule of the agent. Scope: `agents:read`."""
    row = await service.get_schedule(
        db, owner_id=principal.user.id, agent_id=agent_id, schedule_id=schedule_id
    )
    return await _one(db, row)


@router.patch(
    "/{agent_id}/schedules/{schedule_id}",
    response_model=schemas.Schedule,
    responses={**_NOT_FOUND, **_INVALID},
)
async def update_schedule(
    agent_id: str,
    schedule_id: str,
    data: schemas.ScheduleUpdate,
    principal: AgentsWrite,
    db: DbSession,
) -> schemas.Schedule:
    """Change the fields you send. Scope: `agents:write`. The kind cannot change; a new rule,
    or switching `enabled` on, recomputes the next run from now (`enabled: false` pauses it)."""
    row = await service.update_schedule(
        db, principal=principal, agent_id=agent_id, schedule_id=schedule_id, data=data
    )
    return await _one(db, row)


@router.delete("/{agent_id}/schedules/{schedule_id}", status_code=204, responses=_NOT_FOUND)
async def delete_schedule(
    agent_id: str, schedule_id: str, principal: AgentsWrite, db: DbSession
) -> Response:
    """Delete the schedule and its run history. Scope: `agents:write`. A run already started
    still gets its answer, on the schedule's thread."""
    await service.delete_schedule(
        db, principal=principal, agent_id=agent_id, schedule_id=schedule_id
    )
    return Response(status_code=204)


@router.get(
    "/{agent_id}/schedules/{schedule_id}/runs",
    response_model=Page[schemas.ScheduleRun],
    responses=_NOT_FOUND,
)
async def list_schedule_runs(
    agent_id: str,
    schedule_id: str,
    principal: AgentsRead,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[schemas.ScheduleRun]:
    """The schedule's runs, newest first: started or skipped (and why), the turn's state,
    the cap it ran under and what it cost. Scope: `agents:read`."""
    views, total = await service.list_runs(
        db,
        owner_id=principal.user.id,
        agent_id=agent_id,
        schedule_id=schedule_id,
        limit=page.limit,
        offset=page.offset,
    )
    return Page(data=[render_run(v) for v in views], total=total, **page.model_dump())
