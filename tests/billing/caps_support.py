"""Helpers for the spend cap tests: a running agent with credits, messages, a movable clock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from lunogen.billing import caps
from lunogen.kit.time import utcnow
from lunogen.notification.models import Notification, OutboundEmail
from lunogen.runlog.models import AgentLogEvent
from tests.agent.support import Dev, create_agent, new_dev
from tests.billing.support import set_available
from tests.helpers import Api

C = 1_000_000  # micro-credits in a credit


async def running_agent(api: Api, *, credits: int = 50, **overrides: Any) -> tuple[Dev, str]:
    dev = await new_dev(api)
    agent = await create_agent(dev, **overrides)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    await set_available(api.app.state.sessionmaker, dev.id, credits * C)
    return dev, agent["id"]


async def say(dev: Dev, agent_id: str, text: str, **extra: Any) -> Any:
    response = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages",
        json={"text": text, "wait_seconds": 30, **extra},
    )
    assert response.status_code == 200, response.text
    return response.json()


async def put_caps(dev: Dev, agent_id: str, **values: Any) -> dict[str, Any]:
    response = await dev.http.put(f"/api/v1/agents/{agent_id}/caps", json=values)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def notices(api: Api, user_id: str, kind: str) -> int:
    async with api.app.state.sessionmaker() as session:
        query = select(func.count()).select_from(Notification)
        query = query.where(Notification.user_id == user_id, Notification.kind == kind)
        return int((await session.execute(query)).scalar_one())


async def emails(api: Api, words: str) -> int:
    async with api.app.state.sessionmaker() as session:
        rows = await session.execute(select(OutboundEmail.subject))
        return sum(words in subject for subject in rows.scalars())


async def cap_logs(api: Api, agent_id: str) -> list[AgentLogEvent]:
    async with api.app.state.sessionmaker() as session:
        rows = await session.execute(
            select(AgentLogEvent)
            .where(AgentLogEvent.agent_id == agent_id, AgentLogEvent.event == "caps.refused")
            .order_by(AgentLogEvent.id)
        )
        return list(rows.scalars())


class Clock:
    """`billing.caps`'s clock, moved by `shift` (the ledger's stays real)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.offset = timedelta(0)
        monkeypatch.setattr(caps, "utcnow", self.now)

    def now(self) -> datetime:
        return utcnow() + self.offset

    def shift(self, by: timedelta) -> None:
        self.offset += by

    def set(self, when: datetime) -> None:
        self.offset = when - utcnow()
