"""API keys, notifications, the security log and settings, used as a browser would: GET a page,
post its form with the CSRF field, follow the redirect. Another person's ids give the 404 page;
a form without its CSRF field is refused."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from lunogen.account.models import User
from lunogen.account.picture import Picture
from lunogen.account.picture import store as store_picture
from lunogen.audit.models import AuditEvent
from lunogen.auth.models import ApiKey, AuthSession
from lunogen.auth.scopes import Scope
from lunogen.dashboard.key_pages import SCOPE_HELP
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.notification.models import Notification
from tests.fakes.google_oidc import PNG_1X1 as PNG
from tests.helpers import PASSWORD, Api, Signed

NEW_PASSWORD = "a brand new secret phrase"
_KEY = re.compile(r"lg_live_[0-9a-f]{64}")
_BADGE = re.compile(r'<span class="badge" aria-label="(\d+) unread">')


def _badge(html: str) -> int:
    """The header's unread count (0 when the badge is absent)."""
    match = _BADGE.search(html)
    return int(match.group(1)) if match else 0


def _is_page(response: httpx.Response) -> bool:
    return response.headers["content-type"].startswith("text/html")


async def _post(person: Signed, path: str, **fields: str | list[str]) -> httpx.Response:
    return await person.client.post(path, data={"csrf_token": person.csrf, **fields})


async def _add_notes(api: Api, user_id: str, count: int, *, stem: str = "Note") -> list[str]:
    """`count` unread notifications, one minute apart, the last one newest."""
    ids = [new_id() for _ in range(count)]
    start = utcnow() - timedelta(hours=1)
    async with api.app.state.sessionmaker() as session:
        for number, note_id in enumerate(ids):
            session.add(
                Notification(
                    id=note_id,
                    user_id=user_id,
                    kind="agent.error",
                    title=f"{stem} {number}",
                    body=f"What happened to {stem.lower()} {number}.",
                    dedupe_key=f"test:{note_id}",
                    created_at=start + timedelta(minutes=number),
                )
            )
        await session.commit()
    return ids


async def _key_rows(api: Api, user_id: str) -> list[ApiKey]:
    async with api.app.state.sessionmaker() as session:
        query = select(ApiKey).where(ApiKey.user_id == user_id)
        return list((await session.execute(query)).scalars())


# API keys ---------------------------------------------------------------------------------------


async def test_a_key_is_shown_once_then_never_then_revoked(api: Api) -> None:
    person = await api.sign_up()
    empty = await person.client.get("/keys")
    assert empty.status_code == 200
    assert "No keys yet" in empty.text
    for scope, help_text in SCOPE_HELP.items():
        assert f'value="{scope.value}"' in empty.text and help_text in empty.text

    created = await _post(person, "/keys", name="CI deploys", scopes=["agents:read", "logs:read"])
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    (plaintext,) = set(_KEY.findall(created.text))
    assert "shown only on this page" in created.text
    assert 'src="/static/account/copy.js"' in created.text
    assert 'data-copy="new-key"' in created.text and "<script>" not in created.text

    listed = await person.client.get("/keys")
    assert plaintext not in listed.text and not _KEY.search(listed.text)
    assert "CI deploys" in listed.text and f"{plaintext[:16]}…" in listed.text
    assert "agents:read, logs:read" in listed.text and "never" in listed.text
    (row,) = await _key_rows(api, person.id)

    # The key works with its scopes, and only with them.
    program = api.key_client(plaintext)
    assert (await program.get("/api/v1/agents")).status_code == 200
    assert (await program.get("/api/v1/keys")).status_code == 403
    assert "never" not in (await person.client.get("/keys")).text  # last used now

    confirm = await person.client.get(f"/keys/{row.id}/revoke")
    assert confirm.status_code == 200
    assert "stops working at once" in confirm.text
    assert f'action="/keys/{row.id}/revoke"' in confirm.text
    revoked = await _post(person, f"/keys/{row.id}/revoke")
    assert revoked.status_code == 303 and revoked.headers["location"] == "/keys?outcome=revoked"
    after = await person.client.get("/keys?outcome=revoked")
    assert "Key revoked" in after.text and "CI deploys" not in after.text
    assert (await program.get("/api/v1/agents")).status_code == 401
    # Revoked: the confirmation and a second revoke are the 404 page.
    assert (await person.client.get(f"/keys/{row.id}/revoke")).status_code == 404
    assert (await _post(person, f"/keys/{row.id}/revoke")).status_code == 404

    log = (await person.client.get("/security")).text
    assert "API key created" in log and "API key revoked" in log
    assert "name CI deploys" in log and "scopes agents:read, logs:read" in log


