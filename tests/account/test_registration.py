"""Registration, verification and password sign-in over the JSON API."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from lunogen.account.models import Consent, User
from lunogen.audit.models import AuditEvent
from lunogen.auth.endpoints import EMAILS_PER_ADDRESS_PER_HOUR
from lunogen.privacy.policy import AGE_ATTESTATION_VERSION, PRIVACY_VERSION, TERMS_VERSION
from tests.account.conftest import FromIp
from tests.account.support import rows, user_count
from tests.helpers import PASSWORD, Api


def sent_to(email: str) -> str:
    return (
        f"We sent an email to {email}. Open the link in it to continue; if it does not arrive, "
        "check your spam folder."
    )


def _field_names(body: dict[str, Any]) -> list[str]:
    return [d["field"] for d in body["details"]]


async def test_register_verify_sign_in_me(api: Api) -> None:
    client = api.new_client()
    response = await api.register(client, "Ada@Example.com", name="Ada Lovelace")
    assert response.status_code == 201, response.text
    assert response.json() == {"message": sent_to("ada@example.com")}
    (created,) = await rows(api, select(User).where(User.email == "ada@example.com"))
    assert created.email_verified_at is None
    assert created.role == "user" and created.plan == "free"

    token = await api.last_token("ada@example.com", "verify")
    verified = await client.post("/api/v1/auth/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    assert verified.json()["email_verified"] is True

    signed = await client.post(
        "/api/v1/auth/login", json={"email": "ADA@example.com", "password": PASSWORD}
    )
    assert signed.status_code == 200, signed.text
    assert "lg_session" in client.cookies
    me = await client.get("/api/v1/me")
    assert me.status_code == 200
    body = me.json()
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada Lovelace"
    assert body["setup_complete"] is True
    assert body["limits"]["api_keys"] == 1


async def test_me_without_credentials_is_401(client: Any) -> None:
    response = await client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json()["error"] == "Unauthorized"


async def test_wrong_password_and_unknown_email_get_the_same_answer(api: Api) -> None:
    person = await api.sign_up()
    client = api.new_client()
    wrong = await client.post(
        "/api/v1/auth/login", json={"email": person.email, "password": "not the password"}
    )
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": PASSWORD}
    )
    assert wrong.status_code == 401
    assert unknown.status_code == 401
    assert wrong.json()["error"] == "Invalid credentials"
    assert wrong.json() == unknown.json()
    assert "lg_session" not in client.cookies


async def test_a_taken_address_gets_the_same_answer_and_its_owner_an_email(api: Api) -> None:
    new = await api.register(api.new_client(), "dup@example.com")
    assert new.status_code == 201
    owner_token = await api.last_token("dup@example.com", "verify")
    taken = await api.register(api.new_client(), " DUP@Example.COM", password="another phrase 42")
    assert (taken.status_code, taken.json()) == (new.status_code, new.json())
    assert taken.headers.get("content-type") == new.headers.get("content-type")
    assert await user_count(api, "dup@example.com") == 1

    subjects = [row.subject for row, _ in await api.emails("dup@example.com")]
    assert subjects == [
        "Verify your LunoGen email address",
        "Someone tried to register with your LunoGen address",
    ]
    _row, body = (await api.emails("dup@example.com"))[-1]
    assert "No new account was made" in body
    assert "/login" in body and "/forgot" in body
    assert "token=" not in body  # nothing in it works for whoever tried
    (attempt,) = await rows(
        api,
        select(AuditEvent).where(AuditEvent.action == "account.registration_for_existing_address"),
    )
    (owner,) = await rows(api, select(User).where(User.email == "dup@example.com"))
    assert attempt.subject_user_id == owner.id and attempt.actor_user_id is None

    # The first registration stands: its link and password work, the second password does not.
    client = api.new_client()
    assert (await client.post("/api/v1/auth/verify", json={"token": owner_token})).is_success
    assert (await api.sign_in(client, "dup@example.com")).id == owner.id
    login = await client.post(
        "/api/v1/auth/login", json={"email": "dup@example.com", "password": "another phrase 42"}
    )
    assert login.status_code == 401


async def test_owner_emails_about_a_taken_address_stay_within_the_cap(
    api: Api, from_ip: FromIp
) -> None:
    person = await api.sign_up()
    for n in range(EMAILS_PER_ADDRESS_PER_HOUR + 2):
        response = await api.register(from_ip(f"192.0.2.{n + 1}"), person.email)
        assert response.status_code == 201
        assert response.json() == {"message": sent_to(person.email)}
    notices = [row for row, _ in await api.emails(person.email) if "tried" in row.subject]
    assert len(notices) == EMAILS_PER_ADDRESS_PER_HOUR


async def test_registering_a_taken_address_by_form_shows_the_same_page(api: Api) -> None:
    async def register_by_form(email: str) -> str:
        client = api.new_client()
        await client.get("/register")
        response = await client.post(
            "/api/v1/auth/register",
            data={
                "name": "Form Person",
                "email": email,
                "password": PASSWORD,
                "age_confirmed": "true",
                "accept_terms": "true",
                "accept_privacy": "true",
                "csrf_token": client.cookies["lg_csrf"],
            },
        )
        assert response.status_code == 201, response.text
        return response.text.replace(client.cookies["lg_csrf"], "")

    first = await register_by_form("form@example.com")
    again = await register_by_form("form@example.com")
    assert "Check your inbox" in first
    assert again == first
    assert await user_count(api, "form@example.com") == 1


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "at least 10 characters"),
        ("password123", "too common"),
        ("aaaaaaaaaaaaaa", "too common or repetitive"),
        ("xx-weakling-xx", "must not contain your email"),
    ],
)
async def test_weak_password_is_422_naming_password(api: Api, password: str, reason: str) -> None:
    client = api.new_client()
    response = await api.register(client, "weakling@example.com", password=password)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "Validation failed"
    assert _field_names(body) == ["password"]
    assert reason in body["message"]
    assert await user_count(api, "weakling@example.com") == 0


@pytest.mark.parametrize("field", ["age_confirmed", "accept_terms", "accept_privacy"])
@pytest.mark.parametrize("how", ["false", "missing"])
async def test_missing_attestation_or_consent_is_422_and_creates_nothing(
    api: Api, field: str, how: str
) -> None:
    client = api.new_client()
    body: dict[str, Any] = {
        "name": "Young Person",
        "email": "young@example.com",
        "password": PASSWORD,
        "age_confirmed": True,
        "accept_terms": True,
        "accept_privacy": True,
    }
    if how == "false":
        body[field] = False
    else:
        del body[field]
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 422, response.text
    assert field in _field_names(response.json())
    assert await user_count(api, "young@example.com") == 0
    assert await api.emails("young@example.com") == []


async def test_malformed_json_is_400(client: Any) -> None:
    response = await client.post(
        "/api/v1/auth/register",
        content=b'{"email": "a@example.com", "password":',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid JSON"


async def test_non_object_json_is_422(client: Any) -> None:
    response = await client.post("/api/v1/auth/login", json=["a@example.com", PASSWORD])
    assert response.status_code == 422


async def test_unknown_field_is_422_naming_it(api: Api) -> None:
    client = api.new_client()
    response = await api.register(client, "extra@example.com", role="admin")
    assert response.status_code == 422
    body = response.json()
    assert body["details"] == [{"field": "role", "message": "unknown field"}]
    assert await user_count(api, "extra@example.com") == 0


async def test_invalid_email_is_422(api: Api) -> None:
    response = await api.register(api.new_client(), "not-an-email")
    assert response.status_code == 422
    assert _field_names(response.json()) == ["email"]


async def test_consent_records_document_version_time_ip_and_user_agent(api: Api) -> None:
    client = api.new_client()
    client.headers["User-Agent"] = "ConsentBrowser/1.0"
    response = await api.register(client, "consent@example.com")
    assert response.status_code == 201
    (user_id,) = await rows(api, select(User.id).where(User.email == "consent@example.com"))
    consents = await rows(api, select(Consent).where(Consent.user_id == user_id))
    by_document = {c.document: c for c in consents}
    assert sorted(by_document) == ["age_attestation", "privacy", "terms"]
    assert by_document["terms"].version == TERMS_VERSION
    assert by_document["privacy"].version == PRIVACY_VERSION
    assert by_document["age_attestation"].version == AGE_ATTESTATION_VERSION
    for consent in consents:
        assert consent.accepted_at is not None
        assert consent.ip == "127.0.0.1"
        assert consent.user_agent == "ConsentBrowser/1.0"
    (user,) = await rows(api, select(User).where(User.id == user_id))
    assert user.age_attested_at is not None
    assert user.terms_version == TERMS_VERSION
    assert user.privacy_version == PRIVACY_VERSION


async def test_password_is_stored_as_argon2id_hash(api: Api) -> None:
    person = await api.sign_up()
    (user,) = await rows(api, select(User).where(User.id == person.id))
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


async def test_sign_in_before_verification_is_403_only_with_the_right_password(api: Api) -> None:
    """The 403 tells the account exists only to someone who knows its password."""
    client = api.new_client()
    assert (await api.register(client, "early@example.com")).status_code == 201
    response = await client.post(
        "/api/v1/auth/login", json={"email": "early@example.com", "password": PASSWORD}
    )
    assert response.status_code == 403
    assert response.json()["error"] == "Email not verified"
    assert "lg_session" not in client.cookies
    wrong = await client.post(
        "/api/v1/auth/login", json={"email": "early@example.com", "password": "not the password"}
    )
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": "not the password"}
    )
    assert (wrong.status_code, wrong.json()) == (unknown.status_code, unknown.json())
    assert wrong.status_code == 401


async def test_resend_verification_sends_a_new_working_link(api: Api) -> None:
    client = api.new_client()
    assert (await api.register(client, "resend@example.com")).status_code == 201
    first = await api.last_token("resend@example.com", "verify")
    response = await client.post("/api/v1/auth/verify/resend", json={"email": "Resend@example.com"})
    assert response.status_code == 202
    emails = await api.emails("resend@example.com")
    assert len(emails) == 2
    second = await api.last_token("resend@example.com", "verify")
    assert second != first
    verified = await client.post("/api/v1/auth/verify", json={"token": second})
    assert verified.status_code == 200
    login = await client.post(
        "/api/v1/auth/login", json={"email": "resend@example.com", "password": PASSWORD}
    )
    assert login.status_code == 200


async def test_resend_for_unknown_or_verified_address_sends_nothing(api: Api) -> None:
    person = await api.sign_up()
    client = api.new_client()
    before = len(await api.emails())
    for email in ("ghost@example.com", person.email):
        response = await client.post("/api/v1/auth/verify/resend", json={"email": email})
        assert response.status_code == 202
    assert len(await api.emails()) == before
