"""The agent state machine: deploy, start, stop, restart, and status changes with their effects.

    draft → deploying → running ⇄ stopped, plus error (deploy failed or crashed),
    paused (credits exhausted) and suspended (by an admin).

Every change is logged in the agent's runtime log; changes the owner must act on (error,
paused, suspended) also notify them, once per change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.agent import versions
from lunogen.agent.models import Agent
from lunogen.agent.provision import provision
from lunogen.agent.service import get_agent
from lunogen.billing import ledger, metering
from lunogen.billing.units import micro_to_credits_str
from lunogen.channel import registration
from lunogen.channel.contract import ChannelView, channel_type
from lunogen.config import Settings
from lunogen.errors import ConflictError, LunogenError
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow
from lunogen.llm import catalog
from lunogen.notification.service import notify
from lunogen.runlog.logs import log_event
from lunogen.skill.service import skill_problems
from lunogen.tool.registry import registry
from lunogen.worker.broker import JobRuntime
from lunogen.worker.maintenance import register_periodic

ALLOWED_FROM: dict[str, frozenset[str]] = {
    "deploy": frozenset({"draft", "stopped", "error"}),
    "start": frozenset({"stopped", "paused"}),
    "stop": frozenset({"deploying", "running", "paused", "error"}),
    "restart": frozenset({"running", "error", "paused"}),
}
ATTENTION = {
    "error": "stopped working",
    "paused": "was paused",
    "suspended": "was suspended",
}


class DeployFailedError(LunogenError):
    status_code = 502

    def __init__(self, reason: str) -> None:
        super().__init__(None, error=f"Deploy failed: {reason}")


class DeployOvertakenError(ConflictError):
    """The agent changed state while its deploy was calling the channels' providers."""

    def __init__(self, status: str) -> None:
        super().__init__(
            f"The agent was {status} while this deploy registered its channels; the deploy "
            "did not take effect. Check its status and deploy again if needed.",
            error=f"Agent is {status}",
            extra={"status": status},
        )


class OutOfCreditsError(LunogenError):
    """An agent paused for lack of credits cannot run again until they pay for one call."""

    status_code = 402
    error = "Insufficient credits"

    def __init__(self, *, required: int, available: int) -> None:
        super().__init__(
            f"The agent is paused for lack of credits: one call of its model needs "
            f"{micro_to_credits_str(required)} credits and "
            f"{micro_to_credits_str(max(available, 0))} are available. Top up to run it again.",
            extra={
                "required_credits": micro_to_credits_str(required),
                "available_credits": micro_to_credits_str(available),
            },
        )


def _refuse(agent: Agent, action: str) -> ConflictError:
    suspended = agent.status == "suspended" and agent.suspended_reason
    why = f": {agent.suspended_reason}" if suspended else ""
    return ConflictError(
        f"Cannot {action} an agent that is {agent.status}{why}",
        error=f"Agent is {agent.status}",
        extra={"status": agent.status},
    )


async def set_status(
    session: AsyncSession,
    *,
    agent: Agent,
    status: str,
    effects: Effects,
    reason: str | None = None,
) -> None:
    """Move `agent` to `status`, logging the change and notifying the owner when needed."""
    previous = agent.status
    if previous == status:
        return
    now = utcnow()
    agent.status = status
    agent.status_changed_at = now
    if status == "running":
        agent.started_at = now
        agent.last_error = None
    elif status == "error":
        agent.last_error = reason
    log_event(
        session,
        agent_id=agent.id,
        event="status",
        level="error" if status == "error" else "info",
        message=f"{previous} → {status}" + (f": {reason}" if reason else ""),
        details={"from": previous, "to": status, "reason": reason},
    )
    if status in ATTENTION:
        owner = await session.get(User, agent.owner_id)
        if owner is not None:
            await notify(
                session,
                user=owner,
                kind=f"agent.{status}",
                title=f"Agent {agent.name} {ATTENTION[status]}",
                body=f"Your agent {agent.name!r} {ATTENTION[status]}"
                + (f": {reason}" if reason else ".")
                + "",
                dedupe_key=f"agent:{agent.id}:{status}:{now.isoformat()}",
                agent_id=agent.id,
                settings=effects.settings,
                keyring=effects.keyring,
            )


