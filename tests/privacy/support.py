"""Helpers for the privacy tests: a person with everything an account can hold, and a scan
of every table for anything that still points at them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import inspect, select

from lunogen.account.models import User
from lunogen.agent.models import Agent
from lunogen.db import Base
from tests.agent.support import Dev, create_agent, new_dev
from tests.billing.stripe_support import deliver_ok
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.stripe import FakeStripe
from tests.helpers import Api


@dataclass
class Holder:
    """A Pro subscriber with a key, two agents (one running, with a conversation and a
    workspace file) and everything those leave in the database."""

    dev: Dev
    agents: list[str]
    subscription_id: str | None = None
    channel_ids: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.dev.id

    @property
    def email(self) -> str:
        return self.dev.person.email

    @property
    def session(self) -> httpx.AsyncClient:
        return self.dev.person.client


async def subscribe(api: Api, stripe: FakeStripe, dev: Dev) -> str:
    person = dev.person
    response = await person.client.post(
        "/api/v1/billing/checkout", json={"plan": "pro"}, headers=person.headers
    )
    assert response.status_code == 200, response.text
    session_id = str(response.json()["session_id"])
    stripe_side = api.new_client()
    for event in stripe.complete_session(session_id):
        await deliver_ok(stripe_side, stripe, event)
    subscription = stripe.sessions[session_id]["subscription"]
    assert isinstance(subscription, str)
    return subscription


async def holder(
    api: Api,
    openrouter: FakeOpenRouter,
    stripe: FakeStripe | None = None,
    *,
    workspaces: Path | None = None,
) -> Holder:
    dev = await new_dev(api, plan="free")
    subscription = await subscribe(api, stripe, dev) if stripe is not None else None
    first = await create_agent(dev, channels=[{"type": "webhook"}])
    second = await create_agent(dev, name="Second bot")
    deployed = await dev.http.post(f"/api/v1/agents/{first['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    openrouter.reply("Hello! Which bike?", prompt_tokens=120, completion_tokens=8)
    said = await dev.http.post(f"/api/v1/agents/{first['id']}/messages", json={"text": "Hi"})
    assert said.status_code == 200, said.text
    if workspaces is not None:
        for agent_id in (first["id"], second["id"]):
            (workspaces / agent_id).mkdir(parents=True, exist_ok=True)
            (workspaces / agent_id / "notes.txt").write_text("the agent's own file")
    return Holder(
        dev=dev,
        agents=[first["id"], second["id"]],
        subscription_id=subscription,
        channel_ids=[c["id"] for c in first["channels"]],
    )


async def backdate_deletion(api: Api, user_id: str, days: float) -> datetime:
    """Move the account's deletion `days` into the past (the clock, seen from the data)."""
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, user_id)
        assert user is not None and user.deleted_at is not None
        user.deleted_at = user.deleted_at - timedelta(days=days)
        agents = await session.execute(
            select(Agent).where(Agent.owner_id == user_id, Agent.purge_after.is_not(None))
        )
        for agent in agents.scalars():
            assert agent.purge_after is not None
            agent.purge_after = agent.purge_after - timedelta(days=days)
        await session.commit()
        return user.deleted_at


async def rows_mentioning(api: Api, needles: list[str]) -> list[str]:
    """`table.column = value` of every value, in every table, that contains one of `needles`."""
    found: list[str] = []
    async with api.app.state.sessionmaker() as session:
        connection = await session.connection()
        present = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        for table in Base.metadata.sorted_tables:
            if table.name not in present:  # described by a model whose migration is not here
                continue
            for row in (await session.execute(select(table))).mappings():
                for column, value in row.items():
                    if value is None or isinstance(value, (int, float, datetime, bytes)):
                        continue
                    text = value if isinstance(value, str) else json.dumps(value, default=str)
                    if any(needle in text for needle in needles):
                        found.append(f"{table.name}.{column} = {text[:120]}")
    return found


async def count(api: Api, table_name: str) -> int:
    table = Base.metadata.tables[table_name]
    async with api.app.state.sessionmaker() as session:
        return len((await session.execute(select(table))).all())
