"""Remote MCP servers of an agent: configuration, allowlists, credentials, tool listings.

Tenancy: callers first find the owner's live agent (`agent.service.get_agent`, else 404: the
endpoints and the dashboard do, this module does not import the agent room, which imports the
tool room); every server is then reached through `get_server`, which matches the agent and the
owner (else 404). Services flush; the request or job commits. Nothing here talks to a
server: callers connect (`client`, `connect`) with no write transaction open.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.errors import ConflictError, NotFoundError, ValidationFailedError
from lunogen.kit.crypto import KeyRing
from lunogen.kit.http import AddressPolicy, UnsafeUrlError, parse_url
from lunogen.kit.time import utcnow
from lunogen.tool.mcp import schemas
from lunogen.tool.mcp.client import Connection, ListedTool, OAuthCredentials
from lunogen.tool.mcp.models import McpServer, McpToolCall

MAX_SERVERS_PER_AGENT = 10
MODEL_NAME_LIMIT = 64  # OpenAI-compatible function names: ^[A-Za-z0-9_-]{1,64}$
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")
_TOOL_NAME = re.compile(schemas.TOOL_NAME_PATTERN)


def server_not_found() -> NotFoundError:
    return NotFoundError("No MCP server with this id on this agent", error="MCP server not found")


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL to store, else a 422 naming `url`.

    Only http(s) URLs (a local stdio server, `file:` and other schemes are refused: they run
    only inside the agent's sandbox); https only unless private URLs are allowed (development);
    an IP literal must pass the address policy now (host names are resolved at every request).
    """
    try:
        parsed = parse_url(url.strip())
    except UnsafeUrlError as exc:
        message = exc.message or "The URL is not allowed."
        if not url.strip().lower().startswith(("http://", "https://")):
            message += (
                " Local (stdio) MCP servers are not run by the platform: start them inside the "
                "agent's sandbox with run_code."
            )
        raise ValidationFailedError(message, field="url") from exc
    if parsed.scheme != "https" and not allow_private:
        raise ValidationFailedError("The MCP server URL must use https.", field="url")
    if parsed.fragment:
        raise ValidationFailedError("The MCP server URL must not have a #fragment.", field="url")
    host = parsed.raw_host.decode("ascii")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        reason = AddressPolicy(allow_private=allow_private).refusal(address)
        if reason is not None:
            raise ValidationFailedError(f"{host} is {reason}; it is not allowed.", field="url")
    return str(parsed)


def model_name(server: str, tool: str) -> str:
    """The name the model calls a server's tool by: `mcp_<server>_<tool>`, made of the
    characters function names allow, at most 64 long (a long one ends in a short hash)."""
    name = _UNSAFE_NAME.sub("_", f"mcp_{server}_{tool}")
    if len(name) > MODEL_NAME_LIMIT:
        digest = hashlib.sha256(tool.encode()).hexdigest()[:8]
        name = f"{name[: MODEL_NAME_LIMIT - 9]}_{digest}"
    return name


def _check_tools(names: Sequence[str]) -> list[str]:
    bad = [name for name in names if not _TOOL_NAME.match(name)]
    if bad:
        raise ValidationFailedError(f"{bad[0]!r} is not a valid tool name.", field="allowed_tools")
    return list(dict.fromkeys(names))


async def list_servers(session: AsyncSession, *, owner_id: str, agent_id: str) -> list[McpServer]:
    query = select(McpServer).where(McpServer.agent_id == agent_id, McpServer.owner_id == owner_id)
    return list((await session.execute(query.order_by(McpServer.name))).scalars())


async def get_server(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    server_id: str,
    for_update: bool = False,
) -> McpServer:
    query = select(McpServer).where(
        McpServer.id == server_id, McpServer.agent_id == agent_id, McpServer.owner_id == owner_id
    )
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).scalar_one_or_none()
    if row is None:
        raise server_not_found()
    return row


async def _name_taken(
    session: AsyncSession, *, agent_id: str, name: str, other_than: str | None = None
) -> bool:
    query = select(McpServer.id).where(McpServer.agent_id == agent_id, McpServer.name == name)
    found = (await session.execute(query)).scalar_one_or_none()
    return found is not None and found != other_than


def _bearer(keyring: KeyRing, token: str) -> str:
    return keyring.encrypt(json.dumps({"token": token}))


