"""Agent configuration: create, read, update, delete, scoped to the owner.

`visible_agents` is the one gate to a tenant's agents: every read and write goes through it (via
`get_agent` for one agent), so another tenant's agent and a deleted one look exactly like an id
that never existed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from lunogen.account.models import User
from lunogen.account.plans import PlanLimits, at_limit_advice, limits_for
from lunogen.agent import schemas, versions, workspace
from lunogen.agent.models import Agent
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.channel import registration
from lunogen.channel.schemas import ChannelInBase
from lunogen.channel.service import ChannelChanges, apply_channels
from lunogen.errors import ForbiddenError, NotFoundError, ValidationFailedError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.time import utcnow
from lunogen.llm import catalog
from lunogen.skill.service import unknown_skill_ids
from lunogen.tool.registry import registry
from lunogen.worker.broker import runtime
from lunogen.worker.enqueue import enqueue

# Statuses in which an agent answers (or will answer) messages: a delete stops it. `paused`
# counts, since a paused agent would resume on the next credit top-up.
_ACTIVE = frozenset({"deploying", "running", "paused"})

Revealed = dict[str, dict[str, str]]
Problems = list[tuple[str, str]]


def agent_not_found() -> NotFoundError:
    return NotFoundError(error="Agent not found")


def visible_agents(*, owner_id: str) -> Select[Agent]:
    """The owner's agents that are not deleted. Every agent query starts here."""
    return select(Agent).where(Agent.owner_id == owner_id, Agent.deleted_at.is_(None))


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def get_agent(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    for_update: bool = False,
    with_channels: bool = True,
) -> Agent:
    """One of the owner's live agents, else `404 Agent not found` (whoever owns the id).

    `for_update` locks the row (PostgreSQL) so concurrent edits apply one after the other.
    `with_channels=False` skips loading `Agent.channels` (one query less); reading them then
    raises instead of returning nothing.
    """
    if not _is_uuid(agent_id):
        raise agent_not_found()
    query = visible_agents(owner_id=owner_id).where(Agent.id == agent_id)
    if for_update:
        query = query.with_for_update()
    if not with_channels:
        query = query.options(raiseload(Agent.channels))
    agent = (await session.execute(query)).scalar_one_or_none()
    if agent is None:
        raise agent_not_found()
    return agent


async def list_agents(
    session: AsyncSession,
    *,
    owner_id: str,
    status: schemas.AgentStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[Agent], int]:
    """A page of the owner's agents, newest first, and the total matching."""
    query = visible_agents(owner_id=owner_id)
    if status is not None:
        query = query.where(Agent.status == status.value)
    total = int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )
    rows = await session.execute(
        query.order_by(Agent.created_at.desc(), Agent.id.desc()).limit(limit).offset(offset)
    )
    return list(rows.scalars()), total


async def unknown_skills(
    session: AsyncSession, *, owner_id: str, skill_ids: list[str]
) -> list[str]:
    """The ids in `skill_ids` that are not skills of `owner_id` (another tenant's, deleted, or
    never existed). Flagged and blocked skills are known: they are refused at deploy."""
    return await unknown_skill_ids(session, owner_id=owner_id, skill_ids=skill_ids)


async def _reference_problems(
    session: AsyncSession,
    *,
    owner_id: str,
    model: str | None,
    skills: list[str] | None,
    tools: list[str] | None,
    fallback_models: list[str] | None = None,
) -> Problems:
    problems: Problems = []
    if model is not None and await catalog.get_model(session, model) is None:
        problems.append(("model", f"unknown model '{model}'; see GET /api/v1/models"))
    unknown_fallbacks = [
        m for m in fallback_models or [] if await catalog.get_model(session, m) is None
    ]
    if unknown_fallbacks:
        problems.append(
            (
                "fallback_models",
                f"{_plural(unknown_fallbacks, 'unknown model')}; see GET /api/v1/models",
            )
        )
    if tools:
        unknown = registry.unknown(tools)
        if unknown:
            problems.append(("tools", f"{_plural(unknown, 'unknown tool')}; see GET /api/v1/tools"))
    if skills:
        unknown = await unknown_skills(session, owner_id=owner_id, skill_ids=skills)
        if unknown:
            problems.append(("skills", _plural(unknown, "unknown skill")))
    return problems


