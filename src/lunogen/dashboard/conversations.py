"""An agent's conversations in the dashboard: threads per channel and contact, a thread's
messages, the agent's memory notes about that contact; a conversation or a note can be deleted.
Calls `runtime.conversations`, as the API does."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.agent.models import Agent
from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsWrite
from lunogen.auth.principal import Principal
from lunogen.channel.fields import Storable
from lunogen.dashboard.shell import SignedIn, page, page_router
from lunogen.db import DbSession
from lunogen.kit.crypto import KeyRing
from lunogen.runtime import conversations, takeover
from lunogen.runtime.conversations import ThreadSummary
from lunogen.runtime.models import Thread
from lunogen.runtime.tasks import enqueue_thread

router = page_router()
PER_PAGE = 50
TAKEOVER_OUTCOMES = {
    "taken": "You answer this contact now; the agent stays silent for them.",
    "sent": "Sent: the channel delivers your reply as the agent's.",
    "handed": "Handed back: the agent answers from now on.",
}


def _channel_of(channel_key: str) -> str:
    kind, _, channel_id = channel_key.partition(":")
    return f"{kind} ({channel_id[:8]})" if channel_id else kind


@router.get("/agents/{agent_id}/conversations")
async def conversation_list(
    agent_id: str,
    request: Request,
    viewer: SignedIn,
    db: DbSession,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    agent = await get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    found, total = await conversations.list_threads(db, agent=agent, limit=PER_PAGE, offset=offset)
    return page(
        request,
        viewer,
        "conversations/list.html",
        section="agents",
        agent=agent,
        threads=found,
        total=total,
        offset=offset,
        per_page=PER_PAGE,
        channel_of=_channel_of,
    )


@router.get("/agents/{agent_id}/conversations/{thread_id}")
async def conversation(
    agent_id: str,
    thread_id: str,
    request: Request,
    viewer: SignedIn,
    db: DbSession,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    keyring: KeyRing = request.app.state.keyring
    agent = await get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    thread = await conversations.get_thread(db, agent=agent, thread_id=thread_id)
    messages, total = await conversations.thread_messages(
        db, thread=thread, limit=PER_PAGE, offset=offset
    )
    notes, _ = await conversations.memory_notes(
        db, agent=agent, limit=200, offset=0, contact=thread.contact
    )
    return page(
        request,
        viewer,
        "conversations/thread.html",
        section="agents",
        agent=agent,
        thread=ThreadSummary(thread, total),
        channel=_channel_of(thread.channel_key),
        messages=[(m, keyring.decrypt(m.content)) for m in messages],
        total=total,
        offset=offset,
        per_page=PER_PAGE,
        notes=[(n, keyring.decrypt(n.content)) for n in notes],
        taken_over_until=takeover.taken_over_until(thread),
        max_minutes=takeover.MAX_MINUTES,
        flash=TAKEOVER_OUTCOMES.get(request.query_params.get("outcome", "")),
    )


@router.post("/agents/{agent_id}/conversations/{thread_id}/delete")
async def delete_conversation(
    agent_id: str, thread_id: str, principal: AgentsWrite, db: DbSession
) -> Response:
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    thread = await conversations.get_thread(db, agent=agent, thread_id=thread_id)
    await conversations.delete_thread(db, principal=principal, agent=agent, thread=thread)
    return RedirectResponse(f"/agents/{agent.id}/conversations?deleted=1", status_code=303)


@router.post("/agents/{agent_id}/memory/{note_id}/delete")
async def delete_note(
    agent_id: str,
    note_id: str,
    principal: AgentsWrite,
    db: DbSession,
    back: Annotated[str, Form(max_length=36)] = "",
) -> Response:
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    await conversations.delete_memory_note(db, principal=principal, agent=agent, note_id=note_id)
    target = f"/agents/{agent.id}/conversations"
    if back and back.replace("-", "").isalnum():
        target += f"/{back}"
    return RedirectResponse(target, status_code=303)


async def _thread_for_update(
    db: AsyncSession, principal: Principal, agent_id: str, thread_id: str
) -> tuple[Agent, Thread]:
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    thread = await conversations.get_thread(db, agent=agent, thread_id=thread_id)
    await db.refresh(thread, with_for_update=True)
    return agent, thread


def _back(agent: Agent, thread: Thread, outcome: str) -> Response:
    target = f"/agents/{agent.id}/conversations/{thread.id}?outcome={outcome}"
    return RedirectResponse(target, status_code=303)


@router.post("/agents/{agent_id}/conversations/{thread_id}/take-over")
async def take_over(
    agent_id: str,
    thread_id: str,
    principal: AgentsWrite,
    db: DbSession,
    minutes: Annotated[int, Form(ge=1, le=takeover.MAX_MINUTES)] = takeover.DEFAULT_MINUTES,
) -> Response:
    agent, thread = await _thread_for_update(db, principal, agent_id, thread_id)
    await takeover.take_over(db, principal, agent=agent, thread=thread, minutes=minutes)
    return _back(agent, thread, "taken")


@router.post("/agents/{agent_id}/conversations/{thread_id}/hand-back")
async def hand_back(
    agent_id: str, thread_id: str, principal: AgentsWrite, db: DbSession
) -> Response:
    agent, thread = await _thread_for_update(db, principal, agent_id, thread_id)
    if await takeover.hand_back(db, principal, agent=agent, thread=thread):
        enqueue_thread(db, thread.id)
    return _back(agent, thread, "handed")


@router.post("/agents/{agent_id}/conversations/{thread_id}/reply")
async def reply(
    agent_id: str,
    thread_id: str,
    request: Request,
    principal: AgentsWrite,
    db: DbSession,
    text: Annotated[str, Form(min_length=1, max_length=32_000), Storable],
) -> Response:
    agent, thread = await _thread_for_update(db, principal, agent_id, thread_id)
    keyring: KeyRing = request.app.state.keyring
    await takeover.reply_as_agent(db, principal, keyring, agent=agent, thread=thread, text=text)
    return _back(agent, thread, "sent")
