"""Connecting an MCP server with OAuth 2.1 against a fake authorization server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lunogen.kit.crypto import KeyRing
from tests.agent.support import Dev, create_agent, new_dev, raw_rows
from tests.fakes.mcp import FakeAuthServer, FakeMcp, auth_server  # noqa: F401 (fixture)
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.runtime.conftest import (  # noqa: F401 (fixtures)
    openrouter,
    openrouter_server,
    openrouter_settings,
)

pytestmark = pytest.mark.db


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    return {**openrouter_settings(openrouter), "allow_private_urls": True}


@pytest.fixture
def protected(auth_server: FakeAuthServer) -> Iterator[FakeMcp]:  # noqa: F811
    with FakeMcp(auth_server=auth_server).running() as fake:
        yield fake


async def _connect(
    api: Api, dev: Dev, fake: FakeMcp, auth: FakeAuthServer
) -> tuple[str, dict[str, Any]]:
    agent = await create_agent(dev)
    base = f"/api/v1/agents/{agent['id']}/mcp-servers"
    created = await dev.http.post(base, json={"name": "crm", "url": fake.url, "auth": "oauth"})
    assert created.status_code == 201, created.text
    path = f"{base}/{created.json()['id']}"
    early = await dev.http.post(f"{path}/tools/refresh")
    assert early.status_code == 409, early.text  # not connected yet

    started = await dev.http.post(f"{path}/oauth/start")
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["redirect_uri"] == "http://testserver/mcp/oauth/callback"
    url = urlsplit(body["authorization_url"])
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{auth.issuer}/authorize"
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["resource"] == fake.url  # RFC 8707
    assert query["redirect_uri"] == body["redirect_uri"]
    assert query["client_id"] in auth.clients  # registered dynamically (RFC 7591)

    async with httpx.AsyncClient() as browser:  # the owner's browser at the authorization server
        approved = await browser.get(body["authorization_url"])
    assert approved.status_code == 302
    back = {k: v[0] for k, v in parse_qs(urlsplit(approved.headers["location"]).query).items()}
    assert back["state"] == query["state"]
    done = await dev.http.post(f"{path}/oauth/callback", json=back)
    assert done.status_code == 200, done.text
    assert done.json()["oauth_connected"] is True
    exchange = auth.token_requests[-1]
    assert exchange["grant_type"] == "authorization_code" and exchange["resource"] == fake.url
    assert auth.pkce_failures == 0  # the fake checked S256(code_verifier) == code_challenge

    replay = await dev.http.post(f"{path}/oauth/callback", json=back)
    assert replay.status_code == 400 and replay.json()["error"] == "Unknown OAuth state"
    return path, agent


async def test_connect_list_and_refresh_an_expired_token(
    api: Api,
    protected: FakeMcp,
    auth_server: FakeAuthServer,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    path, _ = await _connect(api, dev, protected, auth_server)
    [first_token] = list(auth_server.access)

    [row] = await raw_rows(api, "SELECT credentials, oauth_pending FROM mcp_servers")
    assert first_token not in row["credentials"] and row["oauth_pending"] is None
    assert not any(token in row["credentials"] for token in auth_server.refresh)

    listed = await dev.http.post(f"{path}/tools/refresh")
    assert listed.status_code == 200, listed.text
    assert "lookup_order" in {tool["name"] for tool in listed.json()["tools"]}
    assert f"Bearer {first_token}" in protected.authorizations

    # The access token expires (at the authorization server and in what we stored).
    auth_server.access[first_token] = (*auth_server.access[first_token][:2], time.time() - 1)
    await _expire_stored_token(api)
    protected.authorizations.clear()
    again = await dev.http.post(f"{path}/tools/refresh")
    assert again.status_code == 200, again.text
    refresh = auth_server.token_requests[-1]
    assert refresh["grant_type"] == "refresh_token" and refresh["resource"] == protected.url
    new_token = next(token for token in auth_server.access if token != first_token)
    assert f"Bearer {new_token}" in protected.authorizations
    assert f"Bearer {first_token}" not in protected.authorizations  # refreshed before sending
    stored = await _stored(api)
    assert stored["tokens"]["access_token"] == new_token


async def test_a_turn_refreshes_the_token_and_keeps_it(
    api: Api,
    protected: FakeMcp,
    auth_server: FakeAuthServer,  # noqa: F811
    openrouter: FakeOpenRouter,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    path, agent = await _connect(api, dev, protected, auth_server)
    assert (await dev.http.post(f"{path}/tools/refresh")).status_code == 200
    put = await dev.http.put(f"{path}/allowed-tools", json={"tools": ["lookup_order"]})
    assert put.status_code == 200
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    await _expire_stored_token(api)
    before = len(auth_server.token_requests)

    openrouter.call_tool("mcp_crm_lookup_order", {"order_id": "9"})
    openrouter.reply("Shipped.")
    said = await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": "Order 9?"})
    assert said.status_code == 200, said.text
    [result] = [m["content"] for m in openrouter.last_chat.messages if m["role"] == "tool"]
    assert "Order 9: shipped" in result
    assert [r["grant_type"] for r in auth_server.token_requests[before:]] == ["refresh_token"]
    stored = await _stored(api)
    assert stored["tokens"]["access_token"] in auth_server.access
    assert stored["expires_at"] > time.time()


async def test_start_needs_an_oauth_server_and_a_reachable_authorization_server(
    api: Api,
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    base = f"/api/v1/agents/{agent['id']}/mcp-servers"
    plain = await dev.http.post(base, json={"name": "a", "url": "https://mcp.example.com/mcp"})
    refused = await dev.http.post(f"{base}/{plain.json()['id']}/oauth/start")
    assert refused.status_code == 400
    with FakeMcp().running() as open_server:  # no authorization server behind it
        created = await dev.http.post(
            base, json={"name": "b", "url": open_server.url, "auth": "oauth"}
        )
        failed = await dev.http.post(f"{base}/{created.json()['id']}/oauth/start")
    assert failed.status_code == 502, failed.text
    assert "OAuth" in failed.json()["message"]
    unknown = await dev.http.post(
        f"{base}/{created.json()['id']}/oauth/callback", json={"code": "c", "state": "nope"}
    )
    assert unknown.status_code == 400


async def test_the_fake_authorization_server_checks_pkce(
    auth_server: FakeAuthServer,  # noqa: F811
) -> None:
    async with httpx.AsyncClient(base_url=auth_server.issuer) as http:
        client = (
            await http.post("/register", json={"redirect_uris": ["http://cb.example/cb"]})
        ).json()
        approved = await http.get(
            "/authorize",
            params={
                "response_type": "code",
                "client_id": client["client_id"],
                "redirect_uri": "http://cb.example/cb",
                "state": "s",
                "code_challenge": "a" * 43,
                "code_challenge_method": "S256",
            },
        )
        code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
        wrong = await http.post(
            "/token",
            data={
                "grant_type": "authorization_code",
                "code": code,
                "client_id": client["client_id"],
                "redirect_uri": "http://cb.example/cb",
                "code_verifier": "not-the-verifier",
            },
        )
    assert wrong.status_code == 400 and auth_server.pkce_failures == 1


async def _stored(api: Api) -> dict[str, Any]:
    keyring: KeyRing = api.app.state.keyring
    [row] = await raw_rows(api, "SELECT credentials FROM mcp_servers")
    data: dict[str, Any] = json.loads(keyring.decrypt(row["credentials"]))
    return data


async def _expire_stored_token(api: Api) -> None:
    """Move the stored expiry into the past (the clock of the stored token, not a sleep)."""
    keyring: KeyRing = api.app.state.keyring
    data = await _stored(api)
    data["expires_at"] = time.time() - 5
    async with api.app.state.sessionmaker() as session:
        from sqlalchemy import update

        from lunogen.tool.mcp.models import McpServer

        await session.execute(
            update(McpServer).values(credentials=keyring.encrypt(json.dumps(data)))
        )
        await session.commit()
