"""A message accepted for an agent whose thread is leased to a worker that died."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.models import Agent
from lunogen.kit.time import utcnow
from lunogen.llm.worker_parts import MODEL_CLIENT
from lunogen.runtime.models import Thread
from lunogen.runtime.service import accept_inbound
from lunogen.runtime.turn import TurnDeps
from lunogen.worker.broker import runtime
from tests.agent.support import create_agent, new_dev
from tests.helpers import Api

DEAD_WORKER = "dead-worker:1"


async def set_lease(session: AsyncSession, thread_id: str, left: timedelta) -> None:
    """The thread is held by DEAD_WORKER for `left` more (negative: already run out)."""
    await session.execute(
        update(Thread)
        .where(Thread.id == thread_id)
        .values(lease_owner=DEAD_WORKER, lease_expires_at=utcnow() + left)
    )
    await session.commit()


async def pending_under_a_lease(
    api: Api, *, text: str, left: timedelta, tools: list[str] | None = None
) -> tuple[str, str, str]:
    """A deployed agent with one pending message on a thread DEAD_WORKER holds:
    (agent id, thread id, message id)."""
    dev = await new_dev(api)
    agent = await create_agent(dev, **({"tools": tools} if tools is not None else {}))
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    async with api.app.state.sessionmaker() as session:
        row = await session.get(Agent, agent["id"])
        assert row is not None
        accepted = await accept_inbound(
            session,
            agent=row,
            channel_key="api",
            contact="someone",
            text=text,
            keyring=api.app.state.keyring,
        )
        await set_lease(session, accepted.thread.id, left)
        return agent["id"], accepted.thread.id, accepted.message.id


def turn_deps() -> TurnDeps:
    """What a job of this process hands a turn (no event bus: nobody follows these turns)."""
    rt = runtime()
    return TurnDeps(
        settings=rt.settings,
        sessionmaker=rt.sessionmaker,
        keyring=rt.keyring,
        model_client=rt.get(MODEL_CLIENT),
    )
