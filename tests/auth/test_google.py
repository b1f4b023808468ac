"""Google Sign-In against a fake OpenID Connect provider on 127.0.0.1.

The app runs in-process (ASGI); the provider is real HTTP. A "browser" is an app client with its
own cookie jar plus a plain httpx client that visits the provider without following redirects.
"""

from __future__ import annotations

import html
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select

from lunogen.account.models import User
from lunogen.app import create_app
from lunogen.audit.models import AuditEvent
from lunogen.billing.models import CreditEntry
from lunogen.config import Settings
from tests.conftest import BASE_URL
from tests.fakes.google_oidc import FIRST_KID, GOOGLE_ISSUER, FakeGoogle, Identity, s256
from tests.helpers import PASSWORD, Api

CLIENT_ID = "123456789-lunogen.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-fake-client-secret"
CALLBACK = f"{BASE_URL}/auth/google/callback"
UNEXPECTED = "Google did not answer as expected"
CONSENT = {"age_confirmed": True, "accept_terms": True, "accept_privacy": True}


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeGoogle]:
    with FakeGoogle.running(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uris=[CALLBACK]
    ) as fake:
        yield fake


@pytest.fixture
def google(google_server: FakeGoogle) -> FakeGoogle:
    google_server.reset()
    google_server.client_secret = CLIENT_SECRET
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
    """The browser's visits to the provider (no cookies needed there; redirects not followed)."""
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as http:
        yield http


# -- the browser dance -------------------------------------------------------------------------


async def start(client: httpx.AsyncClient) -> str:
    response = await client.get("/auth/google/start")
    assert response.status_code == 302, response.text
    return response.headers["location"]


async def visit_provider(provider: httpx.AsyncClient, authorize_url: str) -> str:
    response = await provider.get(authorize_url)
    assert response.status_code == 302, response.text
    return response.headers["location"]


async def google_sign_in(client: httpx.AsyncClient, provider: httpx.AsyncClient) -> httpx.Response:
    callback = await visit_provider(provider, await start(client))
    assert callback.startswith(f"{CALLBACK}?")
    return await client.get(callback)


def query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def set_cookies(response: httpx.Response, name: str) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]


def assert_signed_in(response: httpx.Response, target: str) -> None:
    assert response.status_code == 303, response.text
    assert response.headers["location"] == target
    assert response.cookies.get("lg_session")
    cleared = set_cookies(response, "lg_oauth")
    assert cleared and cleared[0].startswith("lg_oauth=null;"), cleared
    assert "expires=Thu, 01 Jan 1970" in cleared[0] and "path=/auth/google" in cleared[0]


def assert_failed(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "Google sign-in failed" in response.text
    assert reason in html.unescape(response.text), response.text
    assert not set_cookies(response, "lg_session")


# -- database views ----------------------------------------------------------------------------


async def users(api: Api) -> list[User]:
    async with api.app.state.sessionmaker() as session:
        return list((await session.execute(select(User).order_by(User.created_at))).scalars())


async def audit_rows(api: Api, action: str) -> list[AuditEvent]:
    async with api.app.state.sessionmaker() as session:
        result = await session.execute(
            select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.created_at)
        )
        return list(result.scalars())


async def user_count(api: Api) -> int:
    async with api.app.state.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(User))).scalar_one())


# -- start -------------------------------------------------------------------------------------


async def test_start_redirects_to_provider_with_pkce_state_and_nonce(
    api: Api, google: FakeGoogle
) -> None:
    client = api.new_client()
    response = await client.get("/auth/google/start")
    assert response.status_code == 302
    location = response.headers["location"]
    assert location.startswith(f"{google.base_url}/authorize?")
    params = query(location)
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == CALLBACK
    assert params["response_type"] == "code"
    assert set(params["scope"].split()) == {"openid", "email", "profile"}
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43  # base64url of a SHA-256 digest
    assert len(params["state"]) >= 20 and len(params["nonce"]) >= 20
    # The pending state lives in a signed, HttpOnly cookie scoped to /auth/google only.
    (cookie,) = set_cookies(response, "lg_oauth")
    lowered = cookie.lower()
    assert "path=/auth/google;" in lowered and "httponly" in lowered and "samesite=lax" in lowered
    # Every attempt gets fresh values.
    again = query(await start(api.new_client()))
    for name in ("state", "nonce", "code_challenge"):
        assert again[name] != params[name]


# -- happy path --------------------------------------------------------------------------------


