"""An agent's conversations: its threads and their messages (the API channel that sends them
messages is `channel.api`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from sqlalchemy import func, select

from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsRead
from lunogen.db import DbSession
from lunogen.errors import NotFoundError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.pagination import Page, PageParams, page_params
from lunogen.runtime.models import Message, Thread
from lunogen.runtime.schemas import MessageOut, message_out

router = APIRouter(prefix="/api/v1/agents", tags=["conversations"])


class ThreadOut(BaseModel):
    id: str
    channel: str
    contact: str
    created_at: datetime
    last_message_at: datetime
    messages: int


@router.get("/{agent_id}/threads", response_model=Page[ThreadOut])
async def list_threads(
    agent_id: str,
    principal: AgentsRead,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
) -> Page[ThreadOut]:
    """The agent's conversations, most recently active first."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    base = select(Thread).where(Thread.agent_id == agent.id)
    total = int((await db.execute(select(func.count()).select_from(base.subquery()))).scalar_one())
    counts = (
        select(Message.thread_id, func.count().label("n"))
        .where(Message.agent_id == agent.id)
        .group_by(Message.thread_id)
        .subquery()
    )
    rows = await db.execute(
        select(Thread, counts.c.n)
        .outerjoin(counts, counts.c.thread_id == Thread.id)
        .where(Thread.agent_id == agent.id)
        .order_by(Thread.last_message_at.desc(), Thread.id)
        .limit(page.limit)
        .offset(page.offset)
    )
    return Page(
        data=[
            ThreadOut(
                id=t.id,
                channel=t.channel_key,
                contact=t.contact,
                created_at=t.created_at,
                last_message_at=t.last_message_at,
                messages=n or 0,
            )
            for t, n in rows.all()
        ],
        total=total,
        **page.model_dump(),
    )


@router.get("/{agent_id}/threads/{thread_id}/messages", response_model=Page[MessageOut])
async def list_thread_messages(
    agent_id: str,
    thread_id: str,
    request: Request,
    principal: AgentsRead,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
) -> Page[MessageOut]:
    """A thread's messages in arrival order (`order=desc` for newest first)."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    thread = await db.get(Thread, thread_id)
    if thread is None or thread.agent_id != agent.id:
        raise NotFoundError(error="Thread not found")
    base = select(Message).where(Message.thread_id == thread.id)
    total = int((await db.execute(select(func.count()).select_from(base.subquery()))).scalar_one())
    ordering = Message.seq.asc() if order == "asc" else Message.seq.desc()
    rows = await db.execute(base.order_by(ordering).limit(page.limit).offset(page.offset))
    keyring: KeyRing = request.app.state.keyring
    return Page(
        data=[message_out(m, keyring) for m in rows.scalars()],
        total=total,
        **page.model_dump(),
    )
