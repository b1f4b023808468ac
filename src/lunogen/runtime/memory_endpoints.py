"""The owner's view of an agent's memory notes: list (decrypted) and delete."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from starlette.responses import Response

from lunogen.agent.endpoints import Keys
from lunogen.agent.service import get_agent
from lunogen.auth.dependencies import AgentsRead, AgentsWrite
from lunogen.db import DbSession
from lunogen.kit.pagination import Page, PageParams, page_params
from lunogen.runtime import conversations

router = APIRouter(prefix="/api/v1/agents", tags=["memory"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No agent with this id is visible to you, or no such note"}
}


class MemoryNoteOut(BaseModel):
    id: str
    about: Literal["contact", "agent"]
    contact: str | None = Field(description="The contact the note is about; null: agent-wide.")
    text: str
    created_at: datetime


@router.get("/{agent_id}/memory", response_model=Page[MemoryNoteOut], responses=_NOT_FOUND)
async def list_memory(
    agent_id: str,
    principal: AgentsRead,
    db: DbSession,
    keyring: Keys,
    page: Annotated[PageParams, Depends(page_params)],
    contact: Annotated[
        str | None, Query(max_length=255, description="Only the notes about this contact")
    ] = None,
    about: Annotated[
        Literal["contact", "agent"] | None,
        Query(description="Only notes about contacts, or only agent-wide notes"),
    ] = None,
) -> Page[MemoryNoteOut]:
    """The notes the agent keeps (via `remember`), newest first. Scope: `agents:read`."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    notes, total = await conversations.memory_notes(
        db, agent=agent, limit=page.limit, offset=page.offset, contact=contact, about=about
    )
    data = [
        MemoryNoteOut(
            id=row.id,
            about="agent" if row.contact is None else "contact",
            contact=row.contact,
            text=keyring.decrypt(row.content),
            created_at=row.created_at,
        )
        for row in notes
    ]
    return Page(data=data, total=total, **page.model_dump())


@router.delete(
    "/{agent_id}/memory/{note_id}", status_code=204, response_class=Response, responses=_NOT_FOUND
)
async def delete_memory_note(
    agent_id: str, note_id: str, principal: AgentsWrite, db: DbSession
) -> Response:
    """Delete one note. Scope: `agents:write`."""
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id)
    await conversations.delete_memory_note(db, principal=principal, agent=agent, note_id=note_id)
    return Response(status_code=204)
