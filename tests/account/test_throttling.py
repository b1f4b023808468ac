"""Failed sign-in throttling per address (and, more loosely, per IP)."""

from __future__ import annotations

import pytest

from tests.helpers import PASSWORD, Api

LIMIT = 3


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"login_failures_per_window": LIMIT}


async def _fail(api: Api, email: str, times: int) -> None:
    client = api.new_client()
    for _ in range(times):
        response = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": "wrong password!"}
        )
        assert response.status_code == 401


async def test_after_the_limit_even_the_right_password_is_429(api: Api) -> None:
    person = await api.sign_up()
    other = await api.sign_up()
    await _fail(api, person.email, LIMIT - 1)
    # Below the limit the right password still works.
    await api.sign_in(api.new_client(), person.email)
    await _fail(api, person.email, 1)

    client = api.new_client()
    for email in (person.email, person.email.upper()):
        response = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0
        body = response.json()
        assert body["error"] == "Too many requests"
        assert body["retry_after"] == int(response.headers["Retry-After"])
    assert "lg_session" not in client.cookies
    # Other accounts (from the same IP) are unaffected.
    await api.sign_in(api.new_client(), other.email)


async def test_throttled_form_sign_in_is_a_429_page_with_retry_after(api: Api) -> None:
    person = await api.sign_up()
    await _fail(api, person.email, LIMIT)
    client = api.new_client()
    await client.get("/login")
    response = await client.post(
        "/api/v1/auth/login",
        data={"email": person.email, "password": PASSWORD, "csrf_token": client.cookies["lg_csrf"]},
    )
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("text/html")
    assert "Too many failed sign-ins" in response.text
    assert int(response.headers["Retry-After"]) > 0


async def test_unknown_addresses_are_throttled_too(api: Api) -> None:
    await _fail(api, "ghost@example.com", LIMIT)
    response = await api.new_client().post(
        "/api/v1/auth/login", json={"email": "ghost@example.com", "password": PASSWORD}
    )
    assert response.status_code == 429
