"""Agent versions: every change of an agent's configuration is a numbered, immutable snapshot.

The agent row holds the working configuration, which is always equal to its newest version
(`agents.latest_version`). `agents.deployed_version` is the version the runtime serves while the
agent runs: deploy pins it, edits never move it. A turn reads the agent row it needs anyway; only
when the pin is older than the working configuration does it need a snapshot, and snapshots are
immutable, so they are cached in this process by `(agent id, number)` (`served`).

What is versioned is `VERSIONED`: what the agent answers with. Channels (live wiring with
secrets and provider registrations) and spend caps (guardrails) act at once and are not
versioned. No secret is ever in a snapshot.
"""

from __future__ import annotations

import difflib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import inspect, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from lunogen.agent.models import Agent, AgentVersion
from lunogen.auth.principal import Principal
from lunogen.errors import NotFoundError
from lunogen.runlog.logs import log_event

# The fields of a version, in the order a diff lists them.
VERSIONED = (
    "name",
    "description",
    "model",
    "fallback_models",
    "instructions",
    "tools",
    "skills",
    "max_output_tokens",
)
_LISTS = frozenset({"fallback_models", "tools", "skills"})
_TEXTS = frozenset({"instructions", "description"})
_CACHE_SIZE = 4096
_COLUMNS = tuple(inspect(Agent).column_attrs)


def version_not_found() -> NotFoundError:
    return NotFoundError(error="Version not found")


def snapshot(agent: Agent) -> dict[str, Any]:
    """The versioned configuration of `agent` as a JSON-ready dict (lists copied)."""
    values: dict[str, Any] = {}
    for name in VERSIONED:
        value = getattr(agent, name)
        values[name] = list(value) if name in _LISTS else value
    return values


# Recording ------------------------------------------------------------------------------------


async def config_of(
    session: AsyncSession, *, agent_id: str, number: int, cached: bool = False
) -> dict[str, Any] | None:
    """The snapshot of version `number` of the agent. With `cached`, from and into this
    process's cache: only for versions known committed (a pinned one), since a version read in
    a transaction that then rolls back must never be remembered."""
    key = (agent_id, number)
    if cached and key in _snapshots:
        _snapshots.move_to_end(key)
        return _snapshots[key]
    config = (
        await session.execute(
            select(AgentVersion.config).where(
                AgentVersion.agent_id == agent_id, AgentVersion.number == number
            )
        )
    ).scalar_one_or_none()
    if cached and config is not None:
        _snapshots[key] = config
        if len(_snapshots) > _CACHE_SIZE:
            _snapshots.popitem(last=False)
    return config


_snapshots: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()


async def record(
    session: AsyncSession,
    *,
    agent: Agent,
    principal: Principal | None,
    summary: str | None = None,
    restored_from: int | None = None,
) -> AgentVersion | None:
    """Make the agent's working configuration its next version, unless it equals the newest one
    (then nothing is written and None returned). Call it after applying a change, in the
    change's transaction, with the agent row locked (`get_agent(for_update=True)`).

    The number comes from one atomic `UPDATE … RETURNING` of `agents.latest_version`; the
    unique `(agent_id, number)` makes a lost or doubled version impossible even without the lock.
    """
    config = snapshot(agent)
    previous: dict[str, Any] | None = None
    if agent.latest_version:
        previous = await config_of(session, agent_id=agent.id, number=agent.latest_version)
        if previous == config:
            return None
    await session.flush()  # the agent row exists before its version refers to it
    number = (
        await session.execute(
            update(Agent)
            .where(Agent.id == agent.id)
            .values(latest_version=Agent.latest_version + 1)
            .returning(Agent.latest_version)
            .execution_options(synchronize_session=False)
        )
    ).scalar_one()
    set_committed_value(agent, "latest_version", number)
    if summary is None:
        changed = [change.field for change in diff(previous, config)]
        summary = "Created" if previous is None else "Changed " + ", ".join(changed)
    version = AgentVersion(
        agent_id=agent.id,
        number=number,
        config=config,
        summary=summary[:300],
        created_by=principal.user.id if principal else None,
        created_by_key_id=principal.key_id if principal else None,
        restored_from=restored_from,
    )
    session.add(version)
    await session.flush()
    return version


def pin(session: AsyncSession, *, agent: Agent, number: int) -> None:
    """Make version `number` the one the runtime serves (logged when it changes). An agent
    without versions (a row written before they existed and never edited) keeps serving its
    row. 404 when the agent has no such version."""
    if agent.latest_version == 0:
        return
    if not 1 <= number <= agent.latest_version:
        raise version_not_found()
    previous = agent.deployed_version
    if previous == number:
        return
    agent.deployed_version = number
    log_event(
        session,
        agent_id=agent.id,
        event="version.deployed",
        message=f"Version {number} deployed"
        + (f" (it served version {previous})" if previous else ""),
        details={"version": number, "previous": previous},
    )


def undeployed_changes(agent: Agent) -> bool:
    """Whether the working configuration is newer than what a deployed agent serves."""
    return agent.deployed_version is not None and agent.deployed_version != agent.latest_version


# Serving --------------------------------------------------------------------------------------


async def served(session: AsyncSession, agent: Agent) -> Agent:
    """The configuration the runtime serves for `agent`: the row itself when its pinned version
    is the working configuration (no query), else a detached copy holding the pinned snapshot
    (cached in-process; never added to a session, never written)."""
    number = agent.deployed_version
    if number is None or number == agent.latest_version:
        return agent
    config = await config_of(session, agent_id=agent.id, number=number, cached=True)
    if config is None:  # the version's row is gone only with its agent
        return agent
    # Every other column (status, guardrails such as approvals) is the live row's.
    values = {column.key: getattr(agent, column.key) for column in _COLUMNS}
    for name in VERSIONED:
        if name in config:
            values[name] = list(config[name]) if name in _LISTS else config[name]
    return Agent(**values)


async def version_row(session: AsyncSession, *, agent: Agent, number: int) -> AgentVersion:
    row = (
        await session.execute(
            select(AgentVersion).where(
                AgentVersion.agent_id == agent.id, AgentVersion.number == number
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise version_not_found()
    return row


# Diffs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One field that differs between two versions. Lists say what was added and removed;
    text fields carry a unified line diff."""

    field: str
    before: Any
    after: Any
    added: tuple[Any, ...] = ()
    removed: tuple[Any, ...] = ()
    lines: tuple[str, ...] = ()


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[Change]:
    """What changed from `before` (None: nothing, for a first version) to `after`, field by
    field in `VERSIONED` order."""
    changes: list[Change] = []
    for name in VERSIONED:
        new = after.get(name)
        old = None if before is None else before.get(name)
        if before is not None and old == new:
            continue
        if before is None and new in (None, "", []):
            continue
        if name in _LISTS:
            old_items = list(old or [])
            new_items = list(new or [])
            changes.append(
                Change(
                    field=name,
                    before=old,
                    after=new,
                    added=tuple(item for item in new_items if item not in old_items),
                    removed=tuple(item for item in old_items if item not in new_items),
                )
            )
        elif name in _TEXTS:
            lines = difflib.unified_diff(
                str(old or "").splitlines(),
                str(new or "").splitlines(),
                fromfile=f"{name} (before)",
                tofile=f"{name} (after)",
                lineterm="",
            )
            changes.append(Change(field=name, before=old, after=new, lines=tuple(lines)))
        else:
            changes.append(Change(field=name, before=old, after=new))
    return changes
