"""Helpers for the moderation tests: an admin, a running agent, rules, messages, rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from lunogen.moderation.models import ModerationCheck, ModerationFlag
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.agent.support import Dev, create_agent, new_dev
from tests.helpers import Api, Signed


async def admin(api: Api) -> Signed:
    person = await api.sign_up(api.unique_email("admin"))
    await api.make_admin(person)
    return person


async def add_rule(person: Signed, **body: Any) -> Any:
    rule = {"kind": "term", "direction": "both", "action": "flag", **body}
    return await person.client.post(
        "/api/v1/admin/moderation/rules", json=rule, headers=person.headers
    )


async def running_agent(api: Api, name: str = "Shop bot") -> tuple[Dev, str]:
    dev = await new_dev(api)
    agent = await create_agent(dev, name=name)
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    return dev, str(agent["id"])


async def say(dev: Dev, agent_id: str, text: str) -> Any:
    """The exchange's JSON, with `status_code` added."""
    response = await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": text})
    return {**response.json(), "status_code": response.status_code}


async def settle() -> None:
    """Wait for the jobs sent by recent commits (classifier checks) to finish."""
    for _ in range(3):
        await enqueue.drain()
        await wait_idle()


async def flags(api: Api) -> list[ModerationFlag]:
    async with api.app.state.sessionmaker() as session:
        query = select(ModerationFlag).order_by(ModerationFlag.created_at, ModerationFlag.id)
        return list((await session.execute(query)).scalars())


async def checks(api: Api) -> list[ModerationCheck]:
    async with api.app.state.sessionmaker() as session:
        query = select(ModerationCheck).order_by(ModerationCheck.created_at)
        return list((await session.execute(query)).scalars())