def _plural(names: list[str], noun: str) -> str:
    quoted = ", ".join(f"'{n}'" for n in names)
    return f"{noun}{'s' if len(names) > 1 else ''} {quoted}"


def _raise_problems(problems: Problems) -> None:
    if not problems:
        return
    error = ValidationFailedError(
        "; ".join(f"{field}: {message}" for field, message in problems), field=problems[0][0]
    )
    error.extra["details"] = [{"field": f, "message": m} for f, m in problems]
    raise error


async def _lock_owner(session: AsyncSession, owner_id: str) -> None:
    # Serialises quota checks of one owner (PostgreSQL); SQLite writers are serial already.
    await session.execute(select(User.id).where(User.id == owner_id).with_for_update())


def _check_channel_quota(limits: PlanLimits, channels: Sequence[ChannelInBase]) -> None:
    if len(channels) > limits.channels_per_agent:
        raise ForbiddenError(
            f"Your {limits.label} plan allows {limits.channels_per_agent} channels per agent; "
            + at_limit_advice(limits, "remove one")
        )
    for channel in channels:
        refused = channel.plan_problem(limits)
        if refused is not None:
            problem, remedy = refused
            raise ForbiddenError(f"{problem}; {at_limit_advice(limits, remedy)}")


async def create_agent(
    session: AsyncSession,
    *,
    principal: Principal,
    data: schemas.AgentCreate,
    keyring: KeyRing,
) -> tuple[Agent, Revealed]:
    """Create a `draft` agent within the plan's limits.

    Returns the agent and the generated channel secrets to show once, by channel id.
    """
    owner = principal.user
    limits = limits_for(owner.plan)
    await _lock_owner(session, owner.id)
    count_query = select(func.count()).select_from(visible_agents(owner_id=owner.id).subquery())
    if int((await session.execute(count_query)).scalar_one()) >= limits.agents:
        noun = "agent" if limits.agents == 1 else "agents"
        raise ForbiddenError(
            f"Your {limits.label} plan allows {limits.agents} {noun}; "
            + at_limit_advice(limits, "delete one")
        )
    _check_channel_quota(limits, data.channels)
    problems = await _reference_problems(
        session,
        owner_id=owner.id,
        model=data.model,
        skills=data.skills,
        tools=data.tools,
        fallback_models=data.fallback_models,
    )
    changes = apply_channels(data.channels, existing=[], keyring=keyring)
    _raise_problems(problems + changes.problems)

    now = utcnow()
    agent = Agent(
        owner_id=owner.id,
        name=data.name,
        description=data.description,
        model=data.model,
        fallback_models=data.fallback_models,
        instructions=data.instructions,
        status=schemas.AgentStatus.DRAFT.value,
        status_changed_at=now,
        skills=data.skills,
        tools=data.tools,
        created_at=now,
        updated_at=now,
        channels=changes.rows,
    )
    session.add(agent)
    await session.flush()
    await versions.record(session, agent=agent, principal=principal, summary="Created")
    audit.record(
        session,
        action="agent.created",
        actor_user_id=owner.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent.id,
        details={
            "name": agent.name,
            "model": agent.model,
            "channels": [row.type for row in changes.rows],
            "tools": agent.tools,
            "skills": agent.skills,
        },
    )
    return agent, changes.revealed


