"""Single-use, expiring, purpose-bound link tokens (email verification, password reset)."""

from __future__ import annotations

from datetime import timedelta

from lunogen.account.models import EmailToken
from lunogen.account.service import RESET_PASSWORD
from lunogen.kit.ids import random_token, sha256_hex
from lunogen.kit.time import utcnow
from tests.account.support import expire_tokens
from tests.helpers import PASSWORD, Api

NEW_PASSWORD = "a brand new secret phrase"


async def _registered(api: Api, email: str) -> str:
    client = api.new_client()
    assert (await api.register(client, email)).status_code == 201
    return await api.last_token(email, "verify")


async def test_expired_verification_token_is_400(api: Api) -> None:
    token = await _registered(api, "late@example.com")
    await expire_tokens(api, "late@example.com")
    client = api.new_client()
    response = await client.post("/api/v1/auth/verify", json={"token": token})
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid or expired link"
    login = await client.post(
        "/api/v1/auth/login", json={"email": "late@example.com", "password": PASSWORD}
    )
    assert login.status_code == 403


async def test_reused_verification_token_is_400(api: Api) -> None:
    token = await _registered(api, "twice@example.com")
    client = api.new_client()
    assert (await client.post("/api/v1/auth/verify", json={"token": token})).status_code == 200
    again = await client.post("/api/v1/auth/verify", json={"token": token})
    assert again.status_code == 400
    assert again.json()["error"] == "Invalid or expired link"


async def test_unknown_token_is_400(api: Api) -> None:
    response = await api.new_client().post("/api/v1/auth/verify", json={"token": "x" * 43})
    assert response.status_code == 400


async def test_expired_reset_token_is_400_and_password_unchanged(api: Api) -> None:
    person = await api.sign_up()
    client = api.new_client()
    assert (
        await client.post("/api/v1/auth/password/forgot", json={"email": person.email})
    ).status_code == 202
    token = await api.last_token(person.email, "reset")
    await expire_tokens(api, person.email)
    response = await client.post(
        "/api/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid or expired link"
    old = await client.post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert old.status_code == 200


async def test_reused_reset_token_is_400(api: Api) -> None:
    person = await api.sign_up()
    client = api.new_client()
    await client.post("/api/v1/auth/password/forgot", json={"email": person.email})
    token = await api.last_token(person.email, "reset")
    first = await client.post(
        "/api/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
    )
    assert first.status_code == 200
    second = await client.post(
        "/api/v1/auth/password/reset", json={"token": token, "password": "yet another phrase"}
    )
    assert second.status_code == 400
    login = await client.post(
        "/api/v1/auth/login", json={"email": person.email, "password": NEW_PASSWORD}
    )
    assert login.status_code == 200


async def test_reset_token_is_not_a_verification_token(api: Api) -> None:
    client = api.new_client()
    assert (await api.register(client, "mixup@example.com")).status_code == 201
    await client.post("/api/v1/auth/password/forgot", json={"email": "mixup@example.com"})
    reset_token = await api.last_token("mixup@example.com", "reset")
    response = await client.post("/api/v1/auth/verify", json={"token": reset_token})
    assert response.status_code == 400
    login = await client.post(
        "/api/v1/auth/login", json={"email": "mixup@example.com", "password": PASSWORD}
    )
    assert login.status_code == 403  # still unverified


async def test_verification_token_is_not_a_reset_token(api: Api) -> None:
    token = await _registered(api, "other-way@example.com")
    client = api.new_client()
    response = await client.post(
        "/api/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
    )
    assert response.status_code == 400
    # The verification link still works: the failed reset did not consume it.
    assert (await client.post("/api/v1/auth/verify", json={"token": token})).status_code == 200


async def test_reset_with_weak_password_keeps_the_token_usable(api: Api) -> None:
    person = await api.sign_up()
    client = api.new_client()
    await client.post("/api/v1/auth/password/forgot", json={"email": person.email})
    token = await api.last_token(person.email, "reset")
    weak = await client.post(
        "/api/v1/auth/password/reset", json={"token": token, "password": "short"}
    )
    assert weak.status_code == 422
    assert [d["field"] for d in weak.json()["details"]] == ["password"]
    good = await client.post(
        "/api/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
    )
    assert good.status_code == 200


async def _forgot(api: Api, email: str) -> str:
    client = api.new_client()
    response = await client.post("/api/v1/auth/password/forgot", json={"email": email})
    assert response.status_code == 202
    return await api.last_token(email, "reset")


async def _reset(api: Api, token: str, password: str = NEW_PASSWORD) -> int:
    response = await api.new_client().post(
        "/api/v1/auth/password/reset", json={"token": token, "password": password}
    )
    return response.status_code


async def test_a_newer_reset_link_retires_the_older_ones(api: Api) -> None:
    person = await api.sign_up()
    older = await _forgot(api, person.email)
    newer = await _forgot(api, person.email)
    assert older != newer
    assert await _reset(api, older) == 400
    assert await _reset(api, newer) == 200


async def test_using_a_reset_link_retires_every_other_outstanding_one(api: Api) -> None:
    person = await api.sign_up()
    first = await _forgot(api, person.email)
    # A link issued after this one (e.g. by a mail client that fetched a stale copy) cannot
    # be told apart here, so retire them all: plant a second outstanding token directly.
    second = await _outstanding_reset_token(api, person.id)
    assert await _reset(api, second) == 200
    assert await _reset(api, first, "yet another phrase") == 400
    login = await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": NEW_PASSWORD}
    )
    assert login.status_code == 200


async def test_a_password_change_retires_outstanding_reset_links(api: Api) -> None:
    person = await api.sign_up()
    token = await _forgot(api, person.email)
    changed = await person.client.post(
        "/api/v1/auth/password/change",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=person.headers,
    )
    assert changed.status_code == 200, changed.text
    assert await _reset(api, token, "yet another phrase") == 400
    login = await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": NEW_PASSWORD}
    )
    assert login.status_code == 200


async def test_a_new_reset_link_leaves_verification_links_alone(api: Api) -> None:
    token = await _registered(api, "both@example.com")
    await _forgot(api, "both@example.com")
    verified = await api.new_client().post("/api/v1/auth/verify", json={"token": token})
    assert verified.status_code == 200


async def _outstanding_reset_token(api: Api, user_id: str) -> str:
    token = random_token()
    async with api.app.state.sessionmaker() as session:
        session.add(
            EmailToken(
                user_id=user_id,
                purpose=RESET_PASSWORD,
                token_hash=sha256_hex(token),
                expires_at=utcnow() + timedelta(minutes=30),
            )
        )
        await session.commit()
    return token
