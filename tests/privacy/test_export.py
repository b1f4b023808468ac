"""Personal data export: the archive, its secrecy, the owner-only download, expiry, limits and
the dashboard page, through the API as a client would use it."""

from __future__ import annotations

import asyncio
import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import select, update

from lunogen.account.models import EmailToken, User
from lunogen.account.picture import Picture
from lunogen.account.picture import store as store_picture
from lunogen.agent.models import AgentChannel
from lunogen.audit.models import AuditEvent
from lunogen.auth.models import ApiKey, AuthSession
from lunogen.config import Settings
from lunogen.kit.time import utcnow
from lunogen.notification.models import Notification
from lunogen.privacy import export, export_archive
from lunogen.privacy.export_archive import Archive, ExportContext
from lunogen.privacy.models import DataExport
from lunogen.runtime.models import MemoryNote
from lunogen.worker import enqueue, maintenance, sweeps
from lunogen.worker.broker import wait_idle
from tests.agent.support import Dev, create_agent, new_dev, whatsapp
from tests.dashboard.browser import browser, fits, watch  # noqa: F401 (fixture)
from tests.dashboard.test_journey import PASSWORD as JOURNEY_PASSWORD
from tests.dashboard.test_journey import _registered
from tests.fakes.google_oidc import PNG_1X1 as PNG
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import PASSWORD, Api
from tests.skill.support import clean_package

pytestmark = pytest.mark.timeout(60)

AXE = (Path(__file__).parent.parent / "dashboard" / "vendor" / "axe-4.14.1.min.js").read_text()

SECTIONS = [
    "profile",
    "picture",
    "consents",
    "agents",
    "agent_versions",
    "skills",
    "conversations",
    "memory",
    "approvals",
    "logs",
    "usage",
    "ledger",
    "spend_caps",
    "notifications",
    "audit",
    "support",
    "privacy_requests",
    "moderation",
    "mcp_servers",  # privacy.export_mcp, imported by composition before schedule
    "schedules",
]


async def settle() -> None:
    await enqueue.drain()
    await wait_idle()


@dataclass
class Person:
    dev: Dev
    agent_ids: list[str]
    skill_id: str
    secrets: list[str] = field(default_factory=list)  # nothing of these may be in an archive


