"""An agent's runtime log: the newest lines, filtered by level and kind on the server, then live.

The page's script (`static/logs.js`) follows `GET /api/v1/agents/{id}/logs/stream` with an
EventSource (the session cookie authenticates it; a GET needs no CSRF token) from the newest
line the page was rendered with, and filters the live lines in the browser with the same
level and kind as the page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Query, Request
from starlette.responses import Response

from lunogen.agent.service import get_agent
from lunogen.dashboard.shell import SignedIn, page, page_router
from lunogen.db import DbSession
from lunogen.errors import ValidationFailedError
from lunogen.runlog import logs as runlog
from lunogen.runlog.models import AgentLogEvent

router = page_router()

PAGE = 100  # the newest lines shown on load
MAX_KIND = 60  # an event name's length in the log table
LEVEL_CHOICES: tuple[tuple[str, str], ...] = (
    ("", "All levels"),
    ("info", "Info and above"),
    ("warning", "Warnings and errors"),
    ("error", "Errors only"),
)


@dataclass(frozen=True)
class Line:
    id: int
    time: str  # ISO 8601, UTC
    shown_time: str
    level: str
    event: str
    message: str
    details: str  # pretty JSON, "" when there are none


def line_of(row: AgentLogEvent) -> Line:
    details: dict[str, Any] = row.details or {}
    return Line(
        id=row.id,
        time=row.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        shown_time=row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        level=row.level,
        event=row.event,
        message=row.message,
        details=json.dumps(details, indent=2, sort_keys=True, ensure_ascii=False)
        if details
        else "",
    )


def _level(value: str | None) -> runlog.Level | None:
    if not value:
        return None
    for level in runlog.LEVELS:
        if level == value:
            return level
    raise ValidationFailedError(f"level must be one of {', '.join(runlog.LEVELS)}", field="level")


@router.get("/agents/{agent_id}/logs")
async def agent_log(
    request: Request,
    agent_id: str,
    viewer: SignedIn,
    db: DbSession,
    level: Annotated[str | None, Query()] = None,
    kind: Annotated[str | None, Query()] = None,
) -> Response:
    agent = await get_agent(db, owner_id=viewer.user.id, agent_id=agent_id, with_channels=False)
    min_level = _level(level)
    event = kind.strip() if kind and kind.strip() else None
    if event is not None and len(event) > MAX_KIND:
        raise ValidationFailedError(f"kind is at most {MAX_KIND} characters", field="kind")
    rows = await runlog.recent_events(
        db, agent_id=agent.id, min_level=min_level, event=event, limit=PAGE
    )
    kinds = await runlog.event_names(db, agent_id=agent.id)
    if event is not None and event not in kinds:
        kinds = sorted([*kinds, event])
    return page(
        request,
        viewer,
        "logs/page.html",
        section="agents",
        agent=agent,
        lines=[line_of(row) for row in rows],
        level=min_level or "",
        kind=event or "",
        kinds=kinds,
        level_choices=LEVEL_CHOICES,
        levels=runlog.LEVELS,
        cursor=await runlog.latest_event_id(db, agent_id=agent.id),
        filtered=bool(min_level or event),
        page_size=PAGE,
    )
