"""Bad agent configs get a 422 that names what is wrong, and write nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.agent.support import (
    Dev,
    agent_body,
    create_agent,
    new_dev,
    telegram,
    webchat,
    webhook,
    whatsapp,
)
from tests.helpers import Api


def _details(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "Validation failed"
    assert isinstance(body["message"], str) and body["message"]
    return {d["field"]: d["message"] for d in body["details"]}


async def _assert_no_agents(dev: Dev) -> None:
    page = (await dev.http.get("/api/v1/agents")).json()
    assert page["total"] == 0, page


@pytest.fixture
async def dev(api: Api) -> Dev:
    return await new_dev(api)


async def test_unknown_model_is_named(dev: Dev) -> None:
    response = await dev.http.post("/api/v1/agents", json=agent_body(model="acme/brain-9000"))
    details = _details(response)
    assert "acme/brain-9000" in details["model"]
    assert "acme/brain-9000" in response.json()["message"]
    await _assert_no_agents(dev)


async def test_unknown_tools_are_named(dev: Dev) -> None:
    response = await dev.http.post(
        "/api/v1/agents", json=agent_body(tools=["current_time", "launch_rockets", "dig"])
    )
    message = _details(response)["tools"]
    assert "'launch_rockets'" in message and "'dig'" in message
    assert "current_time" not in message
    await _assert_no_agents(dev)


async def test_unknown_skills_are_named(dev: Dev) -> None:
    response = await dev.http.post("/api/v1/agents", json=agent_body(skills=["skl_pdf_tools"]))
    assert "skl_pdf_tools" in _details(response)["skills"]
    await _assert_no_agents(dev)


async def test_all_unknown_references_are_reported_together(dev: Dev) -> None:
    response = await dev.http.post(
        "/api/v1/agents",
        json=agent_body(model="nope/nope", tools=["nope_tool"], skills=["nope_skill"]),
    )
    assert set(_details(response)) == {"model", "tools", "skills"}


async def test_unknown_top_level_field_is_named(dev: Dev) -> None:
    response = await dev.http.post(
        "/api/v1/agents", json=agent_body(temperature=0.2, status="running")
    )
    details = _details(response)
    assert details == {"temperature": "unknown field", "status": "unknown field"}
    await _assert_no_agents(dev)


async def test_unknown_channel_field_is_named(dev: Dev) -> None:
    response = await dev.http.post(
        "/api/v1/agents", json=agent_body(channels=[webchat(), telegram(chat_color="blue")])
    )
    details = _details(response)
    assert details == {"channels.1.telegram.chat_color": "unknown field"}
    await _assert_no_agents(dev)


async def test_webhook_secret_cannot_be_supplied(dev: Dev) -> None:
    response = await dev.http.post(
        "/api/v1/agents", json=agent_body(channels=[webhook(secret="whsec_mine")])
    )
    assert _details(response) == {"channels.0.webhook.secret": "unknown field"}


async def test_unknown_channel_type_is_named(dev: Dev) -> None:
    response = await dev.http.post(
        "/api/v1/agents", json=agent_body(channels=[webchat(), {"type": "carrier_pigeon"}])
    )
    details = _details(response)
    assert list(details) == ["channels.1"]
    assert "'carrier_pigeon'" in details["channels.1"]
    assert "webhook, whatsapp, telegram, webchat" in details["channels.1"]
    missing = await dev.http.post("/api/v1/agents", json=agent_body(channels=[{"mode": "sync"}]))
    assert "needs a 'type'" in _details(missing)["channels.0"]
    await _assert_no_agents(dev)


@pytest.mark.parametrize(
    ("channel", "field", "fragment"),
    [
        (webhook(mode="async"), "channels.0.webhook", "callback_url is required"),
        (webhook(callback_url="ftp://example.com/x"), "channels.0.webhook.callback_url", "http"),
        (
            webhook(callback_url="https://user:pw@example.com/hook"),
            "channels.0.webhook.callback_url",
            "credentials",
        ),
        (webhook(callback_url="https:///nohost"), "channels.0.webhook.callback_url", "host"),
        (
            webhook(callback_url="https://exa mple.com/"),
            "channels.0.webhook.callback_url",
            "spaces",
        ),
        (webhook(mode="batch"), "channels.0.webhook.mode", "sync"),
        (telegram(bot_token="not-a-token"), "channels.0.telegram.bot_token", "@BotFather"),
        (telegram(bot_token=None), "channels.0.bot_token", "required"),
        ({"type": "telegram"}, "channels.0.bot_token", "required"),
        (whatsapp(phone_number_id="+1 555"), "channels.0.whatsapp.phone_number_id", "pattern"),
        (whatsapp(access_token=""), "channels.0.whatsapp.access_token", "empty"),
        (whatsapp(app_secret="x" * 201), "channels.0.whatsapp.app_secret", "200"),
        (whatsapp(api_version="21"), "channels.0.whatsapp.api_version", "pattern"),
        (
            {k: v for k, v in whatsapp().items() if k != "verify_token"},
            "channels.0.verify_token",
            "required",
        ),
        (
            webchat(allowed_origins=["https://example.com/chat"]),
            "channels.0.webchat.allowed_origins.0",
            "origin",
        ),
        (
            webchat(allowed_origins=["javascript:alert(1)"]),
            "channels.0.webchat.allowed_origins.0",
            "origin",
        ),
        (webchat(title=""), "channels.0.webchat.title", "at least 1"),
    ],
)
async def test_channel_configs_are_validated(
    dev: Dev, channel: dict[str, Any], field: str, fragment: str
) -> None:
    response = await dev.http.post("/api/v1/agents", json=agent_body(channels=[channel]))
    details = _details(response)
    assert field in details, details
    assert fragment in details[field], details
    await _assert_no_agents(dev)


async def test_secret_values_are_not_echoed_in_errors(dev: Dev) -> None:
    bad_token = "supersecretvalue-with-no-colon-in-it-0123456789"
    response = await dev.http.post(
        "/api/v1/agents",
        json=agent_body(
            channels=[telegram(bot_token=bad_token), whatsapp(app_secret="s" * 300, extra=1)]
        ),
    )
    assert response.status_code == 422
    assert bad_token not in response.text
    assert "s" * 300 not in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (agent_body(name=""), "name"),
        (agent_body(name="   "), "name"),
        (agent_body(name="x" * 101), "name"),
        (agent_body(name="bad\x00name"), "name"),
        (agent_body(instructions="i" * 100_001), "instructions"),
        (agent_body(description="d" * 2001), "description"),
        (agent_body(tools="current_time"), "tools"),
        (agent_body(skills=[""]), "skills.0"),
        (agent_body(channels=[webchat()] * 51), "channels"),
        ({"model": "openai/gpt-4o-mini"}, "name"),
        ({"name": "No model"}, "model"),
    ],
)
async def test_field_bounds(dev: Dev, body: dict[str, Any], field: str) -> None:
    response = await dev.http.post("/api/v1/agents", json=body)
    assert field in _details(response)
    await _assert_no_agents(dev)


async def test_instructions_up_to_the_cap_are_accepted(dev: Dev) -> None:
    created = await create_agent(dev, instructions="i" * 100_000)
    assert len(created["instructions"]) == 100_000


async def test_malformed_json_is_a_4xx(dev: Dev) -> None:
    response = await dev.http.post(
        "/api/v1/agents", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


async def test_patch_validates_like_create_and_writes_nothing(dev: Dev) -> None:
    created = await create_agent(dev, channels=[webchat()])
    url = f"/api/v1/agents/{created['id']}"
    checks: list[tuple[dict[str, Any], str, str]] = [
        ({"model": "nope/model"}, "model", "nope/model"),
        ({"tools": ["nope_tool"]}, "tools", "nope_tool"),
        ({"skills": ["nope_skill"]}, "skills", "nope_skill"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"channels": [{"type": "sms"}]}, "channels.0", "'sms'"),
        (
            {"channels": [webchat(id="6f1c1c44-0000-4000-8000-000000000000")]},
            "channels.0.id",
            "unknown channel id",
        ),
        (
            {"channels": [webhook(id=created["channels"][0]["id"])]},
            "channels.0.type",
            "cannot change",
        ),
        (
            {"channels": [webchat(id=created["channels"][0]["id"])] * 2},
            "channels.1.id",
            "twice",
        ),
        ({"name": "ok", "model": "nope/model"}, "model", "nope/model"),
    ]
    for body, field, fragment in checks:
        details = _details(await dev.http.patch(url, json=body))
        assert fragment in details.get(field, ""), (body, details)
    assert (await dev.http.get(url)).json() == created
