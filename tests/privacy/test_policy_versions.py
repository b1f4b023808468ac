"""Versioned Terms and Privacy Policy: the seeded versions, publishing (CLI, admin API, admin
page), bad input, and the public pages and API that show them."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from lunogen.privacy.documents import render_html
from lunogen.privacy.models import PolicyVersion
from lunogen.privacy.policy import BUNDLED_VERSION
from tests.account.support import rows
from tests.cli.conftest import Cli, cli_env
from tests.helpers import Api, Signed
from tests.privacy.policy_support import (
    NEW_PRIVACY,
    ensure_seeded,
    publish,
    take_effect,
    tomorrow,
    version_row,
)


@pytest.fixture
async def admin(api: Api) -> Signed:
    await ensure_seeded(api)
    person = await api.sign_up()
    await api.make_admin(person)
    return person


def said(result: Result) -> str:
    """The command's output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture
def cli(settings: object) -> Cli:
    return Cli(env=cli_env(settings))  # type: ignore[arg-type]


async def test_the_migration_seeds_both_documents(api: Api, database_url: str) -> None:
    if database_url.startswith("sqlite"):  # the PostgreSQL pass truncates tables between tests
        versions = await rows(api, select(PolicyVersion).order_by(PolicyVersion.kind))
        assert [(v.kind, v.version, v.material) for v in versions] == [
            ("privacy", BUNDLED_VERSION, True),
            ("terms", BUNDLED_VERSION, True),
        ]
        assert "[no-training]" in versions[0].text
    await ensure_seeded(api)
    listed = (await api.new_client().get("/api/v1/policies")).json()
    for kind in ("terms", "privacy"):
        assert listed[kind]["current"]["version"] == BUNDLED_VERSION
        assert listed[kind]["current"]["in_effect"] is True
        assert listed[kind]["upcoming"] == []
    one = await api.new_client().get(f"/api/v1/policies/privacy/{BUNDLED_VERSION}")
    assert one.status_code == 200
    assert "[right-withdraw]" in one.json()["text"]


async def test_privacy_page_renders_the_stored_text_with_tags_as_ids(api: Api) -> None:
    await ensure_seeded(api)
    page = await api.new_client().get("/privacy")
    assert page.status_code == 200
    assert '<li id="no-training">' in page.text and '<li id="changes">' in page.text
    assert "[no-training] Conversations are stored only" in page.text  # the tag stays visible
    assert f"Version {BUNDLED_VERSION}" in page.text and "in effect since" in page.text
    assert 'href="/privacy/versions"' in page.text
    terms = await api.new_client().get("/terms")
    assert "Terms of Service" in terms.text and "Credits and payment" in terms.text


def test_markdown_raw_html_is_escaped() -> None:
    html = render_html(NEW_PRIVACY)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert '<li id="cookies">' in html
    assert "<h1>" not in html and "<h2>Cookies</h2>" in html  # the page shows the title
    assert "<h3>Cookies</h3>" in render_html(NEW_PRIVACY, heading_shift=1)


async def test_admin_publishes_a_material_change_over_the_api(api: Api, admin: Signed) -> None:
    response = await publish(admin, summary="Cookies are explained twice.")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == tomorrow() and body["material"] is True
    assert body["in_effect"] is False and body["text"].startswith("# Privacy Policy")
    row = await version_row(api, "privacy", tomorrow())
    assert row.published_by == admin.id and row.summary == "Cookies are explained twice."
    events = await rows(
        api, select(AuditEvent).where(AuditEvent.action == "privacy.policy_published")
    )
    assert len(events) == 1 and events[0].actor_user_id == admin.id
    assert events[0].details["version"] == tomorrow()

    listed = (await api.new_client().get("/api/v1/policies")).json()
    assert listed["privacy"]["current"]["version"] == BUNDLED_VERSION
    assert [u["version"] for u in listed["privacy"]["upcoming"]] == [tomorrow()]
    page = (await api.new_client().get("/privacy")).text
    assert f"A new version ({tomorrow()}) takes effect on" in page
    assert "Cookies are explained twice." in page
    upcoming = await api.new_client().get(f"/privacy/versions/{tomorrow()}")
    assert upcoming.status_code == 200 and "takes effect on" in upcoming.text
    assert "&lt;script&gt;" in upcoming.text and "<script>alert" not in upcoming.text


