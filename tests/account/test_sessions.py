"""Server-side browser sessions: cookie flags, sign-out, sign-out everywhere, revocation."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from lunogen.auth.dependencies import UNAUTHORIZED_MESSAGE
from lunogen.auth.models import AuthSession
from lunogen.kit.time import utcnow
from tests.account.cookies import set_cookie
from tests.account.support import execute, rows
from tests.helpers import PASSWORD, Api

UNAUTHORIZED = {"error": "Unauthorized", "message": UNAUTHORIZED_MESSAGE}


def test_unauthorized_message_is_the_contract_text() -> None:
    assert UNAUTHORIZED_MESSAGE.startswith("Valid API key required")


async def _fresh_login(api: Api) -> tuple[str, dict[str, str | bool], dict[str, str | bool]]:
    person = await api.sign_up()
    client = api.new_client()
    response = await client.post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert response.status_code == 200
    return person.id, set_cookie(response, "lg_session"), set_cookie(response, "lg_csrf")


async def test_session_cookie_is_httponly_lax_and_not_secure_over_http(api: Api) -> None:
    _user_id, session, csrf = await _fresh_login(api)
    assert session["httponly"] is True
    assert str(session["samesite"]).lower() == "lax"
    assert session["path"] == "/"
    assert "secure" not in session  # public_url is http://
    assert int(str(session["max-age"])) > 0
    # The CSRF cookie is readable by our own scripts (double submit), still SameSite=Lax.
    assert "httponly" not in csrf
    assert str(csrf["samesite"]).lower() == "lax"


async def test_session_token_is_stored_only_as_a_hash(api: Api) -> None:
    user_id, session, _csrf = await _fresh_login(api)
    token = str(session["value"])
    assert len(token) >= 32
    stored = await rows(api, select(AuthSession).where(AuthSession.user_id == user_id))
    assert stored
    assert all(row.token_hash != token and token not in row.token_hash for row in stored)


async def test_logout_ends_the_session_for_good(api: Api) -> None:
    person = await api.sign_up()
    token = person.client.cookies["lg_session"]
    response = await person.client.post("/api/v1/auth/logout", headers=person.headers)
    assert response.status_code == 204
    assert set_cookie(response, "lg_session")["value"] in ("", '""')
    assert (await person.client.get("/api/v1/me")).status_code == 401
    # Replaying the old cookie from elsewhere does not work either.
    replay = api.new_client()
    replay.cookies.set("lg_session", token)
    response = await replay.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


async def test_logout_needs_the_csrf_token(api: Api) -> None:
    person = await api.sign_up()
    response = await person.client.post("/api/v1/auth/logout")
    assert response.status_code == 403
    assert (await person.client.get("/api/v1/me")).status_code == 200


async def test_logout_all_revokes_every_session_of_the_user(api: Api) -> None:
    person = await api.sign_up()
    laptop = await api.sign_in(api.new_client(), person.email)
    stranger = await api.sign_up()
    response = await person.client.post("/api/v1/auth/logout-all", headers=person.headers)
    assert response.status_code == 200
    assert "2 session" in response.json()["message"]
    for client in (person.client, laptop.client):
        revoked = await client.get("/api/v1/me")
        assert revoked.status_code == 401
        assert revoked.json() == UNAUTHORIZED
    laptop_token = laptop.client.cookies["lg_session"]
    replay = api.new_client()
    replay.cookies.set("lg_session", laptop_token)
    assert (await replay.get("/api/v1/me")).json() == UNAUTHORIZED
    # Another account keeps its session.
    assert (await stranger.client.get("/api/v1/me")).status_code == 200
    # And the user can sign in again.
    again = await api.sign_in(api.new_client(), person.email)
    assert (await again.client.get("/api/v1/me")).status_code == 200


async def test_logout_all_with_a_narrow_key_is_refused_and_signs_nobody_out(api: Api) -> None:
    person = await api.sign_up()
    narrow = api.key_client(await api.create_key(person, ["logs:read"]))
    await api.set_plan(person, "pro")  # room for a second key
    response = await narrow.post("/api/v1/auth/logout-all")
    assert response.status_code == 403
    assert response.json() == {
        "error": "Forbidden",
        "message": "API key missing required scope: full",
    }
    assert (await person.client.get("/api/v1/me")).status_code == 200

    full = api.key_client(await api.create_key(person, ["full"]))
    allowed = await full.post("/api/v1/auth/logout-all")
    assert allowed.status_code == 200
    assert "1 session" in allowed.json()["message"]
    assert (await person.client.get("/api/v1/me")).status_code == 401


async def test_revoked_session_is_401_with_the_exact_body(api: Api) -> None:
    person = await api.sign_up()
    await execute(
        api,
        update(AuthSession).where(AuthSession.user_id == person.id).values(revoked_at=utcnow()),
    )
    response = await person.client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    posted = await person.client.post("/api/v1/keys", json={"name": "x"}, headers=person.headers)
    assert posted.status_code == 401
    assert posted.json() == UNAUTHORIZED


async def test_expired_session_is_401(api: Api) -> None:
    person = await api.sign_up()
    await execute(
        api,
        update(AuthSession)
        .where(AuthSession.user_id == person.id)
        .values(expires_at=utcnow() - timedelta(seconds=1)),
    )
    response = await person.client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


async def test_garbage_session_cookie_is_401(api: Api) -> None:
    client = api.new_client()
    client.cookies.set("lg_session", "not-a-session")
    response = await client.get("/api/v1/me")
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
