"""Agents as OpenAI models: `agent/<agent id>` or `agent/<slug>`, among the caller's own agents.

There is no slug column: a slug is computed from the agent's name (`slug_of`), so two agents
can share one; such a slug names no agent until one is renamed (400 naming both ids). Every
lookup goes through `agent.service` (`get_agent`, `visible_agents`): another tenant's agent,
or a deleted one, is `model_not_found` like a name that never existed.
"""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.models import Agent
from lunogen.agent.service import get_agent, visible_agents
from lunogen.channel.openai_compat.errors import invalid, model_not_found
from lunogen.errors import NotFoundError

MODEL_PREFIX = "agent/"
_NOT_SLUG = re.compile(r"[^a-z0-9]+")


def slug_of(name: str) -> str:
    """`name` lowercased, each run of characters other than a-z and 0-9 one `-`, no `-` at
    either end: "Support Bot (EU)" is `support-bot-eu`. A name without any is no slug ("")."""
    return _NOT_SLUG.sub("-", name.lower()).strip("-")


def model_id(agent_id: str) -> str:
    return f"{MODEL_PREFIX}{agent_id}"


async def resolve_agent(session: AsyncSession, *, owner_id: str, model: str) -> Agent:
    """The owner's agent that `model` names, by id or by slug (case-insensitive)."""
    if not model.startswith(MODEL_PREFIX):
        raise model_not_found(model)
    reference = model[len(MODEL_PREFIX) :]
    try:
        return await get_agent(session, owner_id=owner_id, agent_id=reference, with_channels=False)
    except NotFoundError:
        pass
    wanted = reference.lower()
    named = await session.execute(
        visible_agents(owner_id=owner_id)
        .with_only_columns(Agent.id, Agent.name)
        .order_by(Agent.created_at, Agent.id)
    )
    matches = [agent_id for agent_id, name in named.all() if wanted and slug_of(name) == wanted]
    if not matches:
        raise model_not_found(model)
    if len(matches) > 1:
        raise invalid(
            f"'{model}' names {len(matches)} of your agents ({', '.join(matches)}): use "
            "'agent/<agent id>', or rename one of them.",
            param="model",
            code="ambiguous_model",
        )
    return await get_agent(session, owner_id=owner_id, agent_id=matches[0], with_channels=False)


async def list_models(
    session: AsyncSession, *, owner_id: str
) -> list[tuple[str, str, str, datetime]]:
    """(id, name, status, created_at) of the owner's agents, newest first."""
    rows = await session.execute(
        visible_agents(owner_id=owner_id)
        .with_only_columns(Agent.id, Agent.name, Agent.status, Agent.created_at)
        .order_by(Agent.created_at.desc(), Agent.id.desc())
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows.all()]
