"""An agent's conversations: its threads and their messages (the API channel that sends them
messages is `channel.api`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.agent.models import Agent
from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsRead, AgentsWrite
from lunogen.auth.principal import Principal
from lunogen.channel.fields import Storable
from lunogen.db import DbSession
from lunogen.kit.crypto import KeyRing
from lunogen.kit.pagination import Page, PageParams, page_params
from lunogen.runtime import conversations, takeover
from lunogen.runtime.models import Thread
from lunogen.runtime.schemas import MessageOut, message_out
from lunogen.runtime.tasks import enqueue_thread

router = APIRouter(prefix="/api/v1/agents", tags=["conversations"])


class ThreadOut(BaseModel):
    id: str
    channel: str
    contact: str
    created_at: datetime
    last_message_at: datetime
    messages: int
    taken_over_until: datetime | None = Field(
        None, description="You answer this contact yourself until then; the agent is silent."
    )


class TakeoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    minutes: int = Field(
        takeover.DEFAULT_MINUTES,
        ge=1,
        le=takeover.MAX_MINUTES,
        description="How long the agent stays silent for this contact, unless handed back.",
    )


class TakeoverOut(BaseModel):
    thread_id: str
    taken_over_until: datetime | None
    waiting: int = Field(0, description="Messages the agent answers now (on hand-back).")


class OwnerReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(min_length=1, max_length=32_000), Storable]


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
                taken_over_until=takeover.taken_over_until(item.thread),
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


_TAKEOVER_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such agent or thread visible to you"},
}


async def _locked_thread(
    db: AsyncSession, principal: Principal, agent_id: str, thread_id: str
) -> tuple[Agent, Thread]:
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    thread = await conversations.get_thread(db, agent=agent, thread_id=thread_id)
    await db.refresh(thread, with_for_update=True)
    return agent, thread


@router.post(
    "/{agent_id}/threads/{thread_id}/takeover",
    response_model=TakeoverOut,
    responses=_TAKEOVER_ERRORS,
)
async def take_over_thread(
    agent_id: str, thread_id: str, data: TakeoverIn, principal: AgentsWrite, db: DbSession
) -> TakeoverOut:
    """Answer this contact yourself: the agent stays silent for them for `minutes` (again to
    extend), or until you hand back. Their messages meanwhile wait for your reply
    (`POST .../replies`). Scope: `agents:write`."""
    agent, thread = await _locked_thread(db, principal, agent_id, thread_id)
    until = await takeover.take_over(
        db, principal, agent=agent, thread=thread, minutes=data.minutes
    )
    return TakeoverOut(thread_id=thread.id, taken_over_until=until)


@router.delete(
    "/{agent_id}/threads/{thread_id}/takeover",
    response_model=TakeoverOut,
    responses=_TAKEOVER_ERRORS,
)
async def hand_back_thread(
    agent_id: str, thread_id: str, principal: AgentsWrite, db: DbSession
) -> TakeoverOut:
    """Hand the conversation back: the agent answers from now on, starting with the messages
    that still wait. Scope: `agents:write`."""
    agent, thread = await _locked_thread(db, principal, agent_id, thread_id)
    waiting = await takeover.hand_back(db, principal, agent=agent, thread=thread)
    if waiting:
        enqueue_thread(db, thread.id)
    return TakeoverOut(thread_id=thread.id, taken_over_until=None, waiting=waiting)


@router.post(
    "/{agent_id}/threads/{thread_id}/replies",
    response_model=MessageOut,
    status_code=201,
    responses={
        **_TAKEOVER_ERRORS,
        409: {"description": "Nothing waits for an answer, or the agent is answering now"},
    },
)
async def reply_as_agent(
    agent_id: str,
    thread_id: str,
    data: OwnerReplyIn,
    request: Request,
    principal: AgentsWrite,
    db: DbSession,
) -> MessageOut:
    """Answer the contact's oldest waiting message yourself, as the agent: the channel sends
    your text like one of the agent's replies. Takes the conversation over (60 minutes) if you
    had not. Scope: `agents:write`."""
    keyring: KeyRing = request.app.state.keyring
    agent, thread = await _locked_thread(db, principal, agent_id, thread_id)
    reply = await takeover.reply_as_agent(
        db, principal, keyring, agent=agent, thread=thread, text=data.text
    )
    return message_out(reply, keyring)
