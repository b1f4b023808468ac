"""The memory built-ins: `remember`, `recall` and `forget` notes about a contact or agent-wide.

Notes live in `memory_notes`, encrypted with the key ring like other secrets. A turn sees the
notes of its agent that are agent-wide or about the thread's contact; the tools read and change
only those. Writes go into the turn's session and commit with its reply (never here). Tools
never raise: problems come back as a string starting with "Error:".
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.runtime.models import MemoryNote
from lunogen.tool.registry import ToolContext, ToolSpec, registry

MAX_NOTE_CHARS = 1_000
MAX_NOTES = 200  # per contact, and agent-wide, for each agent
RECALL_LIMIT = 20
_WORDS = re.compile(r"\w+")
_UNAVAILABLE = "Error: memory is not available in this conversation."


def _services(context: ToolContext) -> tuple[AsyncSession, KeyRing] | None:
    if context.session is None or context.keyring is None:
        return None
    return context.session, context.keyring


def _scope_filter(contact: str | None) -> Any:
    return MemoryNote.contact.is_(None) if contact is None else MemoryNote.contact == contact


def _visible(context: ToolContext) -> Any:
    """The notes a turn may see: its agent's, agent-wide or about this turn's contact."""
    query = select(MemoryNote).where(MemoryNote.agent_id == context.agent_id)
    if context.contact is None:
        return query.where(MemoryNote.contact.is_(None))
    return query.where(or_(MemoryNote.contact.is_(None), MemoryNote.contact == context.contact))


def _clean(text: str) -> str:
    text = text.replace("\x00", "")
    text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates
    return " ".join(text.split())


async def remember(context: ToolContext, args: dict[str, Any]) -> str:
    services = _services(context)
    if services is None:
        return _UNAVAILABLE
    session, keyring = services
    raw = args.get("note")
    if not isinstance(raw, str) or not _clean(raw):
        return "Error: the argument `note` (the text to remember) is required."
    note = _clean(raw)
    if len(note) > MAX_NOTE_CHARS:
        return (
            f"Error: the note is {len(note)} characters long; notes are at most "
            f"{MAX_NOTE_CHARS}. Summarise it and try again."
        )
    about = args.get("about", "contact") or "contact"
    if about not in ("contact", "agent"):
        return "Error: `about` must be 'contact' (this person) or 'agent' (everyone)."
    if about == "contact" and context.contact is None:
        return "Error: this conversation has no contact; use about='agent'."
    contact = context.contact if about == "contact" else None
    count = (
        await session.execute(
            select(func.count())
            .select_from(MemoryNote)
            .where(MemoryNote.agent_id == context.agent_id, _scope_filter(contact))
        )
    ).scalar_one()
    if count >= MAX_NOTES:
        scope = "this contact" if contact is not None else "agent-wide notes"
        return (
            f"Error: memory is full ({MAX_NOTES} notes for {scope}). Forget a note you no "
            "longer need (use recall to find its id), then try again."
        )
    row = MemoryNote(
        id=new_id(),
        agent_id=context.agent_id,
        owner_id=context.owner_id,
        contact=contact,
        content=keyring.encrypt(note),
    )
    session.add(row)
    await session.flush()
    where = "about this contact" if contact is not None else "agent-wide (for every contact)"
    return f"Remembered {where} as note {row.id}."


def _score(words: list[str], text: str) -> int:
    folded = text.casefold()
    return sum(1 for word in words if word in folded)


async def recall(context: ToolContext, args: dict[str, Any]) -> str:
    services = _services(context)
    if services is None:
        return _UNAVAILABLE
    session, keyring = services
    query = args.get("query")
    if query is not None and not isinstance(query, str):
        return "Error: `query` must be a string of words to search for."
    words = sorted(set(_WORDS.findall((query or "").casefold())))
    rows = (
        await session.execute(
            _visible(context).order_by(MemoryNote.created_at.desc(), MemoryNote.id.desc())
        )
    ).scalars()
    found: list[tuple[int, int, MemoryNote, str]] = []
    for position, row in enumerate(rows):
        text = keyring.decrypt(row.content)
        score = _score(words, text) if words else 1
        if score:
            found.append((-score, position, row, text))
    if not found:
        return "No notes match." if words else "No notes yet."
    found.sort(key=lambda item: (item[0], item[1]))  # most words matched, then newest
    shown = found[:RECALL_LIMIT]
    lines = [
        f"- [{row.id}] ({'this contact' if row.contact is not None else 'agent-wide'}, "
        f"{row.created_at:%Y-%m-%d}) {text}"
        for _, _, row, text in shown
    ]
    more = len(found) - len(shown)
    header = f"{len(found)} note{'s' if len(found) != 1 else ''}"
    header += f" (showing {len(shown)}; narrow the query to see others)" if more else ""
    return header + ":\n" + "\n".join(lines)


async def forget(context: ToolContext, args: dict[str, Any]) -> str:
    services = _services(context)
    if services is None:
        return _UNAVAILABLE
    session, _ = services
    note_id = args.get("note_id")
    if not isinstance(note_id, str) or not note_id.strip():
        return "Error: the argument `note_id` (an id shown by recall) is required."
    note_id = note_id.strip().strip("[]")
    row = (
        await session.execute(_visible(context).where(MemoryNote.id == note_id))
    ).scalar_one_or_none()
    if row is None:
        return f"Error: no note {note_id!r} in this conversation's memory; use recall for ids."
    await session.delete(row)
    await session.flush()
    return f"Forgot note {note_id}."


registry.register(
    ToolSpec(
        name="remember",
        description=(
            "Save a short note to remember in later conversations: about the person you are "
            "talking to (about='contact', the default) or for every conversation of this agent "
            f"(about='agent'). At most {MAX_NOTE_CHARS} characters per note."
        ),
        parameters={
            "type": "object",
            "properties": {
                "note": {
                    "type": "string",
                    "maxLength": MAX_NOTE_CHARS,
                    "description": "What to remember, as a self-contained sentence.",
                },
                "about": {
                    "type": "string",
                    "enum": ["contact", "agent"],
                    "description": "'contact' (this person, default) or 'agent' (everyone).",
                },
            },
            "required": ["note"],
            "additionalProperties": False,
        },
        run=remember,
        tags=("builtin", "memory"),
    )
)
registry.register(
    ToolSpec(
        name="recall",
        description=(
            "Search your notes about this person and your agent-wide notes, newest first; "
            "without a query, list them. Each note shows its id, for forget."
        ),
        parameters={
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "Words to look for (any case)."}
            },
            "additionalProperties": False,
        },
        run=recall,
        tags=("builtin", "memory"),
    )
)
registry.register(
    ToolSpec(
        name="forget",
        description="Delete one of your notes by its id (as shown by recall).",
        parameters={
            "type": "object",
            "properties": {"note_id": {"type": "string", "description": "The note's id."}},
            "required": ["note_id"],
            "additionalProperties": False,
        },
        run=forget,
        tags=("builtin", "memory"),
    )
)
