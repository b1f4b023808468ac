"""Agents through the API: create, list (pagination, status filter), get, patch, delete."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update

from lunogen.agent.models import Agent
from tests.agent.support import (
    MODEL,
    NOT_FOUND,
    agent_body,
    create_agent,
    new_dev,
    raw_rows,
    webchat,
    webhook,
)
from tests.helpers import Api

FIELDS = {
    "id",
    "name",
    "description",
    "model",
    "fallback_models",
    "instructions",
    "status",
    "status_changed_at",
    "channels",
    "skills",
    "tools",
    "created_at",
    "updated_at",
    "latest_version",
    "deployed_version",
    "undeployed_changes",
}


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def _set_status(api: Api, agent_id: str, status: str) -> None:
    async with api.app.state.sessionmaker() as session:
        await session.execute(update(Agent).where(Agent.id == agent_id).values(status=status))
        await session.commit()


async def test_create_get_list_patch_delete(api: Api) -> None:
    dev = await new_dev(api)
    response = await dev.http.post(
        "/api/v1/agents",
        json=agent_body(
            name="  Helper  ",
            description="Answers questions",
            tools=["current_time", "current_time"],
            channels=[webchat(allowed_origins=["https://Shop.Example.com/"], title="Ask us")],
        ),
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == FIELDS
    assert created["name"] == "Helper"
    assert created["description"] == "Answers questions"
    assert created["model"] == MODEL
    assert created["instructions"] == "Be kind."
    assert created["status"] == "draft"
    assert created["tools"] == ["current_time"]
    assert created["skills"] == []
    (channel,) = created["channels"]
    assert channel["type"] == "webchat" and channel["id"]
    assert channel["allowed_origins"] == ["https://shop.example.com"]
    assert channel["title"] == "Ask us" and channel["greeting"] == ""
    datetime.fromisoformat(created["created_at"])

    got = await dev.http.get(f"/api/v1/agents/{created['id']}")
    assert got.status_code == 200
    assert got.json() == created

    listed = await dev.http.get("/api/v1/agents")
    assert listed.status_code == 200
    page = listed.json()
    assert page["total"] == 1 and page["limit"] == 20 and page["offset"] == 0
    assert page["data"] == [created]

    patched = await dev.http.patch(
        f"/api/v1/agents/{created['id']}",
        json={"name": "Helper 2", "instructions": "Be brief.", "tools": []},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["name"] == "Helper 2" and body["instructions"] == "Be brief."
    assert body["tools"] == []
    assert body["description"] == "Answers questions"  # not sent: unchanged
    assert body["channels"] == created["channels"]  # not sent: unchanged
    assert _time(body["updated_at"]) > _time(created["updated_at"])
    assert body["created_at"] == created["created_at"]
    assert (await dev.http.get(f"/api/v1/agents/{created['id']}")).json() == body

    deleted = await dev.http.delete(f"/api/v1/agents/{created['id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await dev.http.get("/api/v1/agents")).json()["total"] == 0


async def test_session_user_manages_agents_with_csrf(api: Api) -> None:
    person = await api.sign_up()
    missing = await person.client.post("/api/v1/agents", json=agent_body())
    assert missing.status_code == 403
    assert "CSRF" in missing.json()["message"]
    response = await person.client.post("/api/v1/agents", json=agent_body(), headers=person.headers)
    assert response.status_code == 201, response.text
    listed = await person.client.get("/api/v1/agents")
    assert [a["id"] for a in listed.json()["data"]] == [response.json()["id"]]


async def test_list_is_newest_first_and_paginates(api: Api) -> None:
    dev = await new_dev(api)
    ids = [(await create_agent(dev, name=f"Agent {i}"))["id"] for i in range(5)]
    newest_first = list(reversed(ids))

    first = (await dev.http.get("/api/v1/agents", params={"limit": 2})).json()
    assert first["total"] == 5 and first["limit"] == 2 and first["offset"] == 0
    assert [a["id"] for a in first["data"]] == newest_first[:2]
    second = (await dev.http.get("/api/v1/agents", params={"limit": 2, "offset": 2})).json()
    assert [a["id"] for a in second["data"]] == newest_first[2:4]
    last = (await dev.http.get("/api/v1/agents", params={"limit": 2, "offset": 4})).json()
    assert [a["id"] for a in last["data"]] == newest_first[4:]
    beyond = (await dev.http.get("/api/v1/agents", params={"offset": 50})).json()
    assert beyond["data"] == [] and beyond["total"] == 5

    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}):
        bad = await dev.http.get("/api/v1/agents", params=params)
        assert bad.status_code == 422, params
        assert bad.json()["error"] == "Validation failed"


async def test_status_filter(api: Api) -> None:
    dev = await new_dev(api)
    running = await create_agent(dev, name="Running")
    stopped = await create_agent(dev, name="Stopped")
    draft = await create_agent(dev, name="Draft")
    await _set_status(api, running["id"], "running")
    await _set_status(api, stopped["id"], "stopped")

    for status, expected in (
        ("running", [running["id"]]),
        ("stopped", [stopped["id"]]),
        ("draft", [draft["id"]]),
        ("error", []),
    ):
        page = (await dev.http.get("/api/v1/agents", params={"status": status})).json()
        assert [a["id"] for a in page["data"]] == expected, status
        assert page["total"] == len(expected)
        assert all(a["status"] == status for a in page["data"])

    bad = await dev.http.get("/api/v1/agents", params={"status": "sleeping"})
    assert bad.status_code == 422
    assert bad.json()["details"][0]["field"] == "status"


async def test_patch_nothing_changes_nothing(api: Api) -> None:
    dev = await new_dev(api)
    created = await create_agent(dev)
    same = await dev.http.patch(
        f"/api/v1/agents/{created['id']}", json={"name": created["name"], "tools": []}
    )
    assert same.status_code == 200
    assert same.json() == created
    empty = await dev.http.patch(f"/api/v1/agents/{created['id']}", json={})
    assert empty.status_code == 200
    assert empty.json()["updated_at"] == created["updated_at"]


async def test_patch_rejects_nulls_and_keeps_the_agent(api: Api) -> None:
    dev = await new_dev(api)
    created = await create_agent(dev)
    response = await dev.http.patch(
        f"/api/v1/agents/{created['id']}", json={"name": None, "model": None}
    )
    assert response.status_code == 422
    fields = {d["field"] for d in response.json()["details"]}
    assert fields == {"name", "model"}
    assert (await dev.http.get(f"/api/v1/agents/{created['id']}")).json() == created


async def test_patch_replaces_channels_and_removes_left_out(api: Api) -> None:
    dev = await new_dev(api)
    created = await create_agent(
        dev, channels=[webchat(title="One"), webhook(), webchat(title="Three")]
    )
    one, hook, three = created["channels"]
    response = await dev.http.patch(
        f"/api/v1/agents/{created['id']}",
        json={"channels": [webchat(id=three["id"], title="Three!"), webchat(id=one["id"])]},
    )
    assert response.status_code == 200, response.text
    channels = response.json()["channels"]
    assert [c["id"] for c in channels] == [three["id"], one["id"]]
    assert channels[0]["title"] == "Three!"
    assert channels[1]["title"] == "Chat"  # public fields are taken as sent (defaults apply)
    rows = await raw_rows(
        api,
        "select id, position from agent_channels where agent_id = :a order by position",
        a=created["id"],
    )
    assert [(r["id"], r["position"]) for r in rows] == [(three["id"], 0), (one["id"], 1)]
    assert hook["id"] not in {r["id"] for r in rows}


async def test_model_can_change_to_another_catalog_model(api: Api) -> None:
    dev = await new_dev(api)
    created = await create_agent(dev)
    response = await dev.http.patch(
        f"/api/v1/agents/{created['id']}", json={"model": "anthropic/claude-sonnet-4"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "anthropic/claude-sonnet-4"


async def test_deleted_agent_is_gone_for_every_verb(api: Api) -> None:
    dev = await new_dev(api)
    keep = await create_agent(dev, name="Keep")
    gone = await create_agent(dev, name="Gone")
    assert (await dev.http.delete(f"/api/v1/agents/{gone['id']}")).status_code == 204

    url = f"/api/v1/agents/{gone['id']}"
    for response in (
        await dev.http.get(url),
        await dev.http.patch(url, json={"name": "Back"}),
        await dev.http.delete(url),
    ):
        assert response.status_code == 404
        assert response.json() == NOT_FOUND
    page = (await dev.http.get("/api/v1/agents")).json()
    assert [a["id"] for a in page["data"]] == [keep["id"]]
    assert page["total"] == 1


async def test_fallback_models_are_set_checked_and_never_the_main_model(api: Api) -> None:
    dev = await new_dev(api)
    models = [m["id"] for m in (await dev.http.get("/api/v1/models")).json()["data"]]
    main, first, second = models[0], models[1], models[2]
    created = await dev.http.post(
        "/api/v1/agents",
        json=agent_body(model=main, fallback_models=[first, main, second]),
    )
    assert created.status_code == 201, created.text
    agent = created.json()
    assert agent["fallback_models"] == [first, second]
    unknown = await dev.http.patch(
        f"/api/v1/agents/{agent['id']}", json={"fallback_models": ["openai/no-such-model"]}
    )
    assert unknown.status_code == 422
    assert unknown.json()["details"][0]["field"] == "fallback_models"
    too_many = await dev.http.patch(
        f"/api/v1/agents/{agent['id']}", json={"fallback_models": models[1:5]}
    )
    assert too_many.status_code == 422
    # The main model becoming a fallback's model drops it from the fallbacks.
    moved = await dev.http.patch(f"/api/v1/agents/{agent['id']}", json={"model": first})
    assert moved.status_code == 200 and moved.json()["fallback_models"] == [second]
    cleared = await dev.http.patch(f"/api/v1/agents/{agent['id']}", json={"fallback_models": []})
    assert cleared.json()["fallback_models"] == []