async def test_new_google_account_needs_consent_then_works(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    google.identity = Identity(
        sub="110248495921238986420",
        email="Ada@Example.com",
        name="Ada Lovelace",
        picture="https://lh3.googleusercontent.com/a/ada-photo",
    )
    client = api.new_client()
    response = await google_sign_in(client, provider)
    assert_signed_in(response, "/onboarding")
    assert "lg_oauth" not in client.cookies

    # The provider saw a proper PKCE exchange from an authenticated client.
    (exchange,) = google.token_requests
    assert exchange.outcome == "ok"
    assert exchange.auth_method in ("client_secret_basic", "client_secret_post")
    (authorize,) = google.authorize_requests
    assert s256(exchange.form["code_verifier"]) == authorize["code_challenge"]

    me = await client.get("/api/v1/me")
    assert me.status_code == 200
    body = me.json()
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada Lovelace"
    assert body["picture_url"] == "https://lh3.googleusercontent.com/a/ada-photo"
    assert body["google_linked"] is True
    assert body["email_verified"] is True
    assert body["setup_complete"] is False
    (user,) = await users(api)
    assert user.google_sub == "110248495921238986420"
    assert user.password_hash is None

    # Not usable until the person attests 18+ and accepts the policies.
    blocked = await client.get("/api/v1/keys")
    assert blocked.status_code == 403
    assert blocked.json()["error"] == "Account setup incomplete"
    onboarding = await client.get("/onboarding")
    assert onboarding.status_code == 200
    no_csrf = await client.post("/api/v1/auth/consent", json=CONSENT)
    assert no_csrf.status_code == 403
    csrf = {"X-CSRF-Token": client.cookies["lg_csrf"]}
    consent = await client.post("/api/v1/auth/consent", json=CONSENT, headers=csrf)
    assert consent.status_code == 200, consent.text
    assert consent.json()["setup_complete"] is True
    keys = await client.get("/api/v1/keys")
    assert keys.status_code == 200
    created = await client.post(
        "/api/v1/keys", json={"name": "laptop", "scopes": ["full"]}, headers=csrf
    )
    assert created.status_code == 201, created.text

    registered = await audit_rows(api, "account.registered")
    assert [(r.actor_user_id, r.details) for r in registered] == [(user.id, {"method": "google"})]
    (sign_in,) = await audit_rows(api, "auth.sign_in")
    assert sign_in.actor_user_id == user.id and sign_in.details == {"method": "google"}
    visible = await client.get("/api/v1/audit", params={"action": "auth.sign_in"})
    assert visible.status_code == 200 and visible.json()["total"] == 1

    # Signing in again (another browser) with the same Google account: same user, no onboarding.
    second = api.new_client()
    response = await google_sign_in(second, provider)
    assert_signed_in(response, "/home")
    assert (await second.get("/api/v1/me")).json()["id"] == user.id
    assert await user_count(api) == 1
    assert len(await audit_rows(api, "account.registered")) == 1
    assert len(await audit_rows(api, "auth.sign_in")) == 2
    account = await second.get("/settings")
    assert account.status_code == 200


async def test_links_existing_password_account_with_verified_email(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    person = await api.sign_up("grace@example.com")
    google.identity = Identity(
        sub="200000000000000000002",
        email="Grace@example.com",
        name="Grace From Google",
        picture="https://lh3.googleusercontent.com/a/grace",
    )
    client = api.new_client()
    response = await google_sign_in(client, provider)
    assert_signed_in(response, "/home")  # consent was given at registration
    me = (await client.get("/api/v1/me")).json()
    assert me["id"] == person.id
    assert me["google_linked"] is True
    assert me["name"] == "Test Person"  # the account's own name is kept
    assert me["picture_url"] == "https://lh3.googleusercontent.com/a/grace"
    assert await user_count(api) == 1
    (linked,) = await audit_rows(api, "account.google_linked")
    assert linked.actor_user_id == person.id and linked.target_id == person.id
    assert linked.details == {}
    # The password still works too.
    again = await api.new_client().post(
        "/api/v1/auth/login", json={"email": "grace@example.com", "password": PASSWORD}
    )
    assert again.status_code == 200


async def test_linking_an_unverified_registration_drops_its_password_and_consent(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    # Someone registered this address but never proved they own it (a pre-hijack attempt).
    squatter = api.new_client()
    registered = await api.register(squatter, "victim@example.com", name="Squatter")
    assert registered.status_code == 201
    google.identity = Identity(sub="300000000000000000003", email="victim@example.com", name="V")
    client = api.new_client()
    response = await google_sign_in(client, provider)
    assert_signed_in(response, "/onboarding")  # the real owner must attest and consent
    me = (await client.get("/api/v1/me")).json()
    (squatted,) = await users(api)
    assert me["id"] == squatted.id
    assert me["name"] == "V" and me["setup_complete"] is False
    login = await squatter.post(
        "/api/v1/auth/login", json={"email": "victim@example.com", "password": PASSWORD}
    )
    assert login.status_code == 401
    (linked,) = await audit_rows(api, "account.google_linked")
    assert linked.details == {"unverified_account_reset": True}


async def test_account_is_keyed_on_sub_not_email(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    google.identity = Identity(sub="400000000000000000004", email="old@example.com")
    first = api.new_client()
    assert_signed_in(await google_sign_in(first, provider), "/onboarding")
    user_id = (await first.get("/api/v1/me")).json()["id"]

    # The person changed their Google address; the same `sub` still means the same account.
    google.identity = Identity(sub="400000000000000000004", email="new@example.com")
    second = api.new_client()
    assert_signed_in(await google_sign_in(second, provider), "/onboarding")
    me = (await second.get("/api/v1/me")).json()
    assert me["id"] == user_id
    assert me["email"] == "old@example.com"
    assert await user_count(api) == 1
    assert len(await audit_rows(api, "account.registered")) == 1


async def test_email_linked_to_another_google_account_is_refused(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    google.identity = Identity(sub="500000000000000000005", email="shared@example.com")
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")
    google.identity = Identity(sub="500000000000000000099", email="shared@example.com")
    response = await google_sign_in(api.new_client(), provider)
    assert_failed(response, "already linked to a different Google account")
    (user,) = await users(api)
    assert user.google_sub == "500000000000000000005"


# -- refusals ----------------------------------------------------------------------------------


async def test_tampered_state_is_refused_before_any_exchange(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    client = api.new_client()
    callback = await visit_provider(provider, await start(client))
    params = query(callback)
    forged = f"{CALLBACK}?code={params['code']}&state={params['state']}x"
    response = await client.get(forged)
    assert_failed(response, "MismatchingStateError")
    assert set_cookies(response, "lg_oauth")[0].startswith("lg_oauth=null;")
    assert google.token_requests == []
    assert await user_count(api) == 0
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_callback_in_another_browser_is_refused(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    callback = await visit_provider(provider, await start(api.new_client()))
    other = api.new_client()
    response = await other.get(callback)
    assert_failed(response, "another browser")
    assert google.token_requests == []
    assert await user_count(api) == 0


async def test_callback_with_a_forged_state_cookie_is_refused(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    client = api.new_client()
    callback = await visit_provider(provider, await start(client))
    forged = api.new_client()
    forged.cookies.set("lg_oauth", client.cookies["lg_oauth"][:-4] + "AAAA", path="/auth/google")
    response = await forged.get(callback)
    assert_failed(response, "another browser")
    assert google.token_requests == []


@pytest.mark.parametrize(
    ("knobs", "reason"),
    [
        pytest.param({"nonce": "not-the-nonce-we-sent"}, "nonce", id="bad-nonce"),
        pytest.param(
            {"audience": "someone-else.apps.googleusercontent.com"}, "'aud'", id="wrong-aud"
        ),
        pytest.param(
            {"audience": "someone-else.apps.googleusercontent.com", "azp": CLIENT_ID},
            "'aud'",
            id="wrong-aud-with-our-azp",
        ),
        pytest.param({"audience": ["someone-else", "another"]}, "'aud'", id="wrong-aud-list"),
        pytest.param({"lifetime_seconds": -120}, "token is expired", id="expired"),
        pytest.param({"issued_at_offset": 600}, "issued in the future", id="issued-in-future"),
        pytest.param({"issuer": "https://evil.example"}, "'iss'", id="wrong-issuer"),
        pytest.param(
            {"issuer": "https://accounts.google.com.evil.example"}, "'iss'", id="look-alike-issuer"
        ),
        pytest.param({"issuer": "http://accounts.google.com"}, "'iss'", id="http-issuer"),
        pytest.param(
            {"azp": "someone-else.apps.googleusercontent.com"}, "'azp'", id="azp-another-client"
        ),
        pytest.param({"unknown_key_kid": "fake-google-1"}, "BadSignatureError", id="forged-kid"),
        pytest.param({"unknown_key_kid": "rogue-1"}, "No key for kid", id="unknown-kid"),
        pytest.param({"omit_id_token": True}, "did not return an ID token", id="no-id-token"),
        pytest.param({"token_endpoint_status": 500}, UNEXPECTED, id="provider-500"),
        pytest.param({"token_endpoint_status": 200}, UNEXPECTED, id="provider-not-json"),
        pytest.param({"deny_consent": True}, "access_denied", id="consent-denied"),
    ],
)
async def test_bad_id_tokens_and_provider_failures_are_refused(
    api: Api,
    google: FakeGoogle,
    provider: httpx.AsyncClient,
    knobs: dict[str, Any],
    reason: str,
) -> None:
    for name, value in knobs.items():
        setattr(google.misbehaviour, name, value)
    client = api.new_client()
    response = await google_sign_in(client, provider)
    assert_failed(response, reason)
    assert set_cookies(response, "lg_oauth")[0].startswith("lg_oauth=null;")
    assert await user_count(api) == 0
    assert await audit_rows(api, "auth.sign_in") == []
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_token_expired_within_leeway_is_accepted(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    google.misbehaviour.lifetime_seconds = -5  # clock skew well inside the 30 s leeway
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")


async def test_single_audience_list_with_our_client_is_accepted(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    google.misbehaviour.audience = [CLIENT_ID]
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")


async def test_unverified_email_creates_nothing(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    google.identity = Identity(
        sub="600000000000000000006", email="new@example.com", email_verified=False
    )
    client = api.new_client()
    assert_failed(await google_sign_in(client, provider), "has not verified this email")
    assert await user_count(api) == 0
    assert (await client.get("/api/v1/me")).status_code == 401


async def test_unverified_email_does_not_link_existing_account(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    person = await api.sign_up("linus@example.com")
    google.identity = Identity(
        sub="700000000000000000007", email="linus@example.com", email_verified=False
    )
    assert_failed(await google_sign_in(api.new_client(), provider), "has not verified")
    (user,) = await users(api)
    assert user.id == person.id and user.google_sub is None
    assert await audit_rows(api, "account.google_linked") == []


async def test_authorization_code_cannot_be_replayed(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    client = api.new_client()
    callback = await visit_provider(provider, await start(client))
    pending_state = client.cookies["lg_oauth"]
    assert_signed_in(await client.get(callback), "/onboarding")

    # An attacker who captured both the callback URL and the state cookie replays them.
    replay = api.new_client()
    replay.cookies.set("lg_oauth", pending_state, path="/auth/google")
    response = await replay.get(callback)
    assert_failed(response, "Malformed auth code")
    assert [r.outcome for r in google.token_requests] == ["ok", "invalid_grant"]
    assert await user_count(api) == 1
    assert len(await audit_rows(api, "auth.sign_in")) == 1


async def test_wrong_client_secret_is_refused(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    google.client_secret = "rotated-at-google"
    assert_failed(await google_sign_in(api.new_client(), provider), "invalid_client")
    assert [r.outcome for r in google.token_requests] == ["invalid_client"]
    assert await user_count(api) == 0


async def test_callback_without_parameters_is_a_400(api: Api, google: FakeGoogle) -> None:
    client = api.new_client()
    await start(client)
    assert_failed(await client.get("/auth/google/callback"), "MismatchingStateError")
    assert_failed(await api.new_client().get("/auth/google/callback"), "another browser")


# -- like real Google: issuer, azp, key rotation -------------------------------------------------


async def test_tokens_come_from_accounts_google_com_with_our_azp(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    discovery = (await provider.get(google.discovery_url)).json()
    assert discovery["issuer"] == GOOGLE_ISSUER == "https://accounts.google.com"
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")
    ((header, claims),) = google.issued_id_tokens
    assert claims["iss"] == GOOGLE_ISSUER
    assert claims["azp"] == claims["aud"] == CLIENT_ID
    assert header["kid"] == FIRST_KID


async def test_the_issuer_without_scheme_is_accepted_too(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    """Google documents both forms of `iss` for its ID tokens."""
    google.misbehaviour.issuer = "accounts.google.com"
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")
    assert google.issued_id_tokens[0][1]["iss"] == "accounts.google.com"


async def test_a_token_without_azp_for_our_client_alone_is_accepted(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    google.misbehaviour.omit_azp = True
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")


async def test_a_rotated_signing_key_is_fetched_once_and_accepted(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")
    assert google.jwks_requests == 1  # cached from now on

    new_kid = google.rotate()  # two keys published; tokens now signed with the new one
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")
    assert google.issued_id_tokens[-1][0]["kid"] == new_kid
    assert google.jwks_requests == 2  # the unknown kid made the client fetch the JWKS again

    google.signing_kid = FIRST_KID  # a token still signed with the old key during the rotation
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")
    google.signing_kid = new_kid
    google.retire(FIRST_KID)
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")
    assert google.jwks_requests == 2
    assert len(await audit_rows(api, "auth.sign_in")) == 4


async def test_a_kid_still_unknown_after_refetching_is_refused(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")
    assert google.jwks_requests == 1
    google.misbehaviour.unknown_key_kid = "fake-google-99"
    client = api.new_client()
    assert_failed(await google_sign_in(client, provider), "No key for kid")
    assert google.jwks_requests == 2  # it did look again before refusing
    assert (await client.get("/api/v1/me")).status_code == 401
    assert len(await audit_rows(api, "auth.sign_in")) == 1


async def test_a_token_signed_with_a_retired_key_is_refused(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    google.rotate()
    google.retire(FIRST_KID)
    google.signing_kid = FIRST_KID  # Google no longer publishes the key this token names
    assert_failed(await google_sign_in(api.new_client(), provider), "No key for kid")
    assert google.jwks_requests == 2  # fetched, then fetched again for the unknown kid
    assert await user_count(api) == 0


async def _starter_grants(api: Api, user_id: str) -> int:
    query = (
        select(func.count())
        .select_from(CreditEntry)
        .where(CreditEntry.account_id == user_id, CreditEntry.kind == "grant")
    )
    async with api.app.state.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())


async def test_google_sign_up_gets_the_grant_unless_the_mailbox_had_it(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    first = await api.sign_up("farmer@example.com")
    google.identity = Identity(sub="900000000000000000009", email="Farmer+google@example.com")
    alias = api.new_client()
    assert_signed_in(await google_sign_in(alias, provider), "/onboarding")
    alias_id = (await alias.get("/api/v1/me")).json()["id"]
    assert alias_id != first.id
    assert (await _starter_grants(api, first.id), await _starter_grants(api, alias_id)) == (1, 0)

    google.identity = Identity(sub="900000000000000000010", email="someone.new@gmail.com")
    fresh = api.new_client()
    assert_signed_in(await google_sign_in(fresh, provider), "/onboarding")
    assert await _starter_grants(api, (await fresh.get("/api/v1/me")).json()["id"]) == 1


# -- configuration -----------------------------------------------------------------------------


async def _app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as client,
    ):
        yield client


async def test_not_configured_answers_400_with_a_clear_message(settings: Settings) -> None:
    unconfigured = settings.model_copy(
        update={"google_client_id": None, "google_client_secret": None}
    )
    async for client in _app_client(unconfigured):
        for path in ("/auth/google/start", "/auth/google/callback?code=x&state=y"):
            response = await client.get(path)
            assert response.status_code == 400, response.text
            assert response.json() == {
                "error": "Google sign-in failed",
                "message": "Google sign-in is not configured on this server",
            }


async def test_unreachable_provider_answers_502_not_500(settings: Settings) -> None:
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    unreachable = settings.model_copy(
        update={"google_discovery_url": f"http://127.0.0.1:{port}/.well-known/openid-configuration"}
    )
    async for client in _app_client(unreachable):
        response = await client.get("/auth/google/start")
        assert response.status_code == 502
        assert "Google sign-in unavailable" in response.text
        assert not set_cookies(response, "lg_oauth")


async def test_closed_accounts_are_refused_not_500(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    google.identity = Identity(sub="800000000000000000008", email="gone@example.com")
    assert_signed_in(await google_sign_in(api.new_client(), provider), "/onboarding")
    async with api.app.state.sessionmaker() as session:
        user = (await session.execute(select(User))).scalar_one()
        user.deleted_at = user.created_at
        await session.commit()
    # The same Google account, and another Google account with the same address.
    assert_failed(await google_sign_in(api.new_client(), provider), "is being deleted")
    google.identity = Identity(sub="800000000000000000009", email="gone@example.com")
    assert_failed(await google_sign_in(api.new_client(), provider), "closed account")
    assert await user_count(api) == 1
