"""Talking to a remote MCP server: one SDK session per listing or call, over the guarded client.

Every request, the MCP ones and those the SDK's OAuth provider makes (metadata discovery,
token refresh), goes through `kit.safe_transport.guarded_client`: resolved once, private and
metadata addresses refused, the connection pinned to the checked address, each redirect hop
checked again, https only unless private URLs are allowed (development and tests). The whole
exchange runs under `asyncio.timeout(timeout_seconds)`.

The SDK is `mcp` 1.x (`mcp>=1.28,<2`), whose transports take an `httpx.AsyncClient`: the
client our SSRF kit builds. Only this module and `oauth` import it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import (
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
    ProtectedResourceMetadata,
)
from mcp.shared.exceptions import McpError
from mcp.types import CallToolResult, Tool

from lunogen.errors import LunogenError
from lunogen.kit.http import FetchError, SafeHttp
from lunogen.kit.safe_transport import guarded_client

CLIENT_NAME = "LunoGen"
LISTING_TIMEOUT_SECONDS = 30.0
MAX_LISTED_TOOLS = 200


class McpConnectionError(LunogenError):
    """The MCP server could not be reached, refused us, or answered with an error."""

    status_code = 502
    error = "MCP server unavailable"


class McpAuthorizationNeededError(McpConnectionError):
    """The server wants an OAuth authorization the owner has not given (or that lapsed)."""

    status_code = 409
    error = "MCP authorization needed"


SaveCredentials = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class OAuthCredentials:
    """An OAuth connection's state as stored (encrypted): tokens with their absolute expiry,
    the registered client, the discovered metadata. `save` persists a refreshed state."""

    data: dict[str, Any]
    save: SaveCredentials | None = None

    def tokens(self) -> OAuthToken | None:
        raw = self.data.get("tokens")
        if not raw:
            return None
        token = OAuthToken.model_validate(raw)
        expires_at = self.data.get("expires_at")
        if expires_at is not None:  # the SDK keeps a relative expiry: hand it what is left
            token.expires_in = max(0, int(expires_at - time.time()))
        return token

    def client_info(self) -> OAuthClientInformationFull | None:
        raw = self.data.get("client_info")
        return OAuthClientInformationFull.model_validate(raw) if raw else None

    def oauth_metadata(self) -> OAuthMetadata | None:
        raw = self.data.get("oauth_metadata")
        return OAuthMetadata.model_validate(raw) if raw else None

    def resource_metadata(self) -> ProtectedResourceMetadata | None:
        raw = self.data.get("resource_metadata")
        return ProtectedResourceMetadata.model_validate(raw) if raw else None

    async def store_tokens(self, tokens: OAuthToken) -> None:
        self.data["tokens"] = tokens.model_dump(mode="json", exclude_none=True)
        self.data["expires_at"] = (
            None if tokens.expires_in is None else time.time() + tokens.expires_in
        )
        if self.save is not None:
            await self.save(self.data)


class _Storage:
    """The SDK's `TokenStorage` over `OAuthCredentials`."""

    def __init__(self, credentials: OAuthCredentials) -> None:
        self.credentials = credentials

    async def get_tokens(self) -> OAuthToken | None:
        return self.credentials.tokens()

    async def set_tokens(self, tokens: OAuthToken) -> None:
        await self.credentials.store_tokens(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.credentials.client_info()

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.credentials.data["client_info"] = client_info.model_dump(
            mode="json", exclude_none=True
        )


async def _needs_consent(*_args: Any) -> Any:
    raise McpAuthorizationNeededError(
        "The MCP server needs its owner to connect it again (OAuth): open the agent's MCP "
        "servers page and choose Connect."
    )


class _StoredOAuthProvider(OAuthClientProvider):
    """The SDK's OAuth provider, started from stored state: tokens with their expiry (so an
    expired access token is refreshed before it is sent) and the metadata discovered when the
    owner connected (so a refresh goes to the authorization server's token endpoint with the
    RFC 8707 `resource`). It never starts an interactive authorization: that is the
    dashboard's (`oauth.start`), so a needed one raises `McpAuthorizationNeededError`."""

    def __init__(self, server_url: str, credentials: OAuthCredentials) -> None:
        client_info = credentials.client_info()
        if client_info is None or not client_info.redirect_uris:
            raise McpAuthorizationNeededError(
                "The MCP server's OAuth connection is incomplete: connect it again."
            )
        metadata = OAuthClientMetadata(
            redirect_uris=client_info.redirect_uris,
            client_name=CLIENT_NAME,
            token_endpoint_auth_method="none",
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        )
        super().__init__(
            server_url,
            metadata,
            _Storage(credentials),
            redirect_handler=_needs_consent,
            callback_handler=_needs_consent,
        )
        self._credentials = credentials

    async def _initialize(self) -> None:
        context = self.context
        tokens = self._credentials.tokens()
        context.current_tokens = tokens
        context.client_info = self._credentials.client_info()
        context.oauth_metadata = self._credentials.oauth_metadata()
        context.protected_resource_metadata = self._credentials.resource_metadata()
        context.auth_server_url = self._credentials.data.get("auth_server_url")
        if tokens is not None and tokens.expires_in is not None:
            context.update_token_expiry(tokens)
        self._initialized = True


@dataclass(frozen=True)
class Connection:
    """How to reach one server. `bearer` for static tokens; `oauth` for OAuth connections."""

    url: str
    auth: str = "none"
    bearer: str | None = field(default=None, repr=False)
    oauth: OAuthCredentials | None = field(default=None, repr=False)

    def client(self, guard: SafeHttp, *, https_only: bool, timeout: float) -> httpx.AsyncClient:
        headers: dict[str, str] = {}
        auth: httpx.Auth | None = None
        if self.auth == "bearer":
            if not self.bearer:
                raise McpConnectionError("The server's bearer token is not configured.")
            headers["Authorization"] = f"Bearer {self.bearer}"
        elif self.auth == "oauth":
            if self.oauth is None or self.oauth.tokens() is None:
                raise McpAuthorizationNeededError(
                    "The MCP server is not connected yet: its owner must connect it (OAuth)."
                )
            auth = _StoredOAuthProvider(self.url, self.oauth)
        return guarded_client(
            guard, https_only=https_only, timeout=timeout, headers=headers, auth=auth
        )


@dataclass(frozen=True)
class ListedTool:
    name: str
    title: str | None
    description: str
    input_schema: dict[str, Any]
    read_only: bool | None
    destructive: bool | None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "input_schema": self.input_schema,
            "read_only": self.read_only,
            "destructive": self.destructive,
        }


