"""Registrations per client IP, at the production default (the suite's default raises it)."""

from __future__ import annotations

import pytest

from lunogen.config import Settings
from tests.account.conftest import FromIp
from tests.helpers import Api

DEFAULT = Settings.model_fields["registrations_per_ip_per_hour"].default
FARM_IP = "198.51.100.23"


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"registrations_per_ip_per_hour": DEFAULT}


def test_the_default_is_a_handful_per_hour() -> None:
    assert DEFAULT == 5


async def test_one_ip_gets_a_handful_of_registrations_per_hour(api: Api, from_ip: FromIp) -> None:
    farm = from_ip(FARM_IP)
    for n in range(DEFAULT):
        response = await api.register(farm, f"farmer+{n}@example.com")
        assert response.status_code == 201, (n, response.text)
    refused = await api.register(farm, "farmer+99@example.com")
    assert refused.status_code == 429
    retry_after = int(refused.headers["Retry-After"])
    assert 0 < retry_after <= 3600
    body = refused.json()
    assert body["error"] == "Too many requests"
    assert body["retry_after"] == retry_after
    assert "Too many sign-ups" in body["message"]
    assert [row.to_address for row, _ in await api.emails()] == [
        f"farmer+{n}@example.com" for n in range(DEFAULT)
    ]
    # Another IP is not affected.
    elsewhere = await api.register(from_ip("203.0.113.5"), "neighbour@example.com")
    assert elsewhere.status_code == 201


async def test_attempts_on_taken_addresses_count_too(api: Api, from_ip: FromIp) -> None:
    """Otherwise the throttle itself would tell taken addresses from new ones."""
    taken = await api.sign_up()  # from the test client's own IP
    prober = from_ip(FARM_IP)
    for _ in range(DEFAULT):
        assert (await api.register(prober, taken.email)).status_code == 201
    assert (await api.register(prober, "new-one@example.com")).status_code == 429


async def test_refused_bodies_do_not_spend_the_budget(api: Api, from_ip: FromIp) -> None:
    person = from_ip(FARM_IP)
    for _ in range(DEFAULT + 1):
        weak = await api.register(person, "typo@example.com", password="short")
        assert weak.status_code == 422
    assert (await api.register(person, "typo@example.com")).status_code == 201


async def test_a_throttled_form_registration_shows_the_page_with_429(
    api: Api, from_ip: FromIp
) -> None:
    client = from_ip(FARM_IP)
    for n in range(DEFAULT):
        assert (await api.register(client, f"page{n}@example.com")).status_code == 201
    await client.get("/register")
    response = await client.post(
        "/api/v1/auth/register",
        data={
            "name": "Form Person",
            "email": "page-late@example.com",
            "password": "correct horse battery",
            "age_confirmed": "true",
            "accept_terms": "true",
            "accept_privacy": "true",
            "csrf_token": client.cookies["lg_csrf"],
        },
    )
    assert response.status_code == 429
    assert response.headers["content-type"].startswith("text/html")
    assert "Too many sign-ups" in response.text
    assert int(response.headers["Retry-After"]) > 0
