"""The MCP servers page: add a server, list and allow tools, connect OAuth, remove it."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.agent.support import create_agent, new_dev, raw_rows
from tests.fakes.mcp import FakeAuthServer, FakeMcp, auth_server, mcp_server  # noqa: F401
from tests.helpers import Api, Signed

pytestmark = pytest.mark.db


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"allow_private_urls": True}


def _form(person: Signed, **fields: Any) -> dict[str, Any]:
    return {"csrf_token": person.csrf, **fields}


async def test_add_list_allow_and_remove_from_the_page(api: Api, mcp_server: FakeMcp) -> None:  # noqa: F811
    dev = await new_dev(api)
    person = dev.person
    agent = await create_agent(dev, name="Helper")
    page_url = f"/agents/{agent['id']}/mcp"
    detail = await person.client.get(f"/agents/{agent['id']}")
    assert f'href="{page_url}"' in detail.text
    empty = await person.client.get(page_url)
    assert empty.status_code == 200 and "No MCP server yet." in empty.text

    bad = await person.client.post(
        page_url, data=_form(person, name="orders", url="stdio:npx server", auth="none")
    )
    assert bad.status_code == 422 and 'role="alert"' in bad.text and "sandbox" in bad.text
    no_csrf = await person.client.post(page_url, data={"name": "orders", "url": mcp_server.url})
    assert no_csrf.status_code == 403

    added = await person.client.post(
        page_url, data=_form(person, name="orders", url=mcp_server.url, auth="none")
    )
    assert added.status_code == 303 and added.headers["location"] == f"{page_url}?done=added"
    [server] = (await dev.http.get(f"/api/v1/agents/{agent['id']}/mcp-servers")).json()
    base = f"{page_url}/{server['id']}"

    listed = await person.client.post(f"{base}/refresh", data=_form(person))
    assert listed.status_code == 303, listed.text
    shown = await person.client.get(listed.headers["location"])
    assert "Tools listed." in shown.text
    assert "mcp_orders_lookup_order" in shown.text and "writes (destructive)" in shown.text

    allowed = await person.client.post(
        f"{base}/allowed", data=_form(person, tool=["lookup_order", "hostile"])
    )
    assert allowed.status_code == 303
    [server] = (await dev.http.get(f"/api/v1/agents/{agent['id']}/mcp-servers")).json()
    assert server["allowed_tools"] == ["lookup_order", "hostile"]

    removed = await person.client.post(f"{base}/delete", data=_form(person))
    assert removed.status_code == 303
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}/mcp-servers")).json() == []


async def test_connect_with_oauth_through_the_dashboard(
    api: Api,
    auth_server: FakeAuthServer,  # noqa: F811
) -> None:
    dev = await new_dev(api)
    person = dev.person
    agent = await create_agent(dev)
    with FakeMcp(auth_server=auth_server).running() as fake:
        page_url = f"/agents/{agent['id']}/mcp"
        added = await person.client.post(
            page_url, data=_form(person, name="crm", url=fake.url, auth="oauth")
        )
        assert added.status_code == 303
        [server] = (await dev.http.get(f"/api/v1/agents/{agent['id']}/mcp-servers")).json()
        connect = await person.client.post(f"{page_url}/{server['id']}/connect", data=_form(person))
        assert connect.status_code == 200, connect.text
        link = connect.text.split('id="mcp-authorize" href="', 1)[1].split('"', 1)[0]
        link = link.replace("&amp;", "&")
        assert link.startswith(f"{auth_server.issuer}/authorize?")
        async with httpx.AsyncClient() as browser:
            approved = await browser.get(link)
        back = urlsplit(approved.headers["location"])
        assert back.path == "/mcp/oauth/callback"
        returned = await person.client.get(f"{back.path}?{back.query}")
        assert returned.status_code == 303, returned.text
        assert returned.headers["location"] == f"{page_url}?done=connected"
        [server] = (await dev.http.get(f"/api/v1/agents/{agent['id']}/mcp-servers")).json()
        assert server["oauth_connected"] is True
        [row] = await raw_rows(api, "SELECT credentials FROM mcp_servers")
        assert not any(token in row["credentials"] for token in auth_server.access)
        again = await person.client.get(f"{back.path}?{back.query}")  # a replayed callback
        assert again.status_code == 400


async def test_another_owners_page_is_not_found(api: Api) -> None:
    owner, stranger = await new_dev(api), await new_dev(api)
    agent = await create_agent(owner)
    assert (await stranger.person.client.get(f"/agents/{agent['id']}/mcp")).status_code == 404
