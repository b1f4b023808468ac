"""The Google profile picture: copied at sign-in through the SSRF-safe kit, served by us.

The fake Google serves the pictures over real HTTP on 127.0.0.1 (reachable because these tests
allow private URLs, except where one checks that it is refused without). Every bad answer
(too big, wrong type, wrong bytes, stalled, redirected to a forbidden address) leaves the
person signed in without a picture.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.engine import make_url
from structlog.testing import capture_logs

from lunogen.account import picture as pictures
from lunogen.account.models import User, UserPicture
from lunogen.kit.time import utcnow
from tests.auth.test_google import (
    CALLBACK,
    CLIENT_ID,
    CLIENT_SECRET,
    CONSENT,
    assert_signed_in,
    google_sign_in,
)
from tests.fakes.google_oidc import PNG_1X1, FakeGoogle, Identity, PictureAnswer
from tests.helpers import Api

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\x00" * 64
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01" + b"\x00" * 16
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 \x18\x00\x00\x00" + b"\x00" * 24
SUB = "300000000000000000003"


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeGoogle]:
    with FakeGoogle.running(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, redirect_uris=[CALLBACK]
    ) as fake:
        yield fake


@pytest.fixture
def google(google_server: FakeGoogle) -> FakeGoogle:
    google_server.reset()
    google_server.identity = Identity(sub=SUB, email="pic@example.com", name="Pic Ture")
    return google_server


@pytest.fixture
def allow_private() -> bool:
    return True


@pytest.fixture
def settings_overrides(google: FakeGoogle, allow_private: bool) -> dict[str, object]:
    return {
        "google_client_id": CLIENT_ID,
        "google_client_secret": CLIENT_SECRET,
        "google_discovery_url": google.discovery_url,
        "allow_private_urls": allow_private,
    }


@pytest.fixture
async def provider() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(follow_redirects=False, timeout=10) as http:
        yield http


async def signed_in(api: Api, provider: httpx.AsyncClient, target: str) -> httpx.AsyncClient:
    """A browser signed in with the fake's current identity, consent given if it was asked."""
    client = api.new_client()
    response = await google_sign_in(client, provider)
    assert_signed_in(response, target)
    if target == "/onboarding":
        csrf = {"X-CSRF-Token": client.cookies["lg_csrf"]}
        consent = await client.post("/api/v1/auth/consent", json=CONSENT, headers=csrf)
        assert consent.status_code == 200, consent.text
    return client


async def stored(api: Api) -> list[UserPicture]:
    async with api.app.state.sessionmaker() as session:
        return list((await session.execute(select(UserPicture))).scalars())


def assert_served(response: httpx.Response, body: bytes, content_type: str) -> None:
    assert response.status_code == 200, response.text
    assert response.content == body
    assert response.headers["content-type"] == content_type
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"].startswith("private")


def img_sources(page: str) -> list[str]:
    return re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", page)


# -- served from our origin --------------------------------------------------------------------