async def test_key_form_errors_keep_the_form(api: Api) -> None:
    person = await api.sign_up()  # the Free plan: one active key
    no_scope = await _post(person, "/keys", name="Half done")
    assert no_scope.status_code == 422 and _is_page(no_scope)
    assert 'role="alert">Tick at least one scope' in no_scope.text
    assert 'value="Half done"' in no_scope.text
    no_name = await _post(person, "/keys", name="  ", scopes="logs:read")
    assert no_name.status_code == 422
    assert "Give the key a name" in no_name.text
    assert 'value="logs:read" aria-describedby="scope-9" checked' in no_name.text
    unknown = await _post(person, "/keys", name="x", scopes="billing:everything")
    assert unknown.status_code == 422 and "Tick at least one scope" in unknown.text
    assert await _key_rows(api, person.id) == []

    first = await _post(person, "/keys", name="The one", scopes="full")
    assert first.status_code == 201
    second = await _post(person, "/keys", name="One too many", scopes="full")
    assert second.status_code == 403 and _is_page(second)
    assert 'id="key-error" role="alert">Your Free plan allows 1 active API key' in second.text
    assert 'value="One too many"' in second.text and "The one" in second.text
    assert len(await _key_rows(api, person.id)) == 1


async def test_another_persons_key_is_not_found(api: Api) -> None:
    owner = await api.sign_up()
    key = await api.create_key(owner)
    (row,) = await _key_rows(api, owner.id)
    intruder = await api.sign_up()
    page = await intruder.client.get(f"/keys/{row.id}/revoke")
    assert page.status_code == 404 and "Not found" in page.text
    revoke = await _post(intruder, f"/keys/{row.id}/revoke")
    assert revoke.status_code == 404 and _is_page(revoke)
    assert (await api.key_client(key).get("/api/v1/me")).status_code == 200
    assert row.prefix not in (await intruder.client.get("/keys")).text


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/keys", {"name": "sneaky", "scopes": "full"}),
        ("/notifications/read-all", {}),
        ("/settings/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
    ],
)
async def test_a_form_without_its_csrf_field_is_refused(
    api: Api, path: str, fields: dict[str, str]
) -> None:
    person = await api.sign_up()
    await _add_notes(api, person.id, 1)
    for token in (None, "wrong-token"):
        data = dict(fields) if token is None else {**fields, "csrf_token": token}
        refused = await person.client.post(path, data=data)
        assert refused.status_code == 403, refused.text
        assert _is_page(refused) and "CSRF token missing or invalid" in refused.text
    assert await _key_rows(api, person.id) == []
    assert _badge((await person.client.get("/notifications")).text) == 1
    still = await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert still.status_code == 200


async def test_signed_out_forms_and_pages_go_to_sign_in(api: Api) -> None:
    browser = api.new_client()
    for path in ("/keys", "/notifications", "/security", "/settings"):
        away = await browser.get(path)
        assert away.status_code == 303 and away.headers["location"] == f"/login?next={path}"
    posted = await browser.post("/keys", data={"name": "x", "scopes": "full"})
    assert posted.status_code == 303 and posted.headers["location"] == "/login?next=/keys"


# Notifications ----------------------------------------------------------------------------------


