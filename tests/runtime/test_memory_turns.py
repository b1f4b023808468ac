"""Memory notes through whole turns: remember, recall and forget, per contact and agent-wide."""

from __future__ import annotations

import re
from typing import Any

from tests.agent.support import Dev, create_agent, new_dev, raw_rows
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api

MEMORY_TOOLS = ["remember", "recall", "forget"]
NOT_FOUND_NOTE = {"error": "Memory note not found"}


async def _running_agent(api: Api, **overrides: Any) -> tuple[Dev, dict[str, Any]]:
    dev = await new_dev(api)
    agent = await create_agent(dev, tools=MEMORY_TOOLS, **overrides)
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    return dev, agent


async def _say(dev: Dev, agent_id: str, text: str, contact: str) -> dict[str, Any]:
    response = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages", json={"text": text, "contact": contact}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == "answered"
    return body


def _tool_results(openrouter: FakeOpenRouter) -> list[str]:
    return [m["content"] for m in openrouter.last_chat.messages if m["role"] == "tool"]


def _system(openrouter: FakeOpenRouter) -> str:
    content: str = openrouter.last_chat.messages[0]["content"]
    return content


async def _turn_with_tool(
    dev: Dev,
    openrouter: FakeOpenRouter,
    agent_id: str,
    contact: str,
    tool: str,
    args: dict[str, Any],
) -> str:
    openrouter.call_tool(tool, args)
    openrouter.reply("Done.")
    await _say(dev, agent_id, f"please {tool}", contact)
    [result] = _tool_results(openrouter)
    return result


async def test_a_contact_note_is_in_the_next_turns_prompt_for_that_contact_only(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api)
    result = await _turn_with_tool(
        dev, openrouter, agent["id"], "ada", "remember", {"note": "Ada's favourite colour is teal"}
    )
    assert result.startswith("Remembered about this contact as note ")

    openrouter.reply("Hi Ada")
    await _say(dev, agent["id"], "Hello again", "ada")
    assert "Things you remember about this person:\n- Ada's favourite colour is teal" in _system(
        openrouter
    )

    openrouter.reply("Hi stranger")
    await _say(dev, agent["id"], "Hello", "bob")
    assert "teal" not in _system(openrouter)
    assert "Things you remember" not in _system(openrouter)


async def test_an_agent_wide_note_is_seen_by_every_contact(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api)
    result = await _turn_with_tool(
        dev,
        openrouter,
        agent["id"],
        "ada",
        "remember",
        {"note": "The shop closes at 6 pm on Fridays", "about": "agent"},
    )
    assert "agent-wide" in result
    for contact in ("ada", "bob"):
        openrouter.reply("ok")
        await _say(dev, agent["id"], "When do you close?", contact)
        system = _system(openrouter)
        assert "Things you remember:\n- The shop closes at 6 pm on Fridays" in system
        assert "about this person" not in system


