"""Suspending and reinstating accounts and single agents (admins only; the caller commits).

An account is suspended with a reason: from then on every session and API key of it is refused
with 403 `Account suspended: <reason>` (`auth.dependencies`, `dashboard.shell`), so it can
neither deploy nor start anything; its live agents are stopped here, through the lifecycle, so
that their channels are unregistered from the providers after commit. Reinstating lifts the
refusal; the agents stay stopped until their owner starts them.

An agent is suspended on its own by moving it to the lifecycle's `suspended` status, from which
its owner can neither deploy nor start it; reinstating moves it to `stopped`.

Each change is audited with the reason in the same transaction, and its owner is notified
(in the app and by email). An admin cannot suspend their own account.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.admin.suspended import appeal_contact
from lunogen.agent import lifecycle
from lunogen.agent.models import Agent
from lunogen.agent.service import agent_not_found
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.channel import registration
from lunogen.errors import ConflictError, NotFoundError
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow
from lunogen.kit.web import ClientInfo
from lunogen.notification.service import notify

# A live agent of a suspended account is stopped from any of these.
STOPPABLE = frozenset({"deploying", "running", "paused", "error"})
AGENT_STATUSES = ("draft", "deploying", "running", "stopped", "paused", "error", "suspended")


def _is_id(value: str) -> bool:
    return 0 < len(value) <= 36


async def live_user(session: AsyncSession, user_id: str, *, for_update: bool = False) -> User:
    """Any account that is not deleted, by id; else 404 `User not found`."""
    if not _is_id(user_id):
        raise NotFoundError(error="User not found")
    query = select(User).where(User.id == user_id, User.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    user = (await session.execute(query)).scalar_one_or_none()
    if user is None:
        raise NotFoundError(error="User not found")
    return user


async def any_agent(session: AsyncSession, agent_id: str, *, for_update: bool = False) -> Agent:
    """Any owner's live agent, by id; else 404 `Agent not found`."""
    if not _is_id(agent_id):
        raise agent_not_found()
    query = select(Agent).where(Agent.id == agent_id, Agent.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update()
    agent = (await session.execute(query)).scalar_one_or_none()
    if agent is None:
        raise agent_not_found()
    return agent


async def _stop_agents(session: AsyncSession, *, owner_id: str, effects: Effects) -> list[str]:
    """Stop every live agent of `owner_id` that may be running; their ids, oldest first.

    `lifecycle.stop` does it (logging the change and queueing the channels' unregistration);
    an agent in the middle of a deploy is moved to `stopped` here instead, as `lifecycle.stop`
    refuses to race the deploy: the deploy sees the change when it locks the agent again and
    unregisters what it registered.
    """
    agents = (
        await session.execute(
            select(Agent)
            .where(
                Agent.owner_id == owner_id,
                Agent.deleted_at.is_(None),
                Agent.status.in_(STOPPABLE),
            )
            .order_by(Agent.created_at, Agent.id)
            .with_for_update()
        )
    ).scalars()
    stopped: list[str] = []
    for agent in list(agents):
        if agent.status == "deploying":
            await lifecycle.set_status(session, agent=agent, status="stopped", effects=effects)
            for row in agent.channels:
                registration.queue_unregistration(
                    session, agent=agent, row=row, why="the account was suspended"
                )
        else:
            await lifecycle.stop(session, owner_id=owner_id, agent_id=agent.id, effects=effects)
        stopped.append(agent.id)
    return stopped


def _audit(
    session: AsyncSession,
    admin: Principal,
    *,
    action: str,
    subject: str,
    target_type: str,
    target_id: str,
    details: dict[str, object],
) -> None:
    audit.record(
        session,
        action=action,
        actor_user_id=admin.user.id,
        actor_key_id=admin.key_id,
        client=admin.client,
        subject_user_id=subject,
        target_type=target_type,
        target_id=target_id,
        details=details,
    )


@dataclass(frozen=True)
class Suspended:
    user: User
    stopped_agents: list[str]


async def suspend_user(
    session: AsyncSession, *, admin: Principal, user_id: str, reason: str, effects: Effects
) -> Suspended:
    """Suspend the account: its sessions and keys refused, its running agents stopped."""
    user = await live_user(session, user_id, for_update=True)
    if user.id == admin.user.id:
        raise ConflictError("You cannot suspend your own account; ask another admin")
    if user.suspended_at is not None:
        raise ConflictError(
            f"The account is already suspended: {user.suspended_reason}",
            error="Account already suspended",
        )
    now = utcnow()
    user.suspended_at, user.suspended_reason = now, reason
    stopped = await _stop_agents(session, owner_id=user.id, effects=effects)
    _audit(
        session,
        admin,
        action="admin.user_suspended",
        subject=user.id,
        target_type="user",
        target_id=user.id,
        details={"reason": reason, "stopped_agents": stopped},
    )
    await notify(
        session,
        user=user,
        kind="account.suspended",
        title="Your account was suspended",
        body=f"An administrator suspended your LunoGen account: {reason}. Your API keys and "
        "sessions no longer work and your running agents were stopped. To appeal, write to "
        f"{appeal_contact(effects.settings)} from this address.",
        dedupe_key=f"account:{user.id}:suspended:{now.isoformat()}",
        settings=effects.settings,
        keyring=effects.keyring,
    )
    return Suspended(user=user, stopped_agents=stopped)


async def reinstate_user(
    session: AsyncSession, *, admin: Principal, user_id: str, reason: str, effects: Effects
) -> User:
    """Lift the account's suspension: its sessions and keys work again; agents stay stopped."""
    user = await live_user(session, user_id, for_update=True)
    if user.suspended_at is None:
        raise ConflictError("The account is not suspended", error="Account not suspended")
    previous = user.suspended_reason
    user.suspended_at, user.suspended_reason = None, None
    _audit(
        session,
        admin,
        action="admin.user_reinstated",
        subject=user.id,
        target_type="user",
        target_id=user.id,
        details={"reason": reason, "suspended_for": previous},
    )
    await notify(
        session,
        user=user,
        kind="account.reinstated",
        title="Your account was reinstated",
        body=f"An administrator lifted the suspension of your LunoGen account: {reason}. Your "
        "API keys and sessions work again; start your agents when you are ready.",
        dedupe_key=f"account:{user.id}:reinstated:{utcnow().isoformat()}",
        settings=effects.settings,
        keyring=effects.keyring,
    )
    return user


async def suspend_agent(
    session: AsyncSession, *, admin: Principal, agent_id: str, reason: str, effects: Effects
) -> Agent:
    """Suspend one agent of any owner: stopped (channels unregistered), owner notified."""
    agent = await any_agent(session, agent_id, for_update=True)
    if agent.status == "suspended":
        raise ConflictError(
            f"The agent is already suspended: {agent.suspended_reason}",
            error="Agent already suspended",
        )
    previous = await put_in_suspension(session, agent=agent, reason=reason, effects=effects)
    _audit(
        session,
        admin,
        action="admin.agent_suspended",
        subject=agent.owner_id,
        target_type="agent",
        target_id=agent.id,
        details={"reason": reason, "from": previous},
    )
    return agent


async def put_in_suspension(
    session: AsyncSession, *, agent: Agent, reason: str, effects: Effects, notice: str | None = None
) -> str:
    """Move `agent` (locked by the caller, not suspended) to `suspended`: its channels queued for
    unregistration, the change logged and its owner notified with `notice` (default: the
    reason). Returns the status it left. The caller audits."""
    # A deploy racing this sees the change when it locks the agent again, and undoes itself.
    previous = agent.status
    if previous in STOPPABLE:
        for row in agent.channels:
            registration.queue_unregistration(
                session, agent=agent, row=row, why="the agent was suspended"
            )
    agent.suspended_at, agent.suspended_reason = utcnow(), reason
    # Logged in the agent's runtime log and notified to its owner with the reason.
    await lifecycle.set_status(
        session, agent=agent, status="suspended", effects=effects, reason=notice or reason
    )
    return previous


async def reinstate_agent(
    session: AsyncSession, *, admin: Principal, agent_id: str, reason: str, effects: Effects
) -> Agent:
    """Lift an agent's suspension: it is `stopped`, and its owner may start it again."""
    agent = await any_agent(session, agent_id, for_update=True)
    if agent.status != "suspended":
        raise ConflictError("The agent is not suspended", error="Agent not suspended")
    previous = agent.suspended_reason
    agent.suspended_at, agent.suspended_reason = None, None
    await lifecycle.set_status(
        session, agent=agent, status="stopped", effects=effects, reason=reason
    )
    _audit(
        session,
        admin,
        action="admin.agent_reinstated",
        subject=agent.owner_id,
        target_type="agent",
        target_id=agent.id,
        details={"reason": reason, "suspended_for": previous},
    )
    owner = await session.get(User, agent.owner_id)
    if owner is not None:
        await notify(
            session,
            user=owner,
            kind="agent.reinstated",
            title=f"Agent {agent.name} was reinstated",
            body=f"An administrator lifted the suspension of your agent {agent.name!r}: "
            f"{reason}. It is stopped; start it when you are ready.",
            dedupe_key=f"agent:{agent.id}:reinstated:{utcnow().isoformat()}",
            agent_id=agent.id,
            settings=effects.settings,
            keyring=effects.keyring,
        )
    return agent


@dataclass(frozen=True)
class AgentRow:
    agent: Agent
    owner_email: str


async def list_all_agents(
    session: AsyncSession,
    *,
    status: str | None,
    owner_email: str | None,
    limit: int,
    offset: int,
) -> tuple[list[AgentRow], int]:
    """Every owner's live agents, newest first, filtered by status and part of the owner's
    email address; and their total."""
    query = (
        select(Agent, User.email)
        .join(User, User.id == Agent.owner_id)
        .where(Agent.deleted_at.is_(None))
    )
    if status:
        query = query.where(Agent.status == status)
    if owner_email:
        query = query.where(func.lower(User.email).contains(owner_email.lower(), autoescape=True))
    total = int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )
    rows = await session.execute(
        query.order_by(Agent.created_at.desc(), Agent.id.desc()).limit(limit).offset(offset)
    )
    return [AgentRow(agent=agent, owner_email=email) for agent, email in rows.all()], total


def record_view(
    session: AsyncSession,
    *,
    actor: User,
    client: ClientInfo | None,
    actor_key_id: str | None = None,
    target_type: str,
    target_id: str | None,
    subject_user_id: str | None,
    details: dict[str, object] | None = None,
) -> None:
    """Audit an admin's read of other accounts' data (`admin.viewed`), as their writes are."""
    audit.record(
        session,
        action="admin.viewed",
        actor_user_id=actor.id,
        actor_key_id=actor_key_id,
        client=client,
        subject_user_id=subject_user_id or actor.id,
        target_type=target_type,
        target_id=target_id,
        details=details or {},
    )
