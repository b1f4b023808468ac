"""Agent files: export → import → export gives the same file, a refusal names every problem and
creates nothing, secrets never travel, tenancy and scopes hold; the dashboard does both."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.async_api import Browser, Page, expect

from tests.agent.support import (
    MODEL,
    NOT_FOUND,
    Dev,
    agent_body,
    create_agent,
    new_dev,
    raw_rows,
    telegram,
    webchat,
    webhook,
)
from tests.dashboard.browser import browser, fits, sign_in  # noqa: F401 (fixture)
from tests.helpers import Api, Signed
from tests.skill.support import clean_package, create_skill

FALLBACKS = ["openai/gpt-4.1-mini", "anthropic/claude-3.5-haiku"]
TOOLS = ["current_time", "web_fetch"]
WHSEC = re.compile(r"whsec_[A-Za-z0-9+/]+=*")
PAPER = {"name": "Notes", "instructions": "Be brief."}
AXE = (Path(__file__).parent.parent / "dashboard" / "vendor" / "axe-4.14.1.min.js").read_text()


def _without_ids(agent: dict[str, Any]) -> dict[str, Any]:
    changing = {"id", "created_at", "updated_at", "status_changed_at"}
    return {k: v for k, v in agent.items() if k not in changing}


async def _skill_at_version_2(dev: Dev, name: str = "pdf-tools") -> dict[str, Any]:
    skill = await create_skill(dev, clean_package(name=name))
    changed = clean_package(name=name, body="# PDF tools\n\nVersion two of the guide.\n")
    updated = await dev.http.put(f"/api/v1/skills/{skill['id']}", json=changed)
    assert updated.status_code == 200, updated.text
    assert updated.json()["version"] == 2
    return dict(updated.json())


async def _full_agent(dev: Dev) -> tuple[dict[str, Any], str]:
    """An agent with fallbacks, tools, a skill at version 2, a web chat with allowed origins
    and an async webhook; and the webhook's signing secret (shown once, at creation)."""
    skill = await _skill_at_version_2(dev)
    created = await create_agent(
        dev,
        description="Answers questions about orders.",
        fallback_models=FALLBACKS,
        tools=TOOLS,
        skills=[skill["id"]],
        channels=[
            webchat(allowed_origins=["https://shop.example.com", "http://localhost:8080"]),
            webhook(mode="async", callback_url="https://hooks.example.com/replies"),
        ],
    )
    secret = created["channels"][1]["secret"]["value"]
    assert WHSEC.fullmatch(secret)
    return created, secret


async def _export(dev: Dev, agent_id: str, fmt: str = "json") -> tuple[str, dict[str, Any]]:
    response = await dev.http.get(f"/api/v1/agents/{agent_id}/export", params={"format": fmt})
    assert response.status_code == 200, response.text
    body = json.loads(response.text) if fmt == "json" else yaml.safe_load(response.text)
    return response.text, body


async def _import(dev: Dev, content: str | bytes, media: str = "application/json") -> Any:
    return await dev.http.post(
        "/api/v1/agents/import", content=content, headers={"Content-Type": media}
    )


async def _agent_ids(api: Api, owner_id: str) -> list[str]:
    rows = await raw_rows(api, "select id from agents where owner_id = :o", o=owner_id)
    return [row["id"] for row in rows]


@pytest.fixture
async def dev(api: Api) -> Dev:
    return await new_dev(api)


# The round trip ---------------------------------------------------------------------------