async def test_publishing_refuses_bad_input(api: Api, admin: Signed) -> None:
    async def refused(status: int, field: str | None = None, **body: object) -> None:
        response = await publish(admin, **body)
        assert response.status_code == status, response.text
        if field:
            fields = [d.get("field") for d in response.json().get("details", [])]
            assert field in fields or response.json().get("field") == field, response.json()

    await refused(422, "effective", effective="2020-01-01")  # material, in the past
    await refused(422, "text", text="   \n ")
    await refused(422, "kind", kind="cookies")
    await refused(422, "effective", effective="next tuesday")
    await refused(422, "version", version="../etc/passwd")
    await refused(409, version=BUNDLED_VERSION)
    assert (await publish(admin)).status_code == 201
    await refused(409)  # the same version again
    missing = await api.new_client().get("/api/v1/policies/privacy/1999-01-01")
    assert missing.status_code == 404
    bad_kind = await api.new_client().get(f"/api/v1/policies/cookies/{BUNDLED_VERSION}")
    assert bad_kind.status_code in (404, 422)
    assert (await rows(api, select(PolicyVersion))).__len__() == 3


async def test_a_minor_change_may_take_effect_at_once(api: Api, admin: Signed) -> None:
    response = await publish(admin, material=False, effective="2026-12-01", version="2026-12-01b")
    assert response.status_code == 201, response.text
    assert response.json()["in_effect"] is True
    page = (await api.new_client().get("/privacy")).text
    assert "Version 2026-12-01b" in page and "now say so twice" in page
    versions = (await api.new_client().get("/privacy/versions")).text
    assert "2026-12-01b" in versions and BUNDLED_VERSION in versions
    old = await api.new_client().get(f"/privacy/versions/{BUNDLED_VERSION}")
    assert '<li id="no-training">' in old.text
    assert (await version_row(api, "privacy", "2026-12-01b")).notify_status == "none"


async def test_non_admins_cannot_publish(api: Api) -> None:
    await ensure_seeded(api)
    person = await api.sign_up()
    refused = await publish(person)
    assert refused.status_code == 403
    key = await api.create_key(person)
    assert (await publish(person)).status_code == 403
    with_key = await api.key_client(key).post(
        "/api/v1/admin/policies",
        json={"kind": "terms", "effective": tomorrow(), "text": "# Terms"},
    )
    assert with_key.status_code == 403
    anonymous = await api.new_client().post(
        "/api/v1/admin/policies", json={"kind": "terms", "effective": tomorrow(), "text": "x"}
    )
    assert anonymous.status_code == 401
    page = await person.client.get("/admin/policies")
    assert page.status_code == 404
    posted = await person.client.post(
        "/admin/policies",
        data={"csrf_token": person.csrf, "kind": "terms", "effective": tomorrow(), "text": "x"},
    )
    assert posted.status_code == 404
    assert len(await rows(api, select(PolicyVersion))) == 2