async def rich_person(api: Api, openrouter: FakeOpenRouter, *, marker: str) -> Person:
    """A person with agents (one channel holding secrets), a conversation, usage and ledger
    entries, a skill with files, a memory note, a notification, a picture, audit events."""
    dev = await new_dev(api)
    first = await create_agent(
        dev, name=f"Bikes {marker}", channels=[whatsapp(), {"type": "webhook"}]
    )
    second = await create_agent(dev, name=f"Talker {marker}", channels=[{"type": "webhook"}])
    deployed = await dev.http.post(f"/api/v1/agents/{second['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    openrouter.reply(f"Red bikes are fast ({marker} reply)", prompt_tokens=100, completion_tokens=9)
    said = await dev.http.post(
        f"/api/v1/agents/{second['id']}/messages", json={"text": f"Which bike? {marker}"}
    )
    assert said.status_code == 200, said.text
    skill = await dev.http.post("/api/v1/skills", json=clean_package(name=f"pdf-{marker}"))
    assert skill.status_code == 201, skill.text
    ticket = await dev.http.post(
        "/api/v1/support/tickets",
        json={"subject": f"Help {marker}", "body": f"My bike agent is odd {marker}"},
    )
    assert ticket.status_code == 201, ticket.text
    asked = await dev.http.post(
        "/api/v1/privacy/requests", json={"kind": "objection", "body": f"Stop that {marker}"}
    )
    assert asked.status_code == 201, asked.text
    keyring = api.app.state.keyring
    async with api.app.state.sessionmaker() as session:
        session.add(
            MemoryNote(
                agent_id=second["id"],
                owner_id=dev.id,
                contact="api",
                content=keyring.encrypt(f"likes red bikes {marker}"),
            )
        )
        session.add(
            Notification(
                user_id=dev.id,
                kind="agent.error",
                title=f"Agent trouble {marker}",
                body="It stopped.",
                dedupe_key=f"test:{marker}",
            )
        )
        await store_picture(
            session,
            user_id=dev.id,
            picture=Picture(source_url="https://lh3.example/p", content_type="image/png", data=PNG),
        )
        await session.commit()
    await settle()
    return Person(dev=dev, agent_ids=[first["id"], second["id"]], skill_id=skill.json()["id"])


async def known_secrets(api: Api, person: Person) -> list[str]:
    """Every secret, token and hash the database holds for the person, and their password."""
    keyring = api.app.state.keyring
    found = [PASSWORD, *person.dev.person.keys]
    found += [v for v in person.dev.person.client.cookies.values() if len(v) >= 16]
    async with api.app.state.sessionmaker() as session:
        user = await session.get(User, person.dev.id)
        assert user is not None and user.password_hash
        found.append(user.password_hash)
        found += (
            await session.execute(select(ApiKey.key_hash).where(ApiKey.user_id == user.id))
        ).scalars()
        for token_hash, csrf in (
            await session.execute(
                select(AuthSession.token_hash, AuthSession.csrf_token).where(
                    AuthSession.user_id == user.id
                )
            )
        ).all():
            found += [token_hash, csrf]
        found += (
            await session.execute(
                select(EmailToken.token_hash).where(EmailToken.user_id == user.id)
            )
        ).scalars()
        channels = (
            await session.execute(
                select(AgentChannel).where(AgentChannel.agent_id.in_(person.agent_ids))
            )
        ).scalars()
        for channel in channels:
            if channel.secrets:
                found.append(channel.secrets)  # the ciphertext too
                found += [str(v) for v in json.loads(keyring.decrypt(channel.secrets)).values()]
    assert len(found) >= 10
    return found


async def export_ready(client: httpx.AsyncClient, **headers: str) -> dict[str, Any]:
    started = await client.post("/api/v1/account/export", headers=headers)
    assert started.status_code == 202, started.text
    await settle()
    got = await client.get(f"/api/v1/account/exports/{started.json()['id']}")
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    assert body["status"] == "ready", body
    return body


async def download(client: httpx.AsyncClient, export_id: str) -> zipfile.ZipFile:
    response = await client.get(f"/api/v1/account/exports/{export_id}/download")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert "attachment" in response.headers["content-disposition"]
    return zipfile.ZipFile(io.BytesIO(response.content))


def read_json(archive: zipfile.ZipFile, name: str) -> Any:
    return json.loads(archive.read(name))


async def test_archive_holds_every_section_and_no_secret(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    person = await rich_person(api, openrouter, marker="mine")
    other = await rich_person(api, openrouter, marker="theirs")
    body = await export_ready(person.dev.http)
    assert [section.name for section in export_archive.sections()] == SECTIONS
    assert body["sections_done"] == body["sections_total"] == len(SECTIONS)
    assert body["size"] > 0 and len(body["sha256"]) == 64
    assert body["download_url"] == f"/api/v1/account/exports/{body['id']}/download"
    assert body["expires_at"] is not None
    response = await person.dev.http.get(body["download_url"])
    raw = response.content
    archive = zipfile.ZipFile(io.BytesIO(raw))
    names = archive.namelist()

    # every section, and the README describing each
    readme = archive.read("README.md").decode()
    for name in ("profile.json", "consents.json", "skills.json", "memory.json", "usage.json"):
        assert name in names and name in readme
    for name in ("ledger.json", "notifications.json", "audit.json", "picture.png"):
        assert name in names
    assert archive.read("picture.png") == PNG
    profile = read_json(archive, "profile.json")
    assert profile["id"] == person.dev.id and profile["email"] == person.dev.person.email
    assert profile["password"] == {"configured": True}
    assert [k["prefix"] for k in profile["api_keys"]] == [
        person.dev.person.keys[0][: len(profile["api_keys"][0]["prefix"])]
    ]
    consents = read_json(archive, "consents.json")
    assert {c["document"] for c in consents} >= {"terms", "privacy"}

    agents = [n for n in names if n.startswith("agents/")]
    assert len(agents) == 2
    bikes = next(read_json(archive, n) for n in agents if "bikes-mine" in n)
    channels = bikes["agent_file"]["channels"]
    assert [c["type"] for c in channels] == ["whatsapp", "webhook"]
    assert channels[0]["access_token"] == {"configured": True}
    assert channels[0]["app_secret"] == {"configured": True}
    assert channels[1]["secret"] == {"configured": True}
    assert [c["secrets"] for c in bikes["channels"]] == [{"configured": True}] * 2
    agent_versions = read_json(archive, "agent_versions.json")
    assert "agent_versions.json" in readme
    assert sorted((v["agent_id"], v["number"]) for v in agent_versions) == sorted(
        (agent_id, 1) for agent_id in person.agent_ids
    )
    assert {v["config"]["name"] for v in agent_versions} == {"Bikes mine", "Talker mine"}

    skill_files = [n for n in names if n.startswith("skills/")]
    assert any(n.endswith("/SKILL.md") for n in skill_files)
    assert any(n.endswith("/scripts/extract.py") for n in skill_files)
    skill_md = next(archive.read(n) for n in skill_files if n.endswith("SKILL.md")).decode()
    assert "name: pdf-mine" in skill_md and "# PDF tools" in skill_md
    assert read_json(archive, "skills.json")[0]["id"] == person.skill_id

    threads = [n for n in names if n.startswith("conversations/")]
    assert len(threads) == 1 and "talker-mine" in threads[0]
    thread = read_json(archive, threads[0])
    texts = [m["text"] for m in thread["messages"]]
    assert texts == ["Which bike? mine", "Red bikes are fast (mine reply)"]  # decrypted
    assert [m["role"] for m in thread["messages"]] == ["user", "assistant"]
    memory = read_json(archive, "memory.json")
    assert [n["text"] for n in memory] == ["likes red bikes mine"]
    usage = read_json(archive, "usage.json")
    assert len(usage) == 1 and usage[0]["prompt_tokens"] == 100
    ledger = read_json(archive, "ledger.json")
    assert ledger and all(isinstance(e["amount_micro"], int) for e in ledger)
    assert any(e["kind"] == "charge" or e["amount_micro"] < 0 for e in ledger)
    notes = read_json(archive, "notifications.json")
    assert "Agent trouble mine" in [n["title"] for n in notes]
    actions = {e["action"] for e in read_json(archive, "audit.json")}
    assert {"auth.sign_in", "api_key.created", "privacy.export_requested"} <= actions
    assert any(n.startswith("logs/") for n in names)
    [ticket] = read_json(archive, "support_tickets.json")
    assert ticket["subject"] == "Help mine" and ticket["status"] == "open"
    assert [m["text"] for m in ticket["messages"]] == ["My bike agent is odd mine"]  # decrypted
    [request] = read_json(archive, "privacy_requests.json")
    assert (request["kind"], request["text"]) == ("objection", "Stop that mine")

    # no secret anywhere: in the zip's bytes nor in any file once decompressed
    contents = [raw, *(archive.read(n) for n in names)]
    for secret in await known_secrets(api, person):
        assert all(secret.encode() not in blob for blob in contents), secret[:12]
    # nothing of the other tenant
    for blob in contents:
        assert b"theirs" not in blob
        assert other.dev.id.encode() not in blob and other.dev.person.email.encode() not in blob


async def test_the_person_is_told_and_the_download_is_audited(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    body = await export_ready(dev.http)
    async with api.app.state.sessionmaker() as session:
        told = (
            await session.execute(
                select(Notification).where(
                    Notification.user_id == dev.id, Notification.kind == "privacy.export_ready"
                )
            )
        ).scalar_one()
    link = f"{api.app.state.settings.public_url}/settings/export/{body['id']}/download"
    assert link in told.body
    emails = [b for row, b in await api.emails(dev.person.email) if "export" in row.subject]
    assert len(emails) == 1 and link in emails[0]
    await download(dev.http, body["id"])
    await download(dev.person.client, body["id"])  # a browser session too
    async with api.app.state.sessionmaker() as session:
        downloads = list(
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == "privacy.export_downloaded")
                )
            ).scalars()
        )
    assert [(e.actor_user_id, e.target_id) for e in downloads] == [(dev.id, body["id"])] * 2
    again = await dev.http.get(f"/api/v1/account/exports/{body['id']}")
    assert again.json()["downloads"] == 2


