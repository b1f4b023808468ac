"""Consent due (new policy versions, CLI-created accounts): the account waits for it."""

from __future__ import annotations

from sqlalchemy import select

from lunogen.account.models import Consent, User
from lunogen.privacy.policy import TERMS_VERSION
from tests.account.support import rows
from tests.helpers import PASSWORD, Api, Signed

ALL = {"age_confirmed": True, "accept_terms": True, "accept_privacy": True}


async def _outdated(api: Api) -> Signed:
    person = await api.sign_up()
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, person.id)
        assert user is not None
        user.terms_version = "an-older-version"
        await session.commit()
    return person


async def test_account_waits_for_consent_then_works(api: Api) -> None:
    person = await _outdated(api)
    me = await person.client.get("/api/v1/me")
    assert me.status_code == 200
    assert me.json()["setup_complete"] is False
    blocked = await person.client.get("/api/v1/keys")
    assert blocked.status_code == 403
    assert blocked.json()["error"] == "Account setup incomplete"

    before = len(await rows(api, select(Consent).where(Consent.user_id == person.id)))
    missing = await person.client.post(
        "/api/v1/auth/consent", json={**ALL, "accept_terms": False}, headers=person.headers
    )
    assert missing.status_code == 422
    assert [d["field"] for d in missing.json()["details"]] == ["accept_terms"]
    no_csrf = await person.client.post("/api/v1/auth/consent", json=ALL)
    assert no_csrf.status_code == 403

    given = await person.client.post("/api/v1/auth/consent", json=ALL, headers=person.headers)
    assert given.status_code == 200
    assert given.json()["setup_complete"] is True
    assert (await person.client.get("/api/v1/keys")).status_code == 200
    consents = await rows(api, select(Consent).where(Consent.user_id == person.id))
    assert len(consents) == before + 3
    assert TERMS_VERSION in {c.version for c in consents if c.document == "terms"}


async def test_consent_form_error_rerenders_then_succeeds(api: Api) -> None:
    person = await _outdated(api)
    browser = api.new_client()
    await browser.get("/login")
    login = await browser.post(
        "/api/v1/auth/login",
        data={
            "csrf_token": browser.cookies["lg_csrf"],
            "email": person.email,
            "password": PASSWORD,
        },
    )
    assert login.headers["location"] == "/onboarding"
    page = await browser.get("/onboarding")
    assert page.status_code == 200
    csrf = browser.cookies["lg_csrf"]

    refused = await browser.post(
        "/api/v1/auth/consent",
        data={"csrf_token": csrf, "accept_terms": "true", "accept_privacy": "true"},
    )
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("text/html")
    assert 'role="alert">You must confirm you are 18 or older' in refused.text
    assert f"Welcome, {person.user['name']}" in refused.text
    assert f"({TERMS_VERSION})" in refused.text

    accepted = await browser.post(
        "/api/v1/auth/consent",
        data={
            "csrf_token": csrf,
            "age_confirmed": "true",
            "accept_terms": "true",
            "accept_privacy": "true",
        },
    )
    assert accepted.status_code == 303
    assert accepted.headers["location"] == "/home"
    assert (await browser.get("/home")).status_code == 200


async def test_consent_cannot_be_given_with_an_api_key(api: Api) -> None:
    person = await api.sign_up()
    keyed = api.key_client(await api.create_key(person))
    response = await keyed.post("/api/v1/auth/consent", json=ALL)
    assert response.status_code == 403
