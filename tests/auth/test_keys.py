"""Developer API keys: creation shown once, hashed storage, revocation, plan limits, isolation."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from lunogen.auth.dependencies import UNAUTHORIZED_MESSAGE
from lunogen.auth.models import ApiKey
from lunogen.config import Settings
from tests.helpers import Api, Signed

KEY_RE = re.compile(r"^lg_live_[0-9a-f]{64}$")
UNAUTHORIZED = {"error": "Unauthorized", "message": UNAUTHORIZED_MESSAGE}
FORBIDDEN_FULL = {"error": "Forbidden", "message": "API key missing required scope: full"}
KEY_NOT_FOUND = {"error": "API key not found"}


async def _key_row(api: Api, key_id: str) -> ApiKey:
    async with api.app.state.sessionmaker() as session:
        row = await session.get(ApiKey, key_id)
        assert row is not None
        return row


async def _create(person: Signed, **body: Any) -> Any:
    return await person.client.post("/api/v1/keys", json=body, headers=person.headers)


async def test_create_key_is_shown_once_and_stored_as_sha256(api: Api) -> None:
    person = await api.sign_up()
    response = await _create(person, name="ci", scopes=["agents:read", "tools:read"])
    assert response.status_code == 201, response.text
    body = response.json()
    key = body["key"]
    assert KEY_RE.match(key), key
    assert body["prefix"] == key[:16] and body["prefix"].startswith("lg_live_")
    assert body["name"] == "ci"
    assert body["scopes"] == ["agents:read", "tools:read"]
    assert body["last_used_at"] is None

    listed = await person.client.get("/api/v1/keys")
    assert listed.status_code == 200
    assert key not in listed.text
    assert key[16:] not in listed.text
    (entry,) = listed.json()["data"]
    assert "key" not in entry
    assert entry["id"] == body["id"] and entry["prefix"] == key[:16]

    row = await _key_row(api, body["id"])
    assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert row.prefix == key[:16]
    stored = " ".join(str(getattr(row, c.key)) for c in ApiKey.__table__.columns)
    assert key not in stored and key[16:] not in stored


async def test_last_used_at_is_set_after_use(api: Api) -> None:
    person = await api.sign_up()
    key = await api.create_key(person)
    (entry,) = (await person.client.get("/api/v1/keys")).json()["data"]
    assert entry["last_used_at"] is None
    assert (await _key_row(api, entry["id"])).last_used_at is None

    assert (await api.key_client(key).get("/api/v1/me")).status_code == 200

    assert (await _key_row(api, entry["id"])).last_used_at is not None
    (entry,) = (await person.client.get("/api/v1/keys")).json()["data"]
    assert entry["last_used_at"] is not None


async def test_key_authenticates_until_revoked(api: Api) -> None:
    person = await api.sign_up()
    key = await api.create_key(person)
    keyed = api.key_client(key)
    me = await keyed.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["id"] == person.id
    key_id = (await person.client.get("/api/v1/keys")).json()["data"][0]["id"]

    revoked = await person.client.delete(f"/api/v1/keys/{key_id}", headers=person.headers)
    assert revoked.status_code == 204

    after = await keyed.get("/api/v1/me")
    assert after.status_code == 401
    assert after.json() == UNAUTHORIZED
    assert (await person.client.get("/api/v1/keys")).json()["data"] == []
    again = await person.client.delete(f"/api/v1/keys/{key_id}", headers=person.headers)
    assert again.status_code == 404 and again.json() == KEY_NOT_FOUND


async def test_full_key_can_revoke_itself(api: Api) -> None:
    person = await api.sign_up()
    key = await api.create_key(person)
    keyed = api.key_client(key)
    key_id = (await keyed.get("/api/v1/keys")).json()["data"][0]["id"]
    assert (await keyed.delete(f"/api/v1/keys/{key_id}")).status_code == 204
    response = await keyed.get("/api/v1/keys")
    assert response.status_code == 401 and response.json() == UNAUTHORIZED


def _well_formed_unknown() -> str:
    return "lg_live_" + secrets.token_hex(32)


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(_well_formed_unknown(), id="unknown-key"),
        pytest.param("lg_live_abc", id="too-short"),
        pytest.param("lg_live_" + "A" * 64, id="uppercase-hex"),
        pytest.param("lg_live_" + "g" * 64, id="not-hex"),
        pytest.param("lg_test_" + "a" * 64, id="wrong-prefix"),
        pytest.param("sk-" + "a" * 64, id="foreign-key"),
        pytest.param("lg_live_" + "a" * 65, id="too-long"),
    ],
)
async def test_bad_bearer_token_gets_exact_401(api: Api, authorization: str) -> None:
    person = await api.sign_up()
    await api.create_key(person)
    response = await api.key_client(authorization).get("/api/v1/me")
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("Bearer", id="bearer-nothing"),
        pytest.param("Bearer ", id="bearer-blank"),
        pytest.param("Token {key}", id="other-scheme-with-valid-key"),
        pytest.param("{key}", id="no-scheme"),
        pytest.param("Bearer {key}x", id="valid-key-plus-char"),
        pytest.param("", id="empty-header"),
    ],
)
async def test_wrong_authorization_header_gets_exact_401(api: Api, header: str) -> None:
    person = await api.sign_up()
    key = await api.create_key(person)
    client = api.new_client()
    response = await client.get("/api/v1/me", headers={"Authorization": header.format(key=key)})
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    # The same key with the right scheme works, so the 401 was about the header.
    assert (await api.key_client(key).get("/api/v1/me")).status_code == 200


async def test_bad_authorization_header_is_not_rescued_by_a_session_cookie(api: Api) -> None:
    person = await api.sign_up()
    response = await person.client.get("/api/v1/me", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401 and response.json() == UNAUTHORIZED


async def test_scheme_is_case_insensitive(api: Api) -> None:
    person = await api.sign_up()
    key = await api.create_key(person)
    client = api.new_client()
    response = await client.get("/api/v1/me", headers={"Authorization": f"bearer {key}"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/keys"),
        ("POST", "/api/v1/keys"),
        ("DELETE", "/api/v1/keys/abc"),
        ("GET", "/api/v1/tools"),
        ("GET", "/api/v1/audit"),
    ],
)
async def test_no_credentials_gets_exact_401(api: Api, method: str, path: str) -> None:
    response = await api.new_client().request(method, path, json={} if method == "POST" else None)
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


async def test_session_key_creation_needs_csrf(api: Api) -> None:
    person = await api.sign_up()
    response = await person.client.post("/api/v1/keys", json={"name": "x"})
    assert response.status_code == 403
    assert "CSRF" in response.json()["message"]
    assert (await person.client.get("/api/v1/keys")).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scopes": ["agents:destroy"]}, "scopes.0"),
        ({"scopes": []}, "scopes"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "x", "expires": "never"}, "expires"),
    ],
)
async def test_invalid_key_requests_get_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    person = await api.sign_up()
    response = await _create(person, **body)
    assert response.status_code == 422, response.text
    assert field in [d["field"] for d in response.json()["details"]]
    assert (await person.client.get("/api/v1/keys")).json()["data"] == []


async def test_default_scope_is_full(api: Api) -> None:
    person = await api.sign_up()
    response = await _create(person)
    assert response.status_code == 201
    assert response.json()["scopes"] == ["full"]


async def test_free_plan_allows_one_active_key(api: Api) -> None:
    person = await api.sign_up()
    first = await _create(person, name="one")
    assert first.status_code == 201
    second = await _create(person, name="two")
    assert second.status_code == 403
    assert second.json() == {
        "error": "Forbidden",
        "message": "Your Free plan allows 1 active API key; revoke one or upgrade to Pro",
    }
    assert len((await person.client.get("/api/v1/keys")).json()["data"]) == 1

    # A revoked key no longer counts.
    deleted = await person.client.delete(
        f"/api/v1/keys/{first.json()['id']}", headers=person.headers
    )
    assert deleted.status_code == 204
    third = await _create(person, name="three")
    assert third.status_code == 201
    assert [k["name"] for k in (await person.client.get("/api/v1/keys")).json()["data"]] == [
        "three"
    ]


async def test_pro_plan_allows_twenty_five_keys(api: Api) -> None:
    person = await api.sign_up()
    await api.set_plan(person, "pro")
    ids = []
    for n in range(25):
        response = await _create(person, name=f"k{n}")
        assert response.status_code == 201, (n, response.text)
        ids.append(response.json()["id"])
    over = await _create(person, name="k25")
    assert over.status_code == 403
    # Pro is the highest plan: nothing to upgrade to.
    assert over.json() == {
        "error": "Forbidden",
        "message": (
            "Your Pro plan allows 25 active API keys; revoke one, or contact us to raise the limit"
        ),
    }
    assert len((await person.client.get("/api/v1/keys")).json()["data"]) == 25

    assert (
        await person.client.delete(f"/api/v1/keys/{ids[3]}", headers=person.headers)
    ).status_code == 204
    assert (await _create(person, name="k26")).status_code == 201


async def test_key_limit_also_applies_to_keys_creating_keys(api: Api) -> None:
    person = await api.sign_up()
    key = await api.create_key(person)
    response = await api.key_client(key).post("/api/v1/keys", json={"name": "more"})
    assert response.status_code == 403
    assert "Free plan allows 1 active API key" in response.json()["message"]


async def test_keys_endpoints_need_full_scope(api: Api) -> None:
    person = await api.sign_up()
    await api.set_plan(person, "pro")
    full_key = await api.create_key(person, ["full"])
    reader = await api.create_key(person, ["agents:read", "agents:write", "tools:write"])
    narrow = api.key_client(reader)
    listed = (await person.client.get("/api/v1/keys")).json()["data"]
    full_id = next(k["id"] for k in listed if "full" in k["scopes"])

    for response in (
        await narrow.get("/api/v1/keys"),
        await narrow.post("/api/v1/keys", json={"name": "x"}),
        await narrow.delete(f"/api/v1/keys/{full_id}"),
    ):
        assert response.status_code == 403
        assert response.json() == FORBIDDEN_FULL
    assert len((await person.client.get("/api/v1/keys")).json()["data"]) == 2

    full = api.key_client(full_key)
    assert (await full.get("/api/v1/keys")).status_code == 200
    created = await full.post("/api/v1/keys", json={"name": "by key", "scopes": ["logs:read"]})
    assert created.status_code == 201 and created.json()["scopes"] == ["logs:read"]


async def test_other_users_keys_are_invisible_and_untouchable(api: Api) -> None:
    alice = await api.sign_up()
    bob = await api.sign_up()
    alice_key = await api.create_key(alice)
    bob_key = await api.create_key(bob)
    alice_id = (await alice.client.get("/api/v1/keys")).json()["data"][0]["id"]
    bob_id = (await bob.client.get("/api/v1/keys")).json()["data"][0]["id"]

    for attempt in (
        await bob.client.delete(f"/api/v1/keys/{alice_id}", headers=bob.headers),
        await api.key_client(bob_key).delete(f"/api/v1/keys/{alice_id}"),
    ):
        assert attempt.status_code == 404
        assert attempt.json() == KEY_NOT_FOUND
    assert (await api.key_client(alice_key).get("/api/v1/me")).json()["id"] == alice.id

    bob_list = await api.key_client(bob_key).get("/api/v1/keys")
    assert [k["id"] for k in bob_list.json()["data"]] == [bob_id]
    assert alice_id not in bob_list.text and alice_key[:16] not in bob_list.text
    alice_list = (await alice.client.get("/api/v1/keys")).json()["data"]
    assert [k["id"] for k in alice_list] == [alice_id]

    unknown = await bob.client.delete("/api/v1/keys/not-a-key-id", headers=bob.headers)
    assert unknown.status_code == 404 and unknown.json() == KEY_NOT_FOUND


async def test_key_of_unconsented_user_is_refused(api: Api) -> None:
    """A key does not bypass the consent gate: the person must accept current policies first."""
    from lunogen.account.models import User

    person = await api.sign_up()
    key = await api.create_key(person)
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, person.id)
        assert user is not None
        user.terms_version = user.privacy_version = user.age_attested_at = None  # never accepted
        await session.commit()
    keyed = api.key_client(key)
    refused = await keyed.get("/api/v1/tools")
    assert refused.status_code == 403
    assert refused.json()["error"] == "Account setup incomplete"
    me = await keyed.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["setup_complete"] is False


async def test_key_never_logged_or_audited(
    capfd: pytest.CaptureFixture[str], api: Api, settings: Settings
) -> None:
    person = await api.sign_up()
    created = await _create(person, name="secret", scopes=["full"])
    key = created.json()["key"]
    keyed = api.key_client(key)
    assert (await keyed.get("/api/v1/me")).status_code == 200
    assert (await keyed.get("/api/v1/keys")).status_code == 200
    assert (await keyed.post("/api/v1/keys", json={"name": "2"})).status_code == 403
    assert (await keyed.delete(f"/api/v1/keys/{created.json()['id']}")).status_code == 204
    assert (await keyed.get("/api/v1/me")).status_code == 401

    await api.app.state.started  # `lunogen_started` is logged once the server answers
    out, err = capfd.readouterr()
    logged = out + err
    assert "lunogen_started" in logged  # the capture does see the server's log
    assert key not in logged and key[16:] not in logged

    async with api.app.state.sessionmaker() as session:
        events = list(
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.target_id == created.json()["id"])
                )
            ).scalars()
        )
        everything = list((await session.execute(select(AuditEvent))).scalars())
    by_action = {e.action: e for e in events}
    assert set(by_action) == {"api_key.created", "api_key.revoked"}
    for event in events:
        assert event.details["prefix"] == key[:16]
        assert event.actor_user_id == person.id
    assert by_action["api_key.created"].details["scopes"] == ["full"]
    assert by_action["api_key.revoked"].actor_key_id == created.json()["id"]
    dumped = json.dumps(
        [{c.key: str(getattr(e, c.key)) for c in AuditEvent.__table__.columns} for e in everything]
    )
    assert key not in dumped and key[16:] not in dumped

    audit = await person.client.get("/api/v1/audit")
    assert audit.status_code == 200
    assert "api_key.created" in audit.text and key not in audit.text

    if settings.is_sqlite:
        data_dir = Path(settings.data_dir)
        raw = b"".join(p.read_bytes() for p in data_dir.glob("lunogen.db*"))
        assert key[:16].encode() in raw  # the prefix is stored, so the scan does see rows
        assert key[16:].encode() not in raw