async def deployment_problem(
    session: AsyncSession, *, agent: Agent, settings: Settings
) -> str | None:
    """The first reason this agent cannot run as configured (its pinned version, with its
    live channels), or None."""
    if settings.llm_provider_problem is not None:
        return settings.llm_provider_problem
    config = await versions.served(session, agent)
    for model_id in (config.model, *config.fallback_models):
        if await catalog.get_model(session, model_id) is None:
            return f"model {model_id!r} is not in the model catalog"
    unknown_channels = sorted({row.type for row in agent.channels if not channel_type(row.type)})
    if unknown_channels:
        return f"no implementation of the channel type(s) {', '.join(unknown_channels)} here"
    for row in agent.channels:
        kind = channel_type(row.type)
        needed = kind.input_model.secret_fields if kind and kind.input_model else ()
        if needed and row.secrets is None:
            return (
                f"the {row.type} channel {row.id} has no {', '.join(sorted(needed))} yet: add "
                "them (PATCH the agent with the channel's id and its secrets)"
            )
    unknown_tools = registry.unknown(config.tools)
    if unknown_tools:
        return f"unknown tools: {', '.join(unknown_tools)}"
    skill_reasons = await skill_problems(session, owner_id=agent.owner_id, skill_ids=config.skills)
    if skill_reasons:
        return "; ".join(skill_reasons)
    return None


async def _load(session: AsyncSession, *, owner_id: str, agent_id: str, action: str) -> Agent:
    agent = await get_agent(session, owner_id=owner_id, agent_id=agent_id, for_update=True)
    if agent.status not in ALLOWED_FROM[action]:
        raise _refuse(agent, action)
    return agent


async def deploy(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    effects: Effects,
    action: str = "deploy",
    version: int | None = None,
) -> tuple[Agent, str | None]:
    """Validate and run the agent. Returns the agent and the failure reason, if any.

    `deploy` pins `version` (default: the latest) as the version the agent serves; `start` and
    `restart` keep the pinned one unless `version` is given (`agent.versions`).
    A failure leaves the agent in `error` with the reason logged and the owner notified; the
    caller commits that before answering 502.
    """
    agent = await _load(session, owner_id=owner_id, agent_id=agent_id, action=action)
    if action == "deploy" or version is not None:
        versions.pin(session, agent=agent, number=version or agent.latest_version)
    paused_for_credits = await ledger.is_paused_for_credits(session, agent.id)
    if agent.status == "paused" or paused_for_credits:
        await _require_credits(session, agent=agent, settings=effects.settings)
    if action == "restart":
        log_event(session, agent_id=agent.id, event="restart", message="Restart requested")
    await set_status(session, agent=agent, status="deploying", effects=effects)
    problem = await deployment_problem(session, agent=agent, settings=effects.settings)
    if problem is None:
        served = await versions.served(session, agent)
        problem = await provision(session, agent=served, settings=effects.settings)
    if problem is not None:
        await set_status(session, agent=agent, status="error", effects=effects, reason=problem)
        return agent, problem
    views = registration.views_to_register(agent, effects)
    if views:
        agent, problem = await _register(session, agent, views, effects)
        if problem is not None:
            return agent, problem
    if paused_for_credits:
        await ledger.forget_pause(session, agent.id)
    await set_status(session, agent=agent, status="running", effects=effects)
    return agent, None


