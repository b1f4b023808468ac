"""Connecting an MCP server with OAuth 2.1: the authorization-code flow, split over two requests.

The SDK's `OAuthClientProvider` runs the whole flow inside one coroutine that waits for the
browser's redirect; a web platform gets the redirect in another request, maybe on another
replica. So `start` and `finish` use the SDK's client pieces step by step:

- `start`: probe the server for its `WWW-Authenticate` challenge; discover the protected
  resource metadata (RFC 9728) and check that its `resource` covers the server URL; discover the
  authorization server's metadata (RFC 8414, issuer checked); register a client (RFC 7591) with
  our callback as its redirect URI, or reuse the one registered before with the same issuer;
  make a PKCE S256 pair and a `state`; return the authorization URL (with the RFC 8707
  `resource`) and what `finish` needs (stored encrypted, found again by the state's hash).
- `finish`: exchange the code with the verifier and the same `resource` at the token endpoint.

Afterwards turns use the SDK provider itself (`client._StoredOAuthProvider`), which refreshes
expired tokens. Every request here goes through `SafeHttp` (SSRF guard); https only unless
private URLs are allowed. None of this may run inside an open write transaction.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode, urlparse

import httpx
from mcp.client.auth import OAuthFlowError, OAuthRegistrationError, OAuthTokenError, PKCEParameters
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
    create_client_registration_request,
    extract_resource_metadata_from_www_auth,
    extract_scope_from_www_auth,
    get_client_metadata_scopes,
    handle_auth_metadata_response,
    handle_protected_resource_response,
    handle_registration_response,
    handle_token_response_scopes,
    issuers_match,
    validate_metadata_issuer,
)
from mcp.shared.auth import (
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    ProtectedResourceMetadata,
)
from mcp.shared.auth_utils import check_resource_allowed, resource_url_from_server_url
from mcp.types import LATEST_PROTOCOL_VERSION

from lunogen.kit.http import FetchError, SafeHttp, UnsafeUrlError, parse_url
from lunogen.tool.mcp.client import CLIENT_NAME, McpConnectionError

PENDING_FOR = timedelta(minutes=15)
CALLBACK_PATH = "/mcp/oauth/callback"
_PROBE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": LATEST_PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": CLIENT_NAME, "version": "1"},
    },
}


class McpOAuthError(McpConnectionError):
    """The authorization server or the MCP server did not complete an OAuth step."""

    error = "MCP authorization failed"


def state_hash(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


def redirect_uri(public_url: str) -> str:
    return public_url.rstrip("/") + CALLBACK_PATH


class _Http:
    """`SafeHttp` with the https rule, answering `httpx.Response`s for the SDK's helpers."""

    def __init__(self, guard: SafeHttp, *, https_only: bool) -> None:
        self.guard = guard
        self.https_only = https_only

    def check(self, url: str) -> str:
        parsed = parse_url(url)
        if self.https_only and parsed.scheme != "https":
            raise UnsafeUrlError(f"{url} is not allowed: only https:// URLs may be contacted.")
        return str(parsed)

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        target = self.check(url)
        result = await self.guard.send(method, target, headers=headers, content=content)
        return httpx.Response(
            result.status_code,
            headers=result.headers,
            content=result.content,
            request=httpx.Request(method, target),
        )

    async def send_request(self, request: httpx.Request) -> httpx.Response:
        headers = {
            name: value
            for name, value in request.headers.items()
            if name.lower() not in ("host", "content-length")
        }
        return await self.send(
            request.method, str(request.url), headers=headers, content=request.content
        )


def _origin(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.netloc}"


async def _discover(
    http: _Http, server_url: str
) -> tuple[dict[str, Any] | None, str | None, OAuthMetadata, str | None]:
    """(resource metadata, its authorization server, that server's metadata, challenge scope)."""
    probe = await http.send(
        "POST",
        server_url,
        headers={
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            "MCP-Protocol-Version": LATEST_PROTOCOL_VERSION,
        },
        content=json.dumps(_PROBE).encode(),
    )
    challenge_url = extract_resource_metadata_from_www_auth(probe)
    scope = extract_scope_from_www_auth(probe) if probe.status_code in (401, 403) else None
    prm = None
    for url in build_protected_resource_metadata_discovery_urls(challenge_url, server_url):
        prm = await handle_protected_resource_response(
            await http.send("GET", url, headers={"MCP-Protocol-Version": LATEST_PROTOCOL_VERSION})
        )
        if prm is not None:
            break
    auth_server_url = None
    if prm is not None:
        wanted = resource_url_from_server_url(server_url)
        if not check_resource_allowed(
            requested_resource=wanted, configured_resource=str(prm.resource)
        ):
            raise McpOAuthError(
                f"The server's metadata names the resource {prm.resource}, which does not "
                f"cover {wanted}."
            )
        auth_server_url = str(prm.authorization_servers[0])
    expected_issuer = auth_server_url or _origin(server_url)
    for url in build_oauth_authorization_server_metadata_discovery_urls(
        auth_server_url, server_url
    ):
        found, metadata = await handle_auth_metadata_response(await http.send("GET", url))
        if not found:
            break
        if metadata is not None:
            validate_metadata_issuer(metadata, expected_issuer)
            return (
                prm.model_dump(mode="json", exclude_none=True) if prm else None,
                auth_server_url,
                metadata,
                scope,
            )
    raise McpOAuthError("The server's authorization server publishes no OAuth metadata.")


