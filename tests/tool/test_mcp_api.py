"""`/api/v1/agents/{id}/mcp-servers`: configuration, listing, allowlists, tenancy, bad URLs."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest

from tests.agent.support import Dev, create_agent, new_dev, raw_rows
from tests.fakes.mcp import FakeMcp, mcp_server  # noqa: F401 (fixture)
from tests.helpers import Api

pytestmark = pytest.mark.db


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"allow_private_urls": True}  # the fake MCP servers listen on 127.0.0.1


def _base(agent_id: str) -> str:
    return f"/api/v1/agents/{agent_id}/mcp-servers"


async def _server(dev: Dev, agent_id: str, **body: Any) -> dict[str, Any]:
    response = await dev.http.post(_base(agent_id), json={"name": "orders", **body})
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_add_list_allow_and_remove_a_server(api: Api, mcp_server: FakeMcp) -> None:  # noqa: F811
    dev = await new_dev(api)
    agent = await create_agent(dev)
    server = await _server(dev, agent["id"], url=mcp_server.url)
    assert server["allowed_tools"] == [] and server["tools"] == []
    assert server["auth"] == "none" and server["credentials_configured"] is False
    assert server["timeout_seconds"] == 30

    listed = await dev.http.post(f"{_base(agent['id'])}/{server['id']}/tools/refresh")
    assert listed.status_code == 200, listed.text
    tools = {tool["name"]: tool for tool in listed.json()["tools"]}
    assert set(tools) == {
        "lookup_order",
        "cancel_order",
        "wait_forever",
        "huge",
        "broken",
        "hostile",
    }
    assert tools["lookup_order"]["read_only"] is True
    assert tools["cancel_order"]["destructive"] is True
    assert tools["cancel_order"]["read_only"] is False
    assert tools["lookup_order"]["model_name"] == "mcp_orders_lookup_order"
    assert tools["lookup_order"]["input_schema"]["properties"]["order_id"]["type"] == "string"
    assert not any(tool["allowed"] for tool in tools.values())  # none until the owner picks

    allowed = await dev.http.put(
        f"{_base(agent['id'])}/{server['id']}/allowed-tools", json={"tools": ["lookup_order"]}
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["allowed_tools"] == ["lookup_order"]
    unknown = await dev.http.put(
        f"{_base(agent['id'])}/{server['id']}/allowed-tools", json={"tools": ["rm_rf"]}
    )
    assert unknown.status_code == 422
    assert unknown.json()["details"][0]["field"] == "tools"

    everything = (await dev.http.get(_base(agent["id"]))).json()
    assert [s["name"] for s in everything] == ["orders"]
    assert everything[0]["allowed_tools"] == ["lookup_order"]

    gone = await dev.http.delete(f"{_base(agent['id'])}/{server['id']}")
    assert gone.status_code == 204
    assert (await dev.http.get(f"{_base(agent['id'])}/{server['id']}")).status_code == 404
    assert await raw_rows(api, "SELECT id FROM mcp_servers") == []


async def test_a_bearer_token_is_sent_and_never_returned(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    with FakeMcp(bearer="s3cret-token").running() as fake:
        server = await _server(dev, agent["id"], url=fake.url, auth="bearer", bearer_token="nope")
        assert "nope" not in json.dumps(server) and server["credentials_configured"] is True
        refused = await dev.http.post(f"{_base(agent['id'])}/{server['id']}/tools/refresh")
        assert refused.status_code == 409, refused.text
        assert "401" in refused.json()["message"]
        assert (await dev.http.get(f"{_base(agent['id'])}/{server['id']}")).json()["last_error"]

        changed = await dev.http.patch(
            f"{_base(agent['id'])}/{server['id']}", json={"bearer_token": "s3cret-token"}
        )
        assert changed.status_code == 200, changed.text
        listed = await dev.http.post(f"{_base(agent['id'])}/{server['id']}/tools/refresh")
        assert listed.status_code == 200, listed.text
        assert listed.json()["last_error"] is None
        assert "Bearer s3cret-token" in fake.authorizations
    [row] = await raw_rows(api, "SELECT credentials FROM mcp_servers")
    assert "s3cret-token" not in row["credentials"]  # encrypted at rest


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("stdio:npx -y @modelcontextprotocol/server-filesystem", "sandbox"),
        ("file:///etc/passwd", "Only http:// and https://"),
        ("npx some-server", "sandbox"),
        ("http://169.254.169.254/mcp", "metadata"),
        ("ftp://example.com/mcp", "Only http:// and https://"),
        ("https://user:pw@example.com/mcp", "user name or password"),
        ("https://example.com:25/mcp", "reserved"),
    ],
)
async def test_bad_urls_are_refused(api: Api, url: str, why: str) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    response = await dev.http.post(_base(agent["id"]), json={"name": "x", "url": url})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["details"][0]["field"] == "url"
    assert why in body["message"]


@pytest.mark.parametrize("settings_overrides", [{"allow_private_urls": False}])
async def test_plain_http_and_private_addresses_are_refused_in_production(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    for url, why in [
        ("http://mcp.example.com/mcp", "must use https"),
        ("https://127.0.0.1/mcp", "loopback"),
        ("https://10.1.2.3/mcp", "private"),
    ]:
        response = await dev.http.post(_base(agent["id"]), json={"name": "x", "url": url})
        assert response.status_code == 422, response.text
        assert why in response.json()["message"]
    ok = await dev.http.post(
        _base(agent["id"]), json={"name": "x", "url": "https://mcp.example.com/mcp"}
    )
    assert ok.status_code == 201, ok.text


async def test_input_is_checked(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    url = "https://mcp.example.com/mcp"
    cases: list[tuple[dict[str, Any], int]] = [
        ({"name": "Bad Name", "url": url}, 422),
        ({"name": "x", "url": url, "auth": "bearer"}, 422),
        ({"name": "x", "url": url, "bearer_token": "t"}, 422),
        ({"name": "x", "url": url, "auth": "magic"}, 422),
        ({"name": "x", "url": url, "timeout_seconds": 0}, 422),
        ({"name": "x", "url": url, "allowed_tools": ["ok", "not ok!"]}, 422),
        ({"name": "x", "url": url, "extra": 1}, 422),
    ]
    for body, status in cases:
        response = await dev.http.post(_base(agent["id"]), json=body)
        assert response.status_code == status, (body, response.text)
    await _server(dev, agent["id"], url=url)
    again = await dev.http.post(_base(agent["id"]), json={"name": "orders", "url": url})
    assert again.status_code == 409


async def test_another_owners_agent_and_server_answer_404(api: Api) -> None:
    alice, bob = await new_dev(api), await new_dev(api)
    agent = await create_agent(alice)
    server = await _server(alice, agent["id"], url="https://mcp.example.com/mcp")
    mine = await create_agent(bob)
    path = f"{_base(agent['id'])}/{server['id']}"
    for method, url, body in [
        ("GET", _base(agent["id"]), None),
        ("POST", _base(agent["id"]), {"name": "y", "url": "https://a.example/mcp"}),
        ("GET", path, None),
        ("PATCH", path, {"timeout_seconds": 5}),
        ("DELETE", path, None),
        ("POST", f"{path}/tools/refresh", None),
        ("PUT", f"{path}/allowed-tools", {"tools": []}),
        ("POST", f"{path}/oauth/start", None),
        ("POST", f"{path}/oauth/callback", {"code": "c", "state": "s"}),
        # bob's own agent with alice's server id
        ("GET", f"{_base(mine['id'])}/{server['id']}", None),
    ]:
        response = await bob.http.request(method, url, json=body)
        assert response.status_code == 404, (method, url, response.text)
    assert (await alice.http.get(path)).status_code == 200


async def test_no_write_transaction_is_open_while_a_server_answers(
    api: Api,
    database_url: str,
    mcp_server: FakeMcp,  # noqa: F811
) -> None:
    """On SQLite a write transaction holds the database's only write lock: while the MCP server
    handles our requests, another connection can take it at once."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's write lock is what this looks at")
    path = database_url.split("///", 1)[1]
    took: list[bool] = []

    def try_write_lock() -> None:
        connection = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
            took.append(True)
        except sqlite3.OperationalError:
            took.append(False)
        finally:
            connection.close()

    dev = await new_dev(api)
    agent = await create_agent(dev)
    server = await _server(dev, agent["id"], url=mcp_server.url)
    mcp_server.on_request = try_write_lock
    listed = await dev.http.post(f"{_base(agent['id'])}/{server['id']}/tools/refresh")
    assert listed.status_code == 200, listed.text
    assert took and all(took), took
