"""[cookies] We set only essential cookies: your session, its CSRF token, and a short-lived one
during Google sign-in. There are no analytics or advertising cookies.

`tests/api/test_cookies.py` follows sign-up by forms and by JSON and the Google sign-in, and
checks each cookie's attributes; `tests/account/test_secure_cookies.py` checks `Secure` under
HTTPS. This module adds the rest of the app: every GET route (the dashboard pages, the API, the
public pages, the web chat), anonymous and signed in, sets no other cookie, and the Google
state cookie is short-lived and confined to its path.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.agent.support import create_agent, new_dev
from tests.fakes.google_oidc import FakeGoogle, Identity
from tests.helpers import Api
from tests.privacy.promise_support import (  # noqa: F401 (fixtures)
    google,
    google_server,
    google_settings,
    google_sign_in,
)
from tests.privacy.promises import sentence

TAG = "cookies"
SENTENCE = sentence(TAG)
SESSION, CSRF, GOOGLE_STATE = "lg_session", "lg_csrf", "lg_oauth"
# Routes that stream until the client leaves: a GET would not end.
STREAMING = {"/api/v1/agents/{agent_id}/logs/stream"}
_PARAM = re.compile(r"\{([a-z_]+)(?::path)?\}")


def get_routes(app: FastAPI) -> list[str]:
    """The path of every GET route of the app, routers included."""

    def walk(routes: list[Any], prefix: str) -> Iterator[str]:
        for route in routes:
            included = getattr(route, "original_router", None)
            if included is not None:
                yield from walk(included.routes, prefix + route.include_context.prefix)
            elif "GET" in (getattr(route, "methods", None) or ()):
                yield prefix + route.path

    return sorted(set(walk(app.routes, "")))


def names_set(response: httpx.Response) -> set[str]:
    return {h.split("=", 1)[0].strip() for h in response.headers.get_list("set-cookie")}


@pytest.fixture
def settings_overrides(google: FakeGoogle) -> dict[str, object]:  # noqa: F811
    return google_settings(google)


async def test_every_get_route_sets_no_other_cookie(api: Api) -> None:
    routes = get_routes(api.app)
    assert len(routes) > 60 and "/settings" in routes and "/api/v1/me" in routes
    dev = await new_dev(api)
    agent = await create_agent(dev, channels=[{"type": "webchat"}])
    values = {
        "agent_id": agent["id"],
        "channel_id": agent["channels"][0]["id"],
        "user_id": dev.id,
        "kind": "privacy",
    }
    seen: dict[str, set[str]] = {}
    walked = 0
    for who, client in (("anonymous", api.new_client()), ("signed in", dev.person.client)):
        for route in routes:
            if route in STREAMING:
                continue
            path = _PARAM.sub(lambda m: str(values.get(m.group(1), "unknown")), route)
            response = await asyncio.wait_for(client.get(path), timeout=20)
            assert response.status_code < 500, (who, path, response.status_code)
            walked += 1
            for name in names_set(response):
                seen.setdefault(name, set()).add(route)
    assert walked >= 2 * (len(routes) - len(STREAMING))
    assert set(seen) <= {SESSION, CSRF, GOOGLE_STATE}, seen
    assert seen.get(GOOGLE_STATE, set()) <= {"/auth/google/start", "/auth/google/callback"}
    assert set(routes) >= STREAMING, "a streaming route is gone: drop it from STREAMING"


async def test_the_google_state_cookie_is_short_lived_and_on_its_path(
    api: Api,
    google: FakeGoogle,  # noqa: F811
) -> None:
    browser = api.new_client()
    start = await browser.get("/auth/google/start")
    assert start.status_code == 302
    (state,) = [h for h in start.headers.get_list("set-cookie") if h.startswith(f"{GOOGLE_STATE}=")]
    attributes = {p.split("=", 1)[0].strip().lower(): p for p in state.split(";")[1:]}
    assert (
        "httponly" in attributes and "path" in attributes and "/auth/google" in attributes["path"]
    )
    max_age = int(attributes["max-age"].split("=", 1)[1])
    assert 0 < max_age <= 3600, state
    assert names_set(start) == {GOOGLE_STATE}
    done = await google_sign_in(
        api.new_client(), google, Identity(sub="8" * 21, email="c@example.com")
    )
    assert names_set(done) == {GOOGLE_STATE, SESSION, CSRF}
    cleared = [h for h in done.headers.get_list("set-cookie") if h.startswith(f"{GOOGLE_STATE}=")]
    assert "01 Jan 1970" in cleared[0] or "max-age=0" in cleared[0].lower()
