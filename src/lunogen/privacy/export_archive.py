"""The zip a data export writes, and the registry of the sections that fill it.

Each domain's part of the archive is a small *producer* registered with `register_section`:
it reads with the read-only sessions of `ExportContext` (short transactions, in batches) and
writes its files through `Archive`, whose blocking zip calls run in a worker thread so the
event loop stays free. A new domain (support tickets, say) adds its data by registering one
more producer in its own module; the README inside the archive lists every section from the
registry, so it documents the new files too.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from lunogen.config import Settings
from lunogen.kit.crypto import CryptoError, KeyRing

BATCH = 500  # rows per read transaction
FLUSH_BYTES = 256 * 1024  # text buffered before one hop to the zip thread


def _jsonable(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    raise TypeError(f"cannot put {type(value).__name__} in the archive")


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=_jsonable)


def slug(text: str, *, limit: int = 50) -> str:
    """Lower-case ASCII words joined by dashes (never empty): a safe path component."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "item"


def safe_member(path: str) -> str:
    """`path` as a relative zip member name: no root, no `..`, no empty parts."""
    parts = [p for p in PurePosixPath(path.replace("\\", "/")).parts if p not in ("", ".", "..")]
    parts = [p for p in parts if p != "/"]
    if not parts:
        raise ValueError(f"no usable name in {path!r}")
    return "/".join(parts)


class JsonArray:
    """Items appended to one JSON array inside an open zip member (see `Archive.stream`)."""

    def __init__(self, stream: TextStream) -> None:
        self._stream = stream
        self._first = True
        self.count = 0

    async def add(self, item: Any) -> None:
        text = json.dumps(item, ensure_ascii=False, default=_jsonable)
        await self._stream.write(("\n  " if self._first else ",\n  ") + text)
        self._first = False
        self.count += 1


