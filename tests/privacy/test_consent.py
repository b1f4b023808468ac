"""Consent to changed documents: the notice of a material change (in-app and email, to active
users only), the notice page at sign-in after the effective date, acceptance on the page, and
acceptance by continued API use (the Privacy Policy's [changes] clause)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from lunogen.account.models import Consent, User
from lunogen.audit.models import AuditEvent
from lunogen.notification.models import Notification
from lunogen.privacy.models import PolicyVersion
from lunogen.privacy.policy import BUNDLED_VERSION
from tests.account.support import rows
from tests.helpers import PASSWORD, Api, Signed
from tests.privacy.policy_support import (
    ensure_seeded,
    publish,
    run_notices,
    take_effect,
    tomorrow,
    wait_notified,
)

UA = "consent-test-browser/1.0"


async def _admin(api: Api) -> Signed:
    await ensure_seeded(api)
    admin = await api.sign_up(api.unique_email("admin"))
    await api.make_admin(admin)
    return admin


async def _consents(api: Api, user_id: str, document: str) -> list[Consent]:
    return await rows(
        api,
        select(Consent)
        .where(Consent.user_id == user_id, Consent.document == document)
        .order_by(Consent.accepted_at),
    )


async def _browser_sign_in(api: Api, email: str) -> tuple[httpx.AsyncClient, str]:
    browser = api.new_client()
    browser.headers["User-Agent"] = UA
    await browser.get("/login")
    login = await browser.post(
        "/api/v1/auth/login",
        data={"csrf_token": browser.cookies["lg_csrf"], "email": email, "password": PASSWORD},
    )
    assert login.status_code == 303, login.text
    return browser, login.headers["location"]


async def test_material_change_notifies_each_active_user_once(api: Api) -> None:
    admin = await _admin(api)
    alice = await api.sign_up(api.unique_email("alice"))
    gone = await api.sign_up(api.unique_email("gone"))
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, gone.id)
        assert user is not None
        user.deleted_at = datetime.now(UTC)
        await session.commit()

    response = await publish(admin, summary="Cookies are explained twice.")
    assert response.status_code == 201, response.text
    row = await wait_notified(api, "privacy", tomorrow())
    assert row.notified == 2  # the admin and alice

    notes = await rows(api, select(Notification).where(Notification.kind == "policy_change"))
    assert sorted(n.user_id for n in notes) == sorted([admin.id, alice.id])
    assert all(f"Version {tomorrow()} takes effect on" in n.body for n in notes)
    assert all("Cookies are explained twice." in n.body for n in notes)
    for person in (admin, alice):
        letters = [
            body for mail, body in await api.emails(person.email) if "changes on" in mail.subject
        ]
        assert len(letters) == 1
        assert "Privacy Policy" in letters[0] and "close your account" in letters[0]
    assert [m for m, _ in await api.emails(gone.email) if "changes on" in m.subject] == []

    # A second run (a duplicate job, the sweeper) sends nothing more.
    assert await run_notices(api, "privacy", tomorrow()) is None
    again = await rows(api, select(Notification).where(Notification.kind == "policy_change"))
    assert len(again) == 2


async def test_notices_go_in_batches_and_a_replay_repeats_nothing(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lunogen.privacy import policy_notice

    admin = await _admin(api)
    for _ in range(4):
        await api.sign_up()
    monkeypatch.setattr(policy_notice, "BATCH", 2)
    response = await admin.client.post(
        "/api/v1/admin/policies",
        json={"kind": "terms", "effective": tomorrow(), "material": True, "text": "# T\n\n- x"},
        headers=admin.headers,
    )
    assert response.status_code == 201
    row = await wait_notified(api, "terms", tomorrow())
    assert row.notified == 5
    notes = await rows(api, select(Notification).where(Notification.kind == "policy_change"))
    assert len(notes) == 5 and len({n.user_id for n in notes}) == 5

    # A run that died after its first batch: the row is pending again from the start.
    async with api.app.state.sessionmaker() as session:
        stored = await session.get(PolicyVersion, row.id)
        assert stored is not None
        stored.notify_status, stored.notify_cursor = "pending", None
        await session.commit()
    assert await run_notices(api, "terms", tomorrow()) == 5  # every user visited again
    notes = await rows(api, select(Notification).where(Notification.kind == "policy_change"))
    assert len(notes) == 5
    mails = [m for m, _ in await api.emails() if "changes on" in m.subject]
    assert len(mails) == 5


async def test_minor_change_tells_nobody_and_asks_nobody(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    response = await publish(admin, material=False, effective="2026-12-01", version="typo")
    assert response.status_code == 201
    assert (await rows(api, select(Notification).where(Notification.kind == "policy_change"))) == []
    me = (await person.client.get("/api/v1/me")).json()
    assert me["setup_complete"] is True
    assert (await person.client.get("/home")).status_code == 200


async def test_sign_in_before_the_date_shows_no_notice(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    assert (await publish(admin)).status_code == 201
    browser, target = await _browser_sign_in(api, person.email)
    assert target == "/home"
    home = await browser.get("/home")
    assert home.status_code == 200
    assert (await person.client.get("/api/v1/keys")).status_code == 200


async def test_sign_in_after_the_date_shows_the_notice_and_accept_records_it(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    assert (await publish(admin, summary="Cookies are explained twice.")).status_code == 201
    await take_effect(api, "privacy", tomorrow())

    browser, target = await _browser_sign_in(api, person.email)
    assert target == "/onboarding"
    home = await browser.get("/home")
    assert home.status_code == 303 and home.headers["location"] == "/onboarding"
    notice = await browser.get("/onboarding")
    assert notice.status_code == 200
    assert "We have updated the Privacy Policy" in notice.text
    assert "Terms of Service, version" not in notice.text  # only what changed
    assert '<li id="cookies">' in notice.text and "Cookies are explained twice." in notice.text
    assert 'action="/api/v1/policies/accept"' in notice.text
    # A browser session's API calls wait for the person to accept (the sign-in shows it).
    blocked = await person.client.get("/api/v1/keys")
    assert blocked.status_code == 403 and "Privacy Policy changed" in blocked.json()["message"]

    csrf = browser.cookies["lg_csrf"]
    no_csrf = await browser.post("/api/v1/policies/accept", data={})
    assert no_csrf.status_code == 403
    accepted = await browser.post("/api/v1/policies/accept", data={"csrf_token": csrf})
    assert accepted.status_code == 303 and accepted.headers["location"] == "/home"
    consents = await _consents(api, person.id, "privacy")
    assert [c.version for c in consents] == [BUNDLED_VERSION, tomorrow()]
    assert consents[-1].user_agent == UA and consents[-1].ip == "127.0.0.1"
    assert (await _consents(api, person.id, "terms"))[-1].version == BUNDLED_VERSION
    assert (await browser.get("/home")).status_code == 200
    assert (await person.client.get("/api/v1/keys")).status_code == 200
    events = await rows(
        api, select(AuditEvent).where(AuditEvent.action == "account.policy_accepted")
    )
    assert len(events) == 1 and events[0].details["how"] == "notice"

    # Accepting again records nothing more.
    again = await person.client.post("/api/v1/policies/accept", headers=person.headers)
    assert again.status_code == 200 and again.json() == {"accepted": {}}
    assert len(await _consents(api, person.id, "privacy")) == 2


async def test_continued_api_use_records_acceptance_once(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    key = await api.create_key(person)
    caller = api.key_client(key)
    caller.headers["User-Agent"] = "my-integration/2.0"
    assert (await publish(admin)).status_code == 201
    assert (await caller.get("/api/v1/keys")).status_code == 200
    assert len(await _consents(api, person.id, "privacy")) == 1  # before the date: nothing

    await take_effect(api, "privacy", tomorrow())
    answers = await asyncio.gather(*(caller.get("/api/v1/keys") for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5
    assert (await caller.get("/api/v1/me")).json()["setup_complete"] is True
    consents = await _consents(api, person.id, "privacy")
    assert [c.version for c in consents] == [BUNDLED_VERSION, tomorrow()]
    assert consents[-1].user_agent == "my-integration/2.0"
    events = await rows(
        api, select(AuditEvent).where(AuditEvent.action == "account.policy_accepted")
    )
    assert len(events) == 1 and events[0].details == {
        "how": "continued_use",
        "versions": {"privacy": tomorrow()},
    }
    # Accepted: the browser is not stopped by the notice any more.
    assert (await person.client.get("/home")).status_code == 200


async def test_an_api_key_cannot_accept_for_the_person(api: Api) -> None:
    await ensure_seeded(api)
    person = await api.sign_up()
    key = await api.create_key(person)
    refused = await api.key_client(key).post("/api/v1/policies/accept")
    assert refused.status_code == 403
    anonymous = await api.new_client().post("/api/v1/policies/accept")
    assert anonymous.status_code == 401


async def test_closing_the_account_instead_of_accepting(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    assert (await publish(admin)).status_code == 201
    await take_effect(api, "privacy", tomorrow())
    browser, _ = await _browser_sign_in(api, person.email)
    csrf = browser.cookies["lg_csrf"]
    wrong = await browser.post(
        "/onboarding/close", data={"csrf_token": csrf, "password": "not it at all"}
    )
    assert wrong.status_code == 400 and 'role="alert"' in wrong.text
    assert "We have updated the Privacy Policy" in wrong.text
    closed = await browser.post(
        "/onboarding/close", data={"csrf_token": csrf, "password": PASSWORD}
    )
    assert closed.status_code == 303 and closed.headers["location"] == "/login?deleted=1"
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, person.id)
        assert user is not None and user.deleted_at is not None
    assert len(await _consents(api, person.id, "privacy")) == 1  # nothing accepted