async def create_server(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    data: schemas.McpServerCreate,
    keyring: KeyRing,
    allow_private: bool,
) -> McpServer:
    """Add a server to the owner's agent (already found by the caller). No connection is
    made: list its tools next."""
    url = check_url(data.url, allow_private=allow_private)
    if data.auth == "bearer" and not data.bearer_token:
        raise ValidationFailedError(
            "A bearer token is required with auth 'bearer'.", field="bearer_token"
        )
    if data.auth != "bearer" and data.bearer_token:
        raise ValidationFailedError(
            "bearer_token is only used with auth 'bearer'.", field="bearer_token"
        )
    count = await session.scalar(
        select(func.count()).select_from(McpServer).where(McpServer.agent_id == agent_id)
    )
    if (count or 0) >= MAX_SERVERS_PER_AGENT:
        raise ConflictError(f"An agent can have at most {MAX_SERVERS_PER_AGENT} MCP servers.")
    if await _name_taken(session, agent_id=agent_id, name=data.name):
        raise ConflictError(f"This agent already has an MCP server named {data.name!r}.")
    row = McpServer(
        agent_id=agent_id,
        owner_id=owner_id,
        name=data.name,
        url=url,
        auth=data.auth,
        credentials=_bearer(keyring, data.bearer_token) if data.bearer_token else None,
        tools=[],
        allowed_tools=_check_tools(data.allowed_tools),
        timeout_seconds=data.timeout_seconds,
        max_result_chars=data.max_result_chars,
    )
    session.add(row)
    await session.flush()
    return row


def _forget_connection(row: McpServer) -> None:
    row.credentials = None
    row.oauth_pending = None
    row.oauth_state_hash = None
    row.oauth_pending_until = None


async def update_server(
    session: AsyncSession,
    *,
    row: McpServer,
    data: schemas.McpServerUpdate,
    keyring: KeyRing,
    allow_private: bool,
) -> McpServer:
    """Apply a partial update. A new URL or auth kind drops the listing and the credentials."""
    if data.name is not None and data.name != row.name:
        if await _name_taken(session, agent_id=row.agent_id, name=data.name, other_than=row.id):
            raise ConflictError(f"This agent already has an MCP server named {data.name!r}.")
        row.name = data.name
    if data.url is not None:
        url = check_url(data.url, allow_private=allow_private)
        if url != row.url:
            row.url = url
            row.tools = []
            row.tools_listed_at = None
            row.last_error = None
            _forget_connection(row)
    if data.auth is not None and data.auth != row.auth:
        row.auth = data.auth
        _forget_connection(row)
    if data.bearer_token is not None:
        if row.auth != "bearer":
            raise ValidationFailedError(
                "bearer_token is only used with auth 'bearer'.", field="bearer_token"
            )
        row.credentials = _bearer(keyring, data.bearer_token)
    if row.auth == "bearer" and row.credentials is None:
        raise ValidationFailedError(
            "A bearer token is required with auth 'bearer'.", field="bearer_token"
        )
    if data.allowed_tools is not None:
        row.allowed_tools = _check_tools(data.allowed_tools)
    if data.timeout_seconds is not None:
        row.timeout_seconds = data.timeout_seconds
    if data.max_result_chars is not None:
        row.max_result_chars = data.max_result_chars
    row.updated_at = utcnow()
    await session.flush()
    return row


def set_allowed_tools(row: McpServer, names: Sequence[str]) -> None:
    """Replace the allowlist. Names must be among the listed tools once a listing exists."""
    names = _check_tools(names)
    if row.tools_listed_at is not None:
        listed = {tool["name"] for tool in row.tools}
        unknown = [name for name in names if name not in listed]
        if unknown:
            raise ValidationFailedError(
                f"The server does not list a tool named {unknown[0]!r}.", field="tools"
            )
    row.allowed_tools = names
    row.updated_at = utcnow()


async def delete_server(session: AsyncSession, *, row: McpServer) -> None:
    await session.delete(row)
    await session.flush()


def store_listing(row: McpServer, tools: Sequence[ListedTool]) -> None:
    row.tools = [tool.as_json() for tool in tools]
    row.tools_listed_at = utcnow()
    row.last_error = None
    row.updated_at = row.tools_listed_at


def oauth_credentials(row: McpServer, keyring: KeyRing) -> OAuthCredentials | None:
    if row.auth != "oauth" or row.credentials is None:
        return None
    return OAuthCredentials(data=json.loads(keyring.decrypt(row.credentials)))


def connection(row: McpServer, keyring: KeyRing) -> Connection:
    """How to reach the server now (credentials decrypted; refreshed OAuth tokens land in
    the returned connection's `oauth.data`: store them with `store_oauth`)."""
    bearer = None
    if row.auth == "bearer" and row.credentials is not None:
        bearer = json.loads(keyring.decrypt(row.credentials)).get("token")
    return Connection(
        url=row.url, auth=row.auth, bearer=bearer, oauth=oauth_credentials(row, keyring)
    )


def store_oauth(row: McpServer, keyring: KeyRing, data: dict[str, Any]) -> None:
    row.credentials = keyring.encrypt(json.dumps(data))