async def test_recall_searches_visible_notes_and_forget_removes_one(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api)
    aid = agent["id"]
    await _turn_with_tool(
        dev, openrouter, aid, "ada", "remember", {"note": "Ada rides a TEAL bike"}
    )
    await _turn_with_tool(dev, openrouter, aid, "ada", "remember", {"note": "Ada lives in Lyon"})
    await _turn_with_tool(dev, openrouter, aid, "bob", "remember", {"note": "Bob rides a red bike"})
    await _turn_with_tool(
        dev, openrouter, aid, "bob", "remember", {"note": "Bikes ship free", "about": "agent"}
    )

    found = await _turn_with_tool(dev, openrouter, aid, "ada", "recall", {"query": "teal bike"})
    assert found.startswith("2 notes:")
    lines = found.splitlines()[1:]
    assert "Ada rides a TEAL bike" in lines[0]  # two words matched rank first
    assert "(agent-wide," in lines[1] and "Bikes ship free" in lines[1]
    assert "Bob" not in found and "Lyon" not in found
    teal_id = re.search(r"\[([0-9a-f-]{36})\]", lines[0]).group(1)  # type: ignore[union-attr]

    everything = await _turn_with_tool(dev, openrouter, aid, "ada", "recall", {})
    assert everything.startswith("3 notes:")
    assert [line.rsplit(") ", 1)[1] for line in everything.splitlines()[1:]] == [
        "Bikes ship free",
        "Ada lives in Lyon",
        "Ada rides a TEAL bike",
    ]  # newest first
    assert await _turn_with_tool(dev, openrouter, aid, "ada", "recall", {"query": "zebra"}) == (
        "No notes match."
    )

    # Bob's thread cannot forget Ada's note; it stays.
    refused = await _turn_with_tool(dev, openrouter, aid, "bob", "forget", {"note_id": teal_id})
    assert refused.startswith("Error: no note")
    openrouter.reply("ok")
    await _say(dev, aid, "hi", "ada")
    assert "Ada rides a TEAL bike" in _system(openrouter)

    forgot = await _turn_with_tool(dev, openrouter, aid, "ada", "forget", {"note_id": teal_id})
    assert forgot == f"Forgot note {teal_id}."
    openrouter.reply("ok")
    await _say(dev, aid, "hi", "ada")
    assert "TEAL" not in _system(openrouter)
    assert "Ada lives in Lyon" in _system(openrouter)
    again = await _turn_with_tool(dev, openrouter, aid, "ada", "forget", {"note_id": teal_id})
    assert again.startswith("Error: no note")


async def test_bad_arguments_come_back_to_the_model_as_errors(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api)
    aid = agent["id"]
    too_long = await _turn_with_tool(dev, openrouter, aid, "ada", "remember", {"note": "x" * 1001})
    assert too_long.startswith("Error: the note is 1001 characters long")
    blank = await _turn_with_tool(dev, openrouter, aid, "ada", "remember", {"note": "  "})
    assert blank.startswith("Error: the argument `note`")
    bad_about = await _turn_with_tool(
        dev, openrouter, aid, "ada", "remember", {"note": "x", "about": "world"}
    )
    assert bad_about.startswith("Error: `about` must be")
    no_id = await _turn_with_tool(dev, openrouter, aid, "ada", "forget", {})
    assert no_id.startswith("Error: the argument `note_id`")
    assert await raw_rows(api, "select id from memory_notes") == []


