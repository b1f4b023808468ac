"""One error shape for every failure: `{"error", "message"}`, 422 with `details`, no traces."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import BASE_URL
from tests.helpers import Api

NUL_MESSAGE = "must not contain NUL (\\u0000) characters"


def assert_error(response: httpx.Response, status: int, error: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == error, body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert "detail" not in body
    assert "Traceback" not in response.text
    return body


@pytest.mark.parametrize(
    "path", ["/nope", "/api/v1/nope", "/api/v1/agents/x/y/z", "/static/missing.css"]
)
async def test_unknown_route_is_404_json(client: httpx.AsyncClient, path: str) -> None:
    body = assert_error(await client.get(path), 404, "Not found")
    assert body["message"] == f"Nothing at {path}"


async def test_wrong_method_is_405_json_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.delete("/api/v1/auth/login")
    body = assert_error(response, 405, "Method not allowed")
    assert body["message"] == "DELETE is not allowed on /api/v1/auth/login"
    assert response.headers["allow"] == "POST"


async def test_malformed_json_is_400_on_every_kind_of_endpoint(api: Api) -> None:
    person = await api.sign_up()
    headers = {**person.headers, "content-type": "application/json"}
    for path in ("/api/v1/auth/login", "/api/v1/keys"):  # parsed by us / by FastAPI
        for body in (b"{", b'{"name": ', b"\xff\xfe{", b"[" * 50_000 + b"]" * 50_000):
            response = await person.client.post(path, content=body, headers=headers)
            assert_error(response, 400, "Invalid JSON")


async def test_wrong_body_shape_is_422_with_details(api: Api) -> None:
    person = await api.sign_up()
    response = await person.client.post("/api/v1/keys", json=[1, 2], headers=person.headers)
    body = assert_error(response, 422, "Validation failed")
    assert body["details"] == [{"field": "body", "message": body["details"][0]["message"]}]  # type: ignore[index]
    response = await person.client.post(
        "/api/v1/keys", json={"name": "k", "scopes": ["nope"], "colour": 1}, headers=person.headers
    )
    body = assert_error(response, 422, "Validation failed")
    fields = {d["field"] for d in body["details"]}  # type: ignore[attr-defined]
    assert fields == {"scopes.0", "colour"}, body


async def test_nul_characters_are_refused_everywhere_with_the_field_named(api: Api) -> None:
    person = await api.sign_up()
    client = api.new_client()
    cases = [
        (
            await api.register(client, "nul@example.com", name="Ada\x00Lovelace"),
            "name",
        ),
        (
            await client.post(
                "/api/v1/auth/login", json={"email": "a@example.com", "password": "x\x00y"}
            ),
            "password",
        ),
        (
            await person.client.post(
                "/api/v1/keys",
                json={"name": "ok", "scopes": ["full\x00"]},
                headers=person.headers,
            ),
            "scopes.0",
        ),
        (await person.client.get("/api/v1/audit?limit=5&action=x%00y"), "action"),
        (await person.client.get("/api/v1/agents/abc%00def"), "url"),
        (
            await person.client.delete("/api/v1/keys/abc%00", headers=person.headers),
            "url",
        ),
        (
            await client.post(
                "/api/v1/auth/login",
                content=b"email=a%00%40example.com&password=x&csrf_token=t",
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            "email",
        ),
    ]
    for response, field in cases:
        body = assert_error(response, 422, "Validation failed")
        assert body["details"] == [{"field": field, "message": NUL_MESSAGE}], body
    # Nothing was written: no account for the NUL name, no second key.
    assert not await api.emails("nul@example.com")
    keys = await person.client.get("/api/v1/keys")
    assert keys.json()["data"] == []


async def test_an_escaped_backslash_u0000_is_ordinary_text(api: Api) -> None:
    person = await api.sign_up()
    response = await person.client.post(
        "/api/v1/keys",
        content=b'{"name": "literal \\\\u0000 text", "scopes": ["full"]}',
        headers={**person.headers, "content-type": "application/json"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "literal \\u0000 text"


async def test_unexpected_exception_is_a_generic_500_without_trace(app: FastAPI) -> None:
    async def explode() -> None:
        raise RuntimeError("database password is hunter2")

    app.add_api_route("/test-only/explode", explode, methods=["GET"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        response = await client.get("/test-only/explode")
    body = assert_error(response, 500, "Internal error")
    assert body == {"error": "Internal error", "message": "Something went wrong on our side."}
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert response.headers["x-frame-options"] == "DENY"
