"""Password reset by emailed link and password change in a signed-in session."""

from __future__ import annotations

from tests.helpers import PASSWORD, Api

NEW_PASSWORD = "a brand new secret phrase"


async def test_forgot_for_unknown_email_is_202_and_sends_nothing(api: Api) -> None:
    client = api.new_client()
    response = await client.post(
        "/api/v1/auth/password/forgot", json={"email": "nobody@example.com"}
    )
    assert response.status_code == 202
    assert await api.emails() == []


async def test_forgot_answers_the_same_for_known_and_unknown(api: Api) -> None:
    person = await api.sign_up()
    client = api.new_client()
    known = await client.post("/api/v1/auth/password/forgot", json={"email": person.email})
    unknown = await client.post(
        "/api/v1/auth/password/forgot", json={"email": "nobody@example.com"}
    )
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()


async def test_reset_changes_password_and_revokes_every_session(api: Api) -> None:
    person = await api.sign_up()
    second = await api.sign_in(api.new_client(), person.email)
    assert (await person.client.get("/api/v1/me")).status_code == 200

    anonymous = api.new_client()
    forgot = await anonymous.post(
        "/api/v1/auth/password/forgot", json={"email": person.email.upper()}
    )
    assert forgot.status_code == 202
    token = await api.last_token(person.email, "reset")
    reset = await anonymous.post(
        "/api/v1/auth/password/reset", json={"token": token, "password": NEW_PASSWORD}
    )
    assert reset.status_code == 200, reset.text

    for client in (person.client, second.client):
        assert (await client.get("/api/v1/me")).status_code == 401
    old = await anonymous.post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert old.status_code == 401
    new = await anonymous.post(
        "/api/v1/auth/login", json={"email": person.email, "password": NEW_PASSWORD}
    )
    assert new.status_code == 200


async def test_change_password_keeps_this_session_and_revokes_the_others(api: Api) -> None:
    person = await api.sign_up()
    other = await api.sign_in(api.new_client(), person.email)
    response = await person.client.post(
        "/api/v1/auth/password/change",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=person.headers,
    )
    assert response.status_code == 200, response.text
    assert (await person.client.get("/api/v1/me")).status_code == 200
    assert (await other.client.get("/api/v1/me")).status_code == 401

    anonymous = api.new_client()
    old = await anonymous.post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert old.status_code == 401
    new = await anonymous.post(
        "/api/v1/auth/login", json={"email": person.email, "password": NEW_PASSWORD}
    )
    assert new.status_code == 200


async def test_change_password_requires_the_current_password(api: Api) -> None:
    person = await api.sign_up()
    wrong = await person.client.post(
        "/api/v1/auth/password/change",
        json={"current_password": "not my password", "new_password": NEW_PASSWORD},
        headers=person.headers,
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "Wrong current password"
    still_signed_in = await person.client.get("/api/v1/me")
    assert still_signed_in.status_code == 200
    missing = await person.client.post(
        "/api/v1/auth/password/change",
        json={"new_password": NEW_PASSWORD},
        headers=person.headers,
    )
    assert missing.status_code == 422
    assert [d["field"] for d in missing.json()["details"]] == ["current_password"]
    # Still signed in, and the password is unchanged.
    assert (await person.client.get("/api/v1/me")).status_code == 200
    login = await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert login.status_code == 200


async def test_change_password_rejects_a_weak_new_password(api: Api) -> None:
    person = await api.sign_up()
    response = await person.client.post(
        "/api/v1/auth/password/change",
        json={"current_password": PASSWORD, "new_password": "password123"},
        headers=person.headers,
    )
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["details"]] == ["new_password"]


async def test_change_password_with_an_api_key_is_refused(api: Api) -> None:
    person = await api.sign_up()
    keyed = api.key_client(await api.create_key(person))
    response = await keyed.post(
        "/api/v1/auth/password/change",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert response.status_code == 403
    login = await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert login.status_code == 200
