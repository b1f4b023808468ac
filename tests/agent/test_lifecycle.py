"""Deploy, start, stop, restart and status through the API, with their logs and notifications."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from lunogen.agent.models import Agent
from lunogen.llm.models import CatalogModel
from tests.agent.support import NOT_FOUND, create_agent, new_dev
from tests.helpers import Api


async def _post(dev: Any, agent_id: str, action: str) -> Any:
    return await dev.http.post(f"/api/v1/agents/{agent_id}/{action}")


async def _logs(dev: Any, agent_id: str, **params: Any) -> list[dict[str, Any]]:
    response = await dev.http.get(f"/api/v1/agents/{agent_id}/logs", params=params)
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def test_deploy_stop_start_restart_walk_the_state_machine(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert agent["status"] == "draft"

    deployed = await _post(dev, agent["id"], "deploy")
    assert deployed.status_code == 200, deployed.text
    assert deployed.json()["status"] == "running"
    status = (await dev.http.get(f"/api/v1/agents/{agent['id']}/status")).json()
    assert status["status"] == "running"
    assert status["uptime_seconds"] is not None and status["uptime_seconds"] >= 0
    assert status["last_error"] is None
    assert (status["threads_today"], status["messages_today"]) == (0, 0)

    stopped = await _post(dev, agent["id"], "stop")
    assert stopped.json()["status"] == "stopped"
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}/status")).json()[
        "uptime_seconds"
    ] is None
    started = await _post(dev, agent["id"], "start")
    assert started.json()["status"] == "running"
    restarted = await _post(dev, agent["id"], "restart")
    assert restarted.json()["status"] == "running"

    transitions = [
        (e["details"]["from"], e["details"]["to"])
        for e in await _logs(dev, agent["id"])
        if e["event"] == "status"
    ]
    assert transitions == [
        ("draft", "deploying"),
        ("deploying", "running"),
        ("running", "stopped"),
        ("stopped", "deploying"),
        ("deploying", "running"),
        ("running", "deploying"),
        ("deploying", "running"),
    ]


@pytest.mark.parametrize(
    ("setup", "action"),
    [
        ([], "start"),  # draft
        ([], "stop"),
        ([], "restart"),
        (["deploy"], "deploy"),  # running
        (["deploy"], "start"),
        (["deploy", "stop"], "stop"),  # stopped
        (["deploy", "stop"], "restart"),
    ],
)
async def test_forbidden_transitions_answer_409_naming_the_state(
    api: Api, setup: list[str], action: str
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    for step in setup:
        assert (await _post(dev, agent["id"], step)).status_code == 200
    state = (await dev.http.get(f"/api/v1/agents/{agent['id']}")).json()["status"]
    response = await _post(dev, agent["id"], action)
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == state
    assert state in body["message"] and action in body["message"]


async def test_deploy_failure_is_502_with_the_reason_in_state_log_and_notification(
    api: Api,
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    async with api.app.state.sessionmaker() as session:  # the model leaves the catalog
        await session.execute(
            update(Agent).where(Agent.id == agent["id"]).values(model="vanished/model")
        )
        await session.commit()
    response = await _post(dev, agent["id"], "deploy")
    assert response.status_code == 502
    assert response.json() == {
        "error": "Deploy failed: model 'vanished/model' is not in the model catalog"
    }
    status = (await dev.http.get(f"/api/v1/agents/{agent['id']}/status")).json()
    assert status["status"] == "error"
    assert "vanished/model" in status["last_error"]
    errors = await _logs(dev, agent["id"], level="error")
    assert [e["details"]["to"] for e in errors] == ["error"]
    assert "vanished/model" in errors[0]["message"]

    notes = (await dev.person.client.get("/api/v1/notifications")).json()
    assert notes["unread"] == 1
    assert notes["data"][0]["kind"] == "agent.error"
    assert "vanished/model" in notes["data"][0]["body"]
    emails = [row for row, _ in await api.emails(dev.person.email) if "LunoGen:" in row.subject]
    assert len(emails) == 1

    # Fix the config and deploy again from `error`.
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(Agent).where(Agent.id == agent["id"]).values(model="openai/gpt-4o-mini")
        )
        await session.commit()
    again = await _post(dev, agent["id"], "deploy")
    assert again.status_code == 200
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}/status")).json()["last_error"] is None


async def test_start_rechecks_the_configuration(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    await _post(dev, agent["id"], "deploy")
    await _post(dev, agent["id"], "stop")
    async with api.app.state.sessionmaker() as session:
        model = await session.get(CatalogModel, "openai/gpt-4o-mini")
        assert model is not None
        await session.delete(model)
        await session.commit()
    response = await _post(dev, agent["id"], "start")
    assert response.status_code == 502
    assert response.json()["error"].startswith("Deploy failed: model 'openai/gpt-4o-mini'")


async def test_lifecycle_needs_agents_execute(api: Api) -> None:
    owner = await new_dev(api)
    agent = await create_agent(owner)
    reader = api.key_client(await api.create_key(owner.person, ["agents:read", "agents:write"]))
    await api.set_plan(owner.person, "pro")
    for action in ("deploy", "start", "stop", "restart"):
        response = await reader.post(f"/api/v1/agents/{agent['id']}/{action}")
        assert response.status_code == 403
        assert response.json() == {
            "error": "Forbidden",
            "message": "API key missing required scope: agents:execute",
        }
    logs_response = await reader.get(f"/api/v1/agents/{agent['id']}/logs")
    assert logs_response.json()["message"] == "API key missing required scope: logs:read"


async def test_another_tenants_agent_is_404_for_every_lifecycle_endpoint(api: Api) -> None:
    owner = await new_dev(api)
    stranger = await new_dev(api)
    agent = await create_agent(owner)
    for action in ("deploy", "start", "stop", "restart"):
        response = await _post(stranger, agent["id"], action)
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
    for path in ("status", "logs", "logs/stream"):
        response = await stranger.http.get(f"/api/v1/agents/{agent['id']}/{path}")
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert (await owner.http.get(f"/api/v1/agents/{agent['id']}")).json()["status"] == "draft"


async def test_logs_page_by_cursor_and_filter_by_level(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    for _ in range(3):
        await _post(dev, agent["id"], "deploy")
        await _post(dev, agent["id"], "stop")
    first = (await dev.http.get(f"/api/v1/agents/{agent['id']}/logs", params={"limit": 4})).json()
    assert len(first["data"]) == 4 and first["next_cursor"] == first["data"][-1]["id"]
    rest = await _logs(dev, agent["id"], cursor=first["next_cursor"], limit=100)
    ids = [e["id"] for e in first["data"] + rest]
    assert ids == sorted(ids) and len(ids) == 10  # 9 status changes, version 1 deployed
    assert await _logs(dev, agent["id"], level="error") == []


@pytest.mark.parametrize("settings_overrides", [{}], indirect=False)
async def test_deploy_without_a_model_provider_names_the_setting(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    response = await _post(dev, agent["id"], "deploy")
    assert response.status_code == 502
    assert "LUNOGEN_OPENROUTER_API_KEY" in response.json()["error"]
    assert response.json()["error"].startswith("Deploy failed: No model provider configured")
