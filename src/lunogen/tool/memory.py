"""The memory built-ins: `remember`, `recall` and `forget` notes about a contact or agent-wide.

Notes live in `memory_notes`, encrypted with the key ring like other secrets. A turn sees the
notes of its agent that are agent-wide or about the thread's contact; the tools read and change
only those. Reads use short transactions of their own; writes are staged and applied with the
turn's reply (`StagedWrites`), so a failed turn changes nothing. Tools never raise: problems
come back as a string starting with "Error:".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.runtime.models import MemoryNote
from lunogen.tool.registry import ToolContext, ToolSpec, registry

MAX_NOTE_CHARS = 1_000
MAX_NOTES = 200  # per contact, and agent-wide, for each agent
RECALL_LIMIT = 20
_WORDS = re.compile(r"\w+")
_UNAVAILABLE = "Error: memory is not available in this conversation."


@dataclass
class _Draft:
    """This turn's staged memory changes: notes added, and ids forgotten (with their scope)."""

    added: list[MemoryNote] = field(default_factory=list)
    forgotten: dict[str, str | None] = field(default_factory=dict)

    async def apply(self, agent_id: str, session: AsyncSession) -> None:
        session.add_all(self.added)
        if self.forgotten:
            await session.execute(
                delete(MemoryNote).where(
                    MemoryNote.agent_id == agent_id, MemoryNote.id.in_(list(self.forgotten))
                )
            )


@dataclass(frozen=True)
class _Services:
    sessionmaker: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    draft: _Draft


def _services(context: ToolContext) -> _Services | None:
    if context.sessionmaker is None or context.keyring is None or context.writes is None:
        return None
    draft = context.writes.state.get("memory")
    if draft is None:
        draft = context.writes.state["memory"] = _Draft()
        context.writes.add(partial(draft.apply, context.agent_id))
    return _Services(context.sessionmaker, context.keyring, draft)


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
    async with services.sessionmaker() as session:
        stored = (
            await session.execute(
                select(func.count())
                .select_from(MemoryNote)
                .where(MemoryNote.agent_id == context.agent_id, _scope_filter(contact))
            )
        ).scalar_one()
    draft = services.draft
    count = (
        stored
        + sum(1 for n in draft.added if n.contact == contact)
        - sum(1 for scope in draft.forgotten.values() if scope == contact)
    )
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
        content=services.keyring.encrypt(note),
        created_at=utcnow(),
    )
    draft.added.append(row)
    where = "about this contact" if contact is not None else "agent-wide (for every contact)"
    return f"Remembered {where} as note {row.id}."


def _score(words: list[str], text: str) -> int:
    folded = text.casefold()
    return sum(1 for word in words if word in folded)


async def _notes_newest_first(context: ToolContext, services: _Services) -> list[MemoryNote]:
    async with services.sessionmaker() as session:
        stored = (
            await session.execute(
                _visible(context).order_by(MemoryNote.created_at.desc(), MemoryNote.id.desc())
            )
        ).scalars()
        kept = [row for row in stored if row.id not in services.draft.forgotten]
    return [*reversed(services.draft.added), *kept]


async def recall(context: ToolContext, args: dict[str, Any]) -> str:
    services = _services(context)
    if services is None:
        return _UNAVAILABLE
    query = args.get("query")
    if query is not None and not isinstance(query, str):
        return "Error: `query` must be a string of words to search for."
    words = sorted(set(_WORDS.findall((query or "").casefold())))
    found: list[tuple[int, int, MemoryNote, str]] = []
    for position, row in enumerate(await _notes_newest_first(context, services)):
        text = services.keyring.decrypt(row.content)
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
    note_id = args.get("note_id")
    if not isinstance(note_id, str) or not note_id.strip():
        return "Error: the argument `note_id` (an id shown by recall) is required."
    note_id = note_id.strip().strip("[]")
    draft = services.draft
    for note in draft.added:
        if note.id == note_id:
            draft.added.remove(note)
            return f"Forgot note {note_id}."
    if note_id not in draft.forgotten:
        async with services.sessionmaker() as session:
            row = (
                await session.execute(_visible(context).where(MemoryNote.id == note_id))
            ).scalar_one_or_none()
        if row is not None:
            draft.forgotten[note_id] = row.contact
            return f"Forgot note {note_id}."
    return f"Error: no note {note_id!r} in this conversation's memory; use recall for ids."


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