class TextStream:
    """UTF-8 text written to one zip member, buffered, each flush done in a thread."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self._buffer: list[str] = []
        self._buffered = 0

    async def write(self, text: str) -> None:
        self._buffer.append(text)
        self._buffered += len(text)
        if self._buffered >= FLUSH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if not self._buffer:
            return
        data = "".join(self._buffer).encode("utf-8")
        self._buffer, self._buffered = [], 0
        await asyncio.to_thread(self._handle.write, data)

    @asynccontextmanager
    async def array(self) -> AsyncIterator[JsonArray]:
        """A JSON array written item by item: `[`, the items, `]`."""
        await self.write("[")
        items = JsonArray(self)
        yield items
        await self.write("\n]" if items.count else "]")


class Archive:
    """One zip file being written. Member names are made safe and unique."""

    def __init__(self, path: Path) -> None:
        self._zip = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6)
        self._names: set[str] = set()
        self.members: list[str] = []

    def _member(self, name: str) -> zipfile.ZipInfo:
        clean = safe_member(name)
        if clean in self._names:
            stem, dot, ext = clean.rpartition(".")
            base = stem if dot else clean
            n = 2
            while (candidate := f"{base}-{n}{dot}{ext if dot else ''}") in self._names:
                n += 1
            clean = candidate
        self._names.add(clean)
        self.members.append(clean)
        info = zipfile.ZipInfo(clean, date_time=time.gmtime()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        info.external_attr = 0o600 << 16
        return info

    async def write_bytes(self, name: str, data: bytes) -> str:
        info = self._member(name)
        await asyncio.to_thread(self._zip.writestr, info, data)
        return info.filename

    async def write_json(self, name: str, value: Any) -> str:
        data = await asyncio.to_thread(lambda: (dumps(value) + "\n").encode("utf-8"))
        return await self.write_bytes(name, data)

    @asynccontextmanager
    async def stream(self, name: str) -> AsyncIterator[TextStream]:
        """A member written in pieces (for what may not fit in memory at once)."""
        info = self._member(name)
        handle = await asyncio.to_thread(self._zip.open, info, "w", force_zip64=True)
        stream = TextStream(handle)
        try:
            yield stream
            await stream.write("\n")
            await stream.flush()
        finally:
            await asyncio.to_thread(handle.close)

    async def close(self) -> None:
        await asyncio.to_thread(self._zip.close)


@dataclass(frozen=True)
class ExportContext:
    """What a producer gets: whose data, read-only sessions, the keys to decrypt with."""

    user_id: str
    reader: async_sessionmaker[AsyncSession]
    keyring: KeyRing
    settings: Settings

    def decrypt(self, token: str) -> str | None:
        """The plaintext, or None when the key that sealed it is gone (said in the file)."""
        try:
            return self.keyring.decrypt(token)
        except CryptoError:
            return None

    async def batches(
        self,
        query: Select[Any],
        order: Sequence[InstrumentedAttribute[Any]],
        *,
        size: int = BATCH,
    ) -> AsyncIterator[list[Any]]:
        """The rows of `query` in `order` (unique as a whole), `size` at a time, each batch
        read in its own short transaction (keyset paging: no offset to rescan)."""
        after: tuple[Any, ...] | None = None
        while True:
            page = query
            if after is not None:
                page = page.where(_after(order, after))
            page = page.order_by(*order).limit(size)
            async with self.reader() as session:
                rows = list((await session.execute(page)).scalars())
            if not rows:
                return
            yield rows
            if len(rows) < size:
                return
            after = tuple(getattr(rows[-1], column.key) for column in order)

    async def write_rows(
        self,
        archive: Archive,
        name: str,
        query: Select[Any],
        order: Sequence[InstrumentedAttribute[Any]],
        item: Callable[[Any], Any],
    ) -> None:
        """The rows of `query` as one JSON array file, each row made an item by `item`."""
        async with archive.stream(name) as out, out.array() as items:
            async for rows in self.batches(query, order):
                for row in rows:
                    await items.add(item(row))


def _after(order: Sequence[InstrumentedAttribute[Any]], last: tuple[Any, ...]) -> Any:
    """`(a, b, ...) > last` as a plain boolean expression (works on every database)."""
    clauses = []
    for i, column in enumerate(order):
        equal = [order[j] == last[j] for j in range(i)]
        clauses.append(and_(*equal, column > last[i]))
    return or_(*clauses)


Producer = Callable[[ExportContext, Archive], Awaitable[None]]


@dataclass(frozen=True)
class Section:
    name: str
    files: str  # the files it writes, for the README
    about: str  # what they hold, for the README
    produce: Producer


_sections: dict[str, Section] = {}


def register_section(name: str, *, files: str, about: str) -> Callable[[Producer], Producer]:
    """Add the decorated producer to every archive from now on, as section `name` (in the
    order of registration). It must write no secret, password hash, key hash or token."""

    def register(produce: Producer) -> Producer:
        _sections[name] = Section(name, files, about, produce)
        return produce

    return register


def sections() -> list[Section]:
    return list(_sections.values())


def readme(listed: Sequence[Section], *, user_email: str, built_at: datetime) -> str:
    lines = [
        "# Your LunoGen data",
        "",
        f"Everything LunoGen held about the account {user_email} on "
        f"{built_at:%Y-%m-%d at %H:%M} UTC.",
        "",
        "The files are JSON (UTF-8), except the skills' own files and the profile picture,",
        "which are as you uploaded them. Times are ISO 8601 in UTC. Amounts are integers:",
        "ledger amounts in micro-credits (1,000,000 = 1 credit), model costs in nano-USD.",
        "",
        "Secrets are never in this archive: channel tokens, app secrets and webhook secrets",
        'appear as `{"configured": true}` (or false), and no password hash, API key, session',
        "token or key hash is included. Messages and memory notes are decrypted. A message",
        "or note whose text could not be decrypted (its key was retired) says `unreadable`.",
        "",
        "## Files",
        "",
    ]
    for section in listed:
        lines += [f"### {section.name}", "", f"`{section.files}`", "", section.about, ""]
    return "\n".join(lines)
