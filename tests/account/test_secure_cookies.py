"""Under an https public URL every cookie we set is Secure."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.account.cookies import set_cookie
from tests.helpers import PASSWORD, Api

HTTPS_URL = "https://testserver"


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"public_url": HTTPS_URL}


@pytest.fixture
async def https_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=HTTPS_URL) as client:
        yield client


async def test_cookies_are_secure_under_https(api: Api, https_client: httpx.AsyncClient) -> None:
    page = await https_client.get("/login")
    assert page.status_code == 200
    page_csrf = set_cookie(page, "lg_csrf")
    assert page_csrf["secure"] is True

    assert (await api.register(https_client, "secure@example.com")).status_code == 201
    token = await api.last_token("secure@example.com", "verify")
    assert (await https_client.post("/api/v1/auth/verify", json={"token": token})).is_success
    response = await https_client.post(
        "/api/v1/auth/login", json={"email": "secure@example.com", "password": PASSWORD}
    )
    assert response.status_code == 200
    session = set_cookie(response, "lg_session")
    assert session["secure"] is True
    assert session["httponly"] is True
    assert str(session["samesite"]).lower() == "lax"
    assert set_cookie(response, "lg_csrf")["secure"] is True
    # The browser sends them back over https, and they work.
    assert (await https_client.get("/api/v1/me")).status_code == 200
    logout = await https_client.post(
        "/api/v1/auth/logout", headers={"X-CSRF-Token": https_client.cookies["lg_csrf"]}
    )
    assert logout.status_code == 204
    assert set_cookie(logout, "lg_session")["secure"] is True


async def test_links_in_emails_use_the_public_url(
    api: Api, https_client: httpx.AsyncClient
) -> None:
    assert (await api.register(https_client, "links@example.com")).status_code == 201
    ((_row, body),) = await api.emails("links@example.com")
    assert f"{HTTPS_URL}/verify?token=" in body
