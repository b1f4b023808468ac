"""Migration 0023 gives every existing agent its version 1, deployed unless it is a draft."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from alembic import command
from sqlalchemy import select, text

from lunogen.account.models import User
from lunogen.agent import versions as versions_module
from lunogen.agent.models import Agent
from lunogen.db import create_engine, create_sessionmaker
from lunogen.migrations import alembic_config, upgrade


def test_existing_agents_get_version_1(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'backfill.db'}"
    upgrade(url)

    async def seed() -> tuple[str, str]:
        engine = create_engine(url)
        async with create_sessionmaker(engine)() as session:
            user = User(email="old@example.com", name="Old")
            session.add(user)
            await session.flush()
            running = Agent(
                owner_id=user.id,
                name="Runner",
                model="openai/gpt-4o-mini",
                instructions="Old prompt.",
                status="running",
                tools=["current_time"],
            )
            draft = Agent(owner_id=user.id, name="Draft", model="openai/gpt-4o-mini")
            session.add_all([running, draft])
            await session.commit()
            ids = (running.id, draft.id)
        await engine.dispose()
        return ids

    running_id, draft_id = asyncio.run(seed())
    command.downgrade(alembic_config(url), "0022")  # as if the agents were made before 0023
    command.upgrade(alembic_config(url), "0023")

    async def read() -> tuple[list[tuple[str, int, int | None]], list[tuple[str, int, dict]]]:
        engine = create_engine(url)
        async with engine.connect() as conn:
            agents = (
                await conn.execute(
                    select(Agent.id, Agent.latest_version, Agent.deployed_version).order_by(
                        Agent.name
                    )
                )
            ).all()
            versions = (
                await conn.execute(
                    text("select agent_id, number, config from agent_versions order by number")
                )
            ).all()
        await engine.dispose()
        return [tuple(a) for a in agents], [tuple(v) for v in versions]

    agents, versions = asyncio.run(read())
    assert agents == [(draft_id, 1, None), (running_id, 1, 1)]
    by_agent = {agent_id: (number, config) for agent_id, number, config in versions}
    number, config = by_agent[running_id]
    assert number == 1
    config = config if isinstance(config, dict) else json.loads(config)
    assert config["instructions"] == "Old prompt." and config["tools"] == ["current_time"]
    assert tuple(config) == versions_module.VERSIONED  # what the app's snapshots hold
