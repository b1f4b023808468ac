"""Schedules in the agent file: what an export writes of an agent's schedules, and how an
import checks and recreates them.

An entry holds the schedule's rule, prompt, caps (credits as decimal strings) and whether it
is on; a proactive schedule names its channel by its position in the file's `channels` (and
that channel's type, so that a reordered file is refused rather than misread) and keeps its
contact. Ids, next-run times and run history are not part of a file. A one-off whose time has
passed is left out of an export: it has nothing left to run, and an import (checked like the
API) would refuse a one-off in the past.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.billing.units import micro_to_credits_str
from lunogen.channel.contract import channel_type
from lunogen.kit.time import UtcDateTimeIn
from lunogen.schedule import schemas, service, timing, wake
from lunogen.schedule.models import Schedule

Problems = list[tuple[str, str]]
MAX_SCHEDULES = service.MAX_SCHEDULES_PER_AGENT

_KIND_FIELDS = {
    "cron": {"cron"},
    "once": {"run_at"},
    "interval": {"run_at", "interval_seconds"},
}


class ScheduleChannelRef(BaseModel):
    """A channel of the same file, by its position in `channels` and its type."""

    model_config = ConfigDict(extra="forbid")

    position: int = Field(ge=0, le=99, description="Its index in the file's `channels`.")
    type: str = Field(max_length=40, description="Its `type`, which must match that entry's.")


class ScheduleFileEntry(schemas._Caps):
    """A schedule as the agent file holds it (the API's fields, without ids and times)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["cron", "once", "interval"]
    cron: str | None = Field(default=None, max_length=120)
    timezone: str = Field(default="UTC", max_length=64)
    run_at: UtcDateTimeIn | None = None
    interval_seconds: int | None = None
    prompt: str = Field(min_length=1, max_length=schemas.MAX_PROMPT_CHARS)
    enabled: bool = True
    channel: ScheduleChannelRef | None = Field(
        default=None, description="Proactive: the channel its runs write to"
    )
    contact: str | None = Field(
        default=None, max_length=255, description="Proactive: the contact its runs write to"
    )


def _credits(micro: int | None) -> str | None:
    return None if micro is None else micro_to_credits_str(micro)


async def file_entries(
    session: AsyncSession, *, agent_id: str, channels: Sequence[tuple[str, str]], now: datetime
) -> list[dict[str, Any]]:
    """The agent's schedules as file entries, oldest first; `channels` are the (id, type) of
    the file's `channels`, in order (a proactive schedule whose channel is gone is written
    without its target)."""
    rows = await session.execute(
        select(Schedule)
        .where(Schedule.agent_id == agent_id)
        .order_by(Schedule.created_at, Schedule.id)
    )
    positions = {channel_id: (i, kind) for i, (channel_id, kind) in enumerate(channels)}
    entries: list[dict[str, Any]] = []
    for row in rows.scalars():
        if row.kind == "once" and (row.run_at is None or row.run_at <= now):
            continue
        entry: dict[str, Any] = {"name": row.name, "kind": row.kind}
        if row.kind == "cron":
            entry["cron"] = row.cron
        entry["timezone"] = row.timezone
        if row.kind != "cron" and row.run_at is not None:
            entry["run_at"] = row.run_at.isoformat().replace("+00:00", "Z")
        if row.kind == "interval":
            entry["interval_seconds"] = row.interval_seconds
        entry["prompt"] = row.prompt
        entry["enabled"] = row.enabled
        entry["run_cap_credits"] = _credits(row.run_cap_micro)
        entry["day_cap_credits"] = _credits(row.day_cap_micro)
        found = positions.get(row.channel_id or "")
        if found is not None and row.contact:
            entry["channel"] = {"position": found[0], "type": found[1]}
            entry["contact"] = row.contact
        entries.append(entry)
    return entries


def file_problems(
    raw: Sequence[Any], *, channel_types: Sequence[str | None], now: datetime
) -> Problems:
    """Every problem of the file's schedules (`raw`, as read) beyond their shape, each named
    `schedules.<i>.<field>`: the rule checked as the API checks it, and a proactive target
    that is one of the file's channels that sends messages on its own. An entry of the wrong
    shape is skipped here: the file's own validation names it."""
    problems: Problems = []
    for index, item in enumerate(raw[: service.MAX_SCHEDULES_PER_AGENT]):
        try:
            entry = ScheduleFileEntry.model_validate(item)
        except ValidationError:
            continue
        path = f"schedules.{index}"
        sent = entry.model_fields_set
        for name in sorted({"cron", "run_at", "interval_seconds"} & sent):
            if getattr(entry, name) is not None and name not in _KIND_FIELDS[entry.kind]:
                problems.append((f"{path}.{name}", f"A {entry.kind} schedule has no {name}"))
        try:
            timing.check(rule_of(entry, now), now=now)
        except timing.RuleError as exc:
            problems.append((f"{path}.{exc.field}", exc.message))
        problems += _target_problems(path, entry, channel_types)
    return problems


def _target_problems(
    path: str, entry: ScheduleFileEntry, channel_types: Sequence[str | None]
) -> Problems:
    ref, contact = entry.channel, (entry.contact or "").strip()
    if ref is None and not contact:
        return []
    if ref is None:
        return [(f"{path}.channel", "A contact needs the channel to write to")]
    if not contact:
        return [(f"{path}.contact", "A channel needs the contact to write to")]
    if ref.position >= len(channel_types):
        return [(f"{path}.channel.position", f"the file has no channel {ref.position}")]
    actual = channel_types[ref.position]
    if actual != ref.type:
        return [
            (
                f"{path}.channel.type",
                f"channel {ref.position} of the file is a {actual} channel, not {ref.type}",
            )
        ]
    kind = channel_type(ref.type)
    if kind is None or not kind.pushes_replies:
        return [
            (
                f"{path}.channel",
                f"A {ref.type} channel cannot send messages on its own: it only answers the "
                "request that brought a message",
            )
        ]
    return []


def rule_of(entry: ScheduleFileEntry, now: datetime) -> timing.Rule:
    return service.new_rule(
        kind=entry.kind,
        timezone=entry.timezone,
        cron=entry.cron,
        run_at=entry.run_at,
        interval_seconds=entry.interval_seconds,
        now=now,
    )


def add_from_file(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    entries: Sequence[ScheduleFileEntry],
    channel_ids: Sequence[str],
    now: datetime,
) -> list[Schedule]:
    """Create the checked entries' schedules (and their threads) for a new agent; the
    scheduler is woken when the import commits. A proactive schedule keeps its contact: the
    new channel has met nobody yet, so the channel's rules skip its runs until the contact
    writes (a webhook receiver takes them at once)."""
    made: list[Schedule] = []
    for index, entry in enumerate(entries):
        target = entry.channel
        row, thread = service.new_row(
            agent_id=agent_id,
            owner_id=owner_id,
            name=entry.name,
            rule=rule_of(entry, now),
            prompt=entry.prompt,
            enabled=entry.enabled,
            run_cap_micro=service.micro_of(entry.run_cap_credits),
            day_cap_micro=service.micro_of(entry.day_cap_credits),
            channel_id=None if target is None else channel_ids[target.position],
            contact=None if target is None else (entry.contact or "").strip(),
            now=now,
        )
        row.created_at += timedelta(microseconds=index)  # listed in the file's order
        session.add(row)
        session.add(thread)
        made.append(row)
    if made:
        wake.changed(session)
    return made