async def test_notifications_newest_first_and_marking_updates_the_count(api: Api) -> None:
    person = await api.sign_up()
    empty = await person.client.get("/notifications")
    assert empty.status_code == 200 and "No notifications yet" in empty.text
    assert "Mark all as read" not in empty.text
    ids = await _add_notes(api, person.id, 3)

    listed = await person.client.get("/notifications")
    assert _badge(listed.text) == 3
    assert listed.text.index("Note 2") < listed.text.index("Note 1") < listed.text.index("Note 0")
    assert listed.text.count('<span class="tag">Unread</span>') == 3

    marked = await _post(person, f"/notifications/{ids[1]}/read", page="1")
    assert marked.status_code == 303
    assert marked.headers["location"] == "/notifications?outcome=read"
    after = await person.client.get(marked.headers["location"])
    assert _badge(after.text) == 2 and "Marked as read." in after.text
    assert after.text.count('<span class="tag">Unread</span>') == 2
    assert f'action="/notifications/{ids[1]}/read"' not in after.text
    assert _badge((await person.client.get("/home")).text) == 2

    all_read = await _post(person, "/notifications/read-all")
    assert all_read.headers["location"] == "/notifications?outcome=all-read"
    done = await person.client.get(all_read.headers["location"])
    assert _badge(done.text) == 0 and "Mark as read" not in done.text
    assert "Note 0" in done.text and "Unread</span>" not in done.text


async def test_another_persons_notification_is_not_found(api: Api) -> None:
    owner = await api.sign_up()
    (note,) = await _add_notes(api, owner.id, 1, stem="Private")
    intruder = await api.sign_up()
    refused = await _post(intruder, f"/notifications/{note}/read")
    assert refused.status_code == 404 and "Not found" in refused.text
    missing = await _post(intruder, "/notifications/not-an-id/read")
    assert missing.status_code == 404
    assert "Private" not in (await intruder.client.get("/notifications")).text
    assert _badge((await owner.client.get("/notifications")).text) == 1


async def test_notifications_are_paginated(api: Api) -> None:
    person = await api.sign_up()
    ids = await _add_notes(api, person.id, 25)
    first = await person.client.get("/notifications")
    assert first.text.count('class="note unread"') == 20
    assert "Page 1 of 2" in first.text and 'href="/notifications?page=2"' in first.text
    assert "Note 24" in first.text and "Note 4<" not in first.text
    second = await person.client.get("/notifications?page=2")
    assert second.text.count('class="note unread"') == 5
    assert "Note 4<" in second.text and "Note 0<" in second.text
    assert 'href="/notifications" rel="prev"' in second.text
    # Marking on page 2 comes back to page 2.
    marked = await _post(person, f"/notifications/{ids[0]}/read", page="2")
    assert marked.headers["location"] == "/notifications?outcome=read&page=2"
    beyond = await person.client.get("/notifications?page=9")
    assert beyond.status_code == 200 and "Back to the newest" in beyond.text
    for bad in ("0", "-1", "abc", "99999999"):
        wrong = await person.client.get(f"/notifications?page={bad}")
        assert wrong.status_code == 400 and _is_page(wrong), bad
    bad_back = await _post(person, f"/notifications/{ids[1]}/read", page="x")
    assert bad_back.status_code == 400


# Security log -----------------------------------------------------------------------------------


async def test_the_security_log_shows_the_persons_own_events(api: Api) -> None:
    person = await api.sign_up()
    other = await api.sign_up()
    await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": "not the password"}
    )
    log = await person.client.get("/security")
    assert log.status_code == 200
    assert "Signed in" in log.text and "method password" in log.text
    assert "Failed sign-in" in log.text and "Email address verified" in log.text
    assert "Account created" in log.text and "127.0.0.1" in log.text
    assert other.email not in log.text
    assert log.text.index("Failed sign-in") < log.text.index("Account created")  # newest first
    assert 'aria-current="page">Security log' in log.text


async def test_the_security_log_is_paginated(api: Api) -> None:
    person = await api.sign_up()
    async with api.app.state.sessionmaker() as session:
        for number in range(25):
            session.add(
                AuditEvent(
                    action="skill.created",
                    actor_user_id=person.id,
                    subject_user_id=person.id,
                    details={"name": f"skill-{number}", "version": 1},
                    created_at=utcnow() + timedelta(minutes=number),
                )
            )
        await session.commit()
    first = (await person.client.get("/security")).text
    assert "Skill created" in first and "name skill-24; version 1" in first
    assert "Page 1 of 2" in first and "skill-4;" not in first
    second = (await person.client.get("/security?page=2")).text
    assert "skill-4;" in second and "Signed in" in second and "Page 2 of 2" in second
    assert (await person.client.get("/security?page=nope")).status_code == 400