async def test_export_import_export_is_identical_and_secrets_never_travel(
    api: Api, dev: Dev
) -> None:
    original, secret = await _full_agent(dev)
    text, exported = await _export(dev, original["id"])

    assert exported["lunogen_agent_file"] == 1
    assert exported["fallback_models"] == FALLBACKS and exported["tools"] == TOOLS
    assert exported["skills"] == [{"name": "pdf-tools", "version": 2}]
    chat, hook = exported["channels"]
    assert chat["type"] == "webchat"
    assert chat["allowed_origins"] == ["https://shop.example.com", "http://localhost:8080"]
    assert hook == {
        "type": "webhook",
        "mode": "async",
        "callback_url": "https://hooks.example.com/replies",
        "secret": {"configured": True},
    }
    assert secret not in text and "whsec_" not in text
    assert original["id"] not in text and original["channels"][0]["id"] not in text

    imported = await _import(dev, text)
    assert imported.status_code == 201, imported.text
    body = imported.json()
    assert body["needs_setup"] == []
    copy = body["agent"]
    assert copy["id"] != original["id"] and copy["status"] == "draft"
    # The webhook got a new signing secret of its own, shown once in this answer.
    new_secret = copy["channels"][1]["secret"]["value"]
    assert WHSEC.fullmatch(new_secret) and new_secret != secret

    text_again, again = await _export(dev, copy["id"])
    assert text_again == text and again == exported

    # The API's view of the two agents differs only in ids, times and the revealed secret.
    first = (await dev.http.get(f"/api/v1/agents/{original['id']}")).json()
    second = (await dev.http.get(f"/api/v1/agents/{copy['id']}")).json()
    for agent in (first, second):
        for channel in agent["channels"]:
            del channel["id"]
    assert _without_ids(first) == _without_ids(second)

    actions = await raw_rows(
        api,
        "select action, target_id from audit_events where action like 'agent.%' "
        "order by created_at",
    )
    assert {"action": "agent.exported", "target_id": original["id"]} in actions
    assert {"action": "agent.imported", "target_id": copy["id"]} in actions
    assert {"action": "agent.exported", "target_id": copy["id"]} in actions
    audit_text = (await dev.http.get("/api/v1/audit", params={"limit": 100})).text
    assert new_secret not in audit_text and secret not in audit_text


async def test_yaml_round_trip_and_yaml_import(api: Api, dev: Dev) -> None:
    original, _secret = await _full_agent(dev)
    exported = await dev.http.get(
        f"/api/v1/agents/{original['id']}/export", params={"format": "yaml"}
    )
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/yaml")
    assert (
        exported.headers["content-disposition"] == 'attachment; filename="support-bot.agent.yaml"'
    )
    _json_text, as_json = await _export(dev, original["id"])
    assert yaml.safe_load(exported.text) == as_json

    imported = await _import(dev, exported.text, "application/yaml")
    assert imported.status_code == 201, imported.text
    _text, again = await _export(dev, imported.json()["agent"]["id"])
    assert again == as_json


async def test_channels_that_need_secrets_are_created_disabled_and_listed(
    api: Api, dev: Dev
) -> None:
    original = await create_agent(dev, channels=[telegram(), webchat()])
    text, exported = await _export(dev, original["id"])
    bot = exported["channels"][0]
    assert bot["bot_token"] == {"configured": True}
    assert bot["access"] == {"policy": "pairing", "allowlist": []}

    imported = await _import(dev, text)
    assert imported.status_code == 201, imported.text
    body = imported.json()
    channel = body["agent"]["channels"][0]
    assert body["needs_setup"] == [
        {
            "path": "channels.0",
            "channel_id": channel["id"],
            "type": "telegram",
            "missing_secrets": ["bot_token"],
        }
    ]
    assert channel["bot_token"] == {"configured": False}
    assert channel["disabled_at"] is not None
    assert "without its secrets (bot_token)" in channel["disabled_reason"]
    (row,) = await raw_rows(
        api, "select secrets from agent_channels where id = :i", i=channel["id"]
    )
    assert row["secrets"] is None  # nothing invented
    _text, again = await _export(dev, body["agent"]["id"])
    assert again["channels"][0]["bot_token"] == {"configured": False}

    # Sending the token with the channel's id completes it: enabled, and the file is whole.
    chat = body["agent"]["channels"][1]
    patched = await dev.http.patch(
        f"/api/v1/agents/{body['agent']['id']}",
        json={
            "channels": [
                {"id": channel["id"], "type": "telegram", "bot_token": telegram()["bot_token"]},
                {"id": chat["id"], "type": "webchat"},
            ]
        },
    )
    assert patched.status_code == 200, patched.text
    done = patched.json()["channels"][0]
    assert done["disabled_at"] is None and done["bot_token"] == {"configured": True}
    text_after, _after = await _export(dev, body["agent"]["id"])
    assert text_after == text