async def test_picture_is_copied_at_sign_in_and_served_from_our_origin(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    client = await signed_in(api, provider, "/onboarding")
    assert google.picture_requests == ["default"]

    served = await client.get("/settings/picture")
    assert_served(served, PNG_1X1, "image/png")
    again = await client.get("/settings/picture", headers={"If-None-Match": served.headers["etag"]})
    assert again.status_code == 304 and again.content == b""

    (row,) = await stored(api)
    assert row.source_url == google.picture_url("default")
    assert row.size == len(PNG_1X1) and row.content_type == "image/png"
    me = (await client.get("/api/v1/me")).json()
    assert me["id"] == row.user_id
    assert me["picture_url"] == google.picture_url("default")  # Google's URL, as Google names it

    # A second sign-in naming the same URL downloads nothing.
    await signed_in(api, provider, "/home")
    assert google.picture_requests == ["default"]

    # A new picture at Google: downloaded at the next sign-in, served at once (a new ETag).
    google.pictures["new"] = PictureAnswer(body=JPEG, content_type="image/jpeg; charset=binary")
    google.identity.picture = google.picture_url("new")
    await signed_in(api, provider, "/home")
    assert google.picture_requests == ["default", "new"]
    fresh = await client.get("/settings/picture", headers={"If-None-Match": served.headers["etag"]})
    assert_served(fresh, JPEG, "image/jpeg")
    assert fresh.headers["etag"] != served.headers["etag"]
    assert len(await stored(api)) == 1


async def test_no_write_transaction_is_open_while_the_picture_downloads(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    url = make_url(api.app.state.settings.database_url)
    if url.get_backend_name() != "sqlite":
        pytest.skip("the write lock that must stay free is SQLite's")
    outcomes: list[str] = []

    def take_the_write_lock() -> None:
        # While the app waits for this answer, another writer gets the lock at once.
        conn = sqlite3.connect(str(url.database), timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            outcomes.append("free")
        except sqlite3.OperationalError as exc:
            outcomes.append(str(exc))
        finally:
            conn.close()

    google.pictures["default"] = PictureAnswer(during=take_the_write_lock)
    client = await signed_in(api, provider, "/onboarding")
    assert outcomes == ["free"]
    assert (await client.get("/settings/picture")).status_code == 200


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(GIF, "image/gif"), (WEBP, "image/webp"), (PNG_1X1, "image/png")],
)
async def test_each_accepted_type_is_served_with_its_type(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    google.pictures["default"] = PictureAnswer(body=body, content_type=content_type)
    client = await signed_in(api, provider, "/onboarding")
    assert_served(await client.get("/settings/picture"), body, content_type)


async def test_settings_page_and_csp_never_point_at_another_origin(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    client = await signed_in(api, provider, "/onboarding")
    page = await client.get("/settings")
    assert page.status_code == 200
    assert img_sources(page.text) == ["/settings/picture"]
    assert "referrerpolicy" not in page.text  # nothing leaves the origin to hide a referrer from
    csp = page.headers["content-security-policy"]
    (img_src,) = [d.strip() for d in csp.split(";") if d.strip().startswith("img-src")]
    assert img_src == "img-src 'self' data:"
    assert "https:" not in img_src.split()


# -- refused pictures: the sign-in goes on without one -----------------------------------------


BIG = PNG_1X1 + b"\x00" * (pictures.PICTURE_MAX_BYTES + 1 - len(PNG_1X1))
REFUSALS = {
    "oversize": (PictureAnswer(body=BIG), "over 262144"),
    "oversize-no-length": (PictureAnswer(body=BIG, chunked=True), "over 262144 bytes"),
    "wrong-magic-bytes": (
        PictureAnswer(body=b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        "no image",
    ),
    "html-as-png": (PictureAnswer(body=b"<!doctype html><p>hi</p>"), "no image"),
    "svg-type": (PictureAnswer(body=PNG_1X1, content_type="image/svg+xml"), "image/svg+xml"),
    "html-type": (PictureAnswer(body=PNG_1X1, content_type="text/html"), "text/html"),
    "type-and-bytes-disagree": (PictureAnswer(body=JPEG, content_type="image/png"), "image/jpeg"),
    "not-found": (PictureAnswer(status=404), "answered 404"),
    "redirect-to-metadata": (
        PictureAnswer(redirect="http://169.254.169.254/latest/meta-data/"),
        "Redirect from",
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refused_picture_leaves_the_sign_in_working_without_one(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient, case: str
) -> None:
    google.pictures["default"], reason = REFUSALS[case]
    with capture_logs() as logs:
        client = await signed_in(api, provider, "/onboarding")
    assert google.picture_requests == ["default"]
    (line,) = [entry for entry in logs if entry["event"] == "google_picture_not_saved"]
    assert reason in line["reason"], line
    assert await stored(api) == []
    assert (await client.get("/settings/picture")).status_code == 404
    page = await client.get("/settings")
    assert page.status_code == 200 and img_sources(page.text) == []
    assert (await client.get("/api/v1/me")).json()["setup_complete"] is True


@pytest.mark.parametrize("stall", ["headers", "body"])
async def test_a_stalled_picture_server_is_cut_off_by_the_time_limit(
    api: Api,
    google: FakeGoogle,
    provider: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    stall: str,
) -> None:
    monkeypatch.setattr(pictures, "PICTURE_TIMEOUT_SECONDS", 0.5)
    body = PNG_1X1 + b"\x00" * 40_000  # more than one piece, so a "body" stall bites
    google.pictures["default"] = PictureAnswer(body=body, stall=stall, stall_seconds=4)
    with capture_logs() as logs:
        client = await signed_in(api, provider, "/onboarding")
    (line,) = [entry for entry in logs if entry["event"] == "google_picture_not_saved"]
    assert "did not complete within 0.5 seconds" in line["reason"], line
    assert await stored(api) == []
    assert (await client.get("/settings/picture")).status_code == 404


@pytest.mark.parametrize("allow_private", [False])
async def test_a_loopback_picture_is_refused_unless_private_urls_are_allowed(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    with capture_logs() as logs:
        client = await signed_in(api, provider, "/onboarding")
    (line,) = [entry for entry in logs if entry["event"] == "google_picture_not_saved"]
    assert "loopback" in line["reason"]
    assert google.picture_requests == []  # refused before any connection
    assert (await client.get("/settings/picture")).status_code == 404


async def test_a_failed_refresh_keeps_the_picture_and_the_next_sign_in_tries_again(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    client = await signed_in(api, provider, "/onboarding")
    google.pictures["broken"] = PictureAnswer(body=b"not an image")
    google.identity.picture = google.picture_url("broken")
    await signed_in(api, provider, "/home")
    assert_served(await client.get("/settings/picture"), PNG_1X1, "image/png")
    (row,) = await stored(api)
    assert row.source_url == google.picture_url("default")

    google.pictures["broken"] = PictureAnswer(body=GIF, content_type="image/gif")
    await signed_in(api, provider, "/home")
    assert google.picture_requests == ["default", "broken", "broken"]
    assert_served(await client.get("/settings/picture"), GIF, "image/gif")


# -- only the owner ----------------------------------------------------------------------------


async def test_only_the_signed_in_owner_gets_the_picture(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    owner = await signed_in(api, provider, "/onboarding")
    assert (await owner.get("/settings/picture")).status_code == 200

    other = await api.sign_up("other@example.com")
    theirs = await other.client.get("/settings/picture")
    assert theirs.status_code == 404 and PNG_1X1 not in theirs.content
    assert theirs.headers["content-type"].startswith("text/html")

    stranger = api.new_client()
    signed_out = await stranger.get("/settings/picture")
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/login?next=/settings/picture"


async def test_a_person_without_consent_is_sent_to_onboarding(
    api: Api, google: FakeGoogle, provider: httpx.AsyncClient
) -> None:
    client = api.new_client()
    assert_signed_in(await google_sign_in(client, provider), "/onboarding")
    early = await client.get("/settings/picture")
    assert early.status_code == 303 and early.headers["location"] == "/onboarding"


# -- deletion ----------------------------------------------------------------------------------


async def test_the_picture_goes_with_the_person(api: Api) -> None:
    picture = pictures.Picture(
        source_url="https://lh3.example/a", content_type="image/png", data=PNG_1X1
    )
    async with api.app.state.sessionmaker() as session:
        kept = User(email="kept@example.com", name="Kept")
        gone = User(email="gone@example.com", name="Gone")
        closed = User(email="closed@example.com", name="Closed")
        session.add_all([kept, gone, closed])
        await session.flush()
        for user in (kept, gone, closed):
            await pictures.store(session, user_id=user.id, picture=picture)
        await session.commit()
    async with api.app.state.sessionmaker() as session:
        await session.execute(delete(User).where(User.id == gone.id))  # ON DELETE CASCADE
        await pictures.delete_picture(session, user_id=closed.id)  # a soft deletion's part
        await session.commit()
    assert [row.user_id for row in await stored(api)] == [kept.id]


async def test_a_deleted_account_downloads_nothing(api: Api) -> None:
    async with api.app.state.sessionmaker() as session:
        session.add(User(email="x@example.com", name="X", google_sub="g-1", deleted_at=utcnow()))
        session.add(User(email="y@example.com", name="Y", google_sub="g-2"))
        await session.commit()
        assert await pictures.needs_download(session, google_sub="g-1", url="https://a/b") is False
        assert await pictures.needs_download(session, google_sub="g-2", url="https://a/b") is True
        assert await pictures.needs_download(session, google_sub="new", url="https://a/b") is True


# -- the rules, pinned -------------------------------------------------------------------------


def test_production_limits() -> None:
    assert pictures.PICTURE_MAX_BYTES == 256 * 1024
    assert pictures.PICTURE_TIMEOUT_SECONDS == 5.0
    http = pictures.picture_http(allow_private=False)
    assert http.timeout == 5.0 and http.max_bytes == 256 * 1024
    assert http.address_policy.allow_private is False


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (PNG_1X1, "image/png"),
        (JPEG, "image/jpeg"),
        (GIF, "image/gif"),
        (b"GIF87a" + b"\x00" * 8, "image/gif"),
        (WEBP, "image/webp"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),
        (b"<svg/>", None),
        (b"", None),
        (b"\x89PNG", None),
    ],
)
def test_sniff(data: bytes, kind: str | None) -> None:
    assert pictures.sniff(data) == kind
