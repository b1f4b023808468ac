"""`/api/v1/agents/{id}/mcp-servers`: an agent's remote MCP servers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from lunogen.agent.service import get_agent
from lunogen.audit import service as audit
from lunogen.auth.dependencies import ToolsRead, ToolsWrite
from lunogen.auth.principal import Principal
from lunogen.config import Settings
from lunogen.db import DbSession
from lunogen.kit.crypto import KeyRing
from lunogen.tool.mcp import connect, schemas, service
from lunogen.tool.mcp.models import McpServer
from lunogen.tool.mcp.oauth import redirect_uri

router = APIRouter(prefix="/api/v1/agents", tags=["mcp"])

Responses = dict[int | str, dict[str, Any]]
_NOT_FOUND: Responses = {404: {"description": "No such agent, or no such MCP server on it"}}
_INVALID: Responses = {422: {"description": "Invalid input; `details` names the field"}}
_REMOTE: Responses = {
    502: {"description": "The MCP (or authorization) server could not be reached or refused"},
    409: {"description": "The server needs an OAuth authorization first"},
}


def _keyring(request: Request) -> KeyRing:
    ring: KeyRing = request.app.state.keyring
    return ring


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _rendered(db: DbSession, row: McpServer) -> schemas.McpServer:
    counts = await service.calls_since(db, server_ids=[row.id])
    return service.render(row, calls_30d=counts.get(row.id, 0))


def _audit(
    db: DbSession, principal: Principal, action: str, row: McpServer, **details: Any
) -> None:
    audit.record_by(
        db,
        principal,
        action=action,
        target_type="mcp_server",
        target_id=row.id,
        details={"agent_id": row.agent_id, "name": row.name, **details},
    )


@router.get(
    "/{agent_id}/mcp-servers",
    response_model=list[schemas.McpServer],
    responses=_NOT_FOUND,
)
async def list_mcp_servers(
    agent_id: str, principal: ToolsRead, db: DbSession
) -> list[schemas.McpServer]:
    """The agent's remote MCP servers with their listed tools and allowlists. Scope:
    `tools:read`. Credentials are never returned (`credentials_configured` says if set)."""
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    rows = await service.list_servers(db, owner_id=principal.user.id, agent_id=agent_id)
    counts = await service.calls_since(db, server_ids=[row.id for row in rows])
    return [service.render(row, calls_30d=counts.get(row.id, 0)) for row in rows]


@router.post(
    "/{agent_id}/mcp-servers",
    status_code=201,
    response_model=schemas.McpServer,
    responses={**_NOT_FOUND, **_INVALID, 409: {"description": "Name taken, or too many servers"}},
)
async def create_mcp_server(
    agent_id: str,
    data: schemas.McpServerCreate,
    principal: ToolsWrite,
    db: DbSession,
    request: Request,
) -> schemas.McpServer:
    """Add a remote MCP server (Streamable HTTP) to the agent. Scope: `tools:write`.

    Only `https://` URLs (plain `http://` only on servers that allow private URLs, for
    development); local stdio servers are not run by the platform (run them inside the agent's
    sandbox with `run_code`). No tool is allowed until you list the server's tools and pick
    them (`allowed_tools`).
    """
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    settings = _settings(request)
    row = await service.create_server(
        db,
        owner_id=principal.user.id,
        agent_id=agent_id,
        data=data,
        keyring=_keyring(request),
        allow_private=settings.allow_private_urls,
    )
    _audit(db, principal, "mcp_server.created", row, url=row.url, auth=row.auth)
    return service.render(row)


@router.get(
    "/{agent_id}/mcp-servers/{server_id}",
    response_model=schemas.McpServer,
    responses=_NOT_FOUND,
)
async def get_mcp_server(
    agent_id: str, server_id: str, principal: ToolsRead, db: DbSession
) -> schemas.McpServer:
    """One MCP server of the agent. Scope: `tools:read`."""
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    row = await service.get_server(
        db, owner_id=principal.user.id, agent_id=agent_id, server_id=server_id
    )
    return await _rendered(db, row)


@router.patch(
    "/{agent_id}/mcp-servers/{server_id}",
    response_model=schemas.McpServer,
    responses={**_NOT_FOUND, **_INVALID, 409: {"description": "Name taken"}},
)
async def update_mcp_server(
    agent_id: str,
    server_id: str,
    data: schemas.McpServerUpdate,
    principal: ToolsWrite,
    db: DbSession,
    request: Request,
) -> schemas.McpServer:
    """Change a server. A new URL or auth kind drops its tool listing and credentials.
    Scope: `tools:write`."""
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    row = await service.get_server(
        db, owner_id=principal.user.id, agent_id=agent_id, server_id=server_id, for_update=True
    )
    row = await service.update_server(
        db,
        row=row,
        data=data,
        keyring=_keyring(request),
        allow_private=_settings(request).allow_private_urls,
    )
    _audit(db, principal, "mcp_server.updated", row, fields=sorted(data.model_fields_set))
    return await _rendered(db, row)


@router.delete(
    "/{agent_id}/mcp-servers/{server_id}",
    status_code=204,
    response_class=Response,
    responses=_NOT_FOUND,
)
async def delete_mcp_server(
    agent_id: str, server_id: str, principal: ToolsWrite, db: DbSession
) -> Response:
    """Remove a server and its stored credentials. Scope: `tools:write`."""
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    row = await service.get_server(
        db, owner_id=principal.user.id, agent_id=agent_id, server_id=server_id, for_update=True
    )
    _audit(db, principal, "mcp_server.deleted", row)
    await service.delete_server(db, row=row)
    return Response(status_code=204)


@router.post(
    "/{agent_id}/mcp-servers/{server_id}/tools/refresh",
    response_model=schemas.McpServer,
    responses={**_NOT_FOUND, **_REMOTE},
)
async def refresh_mcp_tools(
    agent_id: str, server_id: str, principal: ToolsWrite, db: DbSession, request: Request
) -> schemas.McpServer:
    """Connect to the server and store the tools it lists, with their annotations
    (`readOnlyHint`, `destructiveHint`). Allowed tools the server no longer lists leave the
    allowlist. Scope: `tools:write`."""
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    row = await connect.refresh_tools(
        db,
        owner_id=principal.user.id,
        agent_id=agent_id,
        server_id=server_id,
        keyring=_keyring(request),
        settings=_settings(request),
    )
    return await _rendered(db, row)


@router.put(
    "/{agent_id}/mcp-servers/{server_id}/allowed-tools",
    response_model=schemas.McpServer,
    responses={**_NOT_FOUND, **_INVALID},
)
async def set_mcp_allowed_tools(
    agent_id: str,
    server_id: str,
    data: schemas.AllowedTools,
    principal: ToolsWrite,
    db: DbSession,
) -> schemas.McpServer:
    """Replace the list of the server's tools the agent may call (names from its listing).
    An empty list allows none. Scope: `tools:write`."""
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    row = await service.get_server(
        db, owner_id=principal.user.id, agent_id=agent_id, server_id=server_id, for_update=True
    )
    service.set_allowed_tools(row, data.tools)
    _audit(db, principal, "mcp_server.tools_allowed", row, tools=list(row.allowed_tools))
    await db.flush()
    return await _rendered(db, row)


@router.post(
    "/{agent_id}/mcp-servers/{server_id}/oauth/start",
    response_model=schemas.OAuthStart,
    responses={**_NOT_FOUND, **_REMOTE, 400: {"description": "The server does not use OAuth"}},
)
async def start_mcp_oauth(
    agent_id: str, server_id: str, principal: ToolsWrite, db: DbSession, request: Request
) -> schemas.OAuthStart:
    """Begin connecting an OAuth server: discovers its authorization server, registers
    LunoGen as a client, and returns the URL to open in the owner's browser (PKCE S256, with
    the RFC 8707 `resource`). The authorization server then redirects to the dashboard's
    callback, which completes the connection; API clients that receive the redirect
    themselves complete it with `oauth/callback`. Scope: `tools:write`."""
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    settings = _settings(request)
    url = await connect.start_oauth(
        db,
        owner_id=principal.user.id,
        agent_id=agent_id,
        server_id=server_id,
        keyring=_keyring(request),
        settings=settings,
    )
    return schemas.OAuthStart(authorization_url=url, redirect_uri=redirect_uri(settings.public_url))


@router.post(
    "/{agent_id}/mcp-servers/{server_id}/oauth/callback",
    response_model=schemas.McpServer,
    responses={**_NOT_FOUND, **_REMOTE, 400: {"description": "Unknown or expired state"}},
)
async def finish_mcp_oauth(
    agent_id: str,
    server_id: str,
    data: schemas.OAuthCallback,
    principal: ToolsWrite,
    db: DbSession,
    request: Request,
) -> schemas.McpServer:
    """Complete an OAuth connection with the `code` and `state` the authorization server
    redirected with. Tokens are stored encrypted and never returned. Scope: `tools:write`."""
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    await service.get_server(db, owner_id=principal.user.id, agent_id=agent_id, server_id=server_id)
    row = await connect.finish_oauth(
        db,
        owner_id=principal.user.id,
        state=data.state,
        code=data.code,
        keyring=_keyring(request),
        settings=_settings(request),
        agent_id=agent_id,
        server_id=server_id,
    )
    _audit(db, principal, "mcp_server.oauth_connected", row)
    return await _rendered(db, row)
