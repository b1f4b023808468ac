"""Admin-only user management: listing accounts and changing roles (audited)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from tests.account.support import rows
from tests.helpers import Api, Signed


async def _admin(api: Api) -> Signed:
    admin = await api.sign_up(api.unique_email("admin"))
    await api.make_admin(admin)
    return admin


async def test_normal_and_support_users_get_403(api: Api) -> None:
    person = await api.sign_up()
    target = await api.sign_up()
    response = await person.client.get("/api/v1/admin/users")
    assert response.status_code == 403
    assert response.json() == {
        "error": "Forbidden",
        "message": "This endpoint requires the admin role",
    }
    patch = await person.client.patch(
        f"/api/v1/admin/users/{target.id}", json={"role": "admin"}, headers=person.headers
    )
    assert patch.status_code == 403
    assert (await target.client.get("/api/v1/me")).json()["role"] == "user"
    # Promoting oneself is not possible either.
    selfish = await person.client.patch(
        f"/api/v1/admin/users/{person.id}", json={"role": "admin"}, headers=person.headers
    )
    assert selfish.status_code == 403

    admin = await _admin(api)
    await admin.client.patch(
        f"/api/v1/admin/users/{person.id}", json={"role": "support"}, headers=admin.headers
    )
    assert (await person.client.get("/api/v1/admin/users")).status_code == 403


async def test_anonymous_gets_401(api: Api) -> None:
    response = await api.new_client().get("/api/v1/admin/users")
    assert response.status_code == 401


async def test_admin_lists_users_with_pagination(api: Api) -> None:
    admin = await _admin(api)
    others = [await api.sign_up() for _ in range(3)]
    everyone = {admin.email, *(o.email for o in others)}

    response = await admin.client.get("/api/v1/admin/users")
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 4
    assert {u["email"] for u in body["data"]} == everyone
    assert all("password" not in key for u in body["data"] for key in u)

    first = (await admin.client.get("/api/v1/admin/users?limit=2")).json()
    second = (await admin.client.get("/api/v1/admin/users?limit=2&offset=2")).json()
    assert (first["limit"], first["offset"], first["total"]) == (2, 0, 4)
    assert len(first["data"]) == 2 and len(second["data"]) == 2
    seen = [u["id"] for u in first["data"] + second["data"]]
    assert len(set(seen)) == 4
    past_end = (await admin.client.get("/api/v1/admin/users?offset=10")).json()
    assert past_end["data"] == [] and past_end["total"] == 4

    filtered = (await admin.client.get(f"/api/v1/admin/users?email={others[1].email}")).json()
    assert [u["id"] for u in filtered["data"]] == [others[1].id]

    bad = await admin.client.get("/api/v1/admin/users?limit=0")
    assert bad.status_code == 422


async def test_admin_with_a_full_key_lists_users_but_not_with_a_narrow_key(api: Api) -> None:
    admin = await _admin(api)
    await api.set_plan(admin, "pro")
    full = api.key_client(await api.create_key(admin, ["full"]))
    narrow = api.key_client(await api.create_key(admin, ["agents:read"]))
    assert (await full.get("/api/v1/admin/users")).status_code == 200
    response = await narrow.get("/api/v1/admin/users")
    assert response.status_code == 403
    assert response.json()["message"] == "API key missing required scope: full"


async def test_role_change_works_and_is_audited(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    response = await admin.client.patch(
        f"/api/v1/admin/users/{person.id}", json={"role": "support"}, headers=admin.headers
    )
    assert response.status_code == 200
    assert response.json()["role"] == "support"
    assert response.json()["id"] == person.id
    assert (await person.client.get("/api/v1/me")).json()["role"] == "support"

    (event,) = await rows(
        api, select(AuditEvent).where(AuditEvent.action == "account.role_changed")
    )
    assert event.actor_user_id == admin.id
    assert event.subject_user_id == person.id
    assert event.target_type == "user" and event.target_id == person.id
    assert event.details == {"from": "user", "to": "support"}
    assert event.ip == "127.0.0.1"

    # Promoting to admin grants the admin endpoints at once.
    await admin.client.patch(
        f"/api/v1/admin/users/{person.id}", json={"role": "admin"}, headers=admin.headers
    )
    assert (await person.client.get("/api/v1/admin/users")).status_code == 200
    changes = await rows(
        api,
        select(AuditEvent)
        .where(AuditEvent.action == "account.role_changed")
        .order_by(AuditEvent.created_at),
    )
    assert [e.details for e in changes] == [
        {"from": "user", "to": "support"},
        {"from": "support", "to": "admin"},
    ]


async def test_same_role_again_writes_no_audit_row(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    response = await admin.client.patch(
        f"/api/v1/admin/users/{person.id}", json={"role": "user"}, headers=admin.headers
    )
    assert response.status_code == 200
    assert (
        await rows(api, select(AuditEvent).where(AuditEvent.action == "account.role_changed")) == []
    )


async def test_unknown_user_is_404(api: Api) -> None:
    admin = await _admin(api)
    response = await admin.client.patch(
        "/api/v1/admin/users/00000000-0000-0000-0000-000000000000",
        json={"role": "support"},
        headers=admin.headers,
    )
    assert response.status_code == 404
    assert response.json()["error"] == "User not found"


async def test_admin_cannot_demote_themselves(api: Api) -> None:
    admin = await _admin(api)
    for role in ("user", "support"):
        response = await admin.client.patch(
            f"/api/v1/admin/users/{admin.id}", json={"role": role}, headers=admin.headers
        )
        assert response.status_code == 409
        assert response.json()["error"] == "Conflict"
    assert (await admin.client.get("/api/v1/me")).json()["role"] == "admin"
    assert (
        await rows(api, select(AuditEvent).where(AuditEvent.action == "account.role_changed")) == []
    )


@pytest.mark.parametrize("body", [{"role": "superuser"}, {"role": ""}, {"role": 3}])
async def test_invalid_role_is_422(api: Api, body: dict[str, object]) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    response = await admin.client.patch(
        f"/api/v1/admin/users/{person.id}", json=body, headers=admin.headers
    )
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["details"]] == ["role"]
    assert (await person.client.get("/api/v1/me")).json()["role"] == "user"


async def test_unknown_field_and_empty_change(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    url = f"/api/v1/admin/users/{person.id}"
    unknown = await admin.client.patch(url, json={"email": "x@example.com"}, headers=admin.headers)
    assert unknown.status_code == 422
    assert unknown.json()["details"] == [{"field": "email", "message": "unknown field"}]
    empty = await admin.client.patch(url, json={}, headers=admin.headers)
    assert empty.status_code == 400


async def test_plan_change_is_audited(api: Api) -> None:
    admin = await _admin(api)
    person = await api.sign_up()
    response = await admin.client.patch(
        f"/api/v1/admin/users/{person.id}", json={"plan": "pro"}, headers=admin.headers
    )
    assert response.status_code == 200
    assert (await person.client.get("/api/v1/me")).json()["limits"]["api_keys"] == 25
    (event,) = await rows(
        api, select(AuditEvent).where(AuditEvent.action == "account.plan_changed")
    )
    assert event.details == {"from": "free", "to": "pro"}