async def test_the_security_log_has_an_empty_state(api: Api) -> None:
    person = await api.sign_up()
    async with api.app.state.sessionmaker() as session:
        # A person with no events of their own: the rows are append-only, so make a new one.
        user = User(
            email=api.unique_email("quiet"),
            name="Quiet Person",
            password_hash=None,
            email_verified_at=utcnow(),
        )
        source = await session.get(User, person.id)
        assert source is not None
        user.age_attested_at = source.age_attested_at
        user.terms_version, user.privacy_version = source.terms_version, source.privacy_version
        session.add(user)
        await session.flush()
        row = await session.get(
            AuthSession,
            (
                await session.execute(
                    select(AuthSession.id).where(AuthSession.user_id == person.id)
                )
            ).scalar_one(),
        )
        assert row is not None
        row.user_id = user.id  # the person's browser now belongs to the quiet account
        await session.commit()
    page = await person.client.get("/security")
    assert page.status_code == 200 and "Nothing recorded yet" in page.text


# Settings ---------------------------------------------------------------------------------------


async def test_settings_shows_the_profile_sessions_and_your_data(api: Api) -> None:
    person = await api.sign_up()
    old = await person.client.get("/account")
    assert old.status_code == 303 and old.headers["location"] == "/settings"
    page = await person.client.get("/settings")
    assert page.status_code == 200
    assert "Test Person" in page.text and person.email in page.text
    assert "This browser" in page.text and "Sign out everywhere" in page.text
    assert 'action="/api/v1/auth/logout-all"' in page.text
    assert 'autocomplete="current-password"' in page.text
    data_section = page.text[page.text.index('id="data-h"') :]
    assert 'href="/settings/export"' in data_section and "Export your data" in data_section
    assert 'action="/settings/delete"' in data_section and "Delete my account" in data_section
    assert "<img" not in page.text  # no Google picture: nothing is fetched

    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, person.id)
        assert user is not None
        user.google_sub, user.picture_url = "g-123", "https://lh3.googleusercontent.com/a/pic"
        await session.commit()
    linked = (await person.client.get("/settings")).text
    assert "<img" not in linked and "Linked" in linked  # a URL alone shows nothing: no copy held
    async with api.app.state.sessionmaker() as session:
        picture = Picture(source_url=user.picture_url, content_type="image/png", data=PNG)
        await store_picture(session, user_id=person.id, picture=picture)
        await session.commit()
    google = (await person.client.get("/settings")).text
    assert 'src="/settings/picture"' in google and "https://lh3" not in google
    assert "Linked" in google


async def test_a_wrong_current_password_keeps_the_form_with_an_error(api: Api) -> None:
    person = await api.sign_up()
    wrong = await _post(
        person, "/settings/password", current_password="not it at all", new_password=NEW_PASSWORD
    )
    assert wrong.status_code == 400 and _is_page(wrong)
    assert 'id="password-error" role="alert">Your current password is wrong' in wrong.text
    assert 'name="new_password"' in wrong.text and "This browser" in wrong.text
    weak = await _post(
        person, "/settings/password", current_password=PASSWORD, new_password="short"
    )
    assert weak.status_code == 422
    assert "Password must be at least 10 characters" in weak.text
    missing = await _post(person, "/settings/password", current_password=PASSWORD)
    assert missing.status_code == 422 and "New password: Field required" in missing.text
    # Nothing changed: the old password still signs in.
    check = await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert check.status_code == 200


async def test_changing_the_password_signs_out_the_other_sessions(api: Api) -> None:
    person = await api.sign_up()
    laptop = await api.sign_in(api.new_client(), person.email)
    changed = await _post(
        person, "/settings/password", current_password=PASSWORD, new_password=NEW_PASSWORD
    )
    assert (
        changed.status_code == 303 and changed.headers["location"] == "/settings?outcome=password"
    )
    page = await person.client.get(changed.headers["location"])
    assert "Password changed." in page.text and page.text.count("<tr>") == 2  # head + this one
    assert (await laptop.client.get("/settings")).headers["location"] == "/login?next=/settings"
    old = await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert old.status_code == 401
    await api.sign_in(api.new_client(), person.email, NEW_PASSWORD)
    assert "Password changed" in (await person.client.get("/security")).text