async def _register(
    session: AsyncSession, agent: Agent, views: list[ChannelView], effects: Effects
) -> tuple[Agent, str | None]:
    """Register the agent's channels with their providers, with no transaction open.

    Commits `deploying` first (provider calls never run inside a write transaction), then
    locks the agent again: if it was stopped or deleted meanwhile, or a provider refused, what
    was registered is unregistered again. Returns the agent as locked now and the refusal.
    """
    agent_id = agent.id
    deploying_since = agent.status_changed_at  # this deploy's mark: a later one moves it
    await session.commit()
    registered, refused = await registration.register_channels(session, effects, views)
    fresh = (
        await session.execute(
            select(Agent)
            .where(Agent.id == agent_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    await session.refresh(fresh, ["channels"])
    by_id = {view.id: view for view in views}
    overtaken = fresh.status_changed_at != deploying_since and fresh.deleted_at is None
    if overtaken and fresh.status in ("deploying", "running"):
        # Declared interrupted, then deployed again: the later deploy registered the same
        # channels and owns them at the provider now; undoing ours would undo theirs.
        raise DeployOvertakenError(fresh.status)
    if fresh.status != "deploying" or fresh.deleted_at is not None or refused is not None:
        why = "the deploy failed" if refused is not None else f"the agent is {fresh.status}"
        for item in registered:
            registration.queue_unregistration_of(
                session,
                agent=fresh,
                view=by_id[item.channel_id],
                registration=item.registration,
                keyring=effects.keyring,
                why=why,
            )
        if refused is not None and fresh.status == "deploying":
            reason = str(refused)
            await set_status(session, agent=fresh, status="error", effects=effects, reason=reason)
            return fresh, reason
        await session.commit()  # the unregistrations stay, whatever the caller answers
        raise DeployOvertakenError("deleted" if fresh.deleted_at else fresh.status)
    orphans = registration.store_registrations(fresh.channels, registered, effects)
    for item in orphans:  # removed from the agent while we registered it
        registration.queue_unregistration_of(
            session,
            agent=fresh,
            view=by_id[item.channel_id],
            registration=item.registration,
            keyring=effects.keyring,
            why="the channel was removed",
        )
    for item in registered:
        log_event(
            session,
            agent_id=fresh.id,
            event="channel.registered",
            message=f"{by_id[item.channel_id].type.capitalize()} channel {item.channel_id} "
            "registered with its provider",
            details={"channel_id": item.channel_id, **dict(item.registration.details)},
        )
    return fresh, None


async def _require_credits(session: AsyncSession, *, agent: Agent, settings: Settings) -> None:
    """An agent paused for credits (or stopped while paused) runs again by hand only when the
    settled balance pays for its cheapest call, as a top-up would resume it; else 402. The
    account is read, not locked: the agent's row is locked already, and ledger writers lock the
    account before agents."""
    account = await ledger.get_account(session, agent.owner_id)
    served = await versions.served(session, agent)  # the models of the version it will run
    required = await metering.agent_cheapest_call(session, settings, served)
    balance = account.balance if account is not None else 0
    if balance < required:
        available = ledger.available(account) if account is not None else 0
        raise OutOfCreditsError(required=required, available=available)


async def start(
    session: AsyncSession, *, owner_id: str, agent_id: str, effects: Effects
) -> tuple[Agent, str | None]:
    """Start a stopped or paused agent; its configuration is checked again, as at deploy."""
    return await deploy(
        session, owner_id=owner_id, agent_id=agent_id, effects=effects, action="start"
    )


async def stop(session: AsyncSession, *, owner_id: str, agent_id: str, effects: Effects) -> Agent:
    agent = await _load(session, owner_id=owner_id, agent_id=agent_id, action="stop")
    if agent.status == "deploying" and utcnow() - agent.status_changed_at < INTERRUPTED_AFTER:
        # A deploy is calling the channels' providers: stopping now would race it there.
        raise ConflictError(
            "The agent is being deployed; stop it once the deploy has finished",
            error="Agent is deploying",
            extra={"status": agent.status},
        )
    await set_status(session, agent=agent, status="stopped", effects=effects)
    for row in agent.channels:
        registration.queue_unregistration(session, agent=agent, row=row, why="the agent stopped")
    return agent


@dataclass(frozen=True)
class AgentStatusReport:
    status: str
    since: datetime
    uptime_seconds: int | None
    last_error: str | None


async def status_report(
    session: AsyncSession, *, owner_id: str, agent_id: str
) -> AgentStatusReport:
    """The agent's state (its conversation counts are the runtime's: `runtime.activity`)."""
    agent = await get_agent(session, owner_id=owner_id, agent_id=agent_id)
    uptime = None
    if agent.status == "running" and agent.started_at is not None:
        uptime = max(0, int((utcnow() - agent.started_at) / timedelta(seconds=1)))
    return AgentStatusReport(
        status=agent.status,
        since=agent.status_changed_at,
        uptime_seconds=uptime,
        last_error=agent.last_error,
    )


# Longer than any deploy's provider calls (two calls of at most 15 s per channel, 20 channels).
INTERRUPTED_AFTER = timedelta(minutes=20)


@register_periodic("interrupted_deploys", every=60)
async def fail_interrupted_deploys(rt: JobRuntime) -> int:
    """An agent left `deploying` (its server died while calling a provider) goes to `error`,
    so that its owner can deploy it again; what it had registered is unregistered."""
    effects = Effects(settings=rt.settings, keyring=rt.keyring)
    cutoff = utcnow() - INTERRUPTED_AFTER
    async with rt.sessionmaker() as session:
        stuck = list(
            (
                await session.execute(
                    select(Agent)
                    .where(Agent.status == "deploying", Agent.status_changed_at < cutoff)
                    .with_for_update()
                    .limit(100)
                )
            ).scalars()
        )
        for agent in stuck:
            for row in agent.channels:
                registration.queue_unregistration(
                    session, agent=agent, row=row, why="the deploy was cut off"
                )
            await set_status(
                session,
                agent=agent,
                status="error",
                effects=effects,
                reason="the deploy was interrupted (the server stopped while registering its "
                "channels); deploy it again",
            )
        await session.commit()
    return len(stuck)
