"""Admin reads of other accounts' data are audited like their writes: the accounts list and
search, every owner's skills and one owner's skill each write an `admin.viewed` row naming the
admin and what was viewed; anyone else is refused with nothing written."""

from __future__ import annotations

from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from tests.account.support import rows
from tests.admin.support import staff
from tests.agent.support import new_dev
from tests.helpers import Api, Signed
from tests.skill.support import clean_package, create_skill


async def _viewed(api: Api) -> list[AuditEvent]:
    query = (
        select(AuditEvent)
        .where(AuditEvent.action == "admin.viewed")
        .order_by(AuditEvent.created_at, AuditEvent.id)
    )
    return list(await rows(api, query))


async def _admin(api: Api) -> Signed:
    return await staff(api, "admin")


async def test_each_listing_of_the_accounts_is_audited_with_its_search(api: Api) -> None:
    admin = await _admin(api)
    ada = await api.sign_up(api.unique_email("ada"))

    everyone = await admin.client.get("/api/v1/admin/users", params={"limit": 5})
    assert everyone.status_code == 200, everyone.text
    assert {u["email"] for u in everyone.json()["data"]} == {admin.email, ada.email}
    searched = await admin.client.get("/api/v1/admin/users", params={"email": "ADA"})
    assert [u["id"] for u in searched.json()["data"]] == [ada.id]

    viewed = await _viewed(api)
    assert len(viewed) == 2  # one row per read
    assert all(
        (e.actor_user_id, e.subject_user_id, e.target_type, e.target_id)
        == (admin.id, admin.id, "users", None)
        for e in viewed
    )
    assert [e.details for e in viewed] == [
        {"email": None, "offset": 0, "shown": 2},
        {"email": "ADA", "offset": 0, "shown": 1},
    ]

    # Through an API key, the row names the key too.
    key = await api.create_key(admin)
    by_key = await api.key_client(key).get("/api/v1/admin/users", params={"offset": 1})
    assert by_key.status_code == 200
    last = (await _viewed(api))[-1]
    assert last.actor_user_id == admin.id and last.actor_key_id is not None
    assert last.details == {"email": None, "offset": 1, "shown": 1}


async def test_non_admins_are_refused_the_accounts_list_with_nothing_written(api: Api) -> None:
    person = await api.sign_up()
    helper = await staff(api, "support")
    for who in (person, helper):
        refused = await who.client.get("/api/v1/admin/users", params={"email": "a"})
        assert refused.status_code == 403
        assert refused.json()["message"] == "This endpoint requires the admin role"
    key = await api.create_key(person)
    assert (await api.key_client(key).get("/api/v1/admin/users")).status_code == 403
    assert (await api.new_client().get("/api/v1/admin/users")).status_code == 401
    assert await _viewed(api) == []


async def test_admin_reads_of_skills_are_audited_with_the_owner(api: Api) -> None:
    owner = await new_dev(api)
    skill = await create_skill(owner, clean_package())
    admin = await _admin(api)

    listed = await admin.client.get("/api/v1/admin/skills", params={"status": "clean"})
    assert listed.status_code == 200, listed.text
    assert [(s["id"], s["owner_id"]) for s in listed.json()["data"]] == [(skill["id"], owner.id)]
    one = await admin.client.get(f"/api/v1/admin/skills/{skill['id']}")
    assert one.status_code == 200 and one.json()["body"]

    listing, looked = await _viewed(api)
    assert (listing.actor_user_id, listing.target_type, listing.target_id) == (
        admin.id,
        "skills",
        None,
    )
    assert listing.details == {"status": "clean", "offset": 0, "shown": 1}
    assert (looked.actor_user_id, looked.subject_user_id) == (admin.id, owner.id)
    assert (looked.target_type, looked.target_id) == ("skill", skill["id"])
    assert looked.details == {"name": skill["name"]}

    # The owner sees the read in their own security log: the row's subject is them.
    log = await owner.http.get("/api/v1/audit", params={"action": "admin.viewed"})
    assert log.status_code == 200, log.text
    assert [e["target_id"] for e in log.json()["data"]] == [skill["id"]]


async def test_skill_reads_refused_or_missing_write_nothing(api: Api) -> None:
    owner = await new_dev(api)
    skill = await create_skill(owner, clean_package())
    other = await new_dev(api)
    helper = await staff(api, "support")
    for path in ("/api/v1/admin/skills", f"/api/v1/admin/skills/{skill['id']}"):
        assert (await other.http.get(path)).status_code == 403
        assert (await owner.http.get(path)).status_code == 403
        assert (await helper.client.get(path)).status_code == 403
    admin = await _admin(api)
    missing = await admin.client.get("/api/v1/admin/skills/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404
    assert await _viewed(api) == []

    # An admin reading their own skill reads no one else's data: nothing to audit.
    admin_dev = await new_dev(api)
    await api.make_admin(admin_dev.person)
    own = await create_skill(admin_dev, clean_package(name="own-tools"))
    assert (await admin_dev.http.get(f"/api/v1/admin/skills/{own['id']}")).status_code == 200
    assert await _viewed(api) == []


async def test_the_admin_console_pages_audit_their_reads_too(api: Api) -> None:
    owner = await new_dev(api)
    skill = await create_skill(owner, clean_package())
    admin = await _admin(api)
    for path in ("/admin/users?email=user", "/admin/skills?status=clean"):
        shown = await admin.client.get(path)
        assert shown.status_code == 200, path
    one = await admin.client.get(f"/admin/skills/{skill['id']}")
    assert one.status_code == 200 and skill["name"] in one.text

    users, skills, looked = await _viewed(api)
    assert (users.target_type, users.details) == (
        "users",
        {"email": "user", "page": 1, "shown": 1},
    )
    assert (skills.target_type, skills.details) == (
        "skills",
        {"status": "clean", "page": 1, "shown": 1},
    )
    assert (looked.target_type, looked.target_id, looked.subject_user_id) == (
        "skill",
        skill["id"],
        owner.id,
    )
    assert {e.actor_user_id for e in (users, skills, looked)} == {admin.id}

    # Everyone else gets the 404 page, and nothing is written.
    person = await api.sign_up()
    for path in ("/admin/users", "/admin/skills", f"/admin/skills/{skill['id']}"):
        assert (await person.client.get(path)).status_code == 404
    assert len(await _viewed(api)) == 3
