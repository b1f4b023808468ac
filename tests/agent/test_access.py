"""Who may see and change an agent: tenancy, deletion, scopes, plan limits, audit rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from lunogen.agent.models import Agent
from lunogen.audit.models import AuditEvent
from tests.agent.support import (
    NOT_FOUND,
    agent_body,
    create_agent,
    new_dev,
    raw_rows,
    secret_values,
    telegram,
    webchat,
    webhook,
    whatsapp,
)
from tests.helpers import Api

FORBIDDEN_WRITE = {"error": "Forbidden", "message": "API key missing required scope: agents:write"}
FORBIDDEN_READ = {"error": "Forbidden", "message": "API key missing required scope: agents:read"}


async def _agent_row(api: Api, agent_id: str) -> Agent:
    async with api.app.state.sessionmaker() as session:
        row = await session.get(Agent, agent_id)
        assert row is not None
        return row


async def _set_status(api: Api, agent_id: str, status: str) -> None:
    async with api.app.state.sessionmaker() as session:
        await session.execute(update(Agent).where(Agent.id == agent_id).values(status=status))
        await session.commit()


async def _audit(api: Api, action: str) -> list[AuditEvent]:
    async with api.app.state.sessionmaker() as session:
        query = select(AuditEvent).where(AuditEvent.action == action)
        return list((await session.execute(query.order_by(AuditEvent.created_at))).scalars())


# Tenancy -----------------------------------------------------------------------------------


async def test_another_tenants_agent_is_not_found_for_every_verb(api: Api) -> None:
    owner = await new_dev(api)
    other = await new_dev(api)
    channels = [telegram(), whatsapp()]
    theirs = await create_agent(owner, name="Owner's secret project", channels=channels)
    mine = await create_agent(other, name="Mine")
    url = f"/api/v1/agents/{theirs['id']}"

    answers = [
        await other.http.get(url),
        await other.http.patch(url, json={"name": "Hijacked"}),
        await other.http.delete(url),
    ]
    for response in answers:
        assert response.status_code == 404, response.text
        assert response.json() == NOT_FOUND
        assert "Owner's secret project" not in response.text

    # An invalid body is refused before any lookup: the same answer for any id (no oracle).
    invalid = await other.http.patch(url, json={"colour": "red"})
    nowhere = await other.http.patch(
        "/api/v1/agents/00000000-0000-4000-8000-000000000000", json={"colour": "red"}
    )
    assert invalid.status_code == nowhere.status_code == 422
    assert invalid.json() == nowhere.json()

    listed = await other.http.get("/api/v1/agents")
    assert [a["id"] for a in listed.json()["data"]] == [mine["id"]]
    assert listed.json()["total"] == 1
    for secret in secret_values(channels):
        assert secret not in listed.text

    # Nothing changed for the owner, and no audit row names the other tenant's attempt.
    row = await _agent_row(api, theirs["id"])
    assert row.name == "Owner's secret project" and row.deleted_at is None
    assert (await owner.http.get(url)).json() == theirs
    assert len(await _audit(api, "agent.updated")) == 0
    assert len(await _audit(api, "agent.deleted")) == 0


async def test_list_never_shows_another_tenants_agents(api: Api) -> None:
    alice = await new_dev(api)
    bob = await new_dev(api)
    alice_ids = {(await create_agent(alice, name=f"A{i}"))["id"] for i in range(3)}
    bob_ids = {(await create_agent(bob, name=f"B{i}"))["id"] for i in range(2)}
    await _set_status(api, next(iter(alice_ids)), "running")

    for dev, expected in ((alice, alice_ids), (bob, bob_ids)):
        page = (await dev.http.get("/api/v1/agents", params={"limit": 100})).json()
        assert {a["id"] for a in page["data"]} == expected
        assert page["total"] == len(expected)
    running = (await bob.http.get("/api/v1/agents", params={"status": "running"})).json()
    assert running == {"data": [], "total": 0, "limit": 20, "offset": 0}


@pytest.mark.parametrize(
    "agent_id",
    [
        "00000000-0000-4000-8000-000000000000",
        "not-a-uuid",
        "1 OR 1=1",
        "x" * 300,
        "6F1C1C44-0000-4000-8000-000000000000",
    ],
)
async def test_unknown_or_garbage_ids_are_not_found(api: Api, agent_id: str) -> None:
    dev = await new_dev(api)
    await create_agent(dev)
    url = f"/api/v1/agents/{agent_id}"
    for response in (
        await dev.http.get(url),
        await dev.http.patch(url, json={"name": "x"}),
        await dev.http.delete(url),
    ):
        assert response.status_code == 404, (agent_id, response.text)
        assert response.json() == NOT_FOUND


# Deletion ----------------------------------------------------------------------------------


async def test_delete_marks_for_purge_and_hides(api: Api) -> None:
    dev = await new_dev(api)
    created = await create_agent(dev)
    before = datetime.now().astimezone()
    assert (await dev.http.delete(f"/api/v1/agents/{created['id']}")).status_code == 204

    row = await _agent_row(api, created["id"])
    assert row.deleted_at is not None and row.purge_after is not None
    assert row.deleted_at >= before - timedelta(seconds=5)
    assert row.purge_after - row.deleted_at == timedelta(days=30)
    assert row.status == "draft"  # not running: the status is kept
    assert (await dev.http.get(f"/api/v1/agents/{created['id']}")).json() == NOT_FOUND


@pytest.mark.parametrize("status", ["running", "deploying", "paused"])
async def test_delete_stops_an_active_agent(api: Api, status: str) -> None:
    dev = await new_dev(api)
    created = await create_agent(dev)
    await _set_status(api, created["id"], status)
    assert (await dev.http.delete(f"/api/v1/agents/{created['id']}")).status_code == 204
    row = await _agent_row(api, created["id"])
    assert row.status == "stopped"
    assert row.deleted_at is not None and row.status_changed_at >= row.deleted_at
    (event,) = await _audit(api, "agent.deleted")
    assert event.details["previous_status"] == status


# Scopes ------------------------------------------------------------------------------------


async def test_read_scope_cannot_write(api: Api) -> None:
    owner = await new_dev(api)
    created = await create_agent(owner)
    reader_key = await api.create_key(owner.person, ["agents:read"])
    reader = api.key_client(reader_key)
    url = f"/api/v1/agents/{created['id']}"

    assert (await reader.get("/api/v1/agents")).status_code == 200
    assert (await reader.get(url)).json() == created
    for response in (
        await reader.post("/api/v1/agents", json=agent_body()),
        await reader.patch(url, json={"name": "x"}),
        await reader.delete(url),
        # Scope is checked before the id is looked up: no existence oracle.
        await reader.delete("/api/v1/agents/00000000-0000-4000-8000-000000000000"),
    ):
        assert response.status_code == 403
        assert response.json() == FORBIDDEN_WRITE
    assert (await owner.http.get(url)).json() == created
    assert (await owner.http.get("/api/v1/agents")).json()["total"] == 1


async def test_write_scope_alone_cannot_read_and_other_scopes_cannot_touch(api: Api) -> None:
    owner = await new_dev(api)
    created = await create_agent(owner)
    writer = api.key_client(await api.create_key(owner.person, ["agents:write"]))
    url = f"/api/v1/agents/{created['id']}"
    for response in (await writer.get("/api/v1/agents"), await writer.get(url)):
        assert response.status_code == 403
        assert response.json() == FORBIDDEN_READ
    patched = await writer.patch(url, json={"name": "Writer"})
    assert patched.status_code == 200 and patched.json()["name"] == "Writer"

    tools_only = api.key_client(await api.create_key(owner.person, ["tools:read", "logs:read"]))
    assert (await tools_only.get(url)).json() == FORBIDDEN_READ
    assert (await tools_only.post("/api/v1/agents", json=agent_body())).json() == FORBIDDEN_WRITE
    assert (await api.new_client().get("/api/v1/agents")).status_code == 401


# Plan limits -------------------------------------------------------------------------------


async def test_free_plan_agent_limit(api: Api) -> None:
    dev = await new_dev(api, plan="free")
    created = [await create_agent(dev, name=f"A{i}") for i in range(3)]
    response = await dev.http.post("/api/v1/agents", json=agent_body(name="Fourth"))
    assert response.status_code == 403
    assert response.json() == {
        "error": "Forbidden",
        "message": "Your Free plan allows 3 agents; delete one or upgrade to Pro",
    }
    assert (await dev.http.get("/api/v1/agents")).json()["total"] == 3

    # A deleted agent no longer counts.
    assert (await dev.http.delete(f"/api/v1/agents/{created[0]['id']}")).status_code == 204
    assert (await dev.http.post("/api/v1/agents", json=agent_body())).status_code == 201

    # The limit follows the plan.
    await api.set_plan(dev.person, "pro")
    assert (await dev.http.post("/api/v1/agents", json=agent_body())).status_code == 201


async def test_channels_per_agent_limit(api: Api) -> None:
    dev = await new_dev(api, plan="free")
    five = [webchat(), webchat(), webhook(), telegram(), webchat()]
    expected = {
        "error": "Forbidden",
        "message": "Your Free plan allows 4 channels per agent; remove one or upgrade to Pro",
    }
    response = await dev.http.post("/api/v1/agents", json=agent_body(channels=five))
    assert response.status_code == 403
    assert response.json() == expected
    assert (await dev.http.get("/api/v1/agents")).json()["total"] == 0

    created = await create_agent(dev, channels=five[:4])
    patched = await dev.http.patch(f"/api/v1/agents/{created['id']}", json={"channels": five})
    assert patched.status_code == 403
    assert patched.json() == expected
    assert len((await dev.http.get(f"/api/v1/agents/{created['id']}")).json()["channels"]) == 4


# Audit -------------------------------------------------------------------------------------


async def test_audit_rows_for_create_update_delete(api: Api) -> None:
    dev = await new_dev(api)
    key_id = (await dev.person.client.get("/api/v1/keys")).json()["data"][0]["id"]
    channels = [whatsapp(), telegram(), webhook()]
    response = await dev.http.post(
        "/api/v1/agents", json=agent_body(channels=channels, tools=["current_time"])
    )
    assert response.status_code == 201
    created = response.json()
    whsec = created["channels"][2]["secret"]["value"]
    wa_id = created["channels"][0]["id"]
    new_token = "EAAG-new-token-" + "q" * 20
    patched = await dev.http.patch(
        f"/api/v1/agents/{created['id']}",
        json={
            "instructions": "New instructions",
            "channels": [
                {"id": wa_id, "type": "whatsapp", "phone_number_id": "1", "access_token": new_token}
            ],
        },
    )
    assert patched.status_code == 200, patched.text
    assert (await dev.http.delete(f"/api/v1/agents/{created['id']}")).status_code == 204

    (created_event,) = await _audit(api, "agent.created")
    (updated_event,) = await _audit(api, "agent.updated")
    (deleted_event,) = await _audit(api, "agent.deleted")
    for event in (created_event, updated_event, deleted_event):
        assert event.actor_user_id == dev.id
        assert event.subject_user_id == dev.id
        assert event.actor_key_id == key_id
        assert event.target_type == "agent" and event.target_id == created["id"]
    assert created_event.details["channels"] == ["whatsapp", "telegram", "webhook"]
    assert created_event.details["model"] == created["model"]
    assert created_event.details["tools"] == ["current_time"]
    assert updated_event.details["fields"] == ["channels", "instructions"]
    removed = [c["id"] for c in created["channels"][1:]]  # in channel order
    assert updated_event.details["channels"] == {
        "added": [],
        "updated": [wa_id],
        "removed": removed,
    }
    assert deleted_event.details["previous_status"] == "draft"

    rows = await raw_rows(api, "select * from audit_events")
    dump = repr(rows)
    for secret in [*secret_values(channels), whsec, new_token]:
        assert secret not in dump

    # The owner sees their own agent events through the API.
    audit = (await dev.person.client.get("/api/v1/audit", params={"limit": 100})).json()
    actions = {e["action"] for e in audit["data"]}
    assert {"agent.created", "agent.updated", "agent.deleted"} <= actions


async def test_failed_writes_leave_no_audit_row(api: Api) -> None:
    dev = await new_dev(api)
    created = await create_agent(dev)
    bad: list[dict[str, Any]] = [{"model": "nope/nope"}, {"tools": ["nope"]}]
    for body in bad:
        response = await dev.http.patch(f"/api/v1/agents/{created['id']}", json=body)
        assert response.status_code == 422
    assert (await dev.http.post("/api/v1/agents", json=agent_body(skills=["x"]))).status_code == 422
    assert len(await _audit(api, "agent.created")) == 1
    assert await _audit(api, "agent.updated") == []
