"""A Google-linked account changes its email address: a fresh Google sign-in proves it is the
owner (no password), and after the change Google sign-in still finds the account by its subject
id, whatever address Google holds. Against the fake OpenID Connect provider on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update

from lunogen.account.models import User
from lunogen.auth.models import AuthSession
from lunogen.kit.time import utcnow
from tests.account.support import execute, rows
from tests.auth.test_google import CLIENT_ID, CLIENT_SECRET, CONSENT, google_sign_in
from tests.fakes.google_oidc import FakeGoogle, Identity
from tests.helpers import Api

SUB = "110248495921238986499"


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeGoogle]:
    with FakeGoogle.running(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=["http://testserver/auth/google/callback"],
    ) as fake:
        yield fake


@pytest.fixture
def google(google_server: FakeGoogle) -> FakeGoogle:
    google_server.reset()
    google_server.identity = Identity(sub=SUB, email="ada@gmail.com", name="Ada")
    return google_server


@pytest.fixture
def settings_overrides(google: FakeGoogle) -> dict[str, object]:
    return {
        "google_client_id": CLIENT_ID,
        "google_client_secret": CLIENT_SECRET,
        "google_discovery_url": google.discovery_url,
    }


@pytest.fixture
async def provider() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as http:
        yield http


async def _signed_in_with_google(api: Api, provider: httpx.AsyncClient) -> httpx.AsyncClient:
    client = api.new_client()
    response = await google_sign_in(client, provider)
    assert response.status_code == 303, response.text
    csrf = {"X-CSRF-Token": client.cookies["lg_csrf"]}
    if response.headers["location"] == "/onboarding":
        consent = await client.post("/api/v1/auth/consent", json=CONSENT, headers=csrf)
        assert consent.status_code == 200, consent.text
    return client


async def test_google_only_account_changes_its_address_and_google_still_signs_in(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    client = await _signed_in_with_google(api, provider)
    csrf = {"X-CSRF-Token": client.cookies["lg_csrf"]}
    me = (await client.get("/api/v1/me")).json()
    assert me["email"] == "ada@gmail.com" and me["google_linked"] is True

    # Signed in more than 10 minutes ago: sign in with Google again first.
    await execute(
        api,
        update(AuthSession)
        .where(AuthSession.user_id == me["id"])
        .values(created_at=utcnow() - timedelta(minutes=11)),
    )
    body = {"new_email": "ada@work.example"}
    stale = await client.post("/api/v1/me/email", json=body, headers=csrf)
    assert stale.status_code == 403
    assert stale.json()["error"] == "Recent sign-in required"

    fresh = await _signed_in_with_google(api, provider)
    fresh_csrf = {"X-CSRF-Token": fresh.cookies["lg_csrf"]}
    asked = await fresh.post("/api/v1/me/email", json=body, headers=fresh_csrf)
    assert asked.status_code == 202, asked.text
    emails = await api.emails("ada@work.example")
    [(_row, text)] = emails
    token = text.split("/settings/email/confirm/", 1)[1].split()[0]
    # The older session may confirm: the link, not the sign-in, is what this step checks.
    confirmed = await client.post("/api/v1/me/email/confirm", json={"token": token}, headers=csrf)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["email"] == "ada@work.example"

    # Google still says ada@gmail.com; the same subject id is the same account, now at the
    # new address, and no second account appears.
    again = await _signed_in_with_google(api, provider)
    after = (await again.get("/api/v1/me")).json()
    assert (after["id"], after["email"], after["google_linked"]) == (
        me["id"],
        "ada@work.example",
        True,
    )
    [count] = await rows(api, select(func.count()).select_from(User))
    assert count == 1
