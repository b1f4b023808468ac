"""Direct database access for assertions a client cannot make (rows, moved clocks)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.sql.dml import Executable

from lunogen.account.models import EmailToken, User
from lunogen.kit.time import utcnow
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.helpers import Api


async def rows(api: Api, query: Select[Any]) -> list[Any]:
    async with api.app.state.sessionmaker() as session:
        return list((await session.execute(query)).scalars())


async def execute(api: Api, statement: Executable) -> None:
    async with api.app.state.sessionmaker() as session:
        await session.execute(statement)
        await session.commit()


async def user_count(api: Api, email: str) -> int:
    query = select(func.count()).select_from(User).where(User.email == email.lower())
    async with api.app.state.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())


async def expire_tokens(api: Api, email: str) -> None:
    """Move the clock past every link token of `email`."""
    user_ids = select(User.id).where(User.email == email.lower()).scalar_subquery()
    await execute(
        api,
        update(EmailToken)
        .where(EmailToken.user_id == user_ids)
        .values(expires_at=utcnow() - timedelta(minutes=1)),
    )


async def deliver_all() -> None:
    """Let the enqueued email jobs run to the end."""
    await enqueue.drain()
    await wait_idle()
