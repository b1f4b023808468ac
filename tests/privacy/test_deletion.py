"""Deleting an account: who may, what stops at once, the Stripe cancellation, and cancelling
the deletion during the grace period."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from lunogen.account.models import User
from lunogen.agent.models import Agent
from lunogen.audit.models import AuditEvent
from lunogen.auth.models import AuthSession
from lunogen.kit.time import utcnow
from lunogen.privacy import subscriptions
from lunogen.privacy.models import StripeCancellation
from lunogen.privacy.subscriptions import MAX_ATTEMPTS, attempt_cancellation
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.stripe import FakeStripe
from tests.helpers import PASSWORD, Api
from tests.privacy.support import backdate_deletion, holder


async def _delete(
    api: Api, client: httpx.AsyncClient, headers: dict[str, str], password: str | None
) -> httpx.Response:
    body = {} if password is None else {"password": password}
    return await client.post("/api/v1/account/delete", json=body, headers=headers)


async def _settle() -> None:
    for _ in range(3):
        await enqueue.drain()
        await wait_idle()


async def _user(api: Api, user_id: str) -> User:
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user


async def _cancellations(api: Api, user_id: str) -> list[StripeCancellation]:
    async with api.app.state.sessionmaker() as session:
        query = select(StripeCancellation).where(StripeCancellation.account_id == user_id)
        return list((await session.execute(query)).scalars())


async def test_a_wrong_or_missing_password_deletes_nothing(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    owner = await holder(api, openrouter)
    person = owner.dev.person
    for password in ("not my password", None):
        response = await _delete(api, person.client, person.headers, password)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "Wrong password"
    assert (await _user(api, owner.id)).deleted_at is None
    assert (await person.client.get("/api/v1/me")).status_code == 200
    assert (await owner.dev.http.get("/api/v1/agents")).status_code == 200
    running = await owner.dev.http.get(f"/api/v1/agents/{owner.agents[0]}")
    assert running.json()["status"] == "running"


async def test_deletion_ends_sessions_and_keys_at_once_stops_agents_and_emails(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    owner = await holder(api, openrouter)
    person = owner.dev.person
    other_browser = api.new_client()
    await api.sign_in(other_browser, owner.email)
    response = await _delete(api, person.client, person.headers, PASSWORD)
    assert response.status_code == 200, response.text
    purge_after = response.json()["purge_after"]
    assert purge_after.startswith((utcnow() + timedelta(days=30)).date().isoformat())

    assert (await person.client.get("/api/v1/me")).status_code == 401
    assert (await other_browser.get("/api/v1/me")).status_code == 401
    assert (await owner.dev.http.get("/api/v1/agents")).status_code == 401
    again = await api.new_client().post(
        "/api/v1/auth/login", json={"email": owner.email, "password": PASSWORD}
    )
    assert again.status_code == 401
    async with api.app.state.sessionmaker() as session:
        statuses = (
            await session.execute(select(Agent.status).where(Agent.owner_id == owner.id))
        ).scalars()
        assert set(statuses) == {"stopped", "draft"}
        live = await session.execute(
            select(AuthSession).where(
                AuthSession.user_id == owner.id, AuthSession.revoked_at.is_(None)
            )
        )
        assert live.first() is None
        [event] = (
            await session.execute(select(AuditEvent).where(AuditEvent.action == "account.deleted"))
        ).scalars()
        assert event.actor_user_id == owner.id
        assert event.details["keys_revoked"] == 1 and event.details["sessions_revoked"] == 2
    [(_email, body)] = [
        (row, text) for row, text in await api.emails(owner.email) if "deleted" in row.subject
    ]
    assert "/account/restore?token=" in body and "purged on" in body


async def test_a_google_only_account_needs_a_recent_sign_in(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    owner = await holder(api, openrouter)
    person = owner.dev.person
    async with api.app.state.sessionmaker() as session:
        await session.execute(update(User).where(User.id == owner.id).values(password_hash=None))
        await session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == owner.id)
            .values(created_at=utcnow() - timedelta(minutes=11))
        )
        await session.commit()
    stale = await _delete(api, person.client, person.headers, None)
    assert stale.status_code == 403, stale.text
    assert stale.json()["error"] == "Recent sign-in required"
    assert (await _user(api, owner.id)).deleted_at is None
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(AuthSession)
            .where(AuthSession.user_id == owner.id)
            .values(created_at=utcnow() - timedelta(minutes=2))
        )
        await session.commit()
    fresh = await _delete(api, person.client, person.headers, None)
    assert fresh.status_code == 200, fresh.text


async def test_the_subscription_is_cancelled_with_retries_and_a_visible_end(
    api: Api, openrouter: FakeOpenRouter, stripe_fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions, "backoff_seconds", lambda attempt: 600.0 * attempt)
    owner = await holder(api, openrouter, stripe_fake)
    assert owner.subscription_id is not None
    stripe_fake.fail(503, "Stripe is down for maintenance")
    person = owner.dev.person
    assert (await _delete(api, person.client, person.headers, PASSWORD)).status_code == 200
    await _settle()

    [row] = await _cancellations(api, owner.id)
    assert (row.status, row.attempts, row.subscription_id) == (
        "queued",
        1,
        owner.subscription_id,
    )
    assert row.last_error is not None and "503" in row.last_error
    assert row.next_attempt_at is not None and row.next_attempt_at > utcnow() + timedelta(minutes=9)
    assert stripe_fake.subscriptions[owner.subscription_id]["status"] == "active"

    settings = api.app.state.settings
    sm = api.app.state.sessionmaker
    assert await attempt_cancellation(sm, settings, row.id) is None  # not due yet: no call
    assert [r.method for r in stripe_fake.api_requests].count("DELETE") == 1
    later = utcnow() + timedelta(minutes=11)
    assert await attempt_cancellation(sm, settings, row.id, now=later) is None
    [row] = await _cancellations(api, owner.id)
    assert (row.status, row.outcome, row.attempts, row.last_error) == ("done", "canceled", 2, None)
    assert stripe_fake.last_request.method == "DELETE"
    assert stripe_fake.last_request.path == f"/v1/subscriptions/{owner.subscription_id}"
    assert stripe_fake.subscriptions[owner.subscription_id]["status"] == "canceled"


async def test_a_cancellation_that_keeps_failing_ends_failed_and_audited(
    api: Api, openrouter: FakeOpenRouter, stripe_fake: FakeStripe, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subscriptions, "backoff_seconds", lambda attempt: 600.0)
    owner = await holder(api, openrouter, stripe_fake)
    stripe_fake.fail(500, times=MAX_ATTEMPTS)
    person = owner.dev.person
    assert (await _delete(api, person.client, person.headers, PASSWORD)).status_code == 200
    await _settle()
    [row] = await _cancellations(api, owner.id)
    sm, settings = api.app.state.sessionmaker, api.app.state.settings
    for step in range(1, MAX_ATTEMPTS):
        now = utcnow() + timedelta(minutes=11 * step)
        await attempt_cancellation(sm, settings, row.id, now=now)
    [row] = await _cancellations(api, owner.id)
    assert (row.status, row.attempts) == ("failed", MAX_ATTEMPTS)
    assert row.last_error is not None and "500" in row.last_error
    assert row.next_attempt_at is None
    async with sm() as session:
        [event] = (
            await session.execute(
                select(AuditEvent).where(AuditEvent.action == "privacy.subscription_cancel_failed")
            )
        ).scalars()
    assert event.target_id == owner.subscription_id
    assert stripe_fake.subscriptions[str(owner.subscription_id)]["status"] == "active"


async def test_an_already_cancelled_subscription_counts_as_done(
    api: Api, openrouter: FakeOpenRouter, stripe_fake: FakeStripe
) -> None:
    owner = await holder(api, openrouter, stripe_fake)
    stripe_fake.cancel_subscription(str(owner.subscription_id))  # its webhook never arrived
    person = owner.dev.person
    assert (await _delete(api, person.client, person.headers, PASSWORD)).status_code == 200
    await _settle()
    [row] = await _cancellations(api, owner.id)
    assert (row.status, row.outcome) == ("done", "already canceled")


async def test_cancelling_the_deletion_from_the_sign_in_page_on_day_29(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    owner = await holder(api, openrouter)
    person = owner.dev.person
    assert (await _delete(api, person.client, person.headers, PASSWORD)).status_code == 200
    await backdate_deletion(api, owner.id, days=29)

    browser = api.new_client()
    login = await browser.get("/login?deleted=1")
    assert "Cancel the deletion" in login.text
    csrf = browser.cookies["lg_csrf"]
    wrong = await browser.post(
        "/login/restore",
        data={"csrf_token": csrf, "email": owner.email, "password": "not it"},
    )
    assert wrong.status_code == 400 and 'role="alert"' in wrong.text
    assert (await _user(api, owner.id)).deleted_at is not None
    forged = await browser.post(
        "/login/restore", data={"csrf_token": "forged", "email": owner.email, "password": PASSWORD}
    )
    assert forged.status_code == 403
    restored = await browser.post(
        "/login/restore", data={"csrf_token": csrf, "email": owner.email, "password": PASSWORD}
    )
    assert restored.status_code == 303 and restored.headers["location"] == "/login?restored=1"
    assert (await _user(api, owner.id)).deleted_at is None

    signed = await api.sign_in(api.new_client(), owner.email)
    agents = await signed.client.get("/api/v1/agents")
    assert {a["status"] for a in agents.json()["data"]} == {"stopped", "draft"}
    assert (await owner.dev.http.get("/api/v1/agents")).status_code == 401  # keys stay revoked


async def test_the_emailed_link_restores_and_the_grace_period_ends_on_day_30(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    owner = await holder(api, openrouter)
    person = owner.dev.person
    assert (await _delete(api, person.client, person.headers, PASSWORD)).status_code == 200
    token = await api.last_token(owner.email, "deleted")
    await backdate_deletion(api, owner.id, days=30)
    late = await api.new_client().post(
        "/api/v1/account/restore", json={"email": owner.email, "password": PASSWORD}
    )
    assert late.status_code == 400, late.text
    assert (await _user(api, owner.id)).deleted_at is not None

    async with api.app.state.sessionmaker() as session:  # back to day 1
        user = await session.get(User, owner.id)
        assert user is not None and user.deleted_at is not None
        user.deleted_at = user.deleted_at + timedelta(days=29)
        await session.commit()
    browser = api.new_client()
    page = await browser.get(f"/account/restore?token={token}")
    assert page.status_code == 200 and token in page.text
    done = await browser.post(
        "/account/restore", data={"csrf_token": browser.cookies["lg_csrf"], "token": token}
    )
    assert done.status_code == 303, done.text
    assert (await _user(api, owner.id)).deleted_at is None
    reused = await api.new_client().post("/api/v1/account/restore", json={"token": token})
    assert reused.status_code == 400


async def test_restoring_by_password_is_throttled_like_a_sign_in(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    owner = await holder(api, openrouter)
    person = owner.dev.person
    assert (await _delete(api, person.client, person.headers, PASSWORD)).status_code == 200
    guesser = api.new_client()
    limit = api.app.state.settings.login_failures_per_window
    for _ in range(limit):
        wrong = await guesser.post(
            "/api/v1/account/restore", json={"email": owner.email, "password": "guess"}
        )
        assert wrong.status_code == 400, wrong.text
    refused = await guesser.post(
        "/api/v1/account/restore", json={"email": owner.email, "password": PASSWORD}
    )
    assert refused.status_code == 429 and "Retry-After" in refused.headers
    assert (await _user(api, owner.id)).deleted_at is not None


async def test_the_settings_page_deletes_with_the_password(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    person = await api.sign_up()
    page = await person.client.get("/settings")
    assert 'action="/settings/delete"' in page.text and "Delete my account" in page.text
    wrong = await person.client.post(
        "/settings/delete",
        data={"csrf_token": person.csrf, "password": "not it", "confirm": "yes"},
    )
    assert wrong.status_code == 400
    assert 'role="alert"' in wrong.text and "password is wrong" in wrong.text
    assert (await _user(api, person.id)).deleted_at is None
    forged = await person.client.post(
        "/settings/delete", data={"csrf_token": "forged", "password": PASSWORD, "confirm": "yes"}
    )
    assert forged.status_code == 403
    assert (await _user(api, person.id)).deleted_at is None
    done = await person.client.post(
        "/settings/delete", data={"csrf_token": person.csrf, "password": PASSWORD, "confirm": "yes"}
    )
    assert done.status_code == 303 and done.headers["location"] == "/login?deleted=1"
    assert (await _user(api, person.id)).deleted_at is not None
    assert (await person.client.get("/settings")).status_code in (303, 401)
    login = await api.new_client().get("/login?deleted=1")
    assert "Your account is deleted" in login.text
