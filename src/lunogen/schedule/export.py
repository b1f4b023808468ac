"""The `schedules` section of a data export: the owner's schedules and their run history.
Importing this module registers the section."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from lunogen.billing.units import micro_to_credits_str
from lunogen.privacy.export_archive import Archive, ExportContext, register_section
from lunogen.schedule.models import Schedule, ScheduleRun
from lunogen.schedule.service import message_costs


def _credits(micro: int | None) -> str | None:
    return None if micro is None else micro_to_credits_str(micro)


@register_section(
    "schedules",
    files="schedules.json",
    about="Your agents' schedules (rule, time zone, prompt, caps, next run, the contact a "
    "proactive one writes to) and every run: "
    "when it was planned and started, whether it was skipped and why, and what it cost.",
)
async def schedules_section(ctx: ExportContext, archive: Archive) -> None:
    schedules = select(Schedule).where(Schedule.owner_id == ctx.user_id)
    runs = select(ScheduleRun).where(ScheduleRun.owner_id == ctx.user_id)
    async with archive.stream("schedules.json") as out:
        await out.write('{"schedules": ')
        async with out.array() as items:
            async for rows in ctx.batches(schedules, [Schedule.created_at, Schedule.id]):
                for row in rows:
                    await items.add(_schedule(row))
        await out.write(', "runs": ')
        async with out.array() as items:
            async for batch in ctx.batches(runs, [ScheduleRun.created_at, ScheduleRun.id]):
                async with ctx.reader() as session:
                    costs = await message_costs(
                        session, [run.message_id for run in batch if run.message_id]
                    )
                for run in batch:
                    await items.add(_run(run, costs.get(run.message_id or "", 0)))
        await out.write("}")


def _schedule(row: Schedule) -> dict[str, Any]:
    return {
        "id": row.id,
        "agent_id": row.agent_id,
        "name": row.name,
        "kind": row.kind,
        "cron": row.cron,
        "timezone": row.timezone,
        "run_at": row.run_at,
        "interval_seconds": row.interval_seconds,
        "prompt": row.prompt,
        "enabled": row.enabled,
        "next_run_at": row.next_run_at,
        "run_cap_credits": _credits(row.run_cap_micro),
        "day_cap_credits": _credits(row.day_cap_micro),
        "channel_id": row.channel_id,
        "contact": row.contact,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


def _run(run: ScheduleRun, cost_micro: int) -> dict[str, Any]:
    return {
        "id": run.id,
        "schedule_id": run.schedule_id,
        "agent_id": run.agent_id,
        "planned_at": run.planned_at,
        "started_at": run.created_at,
        "status": run.status,
        "reason": run.reason,
        "detail": run.detail,
        "catch_up": run.catch_up,
        "message_id": run.message_id,
        "cap_credits": _credits(run.cap_micro),
        "cost_credits": micro_to_credits_str(cost_micro),
    }
