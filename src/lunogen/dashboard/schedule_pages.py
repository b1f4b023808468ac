"""Schedules in the dashboard: an agent's schedules with their next runs and a form to add one
(`/agents/{id}/schedules`), and one schedule's form with its run history and what each run
cost (`/agents/{id}/schedules/{schedule id}`). Saves through the same service as the API;
only the agent's owner sees them (another person's ids answer 404). Times in the forms are in
the schedule's own time zone."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.responses import Response

from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsWrite
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import ValidationFailedError
from lunogen.kit.forms import form_fields
from lunogen.schedule import proactive, schemas, service, timing
from lunogen.schedule.endpoints import render, render_run

router = page_router()

HISTORY_SHOWN = 50
LABELS = {
    "name": "Name",
    "kind": "Kind",
    "cron": "Cron expression",
    "timezone": "Time zone",
    "run_at": "Time",
    "interval_seconds": "Every (minutes)",
    "prompt": "Prompt",
    "run_cap_credits": "Cap per run",
    "day_cap_credits": "Cap per day",
    "channel_id": "Send to",
    "contact": "Contact",
}
FIELDS = ("name", "kind", "cron", "timezone", "run_at", "interval_minutes", "prompt")
CAPS = ("run_cap_credits", "day_cap_credits")
TARGET = ("channel_id", "contact")
RULE_FIELDS = (
    ("cron", "cron"),
    ("timezone", "timezone"),
    ("run_at", "run_at"),
    ("interval_minutes", "interval_seconds"),
)
FLASH = {
    "created": "Schedule created.",
    "saved": "Saved. The next run was worked out again.",
    "deleted": "Schedule deleted.",
}


def _entered(form: Mapping[str, str]) -> dict[str, str]:
    keys = (*FIELDS, *CAPS, *TARGET)
    return {key: form.get(key, "").strip()[:9000] for key in keys} | {
        "enabled": "on" if form.get("enabled") else ""
    }


def _local_time(text: str, zone_name: str) -> datetime | None:
    """A `datetime-local` value read in the schedule's zone; None when empty."""
    if not text:
        return None
    try:
        naive = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailedError("Enter a date and time", field="run_at") from None
    if naive.tzinfo is not None:
        return naive
    try:
        zone = timing.zone(zone_name or "UTC")
    except timing.RuleError:
        return naive  # the time zone's own error is reported
    return naive.replace(tzinfo=zone)


def _interval(text: str) -> int | None:
    if not text:
        return None
    if not text.isdigit() or len(text) > 7:
        raise ValidationFailedError("Enter a whole number of minutes", field="interval_seconds")
    return int(text) * 60


def _body(entered: Mapping[str, str], *, creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": entered["name"],
        "prompt": entered["prompt"],
        "enabled": bool(entered["enabled"]),
        "run_cap_credits": entered["run_cap_credits"] or None,
        "day_cap_credits": entered["day_cap_credits"] or None,
        "channel_id": entered["channel_id"] or None,
        "contact": entered["contact"] or None,
    }
    kind = entered["kind"]
    if creating:
        body["kind"] = kind
    body["timezone"] = entered["timezone"] or "UTC"
    if kind == "cron":
        body["cron"] = entered["cron"]
    elif kind == "once":
        body["run_at"] = _local_time(entered["run_at"], body["timezone"])
    else:
        body["interval_seconds"] = _interval(entered["interval_minutes"])
        body["run_at"] = _local_time(entered["run_at"], body["timezone"])
    return body


def _problems(exc: Exception) -> list[str]:
    if isinstance(exc, ValidationError):
        found = []
        for error in exc.errors():
            name = str(error["loc"][0]) if error["loc"] else ""
            found.append(f"{LABELS.get(name, name)}: {error['msg'].removeprefix('Value error, ')}")
        return found
    assert isinstance(exc, ValidationFailedError)
    details = exc.extra.get("details") or []
    field = details[0]["field"] if details else ""
    return [f"{LABELS.get(field, field)}: {exc.message}" if field else str(exc.message)]


def _blank() -> dict[str, str]:
    return {
        "name": "",
        "kind": "cron",
        "cron": "0 9 * * 1-5",
        "timezone": "UTC",
        "run_at": "",
        "interval_minutes": "60",
        "prompt": "",
        "run_cap_credits": "",
        "day_cap_credits": "",
        "channel_id": "",
        "contact": "",
        "enabled": "on",
    }


