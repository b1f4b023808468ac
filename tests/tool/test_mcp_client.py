"""The MCP client over the SSRF-guarded transport: redirects, rebinding, https, size, timeouts."""

from __future__ import annotations

import httpx
import pytest

from lunogen.kit.http import SafeHttp, UnsafeUrlError
from lunogen.kit.safe_transport import ResponseTooLargeError, guarded_client
from lunogen.tool.mcp.client import Connection, McpConnectionError, call_tool, list_tools
from tests.fakes.mcp import FakeMcp, mcp_server  # noqa: F401 (fixture)
from tests.fakes.server import loopback_socket
from tests.fakes.website import FakeDns, LoopbackIsPublic

ALLOW_LOOPBACK = SafeHttp(allow_private=True)


async def test_a_same_origin_redirect_is_followed_through_the_guard() -> None:
    with FakeMcp(redirect_to="/mcp").running() as fake:
        moved = f"http://127.0.0.1:{fake.port}/moved"
        tools = await list_tools(Connection(url=moved), ALLOW_LOOPBACK, https_only=False)
    assert "lookup_order" in {tool.name for tool in tools}


@pytest.mark.parametrize(
    "target",
    ["http://127.0.0.2:{port}/mcp", "http://169.254.169.254/mcp", "http://10.0.0.8/mcp"],
)
async def test_a_redirect_to_a_private_or_metadata_address_is_refused(target: str) -> None:
    dns = FakeDns({"public.example": [["127.0.0.1"]]})
    guard = SafeHttp(policy=LoopbackIsPublic(), resolver=dns)
    with FakeMcp().running() as fake:
        fake.redirect_to = target.format(port=fake.port)
        allowed = await list_tools(
            Connection(url=f"http://public.example:{fake.port}/mcp"), guard, https_only=False
        )
        assert allowed  # the public first hop alone is fine
        fake.authorizations.clear()
        with pytest.raises(McpConnectionError) as refused:
            await list_tools(
                Connection(url=f"http://public.example:{fake.port}/moved"), guard, https_only=False
            )
    assert "not followed" in (refused.value.message or "")
    assert len(fake.authorizations) == 1  # only the redirecting request reached a server


async def test_a_redirect_whose_host_now_resolves_to_a_private_address_is_refused() -> None:
    # DNS rebinding: the name first answers a "public" address, then an internal one; each
    # request (redirect hops included) is resolved and checked again, then pinned.
    dns = FakeDns({"public.example": [["127.0.0.1"], ["127.0.0.2"]]})
    guard = SafeHttp(policy=LoopbackIsPublic(), resolver=dns)
    with (
        FakeMcp(redirect_to="/mcp").running() as fake,
        pytest.raises(McpConnectionError) as refused,
    ):
        await list_tools(
            Connection(url=f"http://public.example:{fake.port}/moved"), guard, https_only=False
        )
    assert "127.0.0.2" in (refused.value.message or "")
    assert "loopback" in (refused.value.message or "")
    assert dns.calls == ["public.example", "public.example"]


async def test_loopback_is_refused_unless_private_urls_are_allowed(mcp_server: FakeMcp) -> None:  # noqa: F811
    with pytest.raises(McpConnectionError) as refused:
        await list_tools(Connection(url=mcp_server.url), SafeHttp(), https_only=False)
    assert "loopback" in (refused.value.message or "")
    assert mcp_server.authorizations == []


async def test_plain_http_is_refused_when_https_is_required(mcp_server: FakeMcp) -> None:  # noqa: F811
    with pytest.raises(McpConnectionError) as refused:
        await list_tools(Connection(url=mcp_server.url), ALLOW_LOOPBACK, https_only=True)
    assert "only https://" in (refused.value.message or "")
    assert mcp_server.authorizations == []


async def test_the_transport_cuts_large_bodies_and_ignores_proxies(
    mcp_server: FakeMcp,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://10.9.9.9:3128")
    async with guarded_client(ALLOW_LOOPBACK, https_only=False, timeout=5, max_bytes=50) as http:
        with pytest.raises(ResponseTooLargeError):
            await http.post(
                mcp_server.url,
                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
                headers={"Accept": "application/json, text/event-stream"},
            )
    async with guarded_client(SafeHttp(), https_only=False, timeout=5) as http:
        with pytest.raises(UnsafeUrlError):
            await http.get("http://169.254.169.254/latest/meta-data/")
        with pytest.raises(UnsafeUrlError):
            await http.get("file:///etc/passwd")


async def test_a_call_is_bounded_by_its_time_limit(mcp_server: FakeMcp) -> None:  # noqa: F811
    with pytest.raises(McpConnectionError) as slow:
        await call_tool(
            Connection(url=mcp_server.url),
            ALLOW_LOOPBACK,
            https_only=False,
            tool="wait_forever",
            arguments={},
            timeout=0.5,
        )
    assert "did not answer within 0.5 s" in (slow.value.message or "")


async def test_an_unreachable_server_is_a_clear_error() -> None:
    sock, port = loopback_socket()  # bound, never listening: connections are refused
    try:
        with pytest.raises(McpConnectionError) as failed:
            await list_tools(
                Connection(url=f"http://127.0.0.1:{port}/mcp"), ALLOW_LOOPBACK, https_only=False
            )
    finally:
        sock.close()
    assert failed.value.message == "Could not connect to the MCP server."


def test_httpx_is_the_sdks_http_client() -> None:
    # The SDK major is pinned to 1.x because its transports take an httpx.AsyncClient, which
    # is what the SSRF kit builds (docs/mcp.md); 2.x moved to httpx2.
    import mcp.client.streamable_http as transport

    assert transport.httpx is httpx