async def start(
    *,
    server_url: str,
    guard: SafeHttp,
    https_only: bool,
    callback_url: str,
    earlier: dict[str, Any] | None,
) -> tuple[str, dict[str, Any]]:
    """(the authorization URL for the owner's browser, the pending state to store encrypted).

    `earlier`: the stored credentials of a previous connection, whose registered client is
    reused when it was registered with the same issuer and redirect URI.
    """
    http = _Http(guard, https_only=https_only)
    try:
        prm_json, auth_server_url, metadata, scope = await _discover(http, server_url)
        prm = ProtectedResourceMetadata.model_validate(prm_json) if prm_json else None
        issuer = str(metadata.issuer)
        client_info = _reusable_client(earlier, issuer=issuer, callback_url=callback_url)
        scopes = get_client_metadata_scopes(scope, prm, metadata)
        if client_info is None:
            client_metadata = OAuthClientMetadata(
                redirect_uris=[callback_url],
                client_name=CLIENT_NAME,
                token_endpoint_auth_method="none",
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                scope=scopes,
            )
            request = create_client_registration_request(
                metadata, client_metadata, _origin(auth_server_url or server_url)
            )
            client_info = await handle_registration_response(await http.send_request(request))
            client_info.issuer = issuer
        authorization_endpoint = http.check(str(metadata.authorization_endpoint))
    except (FetchError, OAuthFlowError, OAuthRegistrationError, ValueError) as exc:
        raise _failed("start", exc) from exc
    resource = str(prm.resource) if prm is not None else resource_url_from_server_url(server_url)
    pkce = PKCEParameters.generate()
    state = secrets.token_urlsafe(32)
    params = {
        "response_type": "code",
        "client_id": client_info.client_id or "",
        "redirect_uri": callback_url,
        "state": state,
        "code_challenge": pkce.code_challenge,
        "code_challenge_method": "S256",
        "resource": resource,
    }
    if scopes:
        params["scope"] = scopes
    pending = {
        "state": state,
        "verifier": pkce.code_verifier,
        "redirect_uri": callback_url,
        "resource": resource,
        "client_info": client_info.model_dump(mode="json", exclude_none=True),
        "oauth_metadata": metadata.model_dump(mode="json", exclude_none=True),
        "resource_metadata": prm_json,
        "auth_server_url": auth_server_url,
    }
    separator = "&" if "?" in authorization_endpoint else "?"
    return f"{authorization_endpoint}{separator}{urlencode(params)}", pending


def _reusable_client(
    earlier: dict[str, Any] | None, *, issuer: str, callback_url: str
) -> OAuthClientInformationFull | None:
    raw = (earlier or {}).get("client_info")
    if not raw:
        return None
    info = OAuthClientInformationFull.model_validate(raw)
    same_issuer = info.issuer is not None and issuers_match(info.issuer, issuer)
    same_redirect = [str(uri) for uri in info.redirect_uris or []] == [callback_url]
    return info if same_issuer and same_redirect and info.client_id else None


async def finish(
    *, pending: dict[str, Any], code: str, guard: SafeHttp, https_only: bool
) -> dict[str, Any]:
    """Exchange the code; the credentials to store (encrypted) for the server."""
    http = _Http(guard, https_only=https_only)
    metadata = OAuthMetadata.model_validate(pending["oauth_metadata"])
    client_info = OAuthClientInformationFull.model_validate(pending["client_info"])
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": pending["redirect_uri"],
        "client_id": client_info.client_id or "",
        "code_verifier": pending["verifier"],
        "resource": pending["resource"],
    }
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if client_info.client_secret and client_info.token_endpoint_auth_method == "client_secret_post":
        form["client_secret"] = client_info.client_secret
    try:
        response = await http.send(
            "POST", str(metadata.token_endpoint), headers=headers, content=urlencode(form).encode()
        )
        if response.status_code != 200:
            raise OAuthTokenError(
                f"the token endpoint answered HTTP {response.status_code}: {response.text[:300]}"
            )
        tokens = await handle_token_response_scopes(response)
    except (FetchError, OAuthTokenError, ValueError) as exc:
        raise _failed("finish", exc) from exc
    return {
        "tokens": tokens.model_dump(mode="json", exclude_none=True),
        "expires_at": None if tokens.expires_in is None else time.time() + tokens.expires_in,
        "client_info": pending["client_info"],
        "oauth_metadata": pending["oauth_metadata"],
        "resource_metadata": pending["resource_metadata"],
        "auth_server_url": pending["auth_server_url"],
    }


def _failed(step: str, exc: Exception) -> McpOAuthError:
    detail = exc.message if isinstance(exc, FetchError) else str(exc)
    what = "Starting" if step == "start" else "Completing"
    return McpOAuthError(f"{what} the OAuth authorization failed: {detail}")
