"""An agent's conversation activity: the threads and messages it had today (the status page)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.kit.time import utcnow
from lunogen.runtime.models import Message, Thread


@dataclass(frozen=True)
class ActivityToday:
    threads_today: int
    messages_today: int


async def activity_today(session: AsyncSession, *, agent_id: str) -> ActivityToday:
    """Threads started and messages written since midnight UTC."""
    midnight = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    threads = await session.execute(
        select(func.count()).where(Thread.agent_id == agent_id, Thread.created_at >= midnight)
    )
    messages = await session.execute(
        select(func.count()).where(Message.agent_id == agent_id, Message.created_at >= midnight)
    )
    return ActivityToday(
        threads_today=int(threads.scalar_one()), messages_today=int(messages.scalar_one())
    )
