"""Remote MCP servers in the dashboard (`/agents/{id}/mcp`): add a server, list its tools, pick
the allowed ones, connect OAuth, remove it. Saves through the services behind
`/api/v1/agents/{id}/mcp-servers`; the steps that talk to a server (`tool.mcp.connect`) commit
before connecting. The OAuth flow: "Connect" discovers and registers, then shows a link to the
authorization server (a link, not a redirect: the CSP's form-action allows our own origin
only); the authorization server sends the browser back to `/mcp/oauth/callback`, which stores
the tokens and returns to the page. Outcomes after a redirect are fixed words in the query."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.responses import Response

from lunogen.agent.service import get_agent
from lunogen.audit import service as audit
from lunogen.auth.dependencies import ToolsWrite
from lunogen.auth.principal import Principal
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError, NotFoundError
from lunogen.tool.mcp import connect, schemas, service
from lunogen.tool.mcp.models import McpServer
from lunogen.tool.mcp.oauth import CALLBACK_PATH

router = page_router()

DONE = {
    "added": "Server added. List its tools next, then pick the ones the agent may use.",
    "listed": "Tools listed. Only the tools you allow are offered to the agent.",
    "allowed": "Saved the allowed tools. They apply from the agent's next turn.",
    "connected": "Connected. List the server's tools next.",
    "removed": "Server removed, with its stored credentials.",
}
LABELS = {
    "name": "Name",
    "url": "URL",
    "auth": "Sign-in",
    "bearer_token": "Bearer token",
    "timeout_seconds": "Time limit",
    "max_result_chars": "Result size",
}


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        out.append(f"{LABELS.get(name, name)}: {error['msg'].removeprefix('Value error, ')}")
    return out


def _explain(exc: LunogenError) -> str:
    return exc.message or exc.error


async def _page(
    request: Request,
    viewer: Viewer,
    db: DbSession,
    agent_id: str,
    *,
    done: str | None = None,
    problems: list[str] | None = None,
    entered: dict[str, str] | None = None,
    status_code: int = 200,
    problem_server: str | None = None,
) -> Response:
    agent = await get_agent(db, owner_id=viewer.user.id, agent_id=agent_id, with_channels=False)
    rows = await service.list_servers(db, owner_id=viewer.user.id, agent_id=agent.id)
    counts = await service.calls_since(db, server_ids=[row.id for row in rows])
    servers = [service.render(row, calls_30d=counts.get(row.id, 0)) for row in rows]
    return page(
        request,
        viewer,
        "agents/mcp.html",
        section="agents",
        status_code=status_code,
        agent=agent,
        servers=servers,
        flash=DONE.get(done or ""),
        problems=problems or [],
        problem_server=problem_server,
        entered=entered or {},
        max_servers=service.MAX_SERVERS_PER_AGENT,
    )


@router.get("/agents/{agent_id}/mcp")
async def mcp_page(agent_id: str, request: Request, viewer: SignedIn, db: DbSession) -> Response:
    return await _page(request, viewer, db, agent_id, done=request.query_params.get("done"))


def _back(agent_id: str, done: str) -> Response:
    return RedirectResponse(f"/agents/{agent_id}/mcp?done={done}", status_code=303)


def _audit(db: DbSession, principal: Principal, action: str, row: McpServer) -> None:
    audit.record(
        db,
        action=action,
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="mcp_server",
        target_id=row.id,
        details={"agent_id": row.agent_id, "name": row.name},
    )


@router.post("/agents/{agent_id}/mcp")
async def add_mcp_server(
    agent_id: str, request: Request, viewer: SignedIn, principal: ToolsWrite, db: DbSession
) -> Response:
    form = await request.form()
    entered = {k: v.strip() for k, v in form.items() if isinstance(v, str) and k in LABELS}
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    values: dict[str, Any] = {k: v for k, v in entered.items() if v}
    try:
        data = schemas.McpServerCreate.model_validate(values)
    except ValidationError as exc:
        shown = {k: v[:2000] for k, v in entered.items() if k != "bearer_token"}
        return await _page(
            request, viewer, db, agent.id, problems=_problems(exc), entered=shown, status_code=422
        )
    try:
        row = await service.create_server(
            db,
            owner_id=principal.user.id,
            agent_id=agent.id,
            data=data,
            keyring=request.app.state.keyring,
            allow_private=request.app.state.settings.allow_private_urls,
        )
    except LunogenError as exc:
        if isinstance(exc, NotFoundError):
            raise
        shown = {k: v[:2000] for k, v in entered.items() if k != "bearer_token"}
        return await _page(
            request,
            viewer,
            db,
            agent.id,
            problems=[_explain(exc)],
            entered=shown,
            status_code=exc.status_code,
        )
    _audit(db, principal, "mcp_server.created", row)
    return _back(agent.id, "added")


async def _server(db: DbSession, principal: Principal, agent_id: str, server_id: str) -> McpServer:
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    return await service.get_server(
        db, owner_id=principal.user.id, agent_id=agent_id, server_id=server_id, for_update=True
    )


@router.post("/agents/{agent_id}/mcp/{server_id}/refresh")
async def refresh_mcp_tools(
    agent_id: str,
    server_id: str,
    request: Request,
    viewer: SignedIn,
    principal: ToolsWrite,
    db: DbSession,
) -> Response:
    await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    try:
        await connect.refresh_tools(
            db,
            owner_id=principal.user.id,
            agent_id=agent_id,
            server_id=server_id,
            keyring=request.app.state.keyring,
            settings=request.app.state.settings,
        )
    except LunogenError as exc:
        if isinstance(exc, NotFoundError):
            raise
        await db.commit()  # keep the server's last_error
        return await _page(
            request,
            viewer,
            db,
            agent_id,
            problems=[f"Listing the tools failed: {_explain(exc)}"],
            problem_server=server_id,
            status_code=exc.status_code,
        )
    return _back(agent_id, "listed")


@router.post("/agents/{agent_id}/mcp/{server_id}/allowed")
async def allow_mcp_tools(
    agent_id: str,
    server_id: str,
    request: Request,
    viewer: SignedIn,
    principal: ToolsWrite,
    db: DbSession,
) -> Response:
    form = await request.form()
    names = [v for v in form.getlist("tool") if isinstance(v, str)]
    row = await _server(db, principal, agent_id, server_id)
    try:
        service.set_allowed_tools(row, names[: schemas.MAX_ALLOWED_TOOLS])
    except LunogenError as exc:
        return await _page(
            request,
            viewer,
            db,
            agent_id,
            problems=[_explain(exc)],
            problem_server=server_id,
            status_code=exc.status_code,
        )
    _audit(db, principal, "mcp_server.tools_allowed", row)
    await db.flush()
    return _back(agent_id, "allowed")


@router.post("/agents/{agent_id}/mcp/{server_id}/connect")
async def connect_mcp_oauth(
    agent_id: str,
    server_id: str,
    request: Request,
    viewer: SignedIn,
    principal: ToolsWrite,
    db: DbSession,
) -> Response:
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    try:
        url = await connect.start_oauth(
            db,
            owner_id=principal.user.id,
            agent_id=agent_id,
            server_id=server_id,
            keyring=request.app.state.keyring,
            settings=request.app.state.settings,
        )
    except LunogenError as exc:
        if isinstance(exc, NotFoundError):
            raise
        return await _page(
            request,
            viewer,
            db,
            agent_id,
            problems=[f"Connecting failed: {_explain(exc)}"],
            problem_server=server_id,
            status_code=exc.status_code,
        )
    return page(
        request,
        viewer,
        "agents/mcp_connect.html",
        section="agents",
        agent=agent,
        authorization_url=url,
        authorization_host=urlsplit(url).netloc,
    )


@router.get(CALLBACK_PATH)
async def mcp_oauth_callback(
    request: Request, viewer: SignedIn, principal: ToolsWrite, db: DbSession
) -> Response:
    """Where the authorization server sends the owner's browser back (`code`, `state`)."""
    query = request.query_params
    state, code, error = query.get("state"), query.get("code"), query.get("error")
    if not state:
        raise NotFoundError("Page not found")
    row = await connect.pending_server(db, owner_id=principal.user.id, state=state[:200])
    agent_id = row.agent_id
    if error or not code:
        reason = (query.get("error_description") or error or "no code was returned")[:300]
        return await _page(
            request,
            viewer,
            db,
            agent_id,
            problems=[f"The authorization server did not grant access: {reason}"],
            problem_server=row.id,
            status_code=400,
        )
    try:
        row = await connect.finish_oauth(
            db,
            owner_id=principal.user.id,
            state=state[:200],
            code=code[:2000],
            keyring=request.app.state.keyring,
            settings=request.app.state.settings,
        )
    except LunogenError as exc:
        if isinstance(exc, NotFoundError):
            raise
        await db.commit()
        return await _page(
            request,
            viewer,
            db,
            agent_id,
            problems=[f"Connecting failed: {_explain(exc)}"],
            problem_server=None,
            status_code=exc.status_code,
        )
    _audit(db, principal, "mcp_server.oauth_connected", row)
    return _back(agent_id, "connected")


@router.post("/agents/{agent_id}/mcp/{server_id}/delete")
async def remove_mcp_server(
    agent_id: str,
    server_id: str,
    viewer: SignedIn,
    principal: ToolsWrite,
    db: DbSession,
) -> Response:
    row = await _server(db, principal, agent_id, server_id)
    _audit(db, principal, "mcp_server.deleted", row)
    await service.delete_server(db, row=row)
    return _back(agent_id, "removed")