async def calls_since(
    session: AsyncSession, *, server_ids: Sequence[str], days: int = 30
) -> dict[str, int]:
    if not server_ids:
        return {}
    since = utcnow() - timedelta(days=days)
    query = (
        select(McpToolCall.server_id, func.count())
        .where(McpToolCall.server_id.in_(server_ids), McpToolCall.created_at >= since)
        .group_by(McpToolCall.server_id)
    )
    return {str(server_id): int(count) for server_id, count in await session.execute(query)}


def render(row: McpServer, *, calls_30d: int = 0) -> schemas.McpServer:
    allowed = set(row.allowed_tools)
    return schemas.McpServer(
        id=row.id,
        agent_id=row.agent_id,
        name=row.name,
        url=row.url,
        auth=row.auth,
        credentials_configured=row.credentials is not None,
        oauth_connected=row.auth == "oauth" and row.credentials is not None,
        tools=[
            schemas.McpTool(
                name=tool["name"],
                model_name=model_name(row.name, tool["name"]),
                title=tool.get("title"),
                description=tool.get("description") or "",
                input_schema=tool.get("input_schema") or {},
                read_only=tool.get("read_only"),
                destructive=tool.get("destructive"),
                allowed=tool["name"] in allowed,
            )
            for tool in row.tools
        ],
        allowed_tools=list(row.allowed_tools),
        tools_listed_at=row.tools_listed_at,
        timeout_seconds=row.timeout_seconds,
        max_result_chars=row.max_result_chars,
        last_error=row.last_error,
        calls_30d=calls_30d,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


async def export_servers(session: AsyncSession, *, owner_id: str) -> list[dict[str, Any]]:
    """The owner's MCP server configurations for the data export (no credentials)."""
    query = select(McpServer).where(McpServer.owner_id == owner_id).order_by(McpServer.created_at)
    rows = list((await session.execute(query)).scalars())
    return [
        {
            "id": row.id,
            "agent_id": row.agent_id,
            "name": row.name,
            "url": row.url,
            "auth": row.auth,
            "credentials_configured": row.credentials is not None,
            "allowed_tools": list(row.allowed_tools),
            "tools": [tool["name"] for tool in row.tools],
            "timeout_seconds": row.timeout_seconds,
            "max_result_chars": row.max_result_chars,
            "created_at": row.created_at.isoformat(),
        }
        for row in rows
    ]


async def file_entries(session: AsyncSession, *, agent_id: str) -> list[dict[str, Any]]:
    """The agent's servers as agent-file entries: URLs and allowlists, never credentials."""
    query = select(McpServer).where(McpServer.agent_id == agent_id).order_by(McpServer.name)
    return [
        schemas.McpServerFileEntry(
            name=row.name,
            url=row.url,
            auth=row.auth,
            allowed_tools=list(row.allowed_tools),
            timeout_seconds=row.timeout_seconds,
            max_result_chars=row.max_result_chars,
        ).model_dump()
        for row in (await session.execute(query)).scalars()
    ]


def file_problems(
    entries: Sequence[schemas.McpServerFileEntry], *, allow_private: bool
) -> list[tuple[str, str]]:
    """(path, problem) for each entry of an agent file that cannot be imported."""
    problems: list[tuple[str, str]] = []
    if len(entries) > MAX_SERVERS_PER_AGENT:
        problems.append(("mcp_servers", f"at most {MAX_SERVERS_PER_AGENT} MCP servers"))
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if entry.name in seen:
            problems.append((f"mcp_servers.{index}.name", f"{entry.name!r} appears twice"))
        seen.add(entry.name)
        try:
            check_url(entry.url, allow_private=allow_private)
        except ValidationFailedError as exc:
            problems.append((f"mcp_servers.{index}.url", exc.message or "not allowed"))
        bad = [name for name in entry.allowed_tools if not _TOOL_NAME.match(name)]
        if bad:
            problems.append(
                (f"mcp_servers.{index}.allowed_tools", f"{bad[0]!r} is not a valid tool name")
            )
    return problems


def add_from_file(
    session: AsyncSession,
    *,
    owner_id: str,
    agent_id: str,
    entries: Sequence[schemas.McpServerFileEntry],
    allow_private: bool,
) -> list[McpServer]:
    """Create the servers of an imported agent file (checked by `file_problems`), without
    credentials and without a tool listing: the owner connects and lists them after."""
    rows = [
        McpServer(
            agent_id=agent_id,
            owner_id=owner_id,
            name=entry.name,
            url=check_url(entry.url, allow_private=allow_private),
            auth=entry.auth,
            credentials=None,
            tools=[],
            allowed_tools=list(dict.fromkeys(entry.allowed_tools)),
            timeout_seconds=entry.timeout_seconds,
            max_result_chars=entry.max_result_chars,
        )
        for entry in entries
    ]
    session.add_all(rows)
    return rows