async def test_nobody_else_sees_or_downloads_it(api: Api, openrouter: FakeOpenRouter) -> None:
    owner = await new_dev(api)
    body = await export_ready(owner.http)
    stranger = await new_dev(api)
    for client in (stranger.http, stranger.person.client):
        for path in ("", "/download"):
            response = await client.get(f"/api/v1/account/exports/{body['id']}{path}")
            assert response.status_code == 404, response.text
            assert response.json()["error"] == "Export not found"
        listed = await client.get("/api/v1/account/exports")
        assert listed.json()["data"] == []
    narrow = api.key_client(await api.create_key(owner.person, ["agents:read"]))
    refused = await narrow.get(f"/api/v1/account/exports/{body['id']}/download")
    assert refused.status_code == 403
    assert (await narrow.post("/api/v1/account/export")).status_code == 403
    anonymous = api.new_client()
    assert (await anonymous.get(body["download_url"])).status_code == 401
    page = await stranger.person.client.get(f"/settings/export/{body['id']}/download")
    assert page.status_code == 404 and "application/zip" not in page.headers["content-type"]
    bad = await owner.http.get("/api/v1/account/exports/" + "x" * 300)
    assert bad.status_code == 404


async def test_expired_answers_410_and_the_step_deletes_the_file(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    body = await export_ready(dev.http)
    settings = api.app.state.settings
    sm = api.app.state.sessionmaker
    async with sm() as session:
        row = await session.get(DataExport, body["id"])
        assert row is not None and row.path == f"exports/{dev.id}/{body['id']}.zip"
        path = settings.data_dir / row.path
    assert path.is_file()
    # six days on, nothing goes
    report = await export.expire_exports(sm, settings, now=utcnow() + timedelta(days=6))
    assert report.expired == 0 and path.is_file()
    # past seven days: the link is gone (410) before and after the step removes the file
    async with sm() as session:
        await session.execute(
            update(DataExport)
            .where(DataExport.id == body["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    gone = await dev.http.get(body["download_url"])
    assert gone.status_code == 410 and gone.json()["error"] == "Export expired"
    report = await export.expire_exports(sm, settings)
    assert (report.expired, report.files_removed) == (1, 1)
    assert not path.exists() and not path.parent.exists()
    after = await dev.http.get(f"/api/v1/account/exports/{body['id']}")
    assert after.json()["status"] == "expired" and after.json()["download_url"] is None
    assert (await dev.http.get(body["download_url"])).status_code == 410
    again = await export.expire_exports(sm, settings)
    assert (again.expired, again.files_removed) == (0, 0)
    # the worker runs it: registered as an hourly step, and the lost-job sweep too
    step = {p.name: p for p in maintenance.registered()}["data_export_expiry"]
    assert step.step is export.expire_due and step.every(settings) == 3600
    assert sweeps._sweeps["data_exports"] is export.requeue_exports


async def test_a_purged_persons_archives_and_stray_files_are_removed(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    keeper = await new_dev(api)
    kept = await export_ready(keeper.http)
    leaver = await new_dev(api)
    await export_ready(leaver.http)
    settings = api.app.state.settings
    sm = api.app.state.sessionmaker
    root = settings.data_dir / "exports"
    stray = root / "not-a-user" / "leftover.zip.part"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half an archive")
    async with sm() as session:  # the purge deletes the person's row; exports cascade
        user = await session.get(User, leaver.id)
        await session.delete(user)
        await session.commit()
        assert (await session.execute(select(DataExport.user_id))).scalars().all() == [keeper.id]
    assert (root / leaver.id).is_dir()
    report = await export.expire_exports(sm, settings)
    assert report.files_removed == 2
    assert not (root / leaver.id).exists() and not stray.parent.exists()
    assert (root / keeper.id / f"{kept['id']}.zip").is_file()
    await export.remove_exports_of(settings, keeper.id)
    assert not (root / keeper.id).exists()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[asyncio.Event]:
    """An extra last section that waits for the returned event: exports stay `building`."""
    opened = asyncio.Event()
    sections = dict(export_archive._sections)

    async def blocker(ctx: ExportContext, archive: Archive) -> None:
        await opened.wait()
        await archive.write_json("blocker.json", {"user": ctx.user_id})

    sections["blocker"] = export_archive.Section("blocker", "blocker.json", "A test.", blocker)
    monkeypatch.setattr(export_archive, "_sections", sections)
    yield opened
    opened.set()


async def wait_for_status(client: httpx.AsyncClient, export_id: str, status: str) -> dict[str, Any]:
    for _ in range(200):
        body: dict[str, Any] = (await client.get(f"/api/v1/account/exports/{export_id}")).json()
        if body["status"] == status:
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"export never {status}: {body}")


async def test_progress_shows_and_only_one_runs_at_a_time_and_three_a_day(
    api: Api, openrouter: FakeOpenRouter, gate: asyncio.Event
) -> None:
    dev = await new_dev(api)
    first = await dev.http.post("/api/v1/account/export")
    assert first.status_code == 202 and first.json()["status"] == "queued"
    export_id = first.json()["id"]
    await enqueue.drain()
    building = await wait_for_status(dev.http, export_id, "building")
    for _ in range(200):  # every real section done, waiting in the last one
        if building["current_section"] == "blocker":
            break
        await asyncio.sleep(0.02)
        building = (await dev.http.get(f"/api/v1/account/exports/{export_id}")).json()
    assert building["current_section"] == "blocker"
    assert (
        building["sections_done"] == len(SECTIONS)
        and building["sections_total"] == len(SECTIONS) + 1
    )
    assert building["download_url"] is None and building["started_at"] is not None
    second = await dev.http.post("/api/v1/account/export")
    assert second.status_code == 409 and second.json()["error"] == "Export in progress"
    early = await dev.http.get(f"/api/v1/account/exports/{export_id}/download")
    assert early.status_code == 409
    gate.set()
    await settle()
    done = await wait_for_status(dev.http, export_id, "ready")
    assert done["sections_done"] == len(SECTIONS) + 1 and done["current_section"] is None
    archive = await download(dev.http, export_id)
    assert "blocker.json" in archive.namelist()
    for _ in range(2):
        await export_ready(dev.http)
    limited = await dev.http.post("/api/v1/account/export")
    assert limited.status_code == 429, limited.text
    assert 0 < int(limited.headers["retry-after"]) <= 24 * 3600 + 1
    listed = (await dev.http.get("/api/v1/account/exports")).json()["data"]
    assert len(listed) == 3 and listed[-1]["id"] == export_id


async def test_a_failing_section_fails_the_export_and_tells_the_person(
    api: Api, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    sections = dict(export_archive._sections)

    async def broken(ctx: ExportContext, archive: Archive) -> None:
        raise OSError("No space left on device")

    sections["broken"] = export_archive.Section("broken", "x", "A test.", broken)
    monkeypatch.setattr(export_archive, "_sections", sections)
    dev = await new_dev(api)
    started = await dev.http.post("/api/v1/account/export")
    await settle()
    body = (await dev.http.get(f"/api/v1/account/exports/{started.json()['id']}")).json()
    assert body["status"] == "failed" and body["error"] == "The archive could not be built"
    assert "No space" not in json.dumps(body)  # the reason is logged, not shown
    folder = api.app.state.settings.data_dir / "exports" / dev.id
    assert not any(folder.iterdir()) if folder.exists() else True
    async with api.app.state.sessionmaker() as session:
        kinds = (
            await session.execute(select(Notification.kind).where(Notification.user_id == dev.id))
        ).scalars()
        assert "privacy.export_failed" in list(kinds)
    monkeypatch.undo()
    again = await dev.http.post("/api/v1/account/export")  # a failed one is not in progress
    assert again.status_code == 202


async def test_a_lost_job_is_sent_again_and_an_abandoned_build_resumes(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    sm = api.app.state.sessionmaker
    long_ago = utcnow() - timedelta(minutes=10)
    async with sm() as session:
        lost = DataExport(user_id=dev.id, status="queued", created_at=long_ago)
        dead = DataExport(
            user_id=dev.id,
            status="building",
            created_at=long_ago,
            attempts=1,
            claimed_worker="gone:1",
            claim_expires_at=utcnow() - timedelta(seconds=1),
        )
        fresh = DataExport(user_id=dev.id, status="queued")  # its job is still on the way
        session.add_all([lost, dead, fresh])
        await session.commit()
    assert await export.requeue_exports(sm) == 2
    await settle()
    async with sm() as session:
        rows = {r.id: r for r in (await session.execute(select(DataExport))).scalars()}
    assert rows[lost.id].status == rows[dead.id].status == "ready"
    assert rows[dead.id].attempts == 2 and rows[fresh.id].status == "queued"
    # a build interrupted too often is failed, not retried for ever
    async with sm() as session:
        await session.execute(
            update(DataExport).where(DataExport.id == fresh.id).values(attempts=export.MAX_ATTEMPTS)
        )
        await session.commit()
    keyring = api.app.state.keyring
    settings = api.app.state.settings
    assert await export.build(sm, settings, keyring, fresh.id) is None
    async with sm() as session:
        row = await session.get(DataExport, fresh.id)
        assert row is not None and row.status == "failed"


async def test_the_settings_export_page(
    api: Api, openrouter: FakeOpenRouter, gate: asyncio.Event
) -> None:
    dev = await new_dev(api)
    web = dev.person.client
    settings_page = (await web.get("/settings")).text
    assert 'href="/settings/export"' in settings_page
    empty = await web.get("/settings/export")
    assert empty.status_code == 200 and "No export yet." in empty.text
    assert 'action="/settings/export"' in empty.text and "hx-trigger" not in empty.text
    refused = await web.post("/settings/export", data={"csrf_token": "wrong"})
    assert refused.status_code == 403
    started = await web.post("/settings/export", data={"csrf_token": dev.person.csrf})
    assert started.status_code == 303 and started.headers["location"].endswith("outcome=started")
    await enqueue.drain()
    page = (await web.get("/settings/export?outcome=started")).text
    assert "Export started" in page and 'hx-trigger="every 2s"' in page
    assert "refresh</a>" in page and "disabled" in page
    fragment = await web.get("/settings/export/status")
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert 'hx-get="/settings/export/status"' in fragment.text
    busy = await web.post("/settings/export", data={"csrf_token": dev.person.csrf})
    assert busy.status_code == 409 and 'role="alert"' in busy.text
    assert "already being prepared" in busy.text
    gate.set()
    await settle()
    done = (await web.get("/settings/export/status")).text
    assert "hx-trigger" not in done and "Ready" in done
    export_id = (await dev.http.get("/api/v1/account/exports")).json()["data"][0]["id"]
    link = f'href="/settings/export/{export_id}/download"'
    assert link in done
    got = await web.get(f"/settings/export/{export_id}/download")
    assert got.status_code == 200 and got.headers["content-type"] == "application/zip"
    assert "blocker.json" in zipfile.ZipFile(io.BytesIO(got.content)).namelist()
    signed_out = api.new_client()
    redirect = await signed_out.get(f"/settings/export/{export_id}/download")
    assert redirect.status_code == 303 and "/login?next=" in redirect.headers["location"]


async def test_export_in_a_browser_with_the_keyboard(
    browser: Browser,  # noqa: F811 (the fixture)
    live_server: str,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Keyboard only, in Chromium: Settings → Export, start one, watch it turn ready without
    reloading (htmx polling under the strict CSP), download it; axe finds nothing serious in
    light and dark, and 360 px fits."""
    release = threading.Event()  # the live server runs in its own thread and loop
    sections = dict(export_archive._sections)

    async def slow(ctx: ExportContext, archive: Archive) -> None:
        await asyncio.to_thread(release.wait, 20)

    sections["slow"] = export_archive.Section("slow", "nothing", "A test.", slow)
    monkeypatch.setattr(export_archive, "_sections", sections)
    # The live server is the only app here: its jobs run in its own loop (no `api` fixture,
    # whose app would take the process's job runtime).
    page = await browser.new_page()
    watched = watch(page, live_server)
    await _registered(page, live_server, settings, "exporter@example.com")
    await page.goto(f"{live_server}/login")
    await page.fill("input[name=email]", "exporter@example.com")
    await page.fill("input[name=password]", JOURNEY_PASSWORD)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{live_server}/home")
    await page.add_init_script(script=AXE)
    await page.goto(f"{live_server}/settings")
    await page.get_by_role("link", name="Export your data").focus()
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{live_server}/settings/export")
    await page.get_by_role("button", name="Export my data").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_contain_text("Export started")
    await expect(page.get_by_text("Building:")).to_be_visible()
    await expect(page.get_by_role("button", name="Export my data")).to_be_disabled()
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        assert await _serious_violations(page) == [], scheme
    assert await fits(page, 360)
    await page.set_viewport_size({"width": 1280, "height": 900})
    url = page.url
    release.set()
    link = page.get_by_role("link", name=re.compile("Download"))
    await expect(link).to_be_visible(timeout=10_000)  # the poll brought it, no reload
    assert page.url == url
    await expect(page.get_by_role("button", name="Export my data")).to_be_enabled()
    await link.focus()
    async with page.expect_download() as info:
        await page.keyboard.press("Enter")
    download = await info.value
    saved = await download.path()
    with zipfile.ZipFile(saved) as archive:
        assert "README.md" in archive.namelist() and "profile.json" in archive.namelist()
    assert download.suggested_filename.startswith("lunogen-data-")
    assert await _serious_violations(page) == []
    watched.check()


async def _serious_violations(page: Page) -> list[dict[str, Any]]:
    result: dict[str, Any] = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        {"id": v["id"], "nodes": [n["target"] for n in v["nodes"]][:5]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
