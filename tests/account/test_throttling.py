"""Failed sign-in throttling per (address, client IP) with back-off, and per IP.

Nothing counts per address alone: a stranger's failures from elsewhere never lock the owner out.
"""

from __future__ import annotations

import httpx
import pytest

from lunogen.auth.endpoints import LOGIN_IP_FACTOR
from tests.account.conftest import FromIp
from tests.helpers import PASSWORD, Api

LIMIT = 3
WINDOW = 900
OWNER_IP = "203.0.113.10"
STRANGER_IP = "198.51.100.66"


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"login_failures_per_window": LIMIT, "login_failure_window_seconds": WINDOW}


async def _login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/v1/auth/login", json={"email": email, "password": password})


async def _fail(client: httpx.AsyncClient, email: str, times: int) -> None:
    for _ in range(times):
        assert (await _login(client, email, "wrong password!")).status_code == 401


def _assert_throttled(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    retry_after = int(response.headers["Retry-After"])
    assert 0 < retry_after <= WINDOW
    body = response.json()
    assert body["error"] == "Too many requests"
    assert body["retry_after"] == retry_after
    return retry_after


async def test_after_the_limit_even_the_right_password_is_429_from_that_ip(
    api: Api, from_ip: FromIp
) -> None:
    person = await api.sign_up()
    other = await api.sign_up()
    owner = from_ip(OWNER_IP)
    await _fail(owner, person.email, LIMIT)
    for email in (person.email, person.email.upper(), f"  {person.email} "):
        _assert_throttled(await _login(owner, email, PASSWORD))
    assert "lg_session" not in owner.cookies
    # Other accounts from the same IP are unaffected (the per-IP budget is far larger).
    assert (await _login(owner, other.email, PASSWORD)).status_code == 200


async def test_a_stranger_elsewhere_cannot_lock_the_owner_out(api: Api, from_ip: FromIp) -> None:
    person = await api.sign_up()
    stranger = from_ip(STRANGER_IP)
    await _fail(stranger, person.email, LIMIT)
    _assert_throttled(await _login(stranger, person.email, "wrong password!"))
    _assert_throttled(await _login(stranger, person.email, PASSWORD))  # no oracle while locked

    owner = from_ip(OWNER_IP)
    signed_in = await _login(owner, person.email, PASSWORD)
    assert signed_in.status_code == 200, signed_in.text
    assert owner.cookies.get("lg_session")
    # The owner's own typos still count on their own IP only.
    await _fail(owner, person.email, LIMIT - 1)
    assert (await _login(from_ip(OWNER_IP), person.email, PASSWORD)).status_code == 200


async def test_the_right_password_resets_the_count_for_that_ip(api: Api, from_ip: FromIp) -> None:
    person = await api.sign_up()
    owner = from_ip(OWNER_IP)
    for _ in range(3):  # LIMIT - 1 typos, then success, three times: 6 failures in the window
        await _fail(owner, person.email, LIMIT - 1)
        assert (await _login(owner, person.email, PASSWORD)).status_code == 200


async def test_one_ip_spraying_many_addresses_is_throttled(api: Api, from_ip: FromIp) -> None:
    person = await api.sign_up()
    sprayer = from_ip(STRANGER_IP)
    budget = LIMIT * LOGIN_IP_FACTOR
    for n in range(budget):  # each address stays under its own limit
        response = await _login(sprayer, f"target{n // (LIMIT - 1)}@example.com", "Summer2026!!")
        assert response.status_code == 401, (n, response.text)
    _assert_throttled(await _login(sprayer, "fresh-target@example.com", "Summer2026!!"))
    # From that IP even a real account with its right password waits; from elsewhere it works.
    _assert_throttled(await _login(sprayer, person.email, PASSWORD))
    assert (await _login(from_ip(OWNER_IP), person.email, PASSWORD)).status_code == 200


async def test_throttled_form_sign_in_is_a_429_page_with_retry_after(
    api: Api, from_ip: FromIp
) -> None:
    person = await api.sign_up()
    client = from_ip(OWNER_IP)
    await _fail(client, person.email, LIMIT)
    await client.get("/login")
    response = await client.post(
        "/api/v1/auth/login",
        data={"email": person.email, "password": PASSWORD, "csrf_token": client.cookies["lg_csrf"]},
    )
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("text/html")
    assert "Too many failed sign-ins" in response.text
    assert int(response.headers["Retry-After"]) > 0


async def test_unknown_addresses_are_throttled_too(api: Api, from_ip: FromIp) -> None:
    client = from_ip(STRANGER_IP)
    await _fail(client, "ghost@example.com", LIMIT)
    _assert_throttled(await _login(client, "ghost@example.com", PASSWORD))
