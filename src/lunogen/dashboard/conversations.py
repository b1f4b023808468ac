"""An agent's conversations in the dashboard: threads per channel and contact, a thread's
messages, the agent's memory notes about that contact; a conversation or a note can be deleted.
Calls `runtime.conversations`, as the API does."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Query, Request
from fastapi.responses import RedirectResponse
from starlette.responses import Response

from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsWrite
from lunogen.dashboard.shell import SignedIn, page, page_router
from lunogen.db import DbSession
from lunogen.kit.crypto import KeyRing
from lunogen.runtime import conversations
from lunogen.runtime.conversations import ThreadSummary

router = page_router()
PER_PAGE = 50


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
