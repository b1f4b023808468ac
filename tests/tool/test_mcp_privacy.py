"""MCP servers are owner data: in the agent file (no secrets), in the data export, and gone with
the agent or the account."""

from __future__ import annotations

import json

import pytest
import yaml

from lunogen.privacy.retention import purge_agent_rows
from tests.agent.support import create_agent, new_dev, raw_rows
from tests.helpers import Api
from tests.privacy.test_export import download, export_ready, read_json

pytestmark = pytest.mark.db

URL = "https://example.com/mcp"


async def test_the_agent_file_carries_urls_and_allowlists_never_tokens(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, name="Orders bot")
    base = f"/api/v1/agents/{agent['id']}/mcp-servers"
    created = await dev.http.post(
        base,
        json={
            "name": "orders",
            "url": URL,
            "auth": "bearer",
            "bearer_token": "tok-secret-123",
            "allowed_tools": ["lookup_order"],
            "timeout_seconds": 12,
        },
    )
    assert created.status_code == 201, created.text
    exported = await dev.http.get(f"/api/v1/agents/{agent['id']}/export", params={"format": "yaml"})
    assert exported.status_code == 200, exported.text
    assert "tok-secret-123" not in exported.text
    document = yaml.safe_load(exported.text)
    assert document["mcp_servers"] == [
        {
            "name": "orders",
            "url": URL,
            "auth": "bearer",
            "allowed_tools": ["lookup_order"],
            "timeout_seconds": 12,
            "max_result_chars": 6000,
        }
    ]

    imported = await dev.http.post(
        "/api/v1/agents/import",
        content=json.dumps(document),
        headers={"content-type": "application/json"},
    )
    assert imported.status_code == 201, imported.text
    copy = imported.json()["agent"]["id"]
    [server] = (await dev.http.get(f"/api/v1/agents/{copy}/mcp-servers")).json()
    assert server["url"] == URL and server["allowed_tools"] == ["lookup_order"]
    assert server["credentials_configured"] is False  # the token stayed behind

    document["mcp_servers"] = [
        {"name": "local", "url": "stdio:npx server"},
        {"name": "local", "url": "http://169.254.169.254/"},
    ]
    refused = await dev.http.post(
        "/api/v1/agents/import",
        content=json.dumps(document),
        headers={"content-type": "application/json"},
    )
    assert refused.status_code == 422, refused.text
    fields = {d["field"] for d in refused.json()["details"]}
    assert {"mcp_servers.0.url", "mcp_servers.1.url", "mcp_servers.1.name"} <= fields


async def test_the_export_has_the_servers_without_credentials(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    created = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/mcp-servers",
        json={"name": "crm", "url": URL, "auth": "bearer", "bearer_token": "tok-secret-456"},
    )
    assert created.status_code == 201
    body = await export_ready(dev.http)
    archive = await download(dev.http, body["id"])
    section = read_json(archive, "mcp_servers.json")
    assert [s["name"] for s in section["servers"]] == ["crm"]
    assert section["servers"][0]["credentials_configured"] is True
    assert section["calls"] == []
    for name in archive.namelist():
        assert b"tok-secret-456" not in archive.read(name)


async def test_servers_and_calls_go_with_the_agent(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    created = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/mcp-servers", json={"name": "crm", "url": URL}
    )
    assert created.status_code == 201
    async with api.app.state.sessionmaker() as session:
        await purge_agent_rows(session, agent["id"])
        await session.commit()
    assert await raw_rows(api, "SELECT id FROM mcp_servers") == []