# Refusals ---------------------------------------------------------------------------------


async def test_every_problem_is_named_at_once_and_nothing_is_created(api: Api) -> None:
    dev = await new_dev(api, plan="free")
    skill = await _skill_at_version_2(dev, "faq")
    for _ in range(3):
        await create_agent(dev)
    before = await _agent_ids(api, dev.id)
    audit_before = await raw_rows(api, "select count(*) as n from audit_events")
    document = {
        "lunogen_agent_file": 1,
        "name": "Broken",
        "model": "nobody/no-such-model",
        "fallback_models": ["openai/gpt-4o", "nobody/gone"],
        "tools": ["current_time", "teleport"],
        "skills": [
            {"name": skill["name"], "version": 7},
            {"name": skill["name"] + "-missing", "version": 1},
        ],
        "channels": [
            {"type": "carrier-pigeon"},
            {"type": "webhook", "secret": "whsec_AAAA"},
            {"type": "webchat", "allowed_origins": ["not an origin"], "hide_powered_by": True},
            {"type": "telegram", "bot_token": {"configured": True}},
            {"type": "webchat"},
        ],
        "colour": "blue",
    }
    refused = await _import(dev, json.dumps(document))
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["error"] == "Validation failed"
    fields = [d["field"] for d in body["details"]]
    assert set(fields) == {
        "colour",
        "model",
        "fallback_models.1",
        "tools.1",
        "skills.0.version",
        "skills.1.name",
        "channels.0.type",
        "channels.1.secret",
        "channels.2.allowed_origins.0",
        "body",  # three agents already: the Free plan's limit
        "channels",  # five channels: over the Free plan's four
    }, body
    messages = {d["field"]: d["message"] for d in body["details"]}
    assert messages["colour"] == "unknown field"
    assert "unknown model 'nobody/no-such-model'" in messages["model"]
    assert "unknown tool 'teleport'" in messages["tools.1"]
    assert "has no version 7; its current version is 2" in messages["skills.0.version"]
    assert "no skill named 'faq-missing'" in messages["skills.1.name"]
    assert "unknown channel type 'carrier-pigeon'" in messages["channels.0.type"]
    assert "never read from an agent file" in messages["channels.1.secret"]
    assert "whsec_AAAA" not in refused.text
    assert "Free plan allows 3 agents" in messages["body"]
    assert body["message"].startswith("The agent file has 11 problems: ")

    assert await _agent_ids(api, dev.id) == before
    assert await raw_rows(api, "select count(*) as n from audit_events") == audit_before


async def test_an_older_version_of_a_skill_and_a_plan_option_are_refused(api: Api) -> None:
    dev = await new_dev(api, plan="free")
    skill = await _skill_at_version_2(dev)
    document = {
        "lunogen_agent_file": 1,
        "name": "Old",
        "model": MODEL,
        "skills": [{"name": skill["name"], "version": 1}],
        "channels": [{"type": "webchat", "hide_powered_by": True}],
    }
    refused = await _import(dev, json.dumps(document))
    assert refused.status_code == 422
    messages = {d["field"]: d["message"] for d in refused.json()["details"]}
    assert messages.keys() == {"skills.0.version", "channels.0"}
    assert "is at version 2, not 1" in messages["skills.0.version"]
    assert "Powered by LunoGen" in messages["channels.0"]
    assert await _agent_ids(api, dev.id) == []


async def test_another_tenants_skill_is_unknown(api: Api, dev: Dev) -> None:
    other = await new_dev(api)
    await _skill_at_version_2(other, "secret-recipes")
    document = {**PAPER, "lunogen_agent_file": 1, "model": MODEL}
    document["skills"] = [{"name": "secret-recipes", "version": 2}]
    refused = await _import(dev, json.dumps(document))
    assert refused.status_code == 422
    assert [d["field"] for d in refused.json()["details"]] == ["skills.0.name"]


