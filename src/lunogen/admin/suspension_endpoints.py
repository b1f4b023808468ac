"""Admin API: suspend and reinstate accounts, list and suspend agents across tenants, and
the system's health.

Admin only (anyone else: 403). Every change is audited with its reason; every read of other
accounts' agents is audited as `admin.viewed`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from lunogen.account.models import User
from lunogen.admin import suspension
from lunogen.admin.suspension_schemas import (
    AccountSuspensionOut,
    AdminAgentOut,
    QueueOut,
    ReasonIn,
    SystemHealthOut,
)
from lunogen.admin.system_health import system_health
from lunogen.agent.models import Agent
from lunogen.auth.dependencies import Admin
from lunogen.db import DbSession
from lunogen.errors import error_responses
from lunogen.kit.effects import Effects
from lunogen.kit.pagination import Page, PageParams, page_params

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])

_USER_404: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No live account has this id",
        "content": {"application/json": {"example": {"error": "User not found"}}},
    }
}
_AGENT_404: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No live agent has this id",
        "content": {"application/json": {"example": {"error": "Agent not found"}}},
    }
}


def _effects(request: Request) -> Effects:
    return Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


def _account_out(user: User, stopped: list[str] | None = None) -> AccountSuspensionOut:
    return AccountSuspensionOut(
        user_id=user.id,
        email=user.email,
        suspended=user.suspended_at is not None,
        suspended_at=user.suspended_at,
        suspended_reason=user.suspended_reason,
        stopped_agents=stopped or [],
    )


def agent_out(agent: Agent, owner_email: str) -> AdminAgentOut:
    return AdminAgentOut(
        id=agent.id,
        name=agent.name,
        owner_id=agent.owner_id,
        owner_email=owner_email,
        status=agent.status,
        status_changed_at=agent.status_changed_at,
        suspended_at=agent.suspended_at,
        suspended_reason=agent.suspended_reason,
        created_at=agent.created_at,
    )


@router.post(
    "/users/{user_id}/suspend",
    response_model=AccountSuspensionOut,
    responses={**_USER_404, **error_responses(409)},
)
async def suspend_user(
    user_id: str, data: ReasonIn, request: Request, principal: Admin, db: DbSession
) -> AccountSuspensionOut:
    """Suspend an account: from now on each of its sessions and API keys is refused with 403
    `Account suspended: <reason>`, and its running agents are stopped (their channels
    unregistered). The owner is notified in the app and by email. Audited with the reason
    (`admin.user_suspended`). 409 for your own account or one already suspended."""
    done = await suspension.suspend_user(
        db, admin=principal, user_id=user_id, reason=data.reason, effects=_effects(request)
    )
    return _account_out(done.user, done.stopped_agents)


@router.post(
    "/users/{user_id}/reinstate",
    response_model=AccountSuspensionOut,
    responses={**_USER_404, **error_responses(409)},
)
async def reinstate_user(
    user_id: str, data: ReasonIn, request: Request, principal: Admin, db: DbSession
) -> AccountSuspensionOut:
    """Lift an account's suspension: its sessions and keys work again; its agents stay stopped
    until the owner starts them. Owner notified; audited (`admin.user_reinstated`). 409 when
    the account is not suspended."""
    user = await suspension.reinstate_user(
        db, admin=principal, user_id=user_id, reason=data.reason, effects=_effects(request)
    )
    return _account_out(user)


StatusFilter = Annotated[
    str | None,
    Query(pattern="^(" + "|".join(suspension.AGENT_STATUSES) + ")$", description="Agent status"),
]


@router.get("/agents", response_model=Page[AdminAgentOut])
async def list_agents(
    principal: Admin,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    status: StatusFilter = None,
    owner_email: Annotated[str | None, Query(max_length=320, description="Part of it")] = None,
) -> Page[AdminAgentOut]:
    """Every owner's live agents, newest first, optionally filtered by status and by part of
    the owner's email address. The read is audited (`admin.viewed`)."""
    rows, total = await suspension.list_all_agents(
        db, status=status, owner_email=owner_email, limit=page.limit, offset=page.offset
    )
    suspension.record_view(
        db,
        actor=principal.user,
        client=principal.client,
        actor_key_id=principal.key_id,
        target_type="agents",
        target_id=None,
        subject_user_id=None,
        details={"status": status, "owner_email": owner_email, "offset": page.offset},
    )
    return Page(
        data=[agent_out(row.agent, row.owner_email) for row in rows],
        total=total,
        **page.model_dump(),
    )


@router.get("/agents/{agent_id}", response_model=AdminAgentOut, responses=_AGENT_404)
async def get_agent(agent_id: str, principal: Admin, db: DbSession) -> AdminAgentOut:
    """Any owner's live agent: its status and any suspension. The read is audited
    (`admin.viewed`, with the owner as its subject)."""
    agent = await suspension.any_agent(db, agent_id)
    owner = await db.get(User, agent.owner_id)
    if agent.owner_id != principal.user.id:
        suspension.record_view(
            db,
            actor=principal.user,
            client=principal.client,
            actor_key_id=principal.key_id,
            target_type="agent",
            target_id=agent.id,
            subject_user_id=agent.owner_id,
        )
    return agent_out(agent, owner.email if owner else "")


@router.post(
    "/agents/{agent_id}/suspend",
    response_model=AdminAgentOut,
    responses={**_AGENT_404, **error_responses(409)},
)
async def suspend_agent(
    agent_id: str, data: ReasonIn, request: Request, principal: Admin, db: DbSession
) -> AdminAgentOut:
    """Suspend any owner's agent: it stops (channels unregistered) and its owner can neither
    deploy nor start it until it is reinstated. Owner notified; audited with the reason
    (`admin.agent_suspended`). 409 when it is suspended already."""
    agent = await suspension.suspend_agent(
        db, admin=principal, agent_id=agent_id, reason=data.reason, effects=_effects(request)
    )
    owner = await db.get(User, agent.owner_id)
    return agent_out(agent, owner.email if owner else "")


@router.post(
    "/agents/{agent_id}/reinstate",
    response_model=AdminAgentOut,
    responses={**_AGENT_404, **error_responses(409)},
)
async def reinstate_agent(
    agent_id: str, data: ReasonIn, request: Request, principal: Admin, db: DbSession
) -> AdminAgentOut:
    """Lift an agent's suspension: it is `stopped` and its owner may start it again. Owner
    notified; audited (`admin.agent_reinstated`). 409 when it is not suspended."""
    agent = await suspension.reinstate_agent(
        db, admin=principal, agent_id=agent_id, reason=data.reason, effects=_effects(request)
    )
    owner = await db.get(User, agent.owner_id)
    return agent_out(agent, owner.email if owner else "")


@router.get("/health", response_model=SystemHealthOut)
async def get_system_health(request: Request, principal: Admin, db: DbSession) -> SystemHealthOut:
    """The work waiting in each durable queue (turns, deliveries, emails, channel
    unregistrations, Stripe cancellations) and what gave up, the sandbox backend of this
    process, and whether the database and Redis answer. Always 200 while the API itself answers:
    read `status`."""
    found = await system_health(
        db, settings=request.app.state.settings, rate_limiter=request.app.state.rate_limiter
    )
    return SystemHealthOut(
        status=found.status,
        database=found.database,
        redis=found.redis,
        job_broker=found.job_broker,
        sandbox_backend=found.sandbox_backend,
        sandbox_problem=found.sandbox_problem,
        queues=[QueueOut(**vars(queue)) for queue in found.queues],
    )
