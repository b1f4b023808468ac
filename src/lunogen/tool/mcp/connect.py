"""Request steps that talk to an MCP or authorization server: listing tools, OAuth start/finish.

Called by the API endpoints and the dashboard with the request's session, after they found the
owner's agent. Each step reads what it needs, COMMITS the request's transaction (so no write
transaction, nor SQLite's write lock, is held while the remote server answers), talks to the
server through the SSRF guard, then writes the outcome in a new transaction that the request
boundary commits. Nothing else in the MCP package commits.
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.config import Settings
from lunogen.errors import BadRequestError, ConflictError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.http import SafeHttp
from lunogen.kit.time import utcnow
from lunogen.tool.mcp import client, oauth, service
from lunogen.tool.mcp.client import McpConnectionError
from lunogen.tool.mcp.models import McpServer


def guard(settings: Settings) -> tuple[SafeHttp, bool]:
    """The SSRF guard and whether plain http is refused (it is unless private URLs are allowed,
    which is for development and tests)."""
    return SafeHttp.from_settings(settings), not settings.allow_private_urls


async def _again(
    session: AsyncSession, *, owner_id: str, agent_id: str, server_id: str, url: str
) -> McpServer:
    row = await service.get_server(
        session, owner_id=owner_id, agent_id=agent_id, server_id=server_id, for_update=True
    )
    if row.url != url:
        raise ConflictError("The server's URL changed meanwhile: try again.")
    return row


async def refresh_tools(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    server_id: str,
    keyring: KeyRing,
    settings: Settings,
) -> McpServer:
    """Connect, list the server's tools and store the listing (allowlisted names that the
    server no longer lists are dropped from the allowlist)."""
    row = await service.get_server(
        session, owner_id=owner_id, agent_id=agent_id, server_id=server_id
    )
    url, connection = row.url, service.connection(row, keyring)
    await session.commit()
    http, https_only = guard(settings)
    try:
        tools = await client.list_tools(connection, http, https_only=https_only)
    except McpConnectionError as exc:
        row = await _again(
            session, owner_id=owner_id, agent_id=agent_id, server_id=server_id, url=url
        )
        row.last_error = exc.message or exc.error
        row.updated_at = utcnow()
        await session.commit()
        raise
    row = await _again(session, owner_id=owner_id, agent_id=agent_id, server_id=server_id, url=url)
    service.store_listing(row, tools)
    listed = {tool.name for tool in tools}
    row.allowed_tools = [name for name in row.allowed_tools if name in listed]
    if connection.oauth is not None and row.auth == "oauth":
        service.store_oauth(row, keyring, connection.oauth.data)
    await session.flush()
    return row


async def start_oauth(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    server_id: str,
    keyring: KeyRing,
    settings: Settings,
) -> str:
    """Discover, register and store the pending authorization; the URL to send the owner to."""
    row = await service.get_server(
        session, owner_id=owner_id, agent_id=agent_id, server_id=server_id
    )
    if row.auth != "oauth":
        raise BadRequestError("This server does not use OAuth (its auth is not 'oauth').")
    url = row.url
    earlier = service.oauth_credentials(row, keyring)
    await session.commit()
    http, https_only = guard(settings)
    authorization_url, pending = await oauth.start(
        server_url=url,
        guard=http,
        https_only=https_only,
        callback_url=oauth.redirect_uri(settings.public_url),
        earlier=earlier.data if earlier else None,
    )
    row = await _again(session, owner_id=owner_id, agent_id=agent_id, server_id=server_id, url=url)
    row.oauth_pending = keyring.encrypt(json.dumps(pending))
    row.oauth_state_hash = oauth.state_hash(pending["state"])
    row.oauth_pending_until = utcnow() + oauth.PENDING_FOR
    await session.flush()
    return authorization_url


def authorization_not_found() -> BadRequestError:
    return BadRequestError(
        "No authorization in progress matches this state: start connecting the server again.",
        error="Unknown OAuth state",
    )


async def pending_server(session: AsyncSession, *, owner_id: str, state: str) -> McpServer:
    """The owner's server whose authorization in progress has this `state`."""
    query = select(McpServer).where(
        McpServer.oauth_state_hash == oauth.state_hash(state), McpServer.owner_id == owner_id
    )
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None or row.oauth_pending is None:
        raise authorization_not_found()
    return row


async def finish_oauth(
    session: AsyncSession,
    *,
    owner_id: str,
    state: str,
    code: str,
    keyring: KeyRing,
    settings: Settings,
    agent_id: str | None = None,
    server_id: str | None = None,
) -> McpServer:
    """Exchange the code of the authorization with this `state`; store the tokens encrypted.

    The state is spent first (committed), so a replayed callback finds nothing.
    """
    row = await pending_server(session, owner_id=owner_id, state=state)
    if (agent_id is not None and row.agent_id != agent_id) or (
        server_id is not None and row.id != server_id
    ):
        raise authorization_not_found()
    expired = row.oauth_pending_until is None or row.oauth_pending_until < utcnow()
    pending = json.loads(keyring.decrypt(row.oauth_pending or ""))
    server_id, server_agent, url = row.id, row.agent_id, row.url
    row.oauth_pending = None
    row.oauth_state_hash = None
    row.oauth_pending_until = None
    await session.commit()
    if expired:
        raise BadRequestError(
            "This authorization has expired: start connecting the server again.",
            error="OAuth authorization expired",
        )
    http, https_only = guard(settings)
    try:
        credentials = await oauth.finish(
            pending=pending, code=code, guard=http, https_only=https_only
        )
    except McpConnectionError as exc:
        row = await _again(
            session, owner_id=owner_id, agent_id=server_agent, server_id=server_id, url=url
        )
        row.last_error = exc.message or exc.error
        await session.commit()
        raise
    row = await _again(
        session, owner_id=owner_id, agent_id=server_agent, server_id=server_id, url=url
    )
    service.store_oauth(row, keyring, credentials)
    row.last_error = None
    row.updated_at = utcnow()
    await session.flush()
    return row