@pytest.mark.parametrize(
    ("content", "media", "status", "words"),
    [
        (b'{"lunogen_agent_file": 1, "name": ', "application/json", 400, "not valid JSON"),
        (b"\xff\xfe{}", "application/json", 400, "not UTF-8"),
        (b'{"lunogen_agent_file": NaN}', "application/json", 400, "NaN is not a JSON number"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json", 400, "nests too deeply"),
        (b"name: [unclosed", "application/yaml", 400, "not valid YAML"),
        (b"a: &x [1]\nb: *x\n", "application/yaml", 400, "aliases"),
        (b"[1, 2]", "application/json", 422, "an agent file is an object"),
        (b'{"name": "x"}', "application/json", 422, "missing: this is not a LunoGen agent"),
        (b'{"lunogen_agent_file": 2}', "application/json", 422, "version 2 cannot be read"),
        (b'{"lunogen_agent_file": true}', "application/json", 422, "version true cannot"),
        (b"lunogen_agent_file: '1'\n", "application/yaml", 422, 'version "1" cannot'),
    ],
)
async def test_malformed_or_foreign_files_get_a_clear_4xx(
    api: Api, dev: Dev, content: bytes, media: str, status: int, words: str
) -> None:
    response = await _import(dev, content, media)
    assert response.status_code == status, response.text
    assert words in response.json()["message"]
    assert await _agent_ids(api, dev.id) == []


async def test_text_no_database_can_hold_is_named_not_looked_up(api: Api, dev: Dev) -> None:
    body = (
        b'{"lunogen_agent_file": 1, "name": "A", "model": "\\ud800", "tools": ["\\udfff"],'
        b' "skills": [{"name": "\\ud800", "version": 1}],'
        b' "channels": [{"type": "\\ud800"}, {"type": "webchat", "title": "\\ud800"}]}'
    )
    refused = await _import(dev, body)
    assert refused.status_code == 422, refused.text
    fields = [d["field"] for d in refused.json()["details"]]
    assert fields == ["model", "tools.0", "skills.0.name", "channels.0.type", "channels.1.title"]
    # A key that is no text at all: the object cannot be read, and says so.
    key = await _import(dev, b'{"lunogen_agent_file": 1, "\\ud800": 1}')
    assert key.status_code == 422
    assert key.json()["details"][0]["field"] == "body"
    assert await _agent_ids(api, dev.id) == []


async def test_an_oversize_file_is_refused(api: Api, dev: Dev) -> None:
    document = {**PAPER, "lunogen_agent_file": 1, "model": MODEL, "description": "x" * 1_100_000}
    response = await _import(dev, json.dumps(document))
    assert response.status_code == 413
    assert "at most" in response.json()["message"]
    # Within the cap but over a field's own limit: a 422 naming the field.
    long = {**PAPER, "lunogen_agent_file": 1, "model": MODEL, "instructions": "y" * 100_001}
    refused = await _import(dev, json.dumps(long))
    assert refused.status_code == 422
    assert [d["field"] for d in refused.json()["details"]] == ["instructions"]
    # A list longer than its bound is refused as such; its surplus is not looked up.
    many = {**PAPER, "lunogen_agent_file": 1, "model": MODEL, "tools": ["nope"] * 20_000}
    refused = await _import(dev, json.dumps(many))
    assert refused.status_code == 422
    fields = [d["field"] for d in refused.json()["details"]]
    assert fields[0] == "tools" and fields[1:] == [f"tools.{i}" for i in range(100)]


# Tenancy and scopes -----------------------------------------------------------------------


async def test_another_tenants_agent_is_not_found(api: Api, dev: Dev) -> None:
    other = await new_dev(api)
    theirs = await create_agent(other)
    response = await dev.http.get(f"/api/v1/agents/{theirs['id']}/export")
    assert response.status_code == 404 and response.json() == NOT_FOUND
    assert (await dev.http.get("/api/v1/agents/not-a-uuid/export")).status_code == 404
    await other.http.delete(f"/api/v1/agents/{theirs['id']}")
    gone = await other.http.get(f"/api/v1/agents/{theirs['id']}/export")
    assert gone.status_code == 404


async def test_scopes(api: Api, dev: Dev) -> None:
    agent = await create_agent(dev)
    writer = api.key_client(await api.create_key(dev.person, ["agents:write"]))
    refused = await writer.get(f"/api/v1/agents/{agent['id']}/export")
    assert refused.status_code == 403
    assert "agents:read" in refused.json()["message"]

    reader = api.key_client(await api.create_key(dev.person, ["agents:read"]))
    text = (await reader.get(f"/api/v1/agents/{agent['id']}/export")).text
    no_write = await reader.post(
        "/api/v1/agents/import", content=text, headers={"Content-Type": "application/json"}
    )
    assert no_write.status_code == 403
    assert "agents:write" in no_write.json()["message"]
    made = await writer.post(
        "/api/v1/agents/import", content=text, headers={"Content-Type": "application/json"}
    )
    assert made.status_code == 201, made.text
    assert len(await _agent_ids(api, dev.id)) == 2


# The dashboard ----------------------------------------------------------------------------


def _form(person: Signed, **fields: Any) -> dict[str, Any]:
    return {"csrf_token": person.csrf, **fields}


async def test_dashboard_export_downloads_the_file(api: Api) -> None:
    person = await api.sign_up()
    dev = Dev(person=person, http=api.key_client(await api.create_key(person)))
    agent = await create_agent(dev, name="Shop helper", channels=[webchat()])
    detail = await person.client.get(f"/agents/{agent['id']}")
    assert f'href="/agents/{agent["id"]}/export"' in detail.text
    listed = await person.client.get("/agents")
    assert 'href="/agents/import"' in listed.text

    download = await person.client.get(f"/agents/{agent['id']}/export")
    assert download.status_code == 200
    assert download.headers["content-disposition"] == (
        'attachment; filename="shop-helper.agent.json"'
    )
    _text, exported = await _export(dev, agent["id"])
    assert json.loads(download.text) == exported

    other = await api.sign_up()
    assert (await other.client.get(f"/agents/{agent['id']}/export")).status_code == 404


async def test_dashboard_import_shows_every_problem_then_imports(api: Api) -> None:
    person = await api.sign_up()
    page = await person.client.get("/agents/import")
    assert page.status_code == 200
    assert 'name="csrf_token"' in page.text and 'type="file"' in page.text

    bad = {"lunogen_agent_file": 1, "name": "Bad", "model": "nobody/x", "tools": ["teleport"]}
    refused = await person.client.post("/agents/import", data=_form(person, text=json.dumps(bad)))
    assert refused.status_code == 422
    assert 'role="alert"' in refused.text
    assert "model" in refused.text and "unknown model &#39;nobody/x&#39;" in refused.text
    assert "tools.0" in refused.text and "unknown tool &#39;teleport&#39;" in refused.text
    assert (await raw_rows(api, "select id from agents")) == []

    malformed = await person.client.post(
        "/agents/import",
        data=_form(person),
        files={"file": ("agent.json", b'{"lunogen_agent_file": ', "application/json")},
    )
    assert malformed.status_code == 400
    assert "not valid JSON" in malformed.text and 'role="alert"' in malformed.text

    good = {**PAPER, "lunogen_agent_file": 1, "model": MODEL, "channels": [telegram()]}
    good["channels"][0].pop("bot_token")
    uploaded = await person.client.post(
        "/agents/import",
        data=_form(person),
        files={"file": ("notes.yaml", yaml.safe_dump(good).encode(), "application/yaml")},
    )
    assert uploaded.status_code == 200, uploaded.text
    (row,) = await raw_rows(api, "select id, name from agents")
    assert row["name"] == "Notes"
    assert f'href="/agents/{row["id"]}"' in uploaded.text
    assert "bot_token" in uploaded.text  # the channel that needs its secret is named

    no_csrf = await person.client.post("/agents/import", data={"text": json.dumps(good)})
    assert no_csrf.status_code == 403


async def test_dashboard_webhook_secret_is_shown_once_after_import(api: Api) -> None:
    person = await api.sign_up()
    document = {**PAPER, "lunogen_agent_file": 1, "model": MODEL, "channels": [webhook()]}
    imported = await person.client.post(
        "/agents/import", data=_form(person, text=json.dumps(document))
    )
    assert imported.status_code == 200, imported.text
    assert WHSEC.search(imported.text)
    (row,) = await raw_rows(api, "select id from agents")
    later = await person.client.get(f"/agents/{row['id']}")
    assert not WHSEC.search(later.text)


async def test_the_openapi_documents_the_file(api: Api) -> None:
    paths = api.app.openapi()["paths"]
    body = paths["/api/v1/agents/import"]["post"]["requestBody"]["content"]
    schema = body["application/json"]["schema"]
    assert body["application/yaml"]["schema"] == schema
    assert "$defs" not in json.dumps(schema) and "$ref" not in json.dumps(schema)
    assert schema["required"] == ["lunogen_agent_file", "name", "model"]
    assert schema["properties"]["skills"]["items"]["required"] == ["name", "version"]
    exported = paths["/api/v1/agents/{agent_id}/export"]["get"]["responses"]["200"]
    assert exported["content"]["application/json"]["schema"] == schema


async def test_agent_body_helper_matches_the_file(dev: Dev) -> None:
    """The minimal file is the minimal create body plus the version."""
    document = {**agent_body(), "lunogen_agent_file": 1}
    made = await _import(dev, json.dumps(document))
    assert made.status_code == 201, made.text
    _text, exported = await _export(dev, made.json()["agent"]["id"])
    assert exported == {
        "lunogen_agent_file": 1,
        "agent_version": 1,
        "name": "Support bot",
        "description": "",
        "model": MODEL,
        "fallback_models": [],
        "instructions": "Be kind.",
        "tools": [],
        "skills": [],
        "channels": [],
    }


async def test_dashboard_export_and_import_in_a_browser(
    browser: Browser,  # noqa: F811 (the fixture)
    live_server: str,
    api: Api,
) -> None:
    """Keyboard only: export from the agent's page, a refused paste showing its problems, then
    the downloaded file uploaded; axe finds nothing serious, light and dark, and 360 px fits."""
    person = await api.sign_up()
    dev = Dev(person=person, http=api.key_client(await api.create_key(person)))
    agent = await create_agent(dev, name="Shop helper", channels=[webchat()])
    watched = await sign_in(browser, live_server, person)
    page = watched.page
    await page.add_init_script(script=AXE)

    await page.goto(f"{live_server}/agents/{agent['id']}")
    await page.get_by_role("link", name="Export").focus()
    async with page.expect_download() as info:
        await page.keyboard.press("Enter")
    download = await info.value
    assert download.suggested_filename == "shop-helper.agent.json"
    saved = await download.path()
    _text, exported = await _export(dev, agent["id"])
    assert json.loads(saved.read_text()) == exported

    await page.goto(f"{live_server}/agents")
    await page.get_by_role("link", name="Import an agent").focus()
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{live_server}/agents/import")
    await page.get_by_label("Or paste its text").focus()
    bad = {"lunogen_agent_file": 1, "name": "Bad", "model": "nobody/x", "tools": ["teleport"]}
    await page.keyboard.insert_text(json.dumps(bad))
    await page.get_by_role("button", name="Import").focus()
    await page.keyboard.press("Enter")
    alert = page.get_by_role("alert")
    await expect(alert).to_contain_text("unknown model 'nobody/x'")
    await expect(alert).to_contain_text("unknown tool 'teleport'")
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]
        assert await _serious_violations(page) == [], scheme
    assert await fits(page, 360)
    await page.set_viewport_size({"width": 1280, "height": 900})

    await page.get_by_label("Or paste its text").fill("")
    await page.get_by_label("Agent file").set_input_files(str(saved))
    await page.get_by_role("button", name="Import").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_contain_text("Agent imported as a draft.")
    assert await _serious_violations(page) == []
    await page.get_by_role("link", name="Open Shop helper").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Shop helper")
    assert len(await _agent_ids(api, person.id)) == 2
    watched.check()


async def _serious_violations(page: Page) -> list[dict[str, Any]]:
    result: dict[str, Any] = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
