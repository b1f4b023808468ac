"""Audit rows for security-relevant actions, who may read them, and what they never hold."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from tests.account.support import rows
from tests.helpers import PASSWORD, Api, Signed

NEW_PASSWORD = "a brand new secret phrase"
RESET_PASSWORD = "the reset chose this one"
WRONG_PASSWORD = "my wrong guess 12345"


async def _events(api: Api) -> list[AuditEvent]:
    return await rows(api, select(AuditEvent).order_by(AuditEvent.created_at, AuditEvent.id))


async def _actions_for(api: Api, user_id: str) -> list[str]:
    return [e.action for e in await _events(api) if user_id in (e.actor_user_id, e.subject_user_id)]


async def _listed(person: Signed, query: str = "") -> dict[str, Any]:
    response = await person.client.get(f"/api/v1/audit?limit=100{query}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_register_and_sign_in_success_and_failure(api: Api) -> None:
    client = api.new_client()
    client.headers["User-Agent"] = "AuditAgent/2"
    assert (await api.register(client, "audited@example.com")).status_code == 201
    token = await api.last_token("audited@example.com", "verify")
    assert (await client.post("/api/v1/auth/verify", json={"token": token})).is_success
    failed = await client.post(
        "/api/v1/auth/login", json={"email": "audited@example.com", "password": WRONG_PASSWORD}
    )
    assert failed.status_code == 401
    person = await api.sign_in(client, "audited@example.com")

    events = {e.action: e for e in await _events(api)}
    registered = events["account.registered"]
    assert registered.actor_user_id == person.id
    assert registered.target_type == "user" and registered.target_id == person.id
    assert registered.ip == "127.0.0.1"
    assert registered.user_agent == "AuditAgent/2"
    assert registered.created_at is not None
    assert "account.email_verified" in events

    failure = events["auth.sign_in_failed"]
    assert failure.actor_user_id is None
    assert failure.subject_user_id == person.id
    assert failure.details == {"email": "audited@example.com"}

    success = events["auth.sign_in"]
    assert success.actor_user_id == person.id
    assert success.details == {"method": "password"}


async def test_failed_sign_in_on_unknown_email_is_audited(api: Api) -> None:
    response = await api.new_client().post(
        "/api/v1/auth/login", json={"email": "Ghost@Example.com", "password": WRONG_PASSWORD}
    )
    assert response.status_code == 401
    (event,) = await _events(api)
    assert event.action == "auth.sign_in_failed"
    assert event.actor_user_id is None and event.subject_user_id is None
    assert event.details == {"email": "ghost@example.com"}


async def test_rejected_actions_leave_no_audit_row(api: Api) -> None:
    client = api.new_client()
    weak = await api.register(client, "weak@example.com", password="short")
    assert weak.status_code == 422
    no_consent = await api.register(client, "young@example.com", age_confirmed=False)
    assert no_consent.status_code == 422
    assert await _events(api) == []


async def test_password_change_and_reset_and_keys_are_audited(api: Api) -> None:
    person = await api.sign_up()
    await api.create_key(person)
    key_id = (await person.client.get("/api/v1/keys")).json()["data"][0]["id"]
    assert (
        await person.client.delete(f"/api/v1/keys/{key_id}", headers=person.headers)
    ).status_code == 204
    changed = await person.client.post(
        "/api/v1/auth/password/change",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=person.headers,
    )
    assert changed.status_code == 200
    anonymous = api.new_client()
    await anonymous.post("/api/v1/auth/password/forgot", json={"email": person.email})
    token = await api.last_token(person.email, "reset")
    reset = await anonymous.post(
        "/api/v1/auth/password/reset", json={"token": token, "password": RESET_PASSWORD}
    )
    assert reset.status_code == 200

    events = await _events(api)
    actions = [e.action for e in events]
    for action in (
        "api_key.created",
        "api_key.revoked",
        "account.password_changed",
        "account.password_reset",
    ):
        assert actions.count(action) == 1, (action, actions)
    created = next(e for e in events if e.action == "api_key.created")
    revoked = next(e for e in events if e.action == "api_key.revoked")
    assert created.actor_user_id == revoked.actor_user_id == person.id
    assert created.target_id == revoked.target_id == key_id
    assert actions.index("account.password_changed") < actions.index("account.password_reset")


async def test_users_see_only_their_own_events_and_admins_see_all(api: Api) -> None:
    alice = await api.sign_up(api.unique_email("alice"))
    bob = await api.sign_up(api.unique_email("bob"))
    await api.create_key(alice)
    await api.new_client().post(
        "/api/v1/auth/login", json={"email": "ghost@example.com", "password": WRONG_PASSWORD}
    )
    # Someone fails to sign in to Alice's account: Alice may see that, Bob may not.
    await bob.client.post(
        "/api/v1/auth/login", json={"email": alice.email, "password": WRONG_PASSWORD}
    )

    for person, other in ((alice, bob), (bob, alice)):
        listed = await _listed(person)
        assert listed["total"] == len(listed["data"]) > 0
        for event in listed["data"]:
            assert person.id in (event["actor_user_id"], event["subject_user_id"]), event
            assert other.id not in (event["actor_user_id"], event["subject_user_id"]), event
        assert "ghost@example.com" not in json.dumps(listed)
        assert other.email not in json.dumps(listed)
        assert sorted(e["action"] for e in listed["data"]) == sorted(
            await _actions_for(api, person.id)
        )
    alice_actions = [e["action"] for e in (await _listed(alice))["data"]]
    assert "api_key.created" in alice_actions
    assert "auth.sign_in_failed" in alice_actions
    bob_actions = [e["action"] for e in (await _listed(bob))["data"]]
    assert "api_key.created" not in bob_actions
    assert "auth.sign_in_failed" not in bob_actions

    admin = await api.sign_up(api.unique_email("admin"))
    await api.make_admin(admin)
    everything = await _listed(admin)
    assert everything["total"] == len(await _events(api))
    ids = {e["actor_user_id"] for e in everything["data"]} | {
        e["subject_user_id"] for e in everything["data"]
    }
    assert {alice.id, bob.id, admin.id, None} <= ids


async def test_audit_list_is_newest_first_filterable_and_paginated(api: Api) -> None:
    person = await api.sign_up()
    await api.sign_in(api.new_client(), person.email)
    listed = (await _listed(person))["data"]
    times = [e["created_at"] for e in listed]
    assert times == sorted(times, reverse=True)
    assert listed[-1]["action"] == "account.registered"

    sign_ins = await _listed(person, "&action=auth.sign_in")
    assert sign_ins["total"] == 2
    assert {e["action"] for e in sign_ins["data"]} == {"auth.sign_in"}

    page = (await person.client.get("/api/v1/audit?limit=1&offset=1")).json()
    assert page["limit"] == 1 and page["offset"] == 1
    assert [e["id"] for e in page["data"]] == [listed[1]["id"]]


async def test_audit_needs_a_full_key(api: Api) -> None:
    person = await api.sign_up()
    narrow = api.key_client(await api.create_key(person, ["logs:read"]))
    response = await narrow.get("/api/v1/audit")
    assert response.status_code == 403
    assert (await api.new_client().get("/api/v1/audit")).status_code == 401


async def test_audit_rows_never_hold_passwords_or_tokens(api: Api) -> None:
    person = await api.sign_up()
    secrets = {PASSWORD, NEW_PASSWORD, RESET_PASSWORD, WRONG_PASSWORD}
    secrets.add(await api.last_token(person.email, "verify"))
    secrets.add(person.client.cookies["lg_session"])
    secrets.add(person.csrf)
    await api.set_plan(person, "pro")
    key = await api.create_key(person)
    secrets.add(key)
    key_client = api.key_client(key)
    second = await key_client.post("/api/v1/keys", json={"name": "k2", "scopes": ["full"]})
    secrets.add(second.json()["key"])
    await key_client.delete(f"/api/v1/keys/{second.json()['id']}")
    await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": WRONG_PASSWORD}
    )
    await person.client.post(
        "/api/v1/auth/password/change",
        json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
        headers=person.headers,
    )
    await api.new_client().post("/api/v1/auth/password/forgot", json={"email": person.email})
    reset_token = await api.last_token(person.email, "reset")
    secrets.add(reset_token)
    await api.new_client().post(
        "/api/v1/auth/password/reset", json={"token": reset_token, "password": RESET_PASSWORD}
    )

    events = await _events(api)
    assert len(events) >= 8
    dumped = json.dumps(
        [{c.key: str(getattr(e, c.key)) for c in AuditEvent.__table__.columns} for e in events]
    )
    for secret in secrets:
        assert secret not in dumped
    detail_keys = {key.lower() for e in events for key in e.details}
    assert not {k for k in detail_keys if "password" in k or "token" in k}

    admin = await api.sign_up(api.unique_email("admin"))
    await api.make_admin(admin)
    listed = await admin.client.get("/api/v1/audit?limit=100")
    for secret in secrets:
        assert secret not in listed.text


def test_scrub_drops_secret_looking_detail_keys() -> None:
    from lunogen.audit.service import _scrub

    cleaned = _scrub(
        {"email": "a@example.com", "password": "x", "nested": {"api_key": "k", "ok": 1}}
    )
    assert cleaned == {"email": "a@example.com", "nested": {"ok": 1}}
