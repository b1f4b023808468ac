"""Changing the account's email address (the privacy policy's right to correction): a link to
the new address, a notice to the old one, and the switch only when the link is used by the
account that asked; taken, malformed and wrong-password requests change and send nothing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from lunogen.account.models import EmailToken, User
from lunogen.audit.models import AuditEvent
from lunogen.auth.models import AuthSession
from lunogen.kit.time import utcnow
from lunogen.privacy.email_change import CHANGE_EMAIL, REQUESTS_PER_HOUR
from tests.account.support import deliver_all, execute, rows
from tests.fakes.smtp import FakeSmtp, fake_smtp
from tests.helpers import PASSWORD, Api, Signed

LINK = re.compile(r"http://testserver/settings/email/confirm/([A-Za-z0-9_\-]+)")


@pytest.fixture
def smtp() -> Iterator[FakeSmtp]:
    with fake_smtp() as server:
        yield server


@pytest.fixture
def settings_overrides(smtp: FakeSmtp) -> dict[str, object]:
    return {"smtp_url": smtp.url, "mail_from": "LunoGen <noreply@lunogen.test>"}


async def _ask(person: Signed, new_email: str, password: str | None = PASSWORD) -> httpx.Response:
    body: dict[str, Any] = {"new_email": new_email}
    if password is not None:
        body["password"] = password
    return await person.client.post("/api/v1/me/email", json=body, headers=person.headers)


async def _confirm(person: Signed, token: str) -> httpx.Response:
    return await person.client.post(
        "/api/v1/me/email/confirm", json={"token": token}, headers=person.headers
    )


async def _token_sent_to(api: Api, address: str) -> str:
    for _row, body in reversed(await api.emails(address)):
        match = LINK.search(body)
        if match:
            return match.group(1)
    raise AssertionError(f"no confirmation link to {address}")


async def _email_of(api: Api, user_id: str) -> str:
    [email] = await rows(api, select(User.email).where(User.id == user_id))
    return str(email)


async def _events(api: Api, action: str) -> list[AuditEvent]:
    return await rows(api, select(AuditEvent).where(AuditEvent.action == action))


async def _change_tokens(api: Api, user_id: str) -> list[EmailToken]:
    query = select(EmailToken).where(
        EmailToken.user_id == user_id, EmailToken.purpose == CHANGE_EMAIL
    )
    return await rows(api, query)


async def test_the_emailed_link_switches_the_address_and_the_old_one_is_told(
    api: Api, smtp: FakeSmtp
) -> None:
    person = await api.sign_up(api.unique_email("ada"))
    await deliver_all()
    already = len(smtp.messages)  # the verification email

    asked = await _ask(person, "  Ada.Lovelace@Example.ORG ")
    assert asked.status_code == 202, asked.text
    assert asked.json()["pending_email"] == "ada.lovelace@example.org"
    status = (await person.client.get("/api/v1/me/email")).json()
    assert status["email"] == person.email
    assert status["pending_email"] == "ada.lovelace@example.org"
    assert (await person.client.get("/api/v1/me")).json()["email"] == person.email  # not yet

    await deliver_all()
    requested_mail = smtp.messages[already:]
    by_address = {m.rcpt_tos[0]: m for m in requested_mail}
    assert len(requested_mail) == 2
    assert set(by_address) == {"ada.lovelace@example.org", person.email}
    link_mail = by_address["ada.lovelace@example.org"]
    assert "Confirm your new LunoGen email address" in link_mail.subject
    match = LINK.search(link_mail.body)
    assert match, link_mail.body
    token = match.group(1)
    notice = by_address[person.email]
    assert "about to change" in notice.subject
    assert "ada.lovelace@example.org" in notice.body and token not in notice.body
    # Only the token's hash is stored, with the address it switches to.
    [row] = await _change_tokens(api, person.id)
    assert row.token_hash != token and row.new_email == "ada.lovelace@example.org"

    confirmed = await _confirm(person, token)
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["email"] == "ada.lovelace@example.org"
    assert confirmed.json()["email_verified"] is True
    assert (await person.client.get("/api/v1/me/email")).json()["pending_email"] is None

    [changed] = await _events(api, "account.email_changed")
    assert changed.actor_user_id == person.id and changed.target_id == person.id
    assert changed.details == {"from": person.email, "to": "ada.lovelace@example.org"}
    [requested] = await _events(api, "account.email_change_requested")
    assert requested.details == {"from": person.email, "to": "ada.lovelace@example.org"}

    await deliver_all()  # (the job may have run already: count from before the confirmation)
    [done] = smtp.messages[already + 2 :]
    assert done.rcpt_tos == [person.email] and "was changed" in done.subject
    assert "ada.lovelace@example.org" in done.body

    # The new address signs in; the old one no longer does.
    await api.sign_in(api.new_client(), "ada.lovelace@example.org")
    old = await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert old.status_code == 401

    # The link works once.
    again = await _confirm(person, token)
    assert again.status_code == 400
    assert again.json()["error"] == "Invalid or expired link"


async def test_a_wrong_or_missing_password_changes_and_sends_nothing(api: Api) -> None:
    person = await api.sign_up()
    before = len(await api.emails())
    wrong = await _ask(person, "new@example.org", password="not my password")
    assert wrong.status_code == 400, wrong.text
    assert wrong.json() == {
        "error": "Wrong password",
        "message": "Your password is wrong; your email address is unchanged",
    }
    missing = await _ask(person, "new@example.org", password=None)
    assert missing.status_code == 400
    assert "Enter your current password" in missing.json()["message"]
    assert len(await api.emails()) == before
    assert await _change_tokens(api, person.id) == []
    assert await _events(api, "account.email_change_requested") == []


async def test_an_address_another_account_holds_is_refused_with_409(api: Api) -> None:
    person = await api.sign_up()
    other = await api.sign_up(api.unique_email("taken"))
    before = len(await api.emails())
    for address in (other.email, other.email.upper()):
        taken = await _ask(person, address)
        assert taken.status_code == 409, taken.text
        assert taken.json()["error"] == "Email address taken"
    # A closed account's address is never reused either.
    await execute(api, update(User).where(User.id == other.id).values(deleted_at=utcnow()))
    assert (await _ask(person, other.email)).status_code == 409
    assert len(await api.emails()) == before
    assert await _change_tokens(api, person.id) == []
    assert await _email_of(api, person.id) == person.email


async def test_the_address_taken_before_the_link_is_opened_is_refused_then(api: Api) -> None:
    person = await api.sign_up()
    assert (await _ask(person, "wanted@example.org")).status_code == 202
    token = await _token_sent_to(api, "wanted@example.org")
    await api.sign_up("wanted@example.org")  # someone registers it meanwhile
    refused = await _confirm(person, token)
    assert refused.status_code == 409, refused.text
    assert await _email_of(api, person.id) == person.email
    assert await _events(api, "account.email_changed") == []


async def test_malformed_or_unchanged_addresses_are_422(api: Api) -> None:
    person = await api.sign_up()
    for address in ("not-an-address", "a@b", "two@@example.org", ""):
        response = await _ask(person, address)
        assert response.status_code == 422, (address, response.text)
        assert "new_email" in response.text
    same = await _ask(person, person.email.upper())
    assert same.status_code == 422
    assert same.json()["message"] == "That is already your email address"
    assert await _change_tokens(api, person.id) == []


async def test_used_expired_and_replaced_links_are_refused(api: Api) -> None:
    person = await api.sign_up()
    assert (await _ask(person, "first@example.org")).status_code == 202
    first = await _token_sent_to(api, "first@example.org")
    assert (await _ask(person, "second@example.org")).status_code == 202
    second = await _token_sent_to(api, "second@example.org")
    # The newer request replaced the first: its link no longer works.
    assert (await _confirm(person, first)).status_code == 400
    await execute(
        api,
        update(EmailToken)
        .where(EmailToken.user_id == person.id)
        .values(expires_at=utcnow() - timedelta(minutes=1)),
    )
    expired = await _confirm(person, second)
    assert expired.status_code == 400
    assert (await person.client.get("/api/v1/me/email")).json()["pending_email"] is None
    assert await _email_of(api, person.id) == person.email
    for junk in ("x" * 43, "short"):
        assert (await _confirm(person, junk)).status_code in (400, 422)


async def test_another_accounts_token_does_nothing(api: Api) -> None:
    ada = await api.sign_up(api.unique_email("ada"))
    eve = await api.sign_up(api.unique_email("eve"))
    assert (await _ask(ada, "ada.new@example.org")).status_code == 202
    token = await _token_sent_to(api, "ada.new@example.org")

    stolen = await _confirm(eve, token)
    assert stolen.status_code == 400, stolen.text
    assert await _email_of(api, eve.id) == eve.email
    assert await _email_of(api, ada.id) == ada.email
    # Nor is the link used up: its owner still confirms with it.
    assert (await _confirm(ada, token)).status_code == 200
    assert await _email_of(api, ada.id) == "ada.new@example.org"
    # A verification or reset token is not an email-change token.
    assert (await _ask(eve, "eve.new@example.org")).status_code == 202
    async with api.new_client() as anon:
        await anon.post("/api/v1/auth/password/forgot", json={"email": eve.email})
    reset = await api.last_token(eve.email, "reset")
    assert (await _confirm(eve, reset)).status_code == 400


async def test_links_sent_to_the_old_address_stop_working(api: Api) -> None:
    person = await api.sign_up()
    async with api.new_client() as anon:
        await anon.post("/api/v1/auth/password/forgot", json={"email": person.email})
    reset = await api.last_token(person.email, "reset")
    assert (await _ask(person, "moved@example.org")).status_code == 202
    assert (
        await _confirm(person, await _token_sent_to(api, "moved@example.org"))
    ).status_code == 200
    used = await api.new_client().post(
        "/api/v1/auth/password/reset", json={"token": reset, "password": "another long phrase"}
    )
    assert used.status_code == 400


async def test_keys_need_full_scope_and_requests_are_capped(api: Api) -> None:
    person = await api.sign_up()
    await api.set_plan(person, "pro")
    narrow = api.key_client(await api.create_key(person, ["agents:read"]))
    body = {"new_email": "k@example.org", "password": PASSWORD}
    assert (await narrow.post("/api/v1/me/email", json=body)).status_code == 403
    full = api.key_client(await api.create_key(person, ["full"]))
    for n in range(REQUESTS_PER_HOUR):
        ok = await full.post("/api/v1/me/email", json={**body, "new_email": f"k{n}@example.org"})
        assert ok.status_code == 202, ok.text
    capped = await full.post("/api/v1/me/email", json=body)
    assert capped.status_code == 429
    [row] = [t for t in await _change_tokens(api, person.id) if t.used_at is None]
    assert row.new_email == f"k{REQUESTS_PER_HOUR - 1}@example.org"
    requested = await _events(api, "account.email_change_requested")
    assert len(requested) == REQUESTS_PER_HOUR
    assert all(e.actor_key_id is not None for e in requested)


async def _google_only(api: Api, person: Signed, *, signed_in_minutes_ago: int) -> None:
    await execute(
        api,
        update(User).where(User.id == person.id).values(password_hash=None, google_sub="g-1"),
    )
    await execute(
        api,
        update(AuthSession)
        .where(AuthSession.user_id == person.id)
        .values(created_at=utcnow() - timedelta(minutes=signed_in_minutes_ago)),
    )


async def test_a_google_only_account_needs_a_recent_browser_sign_in(api: Api) -> None:
    person = await api.sign_up()
    key = await api.create_key(person)
    await _google_only(api, person, signed_in_minutes_ago=11)
    stale = await _ask(person, "g@example.org", password=None)
    assert stale.status_code == 403, stale.text
    assert stale.json() == {
        "error": "Recent sign-in required",
        "message": "Sign in with Google again, then change your email address within 10 minutes",
    }
    # A key is never a recent sign-in.
    by_key = await api.key_client(key).post("/api/v1/me/email", json={"new_email": "g@example.org"})
    assert by_key.status_code == 403
    assert await _change_tokens(api, person.id) == []

    await _google_only(api, person, signed_in_minutes_ago=2)
    fresh = await _ask(person, "g@example.org", password=None)
    assert fresh.status_code == 202, fresh.text
    done = await _confirm(person, await _token_sent_to(api, "g@example.org"))
    assert done.status_code == 200
    assert done.json()["email"] == "g@example.org" and done.json()["google_linked"] is True
    [google_sub] = await rows(api, select(User.google_sub).where(User.id == person.id))
    assert google_sub == "g-1"  # the link stays, by subject id