def _listed(tool: Tool) -> ListedTool:
    hints = tool.annotations
    return ListedTool(
        name=tool.name,
        title=tool.title or (hints.title if hints else None),
        description=tool.description or "",
        input_schema=dict(tool.inputSchema or {"type": "object"}),
        read_only=hints.readOnlyHint if hints else None,
        destructive=hints.destructiveHint if hints else None,
    )


def _explain(exc: BaseException) -> McpConnectionError:
    """One error naming what went wrong, from what the SDK and its task groups raise."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, McpConnectionError):
        return exc
    if isinstance(exc, FetchError):  # refused by the SSRF guard, or too large
        return McpConnectionError(exc.message)
    if isinstance(exc, McpError):
        return McpConnectionError(f"The MCP server answered with an error: {exc.error.message}")
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if status in (401, 403):
            return McpAuthorizationNeededError(
                f"The MCP server refused the credentials (HTTP {status})."
            )
        return McpConnectionError(f"The MCP server answered HTTP {status}: {exc}")
    if isinstance(exc, httpx.ConnectError):
        return McpConnectionError("Could not connect to the MCP server.")
    if isinstance(exc, httpx.HTTPError):
        return McpConnectionError(f"The request to the MCP server failed: {type(exc).__name__}")
    return McpConnectionError(f"The MCP exchange failed: {type(exc).__name__}: {exc}")


@asynccontextmanager
async def _session(
    connection: Connection, guard: SafeHttp, *, https_only: bool, limit: float
) -> AsyncIterator[ClientSession]:
    async with (
        connection.client(guard, https_only=https_only, timeout=limit) as client,
        streamable_http_client(connection.url, http_client=client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def list_tools(
    connection: Connection,
    guard: SafeHttp,
    *,
    https_only: bool,
    timeout: float = LISTING_TIMEOUT_SECONDS,  # noqa: ASYNC109 (becomes an McpConnectionError)
) -> list[ListedTool]:
    """The server's tools with their annotations (pages followed, at most `MAX_LISTED_TOOLS`)."""
    found: list[ListedTool] = []
    try:
        async with asyncio.timeout(timeout):
            async with _session(connection, guard, https_only=https_only, limit=timeout) as session:
                cursor: str | None = None
                while len(found) < MAX_LISTED_TOOLS:
                    page = await session.list_tools(cursor=cursor)
                    found.extend(_listed(tool) for tool in page.tools)
                    cursor = page.nextCursor
                    if not cursor:
                        break
    except TimeoutError as exc:
        raise McpConnectionError(f"The MCP server did not answer within {timeout:g} s.") from exc
    except Exception as exc:
        raise _explain(exc) from exc
    return found[:MAX_LISTED_TOOLS]


async def call_tool(
    connection: Connection,
    guard: SafeHttp,
    *,
    https_only: bool,
    tool: str,
    arguments: dict[str, Any],
    timeout: float,  # noqa: ASYNC109 (becomes an McpConnectionError)
) -> CallToolResult:
    """Call one tool; raises `McpConnectionError` (the timeout included) on any failure."""
    try:
        async with asyncio.timeout(timeout):
            async with _session(connection, guard, https_only=https_only, limit=timeout) as session:
                return await session.call_tool(tool, arguments)
    except TimeoutError as exc:
        raise McpConnectionError(
            f"The MCP server did not answer within {timeout:g} s (the call's time limit)."
        ) from exc
    except Exception as exc:
        raise _explain(exc) from exc