async def test_one_other_session_can_be_signed_out(api: Api) -> None:
    person = await api.sign_up()
    laptop = await api.sign_in(api.new_client(), person.email)
    page = await person.client.get("/settings")
    (other,) = re.findall(r'action="/settings/sessions/([^"]+)/revoke"', page.text)
    async with api.app.state.sessionmaker() as session:
        rows = (
            await session.execute(select(AuthSession).where(AuthSession.user_id == person.id))
        ).scalars()
        mine = next(r.id for r in rows if r.id != other)

    intruder = await api.sign_up()
    assert (await _post(intruder, f"/settings/sessions/{other}/revoke")).status_code == 404
    own = await _post(person, f"/settings/sessions/{mine}/revoke")
    assert own.status_code == 400 and "sign out instead" in own.text
    assert (await laptop.client.get("/settings")).status_code == 200

    done = await _post(person, f"/settings/sessions/{other}/revoke")
    assert done.status_code == 303 and done.headers["location"] == "/settings?outcome=session"
    assert (await laptop.client.get("/settings")).status_code == 303
    assert (await person.client.get("/settings")).status_code == 200
    assert (await _post(person, f"/settings/sessions/{other}/revoke")).status_code == 404
    assert "Another session signed out" in (await person.client.get("/security")).text


async def test_sign_out_everywhere_from_settings(api: Api) -> None:
    person = await api.sign_up()
    laptop = await api.sign_in(api.new_client(), person.email)
    out = await _post(person, "/api/v1/auth/logout-all")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    for client in (person.client, laptop.client):
        assert (await client.get("/settings")).status_code == 303


def test_every_scope_has_a_description() -> None:
    assert set(SCOPE_HELP) == set(Scope)


async def test_a_google_only_account_sets_a_password_without_a_current_one(api: Api) -> None:
    person = await api.sign_up()
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, person.id)
        assert user is not None
        user.google_sub, user.password_hash = "g-456", None
        await session.commit()
    page = (await person.client.get("/settings")).text
    assert "Set a password" in page and 'name="current_password" value=""' in page
    assert 'autocomplete="current-password"' not in page
    done = await _post(person, "/settings/password", current_password="", new_password=NEW_PASSWORD)
    assert done.status_code == 303, done.text
    await api.sign_in(api.new_client(), person.email, NEW_PASSWORD)
    assert "Change your password" in (await person.client.get("/settings")).text


async def test_the_name_is_changed_in_settings_and_through_the_api(api: Api) -> None:
    person = await api.sign_up()
    await api.set_plan(person, "pro")  # two keys
    renamed = await person.client.post(
        "/settings/name", data={"csrf_token": person.csrf, "name": "  Ada Lovelace  "}
    )
    assert renamed.status_code == 303 and renamed.headers["location"] == "/settings?outcome=name"
    shown = await person.client.get(renamed.headers["location"])
    assert "Name saved." in shown.text and 'value="Ada Lovelace"' in shown.text
    blank = await person.client.post(
        "/settings/name", data={"csrf_token": person.csrf, "name": " "}
    )
    assert blank.status_code == 422 and 'id="name-error" role="alert"' in blank.text
    no_csrf = await person.client.post("/settings/name", data={"name": "Mallory"})
    assert no_csrf.status_code == 403
    key = await api.create_key(person, ["full"])
    through_api = await api.key_client(key).patch("/api/v1/me", json={"name": "Ada L."})
    assert through_api.status_code == 200 and through_api.json()["name"] == "Ada L."
    narrow = await api.create_key(person, ["agents:read"])
    refused = await api.key_client(narrow).patch("/api/v1/me", json={"name": "Eve"})
    assert refused.status_code == 403
    events = (await api.key_client(key).get("/api/v1/audit")).json()["data"]
    renames = [e for e in events if e["action"] == "account.renamed"]
    assert [e["details"]["to"] for e in renames] == ["Ada L.", "Ada Lovelace"]
