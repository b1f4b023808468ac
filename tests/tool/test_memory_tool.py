"""The memory tools called directly with a ToolContext: limits and edge cases."""

from __future__ import annotations

from typing import Any

from lunogen.runtime.models import MemoryNote
from lunogen.tool import memory
from lunogen.tool.registry import StagedWrites, ToolContext
from tests.agent.support import create_agent, new_dev, raw_rows
from tests.helpers import Api


async def _agent(api: Api) -> tuple[str, str]:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=["remember", "recall", "forget"])
    return dev.id, agent["id"]


async def _run(api: Api, ctx: dict[str, Any], tool: Any, args: dict[str, Any]) -> str:
    """Runs a tool, then applies what it staged, as a turn does with its reply."""
    writes = StagedWrites()
    context = ToolContext(
        sessionmaker=api.app.state.sessionmaker,
        writes=writes,
        keyring=api.app.state.keyring,
        **ctx,
    )
    result: str = await tool(context, args)
    async with api.app.state.sessionmaker() as session:
        await writes.apply(session)
        await session.commit()
    return result


async def _fill(api: Api, owner_id: str, agent_id: str, contact: str | None, count: int) -> None:
    keyring = api.app.state.keyring
    async with api.app.state.sessionmaker() as session:
        for n in range(count):
            session.add(
                MemoryNote(
                    agent_id=agent_id,
                    owner_id=owner_id,
                    contact=contact,
                    content=keyring.encrypt(f"note number {n}"),
                )
            )
        await session.commit()


async def test_the_note_count_is_capped_per_contact_and_agent_wide(api: Api) -> None:
    owner_id, agent_id = await _agent(api)
    ada = {"agent_id": agent_id, "owner_id": owner_id, "contact": "ada"}
    await _fill(api, owner_id, agent_id, "ada", memory.MAX_NOTES)
    full = await _run(api, ada, memory.remember, {"note": "one more"})
    assert full.startswith(f"Error: memory is full ({memory.MAX_NOTES} notes for this contact)")
    # Other contacts and agent-wide notes have their own room.
    bob = {**ada, "contact": "bob"}
    assert (await _run(api, bob, memory.remember, {"note": "Bob is new"})).startswith(
        "Remembered about this contact"
    )
    assert (await _run(api, ada, memory.remember, {"note": "x", "about": "agent"})).startswith(
        "Remembered agent-wide"
    )
    await _fill(api, owner_id, agent_id, None, memory.MAX_NOTES - 1)
    wide_full = await _run(api, bob, memory.remember, {"note": "y", "about": "agent"})
    assert wide_full.startswith("Error: memory is full") and "agent-wide" in wide_full
    rows = await raw_rows(api, "select contact from memory_notes")
    assert len(rows) == 2 * memory.MAX_NOTES + 1


async def test_recall_is_capped_and_says_so(api: Api) -> None:
    owner_id, agent_id = await _agent(api)
    await _fill(api, owner_id, agent_id, "ada", memory.RECALL_LIMIT + 5)
    ctx = {"agent_id": agent_id, "owner_id": owner_id, "contact": "ada"}
    result = await _run(api, ctx, memory.recall, {"query": "NUMBER"})
    lines = result.splitlines()
    assert lines[0] == f"{memory.RECALL_LIMIT + 5} notes (showing {memory.RECALL_LIMIT}; " + (
        "narrow the query to see others):"
    )
    assert len(lines) == memory.RECALL_LIMIT + 1
    assert (await _run(api, ctx, memory.recall, {"query": 5})).startswith("Error: `query`")
    other = {**ctx, "contact": "bob"}
    assert await _run(api, other, memory.recall, {}) == "No notes yet."


async def test_notes_of_another_agent_are_invisible(api: Api) -> None:
    owner_id, agent_id = await _agent(api)
    other_owner, other_agent = await _agent(api)
    ctx = {"agent_id": agent_id, "owner_id": owner_id, "contact": "ada"}
    saved = await _run(api, ctx, memory.remember, {"note": "secret plan", "about": "agent"})
    note_id = saved.rsplit(" ", 1)[1].rstrip(".")
    thief = {"agent_id": other_agent, "owner_id": other_owner, "contact": "ada"}
    assert await _run(api, thief, memory.recall, {"query": "secret"}) == "No notes match."
    assert (await _run(api, thief, memory.forget, {"note_id": note_id})).startswith(
        "Error: no note"
    )
    assert "secret plan" in await _run(api, ctx, memory.recall, {"query": "plan"})


async def test_text_is_normalised_and_missing_services_are_an_error(api: Api) -> None:
    owner_id, agent_id = await _agent(api)
    ctx = {"agent_id": agent_id, "owner_id": owner_id, "contact": "ada"}
    await _run(api, ctx, memory.remember, {"note": "  two\x00 \n words \ud800 "})
    [row] = await raw_rows(api, "select content from memory_notes")
    assert api.app.state.keyring.decrypt(row["content"]) == "two words ?"
    bare = ToolContext(agent_id=agent_id, owner_id=owner_id, contact="ada")
    for tool in (memory.remember, memory.recall, memory.forget):
        assert await tool(bare, {"note": "x", "note_id": "x"}) == memory._UNAVAILABLE
    anonymous = {**ctx, "contact": None}
    refused = await _run(api, anonymous, memory.remember, {"note": "x"})
    assert refused.startswith("Error: this conversation has no contact")


async def test_a_turn_reads_its_own_staged_notes_and_writes_only_when_applied(api: Api) -> None:
    owner_id, agent_id = await _agent(api)
    await _fill(api, owner_id, agent_id, "ada", 2)
    writes = StagedWrites()
    context = ToolContext(
        agent_id=agent_id,
        owner_id=owner_id,
        contact="ada",
        sessionmaker=api.app.state.sessionmaker,
        writes=writes,
        keyring=api.app.state.keyring,
    )
    kept = await memory.remember(context, {"note": "Ada likes tea"})
    dropped = await memory.remember(context, {"note": "Ada likes coffee"})
    listing = await memory.recall(context, {})
    assert listing.startswith("4 notes:") and "Ada likes tea" in listing
    stored_id = listing.splitlines()[-1].split("]")[0].lstrip("- [")  # the oldest, in the db
    assert (await memory.forget(context, {"note_id": stored_id})).startswith("Forgot")
    staged_id = dropped.rsplit(" ", 1)[1].rstrip(".")
    assert (await memory.forget(context, {"note_id": staged_id})).startswith("Forgot")
    assert (await memory.forget(context, {"note_id": staged_id})).startswith("Error: no note")
    assert (await memory.recall(context, {"query": "coffee"})) == "No notes match."
    # Nothing reached the database yet: a turn that fails now leaves memory as it was.
    assert len(await raw_rows(api, "select id from memory_notes")) == 2
    async with api.app.state.sessionmaker() as session:
        await writes.apply(session)
        await session.commit()
    rows = await raw_rows(api, "select id, content from memory_notes")
    texts = sorted(api.app.state.keyring.decrypt(row["content"]) for row in rows)
    assert texts == ["Ada likes tea", "note number 1"]
    assert kept.rsplit(" ", 1)[1].rstrip(".") in {row["id"] for row in rows}
