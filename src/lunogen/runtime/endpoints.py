"""An agent's conversations: its threads and their messages (the API channel that sends them
messages is `channel.api`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsRead, AgentsWrite
from lunogen.db import DbSession
from lunogen.kit.crypto import KeyRing
from lunogen.kit.pagination import Page, PageParams, page_params
from lunogen.runtime import conversations
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
    found, total = await conversations.list_threads(
        db, agent=agent, limit=page.limit, offset=page.offset
    )
    return Page(
        data=[
            ThreadOut(
                id=item.thread.id,
                channel=item.thread.channel_key,
                contact=item.thread.contact,
                created_at=item.thread.created_at,
                last_message_at=item.thread.last_message_at,
                messages=item.messages,
            )
            for item in found
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
    thread = await conversations.get_thread(db, agent=agent, thread_id=thread_id)
    messages, total = await conversations.thread_messages(
        db, thread=thread, limit=page.limit, offset=page.offset, newest_first=order == "desc"
    )
    keyring: KeyRing = request.app.state.keyring
    return Page(
        data=[message_out(m, keyring) for m in messages],
        total=total,
        **page.model_dump(),
    )


@router.delete(
    "/{agent_id}/threads/{thread_id}",
    status_code=204,
    response_class=Response,
    responses={
        404: {"description": "No such agent or thread visible to you"},
        409: {"description": "The agent is answering in this conversation"},
    },
)
async def delete_thread(
    agent_id: str, thread_id: str, principal: AgentsWrite, db: DbSession
) -> Response:
    """Forget a conversation: the thread and all its messages. Scope: `agents:write`. The
    agent's memory notes about the contact stay (delete them under `/memory`)."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    thread = await conversations.get_thread(db, agent=agent, thread_id=thread_id)
    await conversations.delete_thread(db, principal=principal, agent=agent, thread=thread)
    return Response(status_code=204)
