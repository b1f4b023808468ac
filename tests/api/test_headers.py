"""Security headers on every kind of answer; HSTS only when the public URL is https."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager

from lunogen.app import create_app
from lunogen.config import Settings
from tests.helpers import Api

PUBLIC_HTTPS = "https://lunogen.example"


def assert_security_headers(response: httpx.Response) -> None:
    csp = response.headers.get("content-security-policy", "")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives.get("default-src") == ["'self'"], csp
    assert directives.get("script-src") == ["'self'"], csp
    assert directives.get("frame-ancestors") == ["'none'"], csp
    assert directives.get("object-src") == ["'none'"], csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, csp
    assert response.headers.get("x-frame-options") == "DENY"
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert response.headers.get("referrer-policy") == "strict-origin-when-cross-origin"
    assert "camera=()" in response.headers.get("permissions-policy", "")


async def _every_kind_of_answer(api: Api, client: httpx.AsyncClient) -> list[httpx.Response]:
    person = await api.sign_up()
    key = await api.create_key(person)
    keyed = api.key_client(key)
    return [
        await client.get("/healthz"),  # JSON 200
        await client.get("/login"),  # HTML page
        await client.get("/api/docs"),  # HTML page
        await client.get("/api/openapi.json"),
        await client.get("/static/style.css"),  # static file
        await client.get("/api/v1/me"),  # 401
        await client.get("/no/such/route"),  # 404
        await client.put("/healthz"),  # 405
        await keyed.get("/api/v1/me"),  # key-authenticated 200, with rate-limit headers
        await person.client.post("/api/v1/keys", json={"name": "x"}),  # 403 CSRF
        await client.post(
            "/api/v1/auth/login", content=b"{", headers={"content-type": "application/json"}
        ),
        await client.get("/metrics"),
    ]


async def test_security_headers_on_every_answer(api: Api, client: httpx.AsyncClient) -> None:
    responses = await _every_kind_of_answer(api, client)
    statuses = {r.status_code for r in responses}
    assert {200, 400, 401, 403, 404, 405} <= statuses, statuses
    for response in responses:
        assert_security_headers(response)
        # Served over plain http (the default public URL), so no HSTS: it would pin a scheme
        # the server does not offer.
        assert "strict-transport-security" not in response.headers, response.url


async def test_static_file_exists_for_the_pages(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/style.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")


async def test_rate_limit_headers_on_authenticated_requests(
    api: Api, client: httpx.AsyncClient
) -> None:
    person = await api.sign_up()
    keyed = api.key_client(await api.create_key(person))
    by_key = await keyed.get("/api/v1/me")
    assert by_key.headers["x-ratelimit-limit"] == "30"
    assert int(by_key.headers["x-ratelimit-remaining"]) == 29
    # Browser sessions have a budget of their own (the key creation above spent from it).
    by_session = await person.client.get("/api/v1/me")
    assert by_session.status_code == 200
    assert by_session.headers["x-ratelimit-limit"] == "30"
    assert int(by_session.headers["x-ratelimit-remaining"]) < 29
    anonymous = await client.get("/healthz")
    assert "x-ratelimit-limit" not in anonymous.headers


@pytest.fixture
async def https_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The same server configured with an https public URL (as behind a TLS proxy)."""
    app = create_app(settings.model_copy(update={"public_url": PUBLIC_HTTPS}))
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=PUBLIC_HTTPS) as client:
            yield client


async def test_hsts_under_https_public_url(https_client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/login", "/no/such/route", "/api/v1/me"):
        response = await https_client.get(path)
        assert_security_headers(response)
        hsts = response.headers.get("strict-transport-security", "")
        assert hsts.startswith("max-age="), path
        assert int(hsts.split(";")[0].removeprefix("max-age=")) >= 31536000
        assert "includeSubDomains" in hsts
