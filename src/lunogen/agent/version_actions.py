"""Reading an agent's versions, deploying one, and rolling back to an earlier one.

Deploying version N pins it and runs the agent through the lifecycle (`deploy` from `draft`,
`stopped` or `error`; `restart` when it is `running` or `paused`, after checking version N can
run, so a bad version never takes a running agent down). Rolling back to version K is one call:
K's configuration becomes the working configuration as a new version ("Rolled back to version
K"), so history stays linear, and an agent that was deployed is pinned to it (a running one is
restarted on it). Channels are not rolled back.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent import lifecycle, versions
from lunogen.agent.models import Agent, AgentVersion
from lunogen.agent.service import _raise_problems, _reference_problems, get_agent
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.errors import ConflictError, ValidationFailedError
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow


async def list_versions(
    session: AsyncSession, *, owner_id: str, agent_id: str, limit: int, offset: int
) -> tuple[Agent, list[AgentVersion], int]:
    """A page of the agent's versions, newest first, and how many it has (404 for another
    owner's agent)."""
    agent = await get_agent(session, owner_id=owner_id, agent_id=agent_id, with_channels=False)
    total = int(
        (
            await session.execute(select(func.count()).where(AgentVersion.agent_id == agent.id))
        ).scalar_one()
    )
    rows = await session.execute(
        select(AgentVersion)
        .where(AgentVersion.agent_id == agent.id)
        .order_by(AgentVersion.number.desc())
        .limit(limit)
        .offset(offset)
    )
    return agent, list(rows.scalars()), total


async def get_version(
    session: AsyncSession, *, owner_id: str, agent_id: str, number: int
) -> tuple[Agent, AgentVersion, AgentVersion | None]:
    """The agent, its version `number` and the version before it (None for version 1)."""
    agent = await get_agent(session, owner_id=owner_id, agent_id=agent_id, with_channels=False)
    row = await versions.version_row(session, agent=agent, number=number)
    before = (
        await versions.version_row(session, agent=agent, number=number - 1) if number > 1 else None
    )
    return agent, row, before


async def deploy_version(
    session: AsyncSession, *, principal: Principal, agent_id: str, number: int, effects: Effects
) -> tuple[Agent, str | None]:
    """Pin version `number` and run the agent on it. Returns the agent and the reason the
    deploy failed, if it did (the agent is then in `error`; the caller commits that).

    A `running` or `paused` agent is checked on version `number` first and restarted on it
    only when it can run: otherwise 502 and nothing changes (it keeps answering). `deploying`
    and `suspended` agents answer 409. Audited as `agent.version_deployed`.
    """
    agent = await get_agent(session, owner_id=principal.user.id, agent_id=agent_id, for_update=True)
    await versions.version_row(session, agent=agent, number=number)
    previous = agent.deployed_version
    if agent.status in lifecycle.ALLOWED_FROM["deploy"]:
        action = "deploy"
    elif agent.status in ("running", "paused"):
        action = "restart"
        agent.deployed_version = number
        problem = await lifecycle.deployment_problem(
            session, agent=agent, settings=effects.settings
        )
        agent.deployed_version = previous
        if problem is not None:
            raise lifecycle.DeployFailedError(problem)
    else:
        raise ConflictError(
            f"Cannot deploy a version of an agent that is {agent.status}",
            error=f"Agent is {agent.status}",
            extra={"status": agent.status},
        )
    agent, problem = await lifecycle.deploy(
        session,
        owner_id=principal.user.id,
        agent_id=agent.id,
        effects=effects,
        action=action,
        version=number,
    )
    audit.record(
        session,
        action="agent.version_deployed",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent.id,
        details={"version": number, "previous": previous, "failed": problem},
    )
    return agent, problem


async def rollback(
    session: AsyncSession, *, principal: Principal, agent_id: str, number: int, effects: Effects
) -> tuple[Agent, AgentVersion | None, str | None]:
    """Make version `number`'s configuration the working one again, as a new version, and
    serve it if the agent was deployed (a `running` agent is restarted on it). Returns the
    agent, the new version (None when the working configuration already equals it) and the
    reason the restart failed, if it did (the caller commits that state).

    422 when `number` is not earlier than the latest version or names a model, tool or skill
    that no longer exists (nothing is written); 409 while the agent is `deploying`. Channels
    are left as they are. Audited as `agent.rolled_back`.
    """
    agent = await get_agent(session, owner_id=principal.user.id, agent_id=agent_id, for_update=True)
    if number >= agent.latest_version:
        raise ValidationFailedError(
            f"version {number} is not earlier than the latest version "
            f"({agent.latest_version}); roll back to an earlier one, or deploy the latest",
            field="version",
        )
    if agent.status == "deploying":
        raise ConflictError(
            "The agent is being deployed; roll back once the deploy has finished",
            error="Agent is deploying",
            extra={"status": agent.status},
        )
    target = await versions.version_row(session, agent=agent, number=number)
    config = target.config
    problems = await _reference_problems(
        session,
        owner_id=agent.owner_id,
        model=config.get("model"),
        skills=config.get("skills"),
        tools=config.get("tools"),
        fallback_models=config.get("fallback_models"),
    )
    _raise_problems(problems)
    previous_deployed = agent.deployed_version
    for name in versions.VERSIONED:
        if name in config and config[name] != getattr(agent, name):
            value = config[name]
            setattr(agent, name, list(value) if isinstance(value, list) else value)
    made = await versions.record(
        session,
        agent=agent,
        principal=principal,
        summary=f"Rolled back to version {number}",
        restored_from=number,
    )
    if made is not None:
        agent.updated_at = utcnow()
    problem: str | None = None
    if agent.deployed_version is not None:
        if agent.status == "running":
            agent, problem = await lifecycle.deploy(
                session,
                owner_id=principal.user.id,
                agent_id=agent.id,
                effects=effects,
                action="restart",
                version=agent.latest_version,
            )
        else:
            versions.pin(session, agent=agent, number=agent.latest_version)
    audit.record(
        session,
        action="agent.rolled_back",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent.id,
        details={
            "to_version": number,
            "new_version": made.number if made else None,
            "deployed_version": agent.deployed_version,
            "previous_deployed_version": previous_deployed,
            "failed": problem,
        },
    )
    return agent, made, problem