async def test_cli_publishes_and_refuses(api: Api, cli: Cli, tmp_path: Path) -> None:
    await ensure_seeded(api)
    text = tmp_path / "terms.md"
    text.write_text("# Terms of Service\n\n## Your account\n\n- Be nice.\n", encoding="utf-8")
    done = await cli(
        "policy", "publish", str(text), "--kind", "terms", "--effective", tomorrow(), "--material"
    )
    assert done.exit_code == 0, said(done)
    assert f"Published Terms of Service version {tomorrow()}" in said(done)
    assert "(material)" in said(done) and "Changed sections: Introduction; Your account;" in said(
        done
    )
    assert "The service (removed)" in said(done)
    row = await version_row(api, "terms", tomorrow())
    assert row.material and row.notify_status == "pending" and row.published_by is None
    assert row.text == "# Terms of Service\n\n## Your account\n\n- Be nice."

    again = await cli(
        "policy", "publish", str(text), "--kind", "terms", "--effective", tomorrow(), "--material"
    )
    assert again.exit_code == 1 and "exists" in said(again)
    past = await cli(
        "policy",
        "publish",
        str(text),
        "--kind",
        "terms",
        "--effective",
        "2026-01-01",
        "--material",
        "--version",
        "v-past",
    )
    assert past.exit_code == 1 and "in the future" in said(past)
    empty = tmp_path / "empty.md"
    empty.write_text("\n\n", encoding="utf-8")
    blank = await cli(
        "policy",
        "publish",
        str(empty),
        "--kind",
        "privacy",
        "--effective",
        "2026-12-01",
        "--version",
        "blank",
    )
    assert blank.exit_code == 1 and "empty" in said(blank)
    wrong_kind = await cli(
        "policy", "publish", str(text), "--kind", "cookies", "--effective", "2026-12-01"
    )
    assert wrong_kind.exit_code == 1 and "terms or privacy" in said(wrong_kind)
    no_file = await cli(
        "policy",
        "publish",
        str(tmp_path / "nope.md"),
        "--kind",
        "terms",
        "--effective",
        "2026-12-01",
    )
    assert no_file.exit_code == 2 and "cannot read" in said(no_file)
    minor = await cli(
        "policy",
        "publish",
        str(text),
        "--kind",
        "terms",
        "--effective",
        "2026-12-01",
        "--version",
        "typo-fix",
    )
    assert minor.exit_code == 0 and "(material)" not in said(minor)
    assert len(await rows(api, select(PolicyVersion))) == 4


async def test_admin_page_lists_versions_and_publishes(api: Api, admin: Signed) -> None:
    page = await admin.client.get("/admin/policies")
    assert page.status_code == 200
    assert BUNDLED_VERSION in page.text and 'name="csrf_token"' in page.text
    assert "placeholder=" not in page.text

    refused = await admin.client.post(
        "/admin/policies",
        data={
            "csrf_token": admin.csrf,
            "kind": "privacy",
            "effective": "2020-01-01",
            "material": "true",
            "text": NEW_PRIVACY,
        },
    )
    assert refused.status_code == 422
    assert 'role="alert"' in refused.text and "in the future" in refused.text
    assert "now say so twice" in refused.text  # the text typed is kept
    no_csrf = await admin.client.post(
        "/admin/policies", data={"kind": "privacy", "effective": tomorrow(), "text": "x"}
    )
    assert no_csrf.status_code == 403

    posted = await admin.client.post(
        "/admin/policies",
        data={
            "csrf_token": admin.csrf,
            "kind": "privacy",
            "effective": tomorrow(),
            "material": "true",
            "text": NEW_PRIVACY,
        },
    )
    assert posted.status_code == 303
    assert posted.headers["location"] == "/admin/policies?outcome=published-material"
    shown = (await admin.client.get(posted.headers["location"])).text
    assert "the notices are on their way" in shown and tomorrow() in shown
    assert (await version_row(api, "privacy", tomorrow())).published_by == admin.id


async def test_upcoming_version_becomes_current_at_its_date(api: Api, admin: Signed) -> None:
    assert (await publish(admin)).status_code == 201
    await take_effect(api, "privacy", tomorrow())
    listed = (await api.new_client().get("/api/v1/policies")).json()
    assert listed["privacy"]["current"]["version"] == tomorrow()
    assert listed["privacy"]["upcoming"] == []
    page = (await api.new_client().get("/privacy")).text
    assert f"Version {tomorrow()}" in page and "in effect since" in page