async def test_notes_are_encrypted_at_rest(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent = await _running_agent(api)
    await _turn_with_tool(
        dev, openrouter, agent["id"], "ada", "remember", {"note": "Ada's locker code is 7431"}
    )
    [row] = await raw_rows(api, "select content, contact, owner_id from memory_notes")
    assert "7431" not in row["content"] and "locker" not in row["content"]
    assert row["contact"] == "ada" and row["owner_id"] == dev.id
    assert api.app.state.keyring.decrypt(row["content"]) == "Ada's locker code is 7431"


async def test_the_owner_lists_and_deletes_notes(api: Api, openrouter: FakeOpenRouter) -> None:
    dev, agent = await _running_agent(api)
    aid = agent["id"]
    await _turn_with_tool(dev, openrouter, aid, "ada", "remember", {"note": "Ada likes tea"})
    await _turn_with_tool(dev, openrouter, aid, "bob", "remember", {"note": "Bob likes coffee"})
    await _turn_with_tool(
        dev, openrouter, aid, "bob", "remember", {"note": "Open 9 to 5", "about": "agent"}
    )

    listed = await dev.http.get(f"/api/v1/agents/{aid}/memory")
    assert listed.status_code == 200
    body = listed.json()
    assert body["total"] == 3 and (body["limit"], body["offset"]) == (20, 0)
    assert [(n["text"], n["contact"], n["about"]) for n in body["data"]] == [
        ("Open 9 to 5", None, "agent"),
        ("Bob likes coffee", "bob", "contact"),
        ("Ada likes tea", "ada", "contact"),
    ]
    ada = (await dev.http.get(f"/api/v1/agents/{aid}/memory", params={"contact": "ada"})).json()
    assert [n["text"] for n in ada["data"]] == ["Ada likes tea"] and ada["total"] == 1
    wide = (await dev.http.get(f"/api/v1/agents/{aid}/memory", params={"about": "agent"})).json()
    assert [n["text"] for n in wide["data"]] == ["Open 9 to 5"]
    second = (
        await dev.http.get(f"/api/v1/agents/{aid}/memory", params={"limit": 1, "offset": 1})
    ).json()
    assert [n["text"] for n in second["data"]] == ["Bob likes coffee"] and second["total"] == 3

    note_id = body["data"][1]["id"]
    deleted = await dev.http.delete(f"/api/v1/agents/{aid}/memory/{note_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    remaining = (await dev.http.get(f"/api/v1/agents/{aid}/memory")).json()
    assert [n["text"] for n in remaining["data"]] == ["Open 9 to 5", "Ada likes tea"]
    again = await dev.http.delete(f"/api/v1/agents/{aid}/memory/{note_id}")
    assert (again.status_code, again.json()) == (404, NOT_FOUND_NOTE)
    [audit] = await raw_rows(
        api, "select action from audit_events where action = 'agent.memory_note_deleted'"
    )
    assert audit["action"] == "agent.memory_note_deleted"

    openrouter.reply("ok")
    await _say(dev, aid, "hi", "bob")
    assert "coffee" not in _system(openrouter)


async def test_memory_endpoints_are_tenant_isolated_and_scoped(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await _running_agent(api)
    aid = agent["id"]
    await _turn_with_tool(dev, openrouter, aid, "ada", "remember", {"note": "Ada likes tea"})
    [note] = (await dev.http.get(f"/api/v1/agents/{aid}/memory")).json()["data"]

    other, other_agent = await _running_agent(api)
    listed = await other.http.get(f"/api/v1/agents/{aid}/memory")
    assert (listed.status_code, listed.json()) == (404, {"error": "Agent not found"})
    deleted = await other.http.delete(f"/api/v1/agents/{aid}/memory/{note['id']}")
    assert (deleted.status_code, deleted.json()) == (404, {"error": "Agent not found"})
    # Through the other tenant's own agent, the note does not exist.
    crossed = await other.http.delete(f"/api/v1/agents/{other_agent['id']}/memory/{note['id']}")
    assert (crossed.status_code, crossed.json()) == (404, NOT_FOUND_NOTE)
    assert (await other.http.get(f"/api/v1/agents/{other_agent['id']}/memory")).json()["total"] == 0

    # The same owner's other agent cannot delete this agent's note either.
    sibling = await create_agent(dev)
    wrong_agent = await dev.http.delete(f"/api/v1/agents/{sibling['id']}/memory/{note['id']}")
    assert (wrong_agent.status_code, wrong_agent.json()) == (404, NOT_FOUND_NOTE)

    reader = api.key_client(await api.create_key(dev.person, ["agents:read"]))
    assert (await reader.get(f"/api/v1/agents/{aid}/memory")).json()["total"] == 1
    refused = await reader.delete(f"/api/v1/agents/{aid}/memory/{note['id']}")
    assert (refused.status_code, refused.json()) == (
        403,
        {"error": "Forbidden", "message": "API key missing required scope: agents:write"},
    )
    tools_only = api.key_client(await api.create_key(dev.person, ["tools:read"]))
    hidden = await tools_only.get(f"/api/v1/agents/{aid}/memory")
    assert (hidden.status_code, hidden.json()) == (
        403,
        {"error": "Forbidden", "message": "API key missing required scope: agents:read"},
    )
    assert len((await dev.http.get(f"/api/v1/agents/{aid}/memory")).json()["data"]) == 1
