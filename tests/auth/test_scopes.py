"""Scopes: every /api/v1 endpoint declares an authenticator, and each scope is enforced."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI

from lunogen.auth.dependencies import UNAUTHORIZED_MESSAGE, Authenticator
from lunogen.auth.scopes import Scope, grants
from tests.helpers import Api

# The only /api/v1 endpoints anyone may call without credentials.
PUBLIC = {
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/verify"),
    ("POST", "/api/v1/auth/verify/resend"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/password/forgot"),
    ("POST", "/api/v1/auth/password/reset"),
    ("POST", "/api/v1/account/restore"),  # email + password or the emailed token
    ("GET", "/api/v1/policies"),  # the published Terms and Privacy Policy
    ("GET", "/api/v1/policies/{kind}/{version}"),
}
ANY = "any scope"

# What some endpoints must declare; agent endpoints are checked when they exist.
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/me"): ANY,
    ("GET", "/api/v1/models"): ANY,
    ("GET", "/api/v1/tools"): Scope.TOOLS_READ,
    ("GET", "/api/v1/keys"): Scope.FULL,
    ("POST", "/api/v1/auth/logout-all"): Scope.FULL,
    ("POST", "/api/v1/auth/logout"): ANY,
    ("POST", "/api/v1/keys"): Scope.FULL,
    ("DELETE", "/api/v1/keys/{key_id}"): Scope.FULL,
    ("GET", "/api/v1/audit"): Scope.FULL,
    ("GET", "/api/v1/admin/users"): Scope.FULL,
    ("PATCH", "/api/v1/admin/users/{user_id}"): Scope.FULL,
    ("GET", "/api/v1/me/email"): Scope.FULL,
    ("POST", "/api/v1/me/email"): Scope.FULL,
    ("POST", "/api/v1/me/email/confirm"): Scope.FULL,
    ("GET", "/api/v1/agents/{agent_id}/caps"): Scope.AGENTS_READ,
    ("PUT", "/api/v1/agents/{agent_id}/caps"): Scope.AGENTS_WRITE,
    ("GET", "/api/v1/billing/cap"): ANY,
    ("PUT", "/api/v1/billing/cap"): Scope.FULL,
    ("GET", "/api/v1/agents/{agent_id}/approvals"): Scope.AGENTS_READ,
    ("POST", "/api/v1/agents/{agent_id}/approvals/{approval_id}"): Scope.AGENTS_WRITE,
    ("GET", "/api/v1/agents/{agent_id}/approval-policy"): Scope.AGENTS_READ,
    ("PUT", "/api/v1/agents/{agent_id}/approval-policy"): Scope.AGENTS_WRITE,
    ("POST", "/api/v1/agents/{agent_id}/threads/{thread_id}/takeover"): Scope.AGENTS_WRITE,
    ("DELETE", "/api/v1/agents/{agent_id}/threads/{thread_id}/takeover"): Scope.AGENTS_WRITE,
    ("POST", "/api/v1/agents/{agent_id}/threads/{thread_id}/replies"): Scope.AGENTS_WRITE,
    ("GET", "/api/v1/agents/{agent_id}/versions"): Scope.AGENTS_READ,
    ("GET", "/api/v1/agents/{agent_id}/versions/{number}"): Scope.AGENTS_READ,
    ("POST", "/api/v1/agents/{agent_id}/versions/{number}/deploy"): Scope.AGENTS_EXECUTE,
    ("POST", "/api/v1/agents/{agent_id}/rollback"): Scope.AGENTS_EXECUTE,
    ("GET", "/api/v1/agents/{agent_id}/mcp-servers"): Scope.TOOLS_READ,
    ("POST", "/api/v1/agents/{agent_id}/mcp-servers"): Scope.TOOLS_WRITE,
    ("GET", "/api/v1/agents/{agent_id}/mcp-servers/{server_id}"): Scope.TOOLS_READ,
    ("PATCH", "/api/v1/agents/{agent_id}/mcp-servers/{server_id}"): Scope.TOOLS_WRITE,
    ("DELETE", "/api/v1/agents/{agent_id}/mcp-servers/{server_id}"): Scope.TOOLS_WRITE,
    ("POST", "/api/v1/agents/{agent_id}/mcp-servers/{server_id}/tools/refresh"): Scope.TOOLS_WRITE,
    ("PUT", "/api/v1/agents/{agent_id}/mcp-servers/{server_id}/allowed-tools"): Scope.TOOLS_WRITE,
    ("POST", "/api/v1/agents/{agent_id}/mcp-servers/{server_id}/oauth/start"): Scope.TOOLS_WRITE,
    ("POST", "/api/v1/agents/{agent_id}/mcp-servers/{server_id}/oauth/callback"): Scope.TOOLS_WRITE,
}
EXPECTED_IF_PRESENT: dict[tuple[str, str], str] = {
    ("GET", "/api/v1/agents"): Scope.AGENTS_READ,
    ("POST", "/api/v1/agents"): Scope.AGENTS_WRITE,
    ("GET", "/api/v1/agents/{agent_id}"): Scope.AGENTS_READ,
    ("PATCH", "/api/v1/agents/{agent_id}"): Scope.AGENTS_WRITE,
    ("DELETE", "/api/v1/agents/{agent_id}"): Scope.AGENTS_WRITE,
    ("GET", "/api/v1/agents/{agent_id}/schedules"): Scope.AGENTS_READ,
    ("POST", "/api/v1/agents/{agent_id}/schedules"): Scope.AGENTS_WRITE,
    ("GET", "/api/v1/agents/{agent_id}/schedules/{schedule_id}"): Scope.AGENTS_READ,
    ("PATCH", "/api/v1/agents/{agent_id}/schedules/{schedule_id}"): Scope.AGENTS_WRITE,
    ("DELETE", "/api/v1/agents/{agent_id}/schedules/{schedule_id}"): Scope.AGENTS_WRITE,
    ("GET", "/api/v1/agents/{agent_id}/schedules/{schedule_id}/runs"): Scope.AGENTS_READ,
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    authenticators: tuple[Authenticator, ...]

    @property
    def scope(self) -> str | None:
        """The scope this endpoint requires (ANY: any caller; None: no authenticator)."""
        scopes = {a.scope for a in self.authenticators}
        if not scopes:
            return None
        assert len(scopes) == 1, f"{self} declares several scopes: {scopes}"
        (scope,) = scopes
        return ANY if scope is None else scope.value

    def url(self) -> str:
        path = self.path
        while "{" in path:
            start, end = path.index("{"), path.index("}")
            path = path[:start] + str(uuid.uuid4()) + path[end + 1 :]
        return path

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _routes(app: FastAPI) -> Iterator[Any]:
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before included-router contexts
        yield from app.routes
        return
    yield from iter_route_contexts(app.routes)


def _dependency_calls(dependant: Any) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from _dependency_calls(sub)


def api_endpoints(app: FastAPI) -> list[Endpoint]:
    endpoints = []
    for route in _routes(app):
        path = getattr(route, "path", None) or ""
        if not path.startswith("/api/v1"):
            continue
        dependant = getattr(route, "dependant", None)
        assert dependant is not None, f"{path} is not a FastAPI route with dependencies"
        auths = tuple(c for c in _dependency_calls(dependant) if isinstance(c, Authenticator))
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                endpoints.append(Endpoint(method=method, path=path, authenticators=auths))
    assert len(endpoints) >= 15, "the route walk found too few endpoints"
    return endpoints


def _body(method: str) -> dict[str, Any] | None:
    return {} if method in {"POST", "PUT", "PATCH"} else None


def test_every_api_endpoint_declares_an_authenticator(app: FastAPI) -> None:
    endpoints = api_endpoints(app)
    unauthenticated = {(e.method, e.path) for e in endpoints if not e.authenticators}
    assert unauthenticated == PUBLIC, (
        f"unauthenticated /api/v1 endpoints: {sorted(unauthenticated - PUBLIC)}; "
        f"allow-listed but missing or authenticated: {sorted(PUBLIC - unauthenticated)}"
    )
    for endpoint in endpoints:
        if endpoint.authenticators:
            assert endpoint.scope  # exactly one declared scope (or ANY)


def test_openapi_declares_security_on_every_non_public_operation(app: FastAPI) -> None:
    spec = app.openapi()
    seen = 0
    for path, operations in spec["paths"].items():
        if not path.startswith("/api/v1"):
            continue
        for method, operation in operations.items():
            if (method.upper(), path) in PUBLIC:
                assert not operation.get("security"), (method, path)
                continue
            seen += 1
            schemes = {name for item in operation.get("security", []) for name in item}
            assert schemes == {"HTTPBearer", "APIKeyCookie"}, (method, path)
    assert seen >= 10


def test_known_endpoints_declare_the_expected_scope(app: FastAPI) -> None:
    declared = {(e.method, e.path): e.scope for e in api_endpoints(app)}
    for route, scope in EXPECTED.items():
        assert declared.get(route) == scope, route
    for route, scope in EXPECTED_IF_PRESENT.items():
        if route in declared:
            assert declared[route] == scope, route


async def test_every_non_public_endpoint_refuses_anonymous_callers(api: Api) -> None:
    client = api.new_client()
    checked = 0
    for endpoint in api_endpoints(api.app):
        if (endpoint.method, endpoint.path) in PUBLIC:
            continue
        response = await client.request(
            endpoint.method, endpoint.url(), json=_body(endpoint.method)
        )
        assert response.status_code == 401, (str(endpoint), response.text)
        assert response.json() == {"error": "Unauthorized", "message": UNAUTHORIZED_MESSAGE}
        checked += 1
    assert checked >= 10


@pytest.mark.parametrize("scope", list(Scope), ids=[s.value for s in Scope])
async def test_key_with_one_scope_reaches_only_its_endpoints(api: Api, scope: Scope) -> None:
    person = await api.sign_up()
    await api.set_plan(person, "pro")  # enough requests per minute for every endpoint
    keyed = api.key_client(await api.create_key(person, [scope.value]))
    reached, refused = [], []
    for endpoint in api_endpoints(api.app):
        if not endpoint.authenticators:
            continue
        response = await keyed.request(endpoint.method, endpoint.url(), json=_body(endpoint.method))
        required = endpoint.scope
        assert response.status_code < 500, (str(endpoint), response.text)
        assert response.status_code != 401, (str(endpoint), response.text)
        if required == ANY or grants([scope.value], Scope(required)):
            body = response.json() if response.content else {}
            assert "missing required scope" not in str(body.get("message")), str(endpoint)
            reached.append(str(endpoint))
        else:
            assert response.status_code == 403, (str(endpoint), response.text)
            assert response.json() == {
                "error": "Forbidden",
                "message": f"API key missing required scope: {required}",
            }
            refused.append(str(endpoint))
    assert "GET /api/v1/me" in reached
    if scope is Scope.FULL:
        assert refused == []
    else:
        assert "GET /api/v1/keys" in refused


async def test_tools_read_key(api: Api) -> None:
    person = await api.sign_up()
    keyed = api.key_client(await api.create_key(person, ["tools:read"]))
    tools = await keyed.get("/api/v1/tools")
    assert tools.status_code == 200 and isinstance(tools.json()["data"], list)
    assert (await keyed.get("/api/v1/models")).status_code == 200
    keys = await keyed.get("/api/v1/keys")
    assert keys.status_code == 403
    assert keys.json() == {"error": "Forbidden", "message": "API key missing required scope: full"}


async def test_other_scopes_do_not_grant_tools_read(api: Api) -> None:
    person = await api.sign_up()
    scopes = [s.value for s in Scope if s not in (Scope.FULL, Scope.TOOLS_READ)]
    keyed = api.key_client(await api.create_key(person, scopes))
    response = await keyed.get("/api/v1/tools")
    assert response.status_code == 403
    assert response.json() == {
        "error": "Forbidden",
        "message": "API key missing required scope: tools:read",
    }


async def test_agents_read_scope(api: Api) -> None:
    person = await api.sign_up()
    keyed = api.key_client(await api.create_key(person, ["agents:read"]))
    declared = {(e.method, e.path) for e in api_endpoints(api.app)}
    if ("GET", "/api/v1/agents") in declared:
        assert (await keyed.get("/api/v1/agents")).status_code == 200
    response = await keyed.get("/api/v1/tools")
    assert response.status_code == 403
    assert response.json()["message"] == "API key missing required scope: tools:read"


async def test_session_acts_with_full(api: Api) -> None:
    person = await api.sign_up()
    for path in ("/api/v1/tools", "/api/v1/keys", "/api/v1/audit", "/api/v1/models"):
        response = await person.client.get(path)
        assert response.status_code == 200, (path, response.text)


def test_grants() -> None:
    assert grants(["full"], Scope.TOOLS_WRITE)
    assert grants(frozenset({"agents:read"}), Scope.AGENTS_READ)
    assert not grants(["agents:read"], Scope.AGENTS_WRITE)
    assert not grants(["agents:write"], Scope.FULL)
    assert not grants([], Scope.LOGS_READ)
    assert {s.value for s in Scope} == {
        "full",
        "agents:read",
        "agents:write",
        "agents:execute",
        "tools:read",
        "tools:write",
        "skills:read",
        "skills:write",
        "logs:read",
    }
