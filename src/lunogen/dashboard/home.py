"""The home page after sign-in: the agents and their state, credits, this month's usage, unread
notifications, and the first steps while the account has no agent."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from lunogen.agent.service import list_agents
from lunogen.billing.service import overview
from lunogen.dashboard.shell import SignedIn, page, page_router
from lunogen.db import DbSession
from lunogen.kit.time import utcnow
from lunogen.llm.usage_service import usage_report
from lunogen.notification.service import list_notifications

router = page_router()


@router.get("/home")
async def home(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    user = viewer.user
    agents, total_agents = await list_agents(db, owner_id=user.id, status=None, limit=20, offset=0)
    now = utcnow()
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    month = await usage_report(db, owner_id=user.id, since=month_start, until=now, group_by="day")
    unread, _total, _unread = await list_notifications(
        db, user_id=user.id, unread_only=True, limit=5, offset=0
    )
    return page(
        request,
        viewer,
        "app/home.html",
        section="home",
        agents=agents,
        total_agents=total_agents,
        running=sum(1 for agent in agents if agent.status == "running"),
        billing=await overview(db, request.app.state.settings, user),
        month=month.totals,
        month_start=month_start,
        unread=unread,
    )