async def update_agent(
    session: AsyncSession,
    *,
    principal: Principal,
    agent_id: str,
    data: schemas.AgentUpdate,
    keyring: KeyRing,
) -> tuple[Agent, Revealed]:
    """Apply the fields sent; `channels`, `skills` and `tools` replace their lists.

    Nothing is written (and no audit row) when nothing changes. Returns the agent and the
    generated secrets of channels this request added, by channel id.
    """
    owner = principal.user
    agent = await get_agent(session, owner_id=owner.id, agent_id=agent_id, for_update=True)
    sent = data.model_fields_set
    new: dict[str, Any] = {
        name: getattr(data, name)
        for name in (
            "name",
            "description",
            "model",
            "fallback_models",
            "instructions",
            "skills",
            "tools",
        )
        if name in sent and getattr(data, name) != getattr(agent, name)
    }
    if "model" in new or "fallback_models" in new:  # the main model is never its own fallback
        model = new.get("model", agent.model)
        fallbacks = [m for m in new.get("fallback_models", agent.fallback_models) if m != model]
        if fallbacks != agent.fallback_models:
            new["fallback_models"] = fallbacks
        else:
            new.pop("fallback_models", None)
    problems = await _reference_problems(
        session,
        owner_id=owner.id,
        model=new.get("model"),
        skills=new.get("skills"),
        tools=new.get("tools"),
        fallback_models=new.get("fallback_models"),
    )
    changes = ChannelChanges()
    if data.channels is not None:
        _check_channel_quota(limits_for(owner.plan), data.channels)
        changes = apply_channels(data.channels, existing=list(agent.channels), keyring=keyring)
        problems += changes.problems
    _raise_problems(problems)

    if not new and not changes.changed:
        return agent, {}
    for name, value in new.items():
        setattr(agent, name, value)
    if changes.changed:
        for row in agent.channels:
            if row.id in changes.removed:  # the provider must forget it too
                registration.queue_unregistration(
                    session, agent=agent, row=row, why="the channel was removed"
                )
        agent.channels = changes.rows
    agent.updated_at = utcnow()
    await session.flush()
    made = await versions.record(session, agent=agent, principal=principal)  # None: channels only
    details: dict[str, Any] = {"fields": sorted([*new, *(["channels"] if changes.changed else [])])}
    if made is not None:
        details["version"] = made.number
    if changes.changed:
        details["channels"] = {
            "added": changes.added,
            "updated": changes.updated,
            "removed": changes.removed,
        }
    audit.record(
        session,
        action="agent.updated",
        actor_user_id=owner.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent.id,
        details=details,
    )
    return agent, changes.revealed


def configured_purge_days() -> int:
    """LUNOGEN_PURGE_AFTER_DAYS of this process (its maximum, 30, before any is configured)."""
    try:
        return runtime().settings.purge_after_days
    except RuntimeError:
        return 30


async def delete_agent(
    session: AsyncSession,
    *,
    principal: Principal,
    agent_id: str,
    purge_after_days: int | None = None,
) -> None:
    """Hide the agent at once, stop it if active, and mark its data for purge after
    `purge_after_days` (default: the configured LUNOGEN_PURGE_AFTER_DAYS); the retention job in
    `privacy.retention` purges it then."""
    owner = principal.user
    agent = await get_agent(session, owner_id=owner.id, agent_id=agent_id, for_update=True)
    now = utcnow()
    previous_status = agent.status
    if agent.status in _ACTIVE:
        agent.status = schemas.AgentStatus.STOPPED.value
        agent.status_changed_at = now
    for row in agent.channels:
        registration.queue_unregistration(
            session, agent=agent, row=row, why="the agent was deleted"
        )
    agent.deleted_at = now
    agent.purge_after = now + timedelta(days=purge_after_days or configured_purge_days())
    agent.updated_at = now
    await session.flush()
    # Its workspace holds files its code wrote: gone with the agent, once this commits.
    enqueue(session, workspace.destroy_workspace, agent.id)
    audit.record(
        session,
        action="agent.deleted",
        actor_user_id=owner.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent.id,
        details={
            "name": agent.name,
            "previous_status": previous_status,
            "purge_after": agent.purge_after.isoformat(),
        },
    )
