"""The OpenAPI document at /api/openapi.json and the server-rendered reference at /api/docs."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx

from lunogen.dashboard.apidocs import inline_markdown

METHODS = ("get", "post", "put", "patch", "delete")
PUBLIC = {
    "/api/v1/auth/register",
    "/api/v1/auth/verify",
    "/api/v1/auth/verify/resend",
    "/api/v1/auth/login",
    "/api/v1/auth/password/forgot",
    "/api/v1/auth/password/reset",
    "/api/v1/account/restore",  # email + password or the emailed token, like signing in
    "/api/v1/policies",  # the published Terms and Privacy Policy
    "/api/v1/policies/{kind}/{version}",
}


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                yield item
            else:
                yield from refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from refs(item)


async def spec_of(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    spec = json.loads(response.text)
    assert isinstance(spec, dict)
    return spec


async def test_openapi_document_is_valid_and_names_the_bearer_scheme(
    client: httpx.AsyncClient,
) -> None:
    spec = await spec_of(client)
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "LunoGen API"
    assert "lg_live_" in spec["info"]["description"]
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["type"] == "http"
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    assert schemes["APIKeyCookie"] == {
        "type": "apiKey",
        "in": "cookie",
        "name": "lg_session",
        "description": "Browser session",
    }
    # Every reference resolves inside the document.
    for ref in set(refs(spec)):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in spec["components"]["schemas"], ref
    # Only the API and the inbound channel hooks are documented: no pages, health or metrics.
    assert all(path.startswith(("/api/v1/", "/hooks/")) for path in spec["paths"]), list(
        spec["paths"]
    )
    operation_ids = [op["operationId"] for _, _, op in operations(spec)]
    assert len(operation_ids) == len(set(operation_ids))


async def test_every_private_operation_requires_a_key_or_session(client: httpx.AsyncClient) -> None:
    spec = await spec_of(client)
    seen_public = set()
    for method, path, op in operations(spec):
        if path.startswith("/hooks/"):  # channel hooks: the sender's signature, not a key
            assert "security" not in op, (method, path)
            if method == "get":  # a provider's subscription check, with its verify token
                assert "403" in op["responses"], (method, path)
                continue
            headers = {
                p["name"].lower()
                for p in op.get("parameters", [])
                if p["in"] == "header" and p.get("required")
            }
            assert headers, f"{path} must document the header that authenticates its sender"
            if path.startswith("/hooks/webhook/"):
                assert {"webhook-id", "webhook-timestamp", "webhook-signature"} <= headers
            assert "401" in op["responses"], (method, path)
            continue
        if path in PUBLIC:
            seen_public.add(path)
            assert "security" not in op, (method, path)
            continue
        assert {"HTTPBearer": []} in op.get("security", []), (method, path)
        for code in ("401", "403", "429"):
            assert code in op["responses"], (method, path, code)
        assert op["responses"]["429"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert seen_public == PUBLIC


async def test_errors_are_documented_in_our_shape(client: httpx.AsyncClient) -> None:
    spec = await spec_of(client)
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas  # FastAPI's `{"detail": ...}`, which we never send
    assert schemas["Error"]["required"] == ["error"]
    assert schemas["ValidationFailed"]["required"] == ["error", "message", "details"]
    for method, path, op in operations(spec):
        for code, response in op["responses"].items():
            if int(code) < 400:
                continue
            schema = response["content"]["application/json"]["schema"]
            expected = "ValidationFailed" if code == "422" else "Error"
            assert schema == {"$ref": f"#/components/schemas/{expected}"}, (method, path, code)
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in op["responses"], (method, path)
        if any(p["in"] == "path" for p in op.get("parameters", [])):
            assert "404" in op["responses"], (method, path)
    login = spec["paths"]["/api/v1/auth/login"]["post"]["responses"]
    assert {"200", "303", "400", "401", "403", "422", "429"} <= set(login)
    assert "text/html" in login["200"]["content"]  # browsers posting the form get a page
    assert "429" in spec["paths"]["/api/v1/auth/register"]["post"]["responses"]  # per-IP throttle


async def test_api_docs_page_lists_every_operation(client: httpx.AsyncClient) -> None:
    spec = await spec_of(client)
    response = await client.get("/api/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = html.unescape(response.text)
    for method, path, op in operations(spec):
        assert f'<span class="method">{method.upper()}</span> <code>{path}</code>' in page
        assert f'id="{op["operationId"]}"' in page
    # Request bodies are shown with their references resolved.
    assert '"title": "ApiKeyCreate"' in page
    assert "<code>Authorization: Bearer lg_live_…</code>" in response.text
    # Nothing from another origin: the CSP would refuse it, and we do not ship third-party code.
    assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', response.text)
    assert "swagger" not in response.text.lower()


def test_docstring_code_spans_render_as_code_and_everything_else_is_escaped() -> None:
    rendered = inline_markdown("Send `X-CSRF-Token` & <script>alert(1)</script> `<b>`")
    assert str(rendered) == (
        "Send <code>X-CSRF-Token</code> &amp; &lt;script&gt;alert(1)&lt;/script&gt; "
        "<code>&lt;b&gt;</code>"
    )


async def test_every_operation_with_a_body_documents_413(client: httpx.AsyncClient) -> None:
    spec = await spec_of(client)
    with_body = [(method, path, op) for method, path, op in operations(spec) if "requestBody" in op]
    assert len(with_body) >= 10
    for method, path, op in with_body:
        too_large = op["responses"].get("413")
        assert too_large is not None, (method, path)
        assert too_large["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/Error"
        }
