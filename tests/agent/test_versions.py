"""Agent versions: numbered on every change, pinned while running, deployed and rolled back
explicitly; turns answer with the pinned version (asserted on what the fake model received)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from lunogen.agent import versions
from lunogen.agent.models import Agent
from tests.agent.support import NOT_FOUND, Dev, create_agent, new_dev, raw_rows, webhook
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api


async def _agent(dev: Dev, agent_id: str) -> dict[str, Any]:
    response = await dev.http.get(f"/api/v1/agents/{agent_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _patch(dev: Dev, agent_id: str, **fields: Any) -> dict[str, Any]:
    response = await dev.http.patch(f"/api/v1/agents/{agent_id}", json=fields)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _versions(dev: Dev, agent_id: str) -> dict[str, Any]:
    response = await dev.http.get(f"/api/v1/agents/{agent_id}/versions")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _version(dev: Dev, agent_id: str, number: int) -> dict[str, Any]:
    response = await dev.http.get(f"/api/v1/agents/{agent_id}/versions/{number}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _system_prompt_of_a_turn(
    dev: Dev, openrouter: FakeOpenRouter, agent_id: str, text: str = "Hi"
) -> str:
    openrouter.reply("Sure.")
    response = await dev.http.post(f"/api/v1/agents/{agent_id}/messages", json={"text": text})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "answered", response.text
    system = openrouter.last_chat.messages[0]
    assert system["role"] == "system"
    return str(system["content"])


async def _audit(api: Api, action: str, agent_id: str) -> list[dict[str, Any]]:
    rows = await raw_rows(
        api,
        "select details from audit_events where action = :a and target_id = :t",
        a=action,
        t=agent_id,
    )
    return [
        json.loads(r["details"]) if isinstance(r["details"], str) else r["details"] for r in rows
    ]


async def test_changes_make_numbered_versions_and_no_ops_make_none(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, instructions="Be kind.\nAnswer in English.")
    assert (agent["latest_version"], agent["deployed_version"]) == (1, None)
    assert agent["undeployed_changes"] is False

    same = await _patch(
        dev, agent["id"], instructions="Be kind.\nAnswer in English.", name="Support bot"
    )
    assert same["latest_version"] == 1
    channels_only = await _patch(dev, agent["id"], channels=[webhook()])
    assert channels_only["latest_version"] == 1  # channels act at once and are not versioned

    edited = await _patch(
        dev, agent["id"], instructions="Be brief.\nAnswer in English.", model="openai/gpt-4o"
    )
    assert edited["latest_version"] == 2
    toggled = await dev.http.patch(
        f"/api/v1/agents/{agent['id']}/tools/current_time", json={"enabled": True}
    )
    assert toggled.status_code == 200, toggled.text
    assert (await _agent(dev, agent["id"]))["latest_version"] == 3

    listed = await _versions(dev, agent["id"])
    assert listed["total"] == 3
    assert [v["number"] for v in listed["data"]] == [3, 2, 1]
    assert [v["summary"] for v in listed["data"]] == [
        "Changed tools",
        "Changed model, instructions",
        "Created",
    ]
    assert {v["created_by"] for v in listed["data"]} == {dev.id}
    assert {v["via"] for v in listed["data"]} == {"api"}
    assert not any(v["deployed"] for v in listed["data"])

    second = await _version(dev, agent["id"], 2)
    assert second["config"]["instructions"] == "Be brief.\nAnswer in English."
    assert second["config"]["model"] == "openai/gpt-4o"
    changes = {c["field"]: c for c in second["changes"]}
    assert set(changes) == {"model", "instructions"}
    assert (changes["model"]["before"], changes["model"]["after"]) == (
        "openai/gpt-4o-mini",
        "openai/gpt-4o",
    )
    lines = changes["instructions"]["diff"]
    assert "-Be kind." in lines and "+Be brief." in lines and " Answer in English." in lines
    third = await _version(dev, agent["id"], 3)
    [tools] = third["changes"]
    assert (tools["field"], tools["added"], tools["removed"]) == ("tools", ["current_time"], [])
    first = await _version(dev, agent["id"], 1)
    assert "channels" not in first["config"]
    assert {c["field"] for c in first["changes"]} >= {"name", "model", "instructions"}

    audit = await _audit(api, "agent.updated", agent["id"])
    assert [row.get("version") for row in audit if "version" in row] == [2]


async def test_a_running_agent_answers_with_its_pinned_version_until_one_is_deployed(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, instructions="You sell bikes.")
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    assert deployed.json()["deployed_version"] == 1
    assert (await _system_prompt_of_a_turn(dev, openrouter, agent["id"])).startswith(
        "You sell bikes."
    )

    edited = await _patch(dev, agent["id"], instructions="You sell boats.")
    assert (edited["latest_version"], edited["deployed_version"]) == (2, 1)
    assert edited["undeployed_changes"] is True and edited["status"] == "running"
    for _ in range(2):  # the second turn is served from the process's snapshot cache
        prompt = await _system_prompt_of_a_turn(dev, openrouter, agent["id"])
        assert prompt.startswith("You sell bikes.") and "boats" not in prompt

    again = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert again.status_code == 409  # a running agent takes a version through .../versions
    pinned = await dev.http.post(f"/api/v1/agents/{agent['id']}/versions/2/deploy")
    assert pinned.status_code == 200, pinned.text
    body = pinned.json()
    assert (body["status"], body["deployed_version"], body["undeployed_changes"]) == (
        "running",
        2,
        False,
    )
    assert (await _system_prompt_of_a_turn(dev, openrouter, agent["id"])).startswith(
        "You sell boats."
    )
    listed = await _versions(dev, agent["id"])
    assert [v["deployed"] for v in listed["data"]] == [True, False]

    # an older version can be deployed too: the working configuration stays the latest
    older = await dev.http.post(f"/api/v1/agents/{agent['id']}/versions/1/deploy")
    assert older.status_code == 200, older.text
    assert older.json()["instructions"] == "You sell boats."
    assert older.json()["undeployed_changes"] is True
    assert (await _system_prompt_of_a_turn(dev, openrouter, agent["id"])).startswith(
        "You sell bikes."
    )

    assert [row["version"] for row in await _audit(api, "agent.version_deployed", agent["id"])] in (
        [2, 1],
        [1, 2],
    )
    log = (await dev.http.get(f"/api/v1/agents/{agent['id']}/logs")).json()["data"]
    deploys = [e["details"]["version"] for e in log if e["event"] == "version.deployed"]
    assert deploys == [1, 2, 1]


async def test_stop_edit_start_keeps_the_pin_and_deploy_takes_the_latest(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, instructions="Version one.")
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")).status_code == 200
    await _patch(dev, agent["id"], instructions="Version two.")
    started = await dev.http.post(f"/api/v1/agents/{agent['id']}/start")
    assert started.status_code == 200 and started.json()["deployed_version"] == 1
    assert (await _system_prompt_of_a_turn(dev, openrouter, agent["id"])).startswith("Version one.")
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")).status_code == 200
    redeployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert redeployed.status_code == 200 and redeployed.json()["deployed_version"] == 2
    assert (await _system_prompt_of_a_turn(dev, openrouter, agent["id"])).startswith("Version two.")


async def test_rollback_is_one_call_and_turns_use_the_old_configuration(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, instructions="You sell bikes.")
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    await _patch(dev, agent["id"], instructions="You sell boats.", tools=["current_time"])
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/versions/2/deploy")).is_success
    assert (await _system_prompt_of_a_turn(dev, openrouter, agent["id"])).startswith(
        "You sell boats."
    )

    rolled = await dev.http.post(f"/api/v1/agents/{agent['id']}/rollback", json={"version": 1})
    assert rolled.status_code == 200, rolled.text
    body = rolled.json()
    assert body["version"] == 3
    restored = body["agent"]
    assert restored["instructions"] == "You sell bikes." and restored["tools"] == []
    assert (restored["status"], restored["latest_version"], restored["deployed_version"]) == (
        "running",
        3,
        3,
    )
    assert restored["undeployed_changes"] is False
    assert (await _system_prompt_of_a_turn(dev, openrouter, agent["id"])).startswith(
        "You sell bikes."
    )
    assert "tools" not in openrouter.last_chat.body

    third = await _version(dev, agent["id"], 3)
    assert third["summary"] == "Rolled back to version 1" and third["restored_from"] == 1
    assert {c["field"] for c in third["changes"]} == {"instructions", "tools"}
    assert third["config"] == (await _version(dev, agent["id"], 1))["config"]
    [audit] = await _audit(api, "agent.rolled_back", agent["id"])
    assert audit["to_version"] == 1 and audit["new_version"] == 3
    assert audit["previous_deployed_version"] == 2 and audit["deployed_version"] == 3

    # rolling back to what the configuration already is makes no new version
    same = await dev.http.post(f"/api/v1/agents/{agent['id']}/rollback", json={"version": 1})
    assert same.status_code == 200 and same.json()["version"] is None
    assert (await _agent(dev, agent["id"]))["latest_version"] == 3


async def test_rollback_of_a_draft_changes_the_configuration_only(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, instructions="First.")
    await _patch(dev, agent["id"], instructions="Second.")
    rolled = await dev.http.post(f"/api/v1/agents/{agent['id']}/rollback", json={"version": 1})
    assert rolled.status_code == 200, rolled.text
    restored = rolled.json()["agent"]
    assert (restored["status"], restored["deployed_version"], restored["latest_version"]) == (
        "draft",
        None,
        3,
    )
    assert restored["instructions"] == "First."


async def test_versions_of_another_tenant_bad_numbers_and_scopes(api: Api) -> None:
    owner = await new_dev(api)
    agent = await create_agent(owner)
    await _patch(owner, agent["id"], instructions="Changed.")
    stranger = await new_dev(api)
    base = f"/api/v1/agents/{agent['id']}"
    for method, path, body in (
        ("GET", f"{base}/versions", None),
        ("GET", f"{base}/versions/1", None),
        ("POST", f"{base}/versions/1/deploy", None),
        ("POST", f"{base}/rollback", {"version": 1}),
    ):
        response = await stranger.http.request(method, path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert response.json() == NOT_FOUND

    missing = await owner.http.get(f"{base}/versions/99")
    assert missing.status_code == 404 and missing.json()["error"] == "Version not found"
    assert (await owner.http.post(f"{base}/versions/99/deploy")).status_code == 404
    for bad in ("0", "-1", "two"):
        assert (await owner.http.get(f"{base}/versions/{bad}")).status_code == 422
    not_earlier = await owner.http.post(f"{base}/rollback", json={"version": 2})
    assert not_earlier.status_code == 422
    assert not_earlier.json()["details"][0]["field"] == "version"
    assert "not earlier than the latest version (2)" in not_earlier.json()["message"]
    for body in ({}, {"version": 0}, {"version": "1"}, {"version": 1, "extra": True}):
        assert (await owner.http.post(f"{base}/rollback", json=body)).status_code == 422, body

    reader = await api.create_key(owner.person, ["agents:read"])
    read_only = api.key_client(reader)
    assert (await read_only.get(f"{base}/versions")).status_code == 200
    assert (await read_only.get(f"{base}/versions/2")).status_code == 200
    writer = api.key_client(await api.create_key(owner.person, ["agents:write"]))
    for client in (read_only, writer):
        deploy = await client.post(f"{base}/versions/1/deploy")
        assert deploy.status_code == 403, deploy.text
        rollback = await client.post(f"{base}/rollback", json={"version": 1})
        assert rollback.status_code == 403, rollback.text
    executor = api.key_client(await api.create_key(owner.person, ["agents:execute"]))
    assert (await executor.get(f"{base}/versions")).status_code == 403
    assert (await _agent(owner, agent["id"]))["latest_version"] == 2  # nothing changed


async def test_the_agent_file_carries_the_version(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, instructions="One.")
    await _patch(dev, agent["id"], instructions="Two.")
    exported = await dev.http.get(f"/api/v1/agents/{agent['id']}/export")
    assert exported.status_code == 200, exported.text
    document = exported.json()
    assert document["agent_version"] == 2 and document["instructions"] == "Two."

    imported = await dev.http.post("/api/v1/agents/import", json=document)
    assert imported.status_code == 201, imported.text
    copy = imported.json()["agent"]
    assert (copy["latest_version"], copy["deployed_version"]) == (1, None)
    [first] = (await _versions(dev, copy["id"]))["data"]
    assert first["summary"] == "Imported from an agent file (version 2 of its source)"
    bad = await dev.http.post("/api/v1/agents/import", json={**document, "agent_version": "2"})
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "agent_version"


async def test_concurrent_edits_get_distinct_numbers_and_none_is_lost(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    responses = await asyncio.gather(
        *(
            dev.http.patch(f"/api/v1/agents/{agent['id']}", json={"instructions": f"Edit {i}."})
            for i in range(6)
        )
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    assert sorted(r.json()["latest_version"] for r in responses) == [2, 3, 4, 5, 6, 7]
    rows = await raw_rows(
        api, "select number from agent_versions where agent_id = :a order by number", a=agent["id"]
    )
    assert [row["number"] for row in rows] == list(range(1, 8))
    final = await _agent(dev, agent["id"])
    newest = await _version(dev, agent["id"], 7)
    assert newest["config"]["instructions"] == final["instructions"]


async def test_versions_go_with_their_agent(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    await _patch(dev, agent["id"], instructions="Changed.")
    async with api.app.state.sessionmaker() as session:
        from lunogen.privacy.retention import purge_agent_rows

        await purge_agent_rows(session, agent["id"])
        await session.commit()
    rows = await raw_rows(
        api, "select count(*) as n from agent_versions where agent_id = :a", a=agent["id"]
    )
    assert rows[0]["n"] == 0


async def test_served_reads_nothing_for_the_latest_and_caches_pinned_snapshots(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, instructions="Old.")
    await _patch(dev, agent["id"], instructions="New.")

    class NoQueries:
        async def execute(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("served() queried the database")

    async with api.app.state.sessionmaker() as session:
        row = await session.get(Agent, agent["id"])
        assert row is not None
        assert await versions.served(session, row) is row  # never deployed: the row
        row.deployed_version = 2
        assert await versions.served(NoQueries(), row) is row  # type: ignore[arg-type]
        row.deployed_version = 1
        first = await versions.served(session, row)
        assert first is not row and first.instructions == "Old." and first.name == row.name
        again = await versions.served(NoQueries(), row)  # type: ignore[arg-type]
        assert again.instructions == "Old." and again not in session
        assert row.instructions == "New."
        await session.rollback()
