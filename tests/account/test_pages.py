"""The plain server-rendered pages, used as a browser would: GET a page, post its form."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from lunogen.privacy.policy import PRIVACY_VERSION, TERMS_VERSION
from tests.account.support import rows, user_count
from tests.helpers import PASSWORD, Api

NEW_PASSWORD = "a brand new secret phrase"
_HIDDEN_CSRF = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]+)">')


async def _open(client: httpx.AsyncClient, path: str) -> str:
    """GET a page; check it is HTML with a CSRF field equal to the lg_csrf cookie."""
    response = await client.get(path)
    assert response.status_code == 200, (path, response.text)
    assert response.headers["content-type"].startswith("text/html")
    match = _HIDDEN_CSRF.search(response.text)
    assert match, f"no csrf_token field on {path}"
    assert match.group(1) == client.cookies["lg_csrf"]
    return response.text


def _is_page(response: httpx.Response) -> bool:
    return response.headers["content-type"].startswith("text/html")


async def test_pages_render_with_a_csrf_field(api: Api) -> None:
    client = api.new_client()
    for path in ("/register", "/login", "/verify?token=abc123token", "/forgot", "/reset?token=t0k"):
        await _open(client, path)
    verify = await _open(client, "/verify?token=abc123token")
    assert 'name="token" value="abc123token"' in verify
    reset = await _open(client, "/reset?token=t0k")
    assert 'name="token" value="t0k"' in reset


async def test_token_in_the_page_is_escaped(api: Api) -> None:
    client = api.new_client()
    page = await _open(client, '/verify?token="><script>alert(1)</script>')
    assert "<script>alert(1)</script>" not in page


async def test_browser_flow_register_verify_sign_in_account_sign_out(api: Api) -> None:
    browser = api.new_client()
    await _open(browser, "/register")
    registered = await browser.post(
        "/api/v1/auth/register",
        data={
            "csrf_token": browser.cookies["lg_csrf"],
            "name": "Grace Hopper",
            "email": "grace@example.com",
            "password": PASSWORD,
            "age_confirmed": "true",
            "accept_terms": "true",
            "accept_privacy": "true",
        },
    )
    assert registered.status_code == 201
    assert _is_page(registered)
    assert "Check your inbox" in registered.text

    token = await api.last_token("grace@example.com", "verify")
    await _open(browser, f"/verify?token={token}")
    verified = await browser.post(
        "/api/v1/auth/verify", data={"csrf_token": browser.cookies["lg_csrf"], "token": token}
    )
    assert verified.status_code == 200
    assert _is_page(verified)
    assert "Email verified" in verified.text

    await _open(browser, "/login")
    signed_in = await browser.post(
        "/api/v1/auth/login",
        data={
            "csrf_token": browser.cookies["lg_csrf"],
            "email": "grace@example.com",
            "password": PASSWORD,
        },
    )
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/home"
    moved = await browser.get("/account")
    assert moved.status_code == 303 and moved.headers["location"] == "/settings"
    account = await browser.get("/settings")
    assert account.status_code == 200
    assert "grace@example.com" in account.text
    assert "Grace Hopper" in account.text

    match = _HIDDEN_CSRF.search(account.text)
    assert match
    signed_out = await browser.post("/api/v1/auth/logout", data={"csrf_token": match.group(1)})
    assert signed_out.status_code == 303
    after = await browser.get("/settings")
    assert after.status_code == 303
    assert after.headers["location"] == "/login?next=/settings"


async def test_form_errors_rerender_the_page_never_json(api: Api) -> None:
    browser = api.new_client()
    await _open(browser, "/register")
    response = await browser.post(
        "/api/v1/auth/register",
        data={
            "csrf_token": browser.cookies["lg_csrf"],
            "name": "Weak Password",
            "email": "weak@example.com",
            "password": "short",
            "age_confirmed": "true",
            "accept_terms": "true",
            "accept_privacy": "true",
        },
    )
    assert response.status_code == 422
    assert _is_page(response)
    assert "Password must be at least 10 characters" in response.text
    assert 'action="/api/v1/auth/register"' in response.text  # the form again
    assert f"({TERMS_VERSION})" in response.text and f"({PRIVACY_VERSION})" in response.text
    assert await user_count(api, "weak@example.com") == 0


async def test_unticked_consent_box_rerenders_with_422(api: Api) -> None:
    browser = api.new_client()
    await _open(browser, "/register")
    response = await browser.post(
        "/api/v1/auth/register",
        data={
            "csrf_token": browser.cookies["lg_csrf"],
            "name": "No Terms",
            "email": "noterms@example.com",
            "password": PASSWORD,
            "age_confirmed": "true",
            "accept_privacy": "true",
        },
    )
    assert response.status_code == 422
    assert _is_page(response)
    assert "18 or older" in response.text
    assert await user_count(api, "noterms@example.com") == 0


async def test_wrong_password_form_is_a_401_page(api: Api) -> None:
    person = await api.sign_up()
    browser = api.new_client()
    await _open(browser, "/login")
    response = await browser.post(
        "/api/v1/auth/login",
        data={
            "csrf_token": browser.cookies["lg_csrf"],
            "email": person.email,
            "password": "wrong password!",
        },
    )
    assert response.status_code == 401
    assert _is_page(response)
    assert "Wrong email or password" in response.text
    assert "lg_session" not in browser.cookies
    # The failure is audited even though the page is answered normally.
    failures = await rows(api, select(AuditEvent).where(AuditEvent.action == "auth.sign_in_failed"))
    assert [e.subject_user_id for e in failures] == [person.id]


async def test_form_sign_in_without_consent_goes_to_onboarding(api: Api) -> None:
    from lunogen.account.models import User

    person = await api.sign_up()
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, person.id)
        assert user is not None
        user.terms_version = "an-older-version"
        await session.commit()
    browser = api.new_client()
    await _open(browser, "/login")
    response = await browser.post(
        "/api/v1/auth/login",
        data={
            "csrf_token": browser.cookies["lg_csrf"],
            "email": person.email,
            "password": PASSWORD,
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/onboarding"


async def test_browser_flow_forgot_and_reset(api: Api) -> None:
    person = await api.sign_up()
    browser = api.new_client()
    await _open(browser, "/forgot")
    forgot = await browser.post(
        "/api/v1/auth/password/forgot",
        data={"csrf_token": browser.cookies["lg_csrf"], "email": person.email},
    )
    assert forgot.status_code == 202
    assert "Check your inbox" in forgot.text
    token = await api.last_token(person.email, "reset")
    await _open(browser, f"/reset?token={token}")

    weak = await browser.post(
        "/api/v1/auth/password/reset",
        data={"csrf_token": browser.cookies["lg_csrf"], "token": token, "password": "short"},
    )
    assert weak.status_code == 422
    assert _is_page(weak)
    # The failed attempt did not use up the link.
    reset = await browser.post(
        "/api/v1/auth/password/reset",
        data={"csrf_token": browser.cookies["lg_csrf"], "token": token, "password": NEW_PASSWORD},
    )
    assert reset.status_code == 200, reset.text
    assert "Password changed" in reset.text
    assert (await person.client.get("/api/v1/me")).status_code == 401
    await api.sign_in(api.new_client(), person.email, NEW_PASSWORD)


async def test_used_link_in_a_form_is_a_400_page(api: Api) -> None:
    client = api.new_client()
    assert (await api.register(client, "used@example.com")).status_code == 201
    token = await api.last_token("used@example.com", "verify")
    assert (await client.post("/api/v1/auth/verify", json={"token": token})).status_code == 200
    browser = api.new_client()
    await _open(browser, f"/verify?token={token}")
    response = await browser.post(
        "/api/v1/auth/verify", data={"csrf_token": browser.cookies["lg_csrf"], "token": token}
    )
    assert response.status_code == 400
    assert _is_page(response)
    assert "already used or expired" in response.text
