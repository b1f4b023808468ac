"""The person's Google profile picture: downloaded once per picture URL, kept, served by us.

Dashboard pages make no request to another origin, so the picture Google names at sign-in is
copied into `user_pictures` and shown from `/settings/picture`.

Downloading is an outside call and never runs inside a write transaction: the Google callback
asks `needs_download` on a read-only session, calls `download` with no transaction open, and
only then `store`s the result inside the sign-in's transaction. The download goes through the
SSRF-safe `SafeHttp` (every hop's address checked, redirects included), within
`PICTURE_TIMEOUT_SECONDS` and `PICTURE_MAX_BYTES`; the image must be PNG, JPEG, WebP or GIF by
its Content-Type AND by its first bytes, both naming the same type. Any failure is logged and
leaves the stored picture as it was: it never fails the sign-in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User, UserPicture
from lunogen.errors import NotFoundError
from lunogen.kit.http import FetchError, SafeHttp
from lunogen.kit.time import utcnow

log = structlog.get_logger(__name__)

PICTURE_MAX_BYTES = 256 * 1024
PICTURE_TIMEOUT_SECONDS = 5.0
PICTURE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
_ACCEPT = ", ".join(PICTURE_TYPES)


class PictureRefused(Exception):
    """The picture URL did not give an image we keep; the message says why (for the log)."""


@dataclass(frozen=True)
class Picture:
    """A downloaded picture whose type was checked, ready to `store`."""

    source_url: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def sniff(data: bytes) -> str | None:
    """The image type the first bytes announce (one of `PICTURE_TYPES`), or None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def picture_http(*, allow_private: bool) -> SafeHttp:
    """The client pictures are fetched with: the SSRF guard, the short time limit, the cap."""
    return SafeHttp(
        allow_private=allow_private,
        timeout=PICTURE_TIMEOUT_SECONDS,
        connect_timeout=PICTURE_TIMEOUT_SECONDS,
        max_bytes=PICTURE_MAX_BYTES,
    )


async def download(url: str, *, http: SafeHttp) -> Picture:
    """GET `url` (redirects followed, each hop checked) and check the image.

    Raises `PictureRefused` naming the reason. Call it with no transaction open.
    """
    try:
        async with http.open(
            "GET", url, headers={"Accept": _ACCEPT}, follow_redirects=True
        ) as response:
            if response.status_code != 200:
                raise PictureRefused(f"the server answered {response.status_code}")
            declared = response.headers.get("content-type", "").split(";")[0].strip().lower()
            if declared not in PICTURE_TYPES:
                raise PictureRefused(f"the Content-Type {declared or 'none'!r} is not an image")
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > PICTURE_MAX_BYTES:
                raise PictureRefused(f"it is {length} bytes, over {PICTURE_MAX_BYTES}")
            data, truncated = await response.read(PICTURE_MAX_BYTES)
    except FetchError as exc:  # UnsafeUrlError included: a refused address or redirect
        raise PictureRefused(exc.message) from exc
    if truncated:
        raise PictureRefused(f"it is over {PICTURE_MAX_BYTES} bytes")
    sniffed = sniff(data)
    if sniffed != declared:
        raise PictureRefused(f"it was sent as {declared} but its bytes are {sniffed or 'no image'}")
    return Picture(source_url=url, content_type=declared, data=data)


async def download_or_none(url: str, *, http: SafeHttp) -> Picture | None:
    """`download`, with a refusal logged and answered by None (the sign-in goes on without it)."""
    try:
        return await download(url, http=http)
    except PictureRefused as exc:
        reason = str(exc)
    except (OSError, ValueError) as exc:  # beyond what SafeHttp turns into FetchError
        reason = f"{type(exc).__name__}: {exc}"
    log.warning("google_picture_not_saved", host=urlsplit(url).hostname, reason=reason[:500])
    return None


async def needs_download(session: AsyncSession, *, google_sub: str, url: str) -> bool:
    """Whether a sign-in as `google_sub` naming `url` should download it: not when the stored
    picture came from that URL, nor for a deleted account (its sign-in is refused)."""
    row = (
        await session.execute(
            select(User.deleted_at, UserPicture.source_url)
            .outerjoin(UserPicture, UserPicture.user_id == User.id)
            .where(User.google_sub == google_sub)
        )
    ).one_or_none()
    if row is None:
        return True
    deleted_at, source_url = row
    return deleted_at is None and source_url != url


async def store(session: AsyncSession, *, user_id: str, picture: Picture) -> UserPicture:
    """Keep `picture` as the user's, replacing the one before. Flushes."""
    row = await session.get(UserPicture, user_id)
    if row is None:
        row = UserPicture(user_id=user_id)
        _fill(row, picture)
        try:
            async with session.begin_nested():
                session.add(row)
        except IntegrityError:  # two first sign-ins at once: the other one's row is there
            row = await session.get(UserPicture, user_id, populate_existing=True)
            if row is None:
                raise
        else:
            return row
    _fill(row, picture)
    await session.flush()
    return row


def _fill(row: UserPicture, picture: Picture) -> None:
    row.content_type = picture.content_type
    row.data = picture.data
    row.size = len(picture.data)
    row.sha256 = picture.sha256
    row.source_url = picture.source_url
    row.fetched_at = utcnow()


async def own_picture(session: AsyncSession, *, user_id: str) -> UserPicture:
    """The user's own stored picture; `NotFoundError` when there is none."""
    row = await session.get(UserPicture, user_id)
    if row is None:
        raise NotFoundError("No profile picture")
    return row


async def has_picture(session: AsyncSession, *, user_id: str) -> bool:
    found = await session.scalar(select(UserPicture.user_id).where(UserPicture.user_id == user_id))
    return found is not None


async def delete_picture(session: AsyncSession, *, user_id: str) -> None:
    """Remove the user's picture (account deletion: a soft-deleted user keeps no image)."""
    await session.execute(delete(UserPicture).where(UserPicture.user_id == user_id))
