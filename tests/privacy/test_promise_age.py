"""[age] You must be 18 or older to use LunoGen; we ask you to confirm it before your account can
be used.

Registration without the confirmation (JSON or the form) is refused with a 422 naming the field
and writes nothing to any table; an account made by Google sign-in cannot be used until the
confirmation is given, and consent without it is refused. The registration tests
(`tests/account/test_registration.py`) check each field of the attestation and the consents.
"""

from __future__ import annotations

import re

import pytest

from tests.fakes.google_oidc import FakeGoogle, Identity
from tests.helpers import PASSWORD, Api
from tests.privacy.promise_support import (  # noqa: F401 (fixtures)
    CONSENT,
    google,
    google_server,
    google_settings,
    google_sign_in,
    table_counts,
)
from tests.privacy.promises import sentence

TAG = "age"
SENTENCE = sentence(TAG)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def settings_overrides(google: FakeGoogle) -> dict[str, object]:  # noqa: F811
    return google_settings(google)


@pytest.mark.parametrize("age_confirmed", [False, None])
async def test_registration_without_the_confirmation_is_refused_and_writes_nothing(
    api: Api, age_confirmed: bool | None
) -> None:
    before = await table_counts(api)
    body: dict[str, object] = {
        "name": "Young Person",
        "email": "young@example.com",
        "password": PASSWORD,
        "accept_terms": True,
        "accept_privacy": True,
    }
    if age_confirmed is not None:
        body["age_confirmed"] = age_confirmed
    response = await api.new_client().post("/api/v1/auth/register", json=body)
    assert response.status_code == 422, response.text
    assert "age_confirmed" in [d.get("field") for d in response.json()["details"]]
    assert await table_counts(api) == before
    assert await api.emails("young@example.com") == []


async def test_the_registration_form_without_the_box_is_refused_and_writes_nothing(
    api: Api,
) -> None:
    browser = api.new_client()
    page = await browser.get("/register")
    assert page.status_code == 200 and 'name="age_confirmed"' in page.text
    match = _CSRF.search(page.text)
    assert match
    before = await table_counts(api)
    refused = await browser.post(
        "/api/v1/auth/register",
        data={
            "csrf_token": match.group(1),
            "name": "Young Person",
            "email": "young@example.com",
            "password": PASSWORD,
            "accept_terms": "true",
            "accept_privacy": "true",
        },
    )
    assert refused.status_code == 422, refused.text
    assert "18" in refused.text
    assert await table_counts(api) == before


async def test_a_google_account_is_unusable_until_the_confirmation(
    api: Api,
    google: FakeGoogle,  # noqa: F811
) -> None:
    browser = api.new_client()
    signed = await google_sign_in(
        browser, google, Identity(sub="900000000000000000001", email="g@example.com")
    )
    assert signed.status_code == 303 and signed.headers["location"] == "/onboarding"
    blocked = await browser.get("/api/v1/keys")
    assert blocked.status_code == 403 and blocked.json()["error"] == "Account setup incomplete"
    assert (await browser.get("/home")).headers.get("location") == "/onboarding"
    csrf = {"X-CSRF-Token": browser.cookies["lg_csrf"]}
    without_age = {**CONSENT, "age_confirmed": False}
    refused = await browser.post("/api/v1/auth/consent", json=without_age, headers=csrf)
    assert refused.status_code == 422, refused.text
    assert "age_confirmed" in [d.get("field") for d in refused.json()["details"]]
    assert (await browser.get("/api/v1/keys")).status_code == 403
    given = await browser.post("/api/v1/auth/consent", json=CONSENT, headers=csrf)
    assert given.status_code == 200 and given.json()["setup_complete"] is True
    assert (await browser.get("/api/v1/keys")).status_code == 200