def _shown_of(view: schemas.Schedule) -> dict[str, str]:
    zone = timing.zone(view.timezone)
    return {
        "name": view.name,
        "kind": view.kind,
        "cron": view.cron or "",
        "timezone": view.timezone,
        "run_at": view.run_at.astimezone(zone).strftime("%Y-%m-%dT%H:%M") if view.run_at else "",
        "interval_minutes": str((view.interval_seconds or 3600) // 60),
        "prompt": view.prompt,
        "run_cap_credits": view.run_cap_credits or "",
        "day_cap_credits": view.day_cap_credits or "",
        "channel_id": view.channel_id or "",
        "contact": view.contact or "",
        "enabled": "on" if view.enabled else "",
    }


def _in_zone(view: schemas.Schedule) -> list[str]:
    zone = timing.zone(view.timezone)
    return [t.astimezone(zone).strftime("%a %Y-%m-%d %H:%M") for t in view.next_runs]


@router.get("/agents/{agent_id}/schedules")
async def schedules_page(
    agent_id: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    return await _list_page(request, viewer, db, agent_id, flash=request.query_params.get("done"))


async def _list_page(
    request: Request,
    viewer: Viewer,
    db: DbSession,
    agent_id: str,
    *,
    flash: str | None = None,
    problems: list[str] | None = None,
    entered: Mapping[str, str] | None = None,
) -> Response:
    owner_id = viewer.user.id
    agent = await get_agent(db, owner_id=owner_id, agent_id=agent_id, with_channels=False)
    rows = await service.list_schedules(db, owner_id=owner_id, agent_id=agent.id)
    threads = await service.thread_ids(db, schedules=rows)
    views = [render(row, threads.get(row.id)) for row in rows]
    return page(
        request,
        viewer,
        "agents/schedules.html",
        section="agents",
        status_code=422 if problems else 200,
        agent=agent,
        schedules=[(view, _in_zone(view)) for view in views],
        shown=entered or _blank(),
        problems=problems or [],
        flash=FLASH.get(flash or ""),
        limit=service.MAX_SCHEDULES_PER_AGENT,
        channels=await proactive.channel_choices(db, agent_id=agent.id),
    )


@router.post("/agents/{agent_id}/schedules")
async def create_schedule_form(
    agent_id: str, request: Request, viewer: SignedIn, principal: AgentsWrite, db: DbSession
) -> Response:
    entered = _entered(await form_fields(request))
    try:
        data = schemas.ScheduleCreate.model_validate(_body(entered, creating=True))
        await service.create_schedule(db, principal=principal, agent_id=agent_id, data=data)
    except (ValidationError, ValidationFailedError) as exc:
        return await _list_page(
            request, viewer, db, agent_id, problems=_problems(exc), entered=entered
        )
    return RedirectResponse(f"/agents/{agent_id}/schedules?done=created", status_code=303)


@router.get("/agents/{agent_id}/schedules/{schedule_id}")
async def schedule_page(
    agent_id: str, schedule_id: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    return await _one_page(
        request, viewer, db, agent_id, schedule_id, flash=request.query_params.get("done")
    )


async def _one_page(
    request: Request,
    viewer: Viewer,
    db: DbSession,
    agent_id: str,
    schedule_id: str,
    *,
    flash: str | None = None,
    problems: list[str] | None = None,
    entered: Mapping[str, str] | None = None,
) -> Response:
    owner_id = viewer.user.id
    agent = await get_agent(db, owner_id=owner_id, agent_id=agent_id, with_channels=False)
    row = await service.get_schedule(
        db, owner_id=owner_id, agent_id=agent.id, schedule_id=schedule_id
    )
    threads = await service.thread_ids(db, schedules=[row])
    view = render(row, threads.get(row.id))
    runs, total = await service.list_runs(
        db,
        owner_id=owner_id,
        agent_id=agent.id,
        schedule_id=row.id,
        limit=HISTORY_SHOWN,
        offset=0,
    )
    return page(
        request,
        viewer,
        "agents/schedule.html",
        section="agents",
        status_code=422 if problems else 200,
        agent=agent,
        schedule=view,
        next_runs=_in_zone(view),
        runs=[render_run(run) for run in runs],
        total=total,
        shown=entered or _shown_of(view),
        problems=problems or [],
        flash=FLASH.get(flash or ""),
        channels=await proactive.channel_choices(db, agent_id=agent.id),
    )


@router.post("/agents/{agent_id}/schedules/{schedule_id}")
async def update_schedule_form(
    agent_id: str,
    schedule_id: str,
    request: Request,
    viewer: SignedIn,
    principal: AgentsWrite,
    db: DbSession,
) -> Response:
    row = await service.get_schedule(
        db, owner_id=principal.user.id, agent_id=agent_id, schedule_id=schedule_id
    )
    entered = _entered(await form_fields(request)) | {"kind": row.kind}
    stored = _shown_of(render(row, None))
    try:
        body = _body(entered, creating=False)
        # Only what changed is sent: an unchanged rule keeps its next run (and a one-off
        # whose time has passed can still be renamed).
        for name, key in RULE_FIELDS:
            if entered[name] == stored[name] or (key == "run_at" and not entered[name]):
                body.pop(key, None)
        if all(entered[name] == stored[name] for name in TARGET):  # not checked again
            body.pop("channel_id")
            body.pop("contact")
        data = schemas.ScheduleUpdate.model_validate(body)
        await service.update_schedule(
            db, principal=principal, agent_id=agent_id, schedule_id=schedule_id, data=data
        )
    except (ValidationError, ValidationFailedError) as exc:
        return await _one_page(
            request,
            viewer,
            db,
            agent_id,
            schedule_id,
            problems=_problems(exc),
            entered=entered,
        )
    return RedirectResponse(
        f"/agents/{agent_id}/schedules/{schedule_id}?done=saved", status_code=303
    )


@router.post("/agents/{agent_id}/schedules/{schedule_id}/delete")
async def delete_schedule_form(
    agent_id: str, schedule_id: str, principal: AgentsWrite, db: DbSession
) -> Response:
    await service.delete_schedule(
        db, principal=principal, agent_id=agent_id, schedule_id=schedule_id
    )
    return RedirectResponse(f"/agents/{agent_id}/schedules?done=deleted", status_code=303)
