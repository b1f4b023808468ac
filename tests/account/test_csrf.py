"""CSRF: cookie-authenticated state changes need the session's token; keys need none."""

from __future__ import annotations

import json

import httpx

from tests.account.support import user_count
from tests.helpers import PASSWORD, Api, Signed

WRONG = {"X-CSRF-Token": "not-the-token"}


async def _key_count(person: Signed) -> int:
    response = await person.client.get("/api/v1/keys")
    assert response.status_code == 200
    return len(response.json()["data"])


async def test_post_without_or_with_wrong_token_is_403(api: Api) -> None:
    person = await api.sign_up()
    for headers in ({}, WRONG, {"X-CSRF-Token": ""}):
        response = await person.client.post(
            "/api/v1/keys", json={"name": "k", "scopes": ["full"]}, headers=headers
        )
        assert response.status_code == 403, headers
        assert response.json()["error"] == "Forbidden"
        assert "CSRF" in response.json()["message"]
    assert await _key_count(person) == 0
    ok = await person.client.post(
        "/api/v1/keys", json={"name": "k", "scopes": ["full"]}, headers=person.headers
    )
    assert ok.status_code == 201
    assert await _key_count(person) == 1


async def test_delete_needs_the_token(api: Api) -> None:
    person = await api.sign_up()
    await api.create_key(person)
    key_id = (await person.client.get("/api/v1/keys")).json()["data"][0]["id"]
    for headers in ({}, WRONG):
        response = await person.client.delete(f"/api/v1/keys/{key_id}", headers=headers)
        assert response.status_code == 403
    assert await _key_count(person) == 1
    ok = await person.client.delete(f"/api/v1/keys/{key_id}", headers=person.headers)
    assert ok.status_code == 204
    assert await _key_count(person) == 0


async def test_patch_needs_the_token(api: Api) -> None:
    admin = await api.sign_up()
    await api.make_admin(admin)
    other = await api.sign_up()
    url = f"/api/v1/admin/users/{other.id}"
    for headers in ({}, WRONG):
        response = await admin.client.patch(url, json={"role": "support"}, headers=headers)
        assert response.status_code == 403
    assert (await other.client.get("/api/v1/me")).json()["role"] == "user"
    ok = await admin.client.patch(url, json={"role": "support"}, headers=admin.headers)
    assert ok.status_code == 200
    assert (await other.client.get("/api/v1/me")).json()["role"] == "support"


async def test_token_of_another_session_is_refused(api: Api) -> None:
    person = await api.sign_up()
    stranger = await api.sign_up()
    response = await person.client.post(
        "/api/v1/keys", json={"name": "k", "scopes": ["full"]}, headers=stranger.headers
    )
    assert response.status_code == 403


async def test_safe_methods_need_no_token(api: Api) -> None:
    person = await api.sign_up()
    assert (await person.client.get("/api/v1/keys")).status_code == 200
    assert (await person.client.get("/api/v1/audit")).status_code == 200


async def test_bearer_key_requests_need_no_csrf(api: Api) -> None:
    person = await api.sign_up()
    await api.set_plan(person, "pro")
    keyed = api.key_client(await api.create_key(person))
    created = await keyed.post("/api/v1/keys", json={"name": "from-key", "scopes": ["full"]})
    assert created.status_code == 201, created.text
    revoked = await keyed.delete(f"/api/v1/keys/{created.json()['id']}")
    assert revoked.status_code == 204


async def test_cookie_form_post_with_csrf_field(api: Api) -> None:
    person = await api.sign_up()
    refused = await person.client.post("/api/v1/auth/logout", data={"csrf_token": "wrong"})
    assert refused.status_code == 403
    assert (await person.client.get("/api/v1/me")).status_code == 200
    ok = await person.client.post("/api/v1/auth/logout", data={"csrf_token": person.csrf})
    assert ok.status_code == 303
    assert ok.headers["location"] == "/login"
    assert (await person.client.get("/api/v1/me")).status_code == 401


async def _page_csrf(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200
    return client.cookies["lg_csrf"]


async def test_anonymous_register_form_needs_matching_csrf(api: Api) -> None:
    client = api.new_client()
    csrf = await _page_csrf(client, "/register")
    form = {
        "name": "Form Person",
        "email": "form@example.com",
        "password": PASSWORD,
        "age_confirmed": "true",
        "accept_terms": "true",
        "accept_privacy": "true",
    }
    for bad in ({}, {"csrf_token": "something-else"}):
        response = await client.post("/api/v1/auth/register", data={**form, **bad})
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("text/html")
    # A matching field without the cookie is refused too (double submit needs both).
    cookieless = api.new_client()
    response = await cookieless.post("/api/v1/auth/register", data={**form, "csrf_token": csrf})
    assert response.status_code == 403
    assert await user_count(api, "form@example.com") == 0
    ok = await client.post("/api/v1/auth/register", data={**form, "csrf_token": csrf})
    assert ok.status_code == 201
    assert await user_count(api, "form@example.com") == 1


async def test_anonymous_login_form_needs_matching_csrf(api: Api) -> None:
    person = await api.sign_up()
    client = api.new_client()
    csrf = await _page_csrf(client, "/login")
    form = {"email": person.email, "password": PASSWORD}
    for bad in ({}, {"csrf_token": "something-else"}):
        response = await client.post("/api/v1/auth/login", data={**form, **bad})
        assert response.status_code == 403
        assert "lg_session" not in client.cookies
    ok = await client.post("/api/v1/auth/login", data={**form, "csrf_token": csrf})
    assert ok.status_code == 303
    assert "lg_session" in client.cookies


async def test_json_body_sent_as_a_simple_cross_site_request_is_refused(api: Api) -> None:
    """A hostile page can post `text/plain` (or a typeless Blob) without a CORS preflight;
    such a body must not sign the visitor in to someone else's account."""
    person = await api.sign_up()
    body = json.dumps({"email": person.email, "password": PASSWORD})
    for headers in ({"Content-Type": "text/plain"}, {}):
        client = api.new_client()
        response = await client.post("/api/v1/auth/login", content=body, headers=headers)
        assert response.status_code == 415, (headers, response.text)
        assert "lg_session" not in client.cookies
    register = await api.new_client().post(
        "/api/v1/auth/register",
        content=json.dumps(
            {
                "name": "x",
                "email": "plain@example.com",
                "password": PASSWORD,
                "age_confirmed": True,
                "accept_terms": True,
                "accept_privacy": True,
            }
        ),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert register.status_code == 415
    assert await user_count(api, "plain@example.com") == 0
