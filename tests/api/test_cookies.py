"""Only essential cookies, ever: the session, its CSRF token, and Google's short-lived state.

Every response of a browser sign-up by forms, an API sign-up by JSON, and a Google sign-in is
recorded; the names and attributes of every `Set-Cookie` are checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookies import SimpleCookie

import httpx
import pytest

from tests.conftest import BASE_URL
from tests.fakes.google_oidc import FakeGoogle, Identity
from tests.helpers import PASSWORD, Api

CLIENT_ID = "cookie-test.apps.googleusercontent.com"
CLIENT_SECRET = "GOCSPX-cookie-test-secret"
ESSENTIAL = {"lg_session", "lg_csrf", "lg_oauth"}
_CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class SetCookie:
    path: str  # request path of the response that set it
    name: str
    attributes: dict[str, str]
    raw: str


class CookieRecorder:
    def __init__(self) -> None:
        self.seen: list[SetCookie] = []

    async def __call__(self, response: httpx.Response) -> None:
        for raw in response.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                attributes = {k.lower(): str(v) for k, v in morsel.items() if v}
                if "httponly" in raw.lower():
                    attributes["httponly"] = "true"
                self.seen.append(SetCookie(response.request.url.path, name, attributes, raw))

    def names(self) -> set[str]:
        return {c.name for c in self.seen}


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeGoogle]:
    with FakeGoogle.running(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        redirect_uris=[f"{BASE_URL}/auth/google/callback"],
    ) as fake:
        yield fake


@pytest.fixture
def settings_overrides(google_server: FakeGoogle) -> dict[str, object]:
    google_server.reset()
    return {
        "google_client_id": CLIENT_ID,
        "google_client_secret": CLIENT_SECRET,
        "google_discovery_url": google_server.discovery_url,
    }


@pytest.fixture
def recorder() -> CookieRecorder:
    return CookieRecorder()


def browser(api: Api, recorder: CookieRecorder) -> httpx.AsyncClient:
    client = api.new_client()
    client.event_hooks["response"].append(recorder)
    return client


def csrf_field(page: httpx.Response) -> str:
    match = _CSRF_FIELD.search(page.text)
    assert match, page.text
    return match.group(1)


def assert_only_essential(recorder: CookieRecorder) -> None:
    assert recorder.seen, "the flow set no cookie at all"
    assert recorder.names() <= ESSENTIAL, recorder.names() - ESSENTIAL
    for cookie in recorder.seen:
        assert cookie.attributes.get("samesite", "").lower() == "lax", cookie.raw
        if cookie.name == "lg_session":
            assert cookie.attributes.get("httponly") == "true", cookie.raw
            assert cookie.attributes.get("path") == "/", cookie.raw
        if cookie.name == "lg_oauth":
            assert cookie.path.startswith("/auth/google/"), cookie
            assert cookie.attributes.get("path") == "/auth/google", cookie.raw
            assert cookie.attributes.get("httponly") == "true", cookie.raw


async def test_browser_sign_up_by_forms_sets_only_session_and_csrf(
    api: Api, recorder: CookieRecorder
) -> None:
    client = browser(api, recorder)
    email = api.unique_email("forms")
    register_page = await client.get("/register")
    assert register_page.status_code == 200
    registered = await client.post(
        "/api/v1/auth/register",
        data={
            "csrf_token": csrf_field(register_page),
            "name": "Form Person",
            "email": email,
            "password": PASSWORD,
            "age_confirmed": "true",
            "accept_terms": "true",
            "accept_privacy": "true",
        },
    )
    assert registered.status_code == 201, registered.text
    token = await api.last_token(email, "verify")
    verify_page = await client.get(f"/verify?token={token}")
    verified = await client.post(
        "/api/v1/auth/verify", data={"csrf_token": csrf_field(verify_page), "token": token}
    )
    assert verified.status_code == 200, verified.text
    login_page = await client.get("/login")
    signed_in = await client.post(
        "/api/v1/auth/login",
        data={"csrf_token": csrf_field(login_page), "email": email, "password": PASSWORD},
    )
    assert signed_in.status_code == 303, signed_in.text
    assert (await client.get("/account")).status_code == 303  # the old page: on to /settings
    account = await client.get("/settings")
    assert account.status_code == 200
    assert (await client.get("/")).status_code == 303  # signed in: on to /home
    for path in ("/terms", "/privacy", "/forgot", "/api/docs", "/healthz"):
        assert (await client.get(path)).status_code == 200, path
    signed_out = await client.post("/api/v1/auth/logout", data={"csrf_token": csrf_field(account)})
    assert signed_out.status_code == 303

    assert recorder.names() == {"lg_session", "lg_csrf"}
    assert_only_essential(recorder)


async def test_api_sign_up_and_key_use_set_only_session_and_csrf(
    api: Api, recorder: CookieRecorder
) -> None:
    client = browser(api, recorder)
    email = api.unique_email("json")
    assert (await api.register(client, email)).status_code == 201
    token = await api.last_token(email, "verify")
    assert (await client.post("/api/v1/auth/verify", json={"token": token})).status_code == 200
    person = await api.sign_in(client, email)
    assert (await client.get("/api/v1/me")).status_code == 200
    key = await api.create_key(person)

    keyed = browser(api, recorder)
    keyed.headers["Authorization"] = f"Bearer {key}"
    assert (await keyed.get("/api/v1/me")).status_code == 200
    assert (await keyed.get("/api/v1/keys")).status_code == 200
    before = len(recorder.seen)
    assert (await client.post("/api/v1/auth/logout", headers=person.headers)).status_code == 204

    assert {c.name for c in recorder.seen[:before]} == {"lg_session", "lg_csrf"}
    assert_only_essential(recorder)
    # Key-authenticated requests never get a cookie.
    assert not [c for c in recorder.seen if c.path == "/api/v1/keys"]


async def test_google_sign_in_adds_only_its_state_cookie_on_its_own_path(
    api: Api, recorder: CookieRecorder, google_server: FakeGoogle
) -> None:
    google_server.identity = Identity(sub="cookie-sub-1", email="cookie.google@example.com")
    client = browser(api, recorder)
    start = await client.get("/auth/google/start")
    assert start.status_code == 302, start.text
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as provider:
        at_google = await provider.get(start.headers["location"])
    assert at_google.status_code == 302, at_google.text
    callback = await client.get(at_google.headers["location"])
    assert callback.status_code == 303, callback.text
    assert (await client.get("/onboarding")).status_code == 200

    assert recorder.names() == {"lg_oauth", "lg_session", "lg_csrf"}
    assert_only_essential(recorder)
    assert [c.path for c in recorder.seen if c.name == "lg_oauth"] == [
        "/auth/google/start",
        "/auth/google/callback",  # cleared once used
    ]
