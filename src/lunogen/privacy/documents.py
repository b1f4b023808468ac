"""The Terms and the Privacy Policy as versioned documents: publishing, reading, accepting.

A version is immutable once published (its text is what people accepted). Publishing a
material change requires an effective date after today and queues the notice to every active
user (`privacy.policy_notice`, a job after commit). A person's acceptance is an append-only
`consents` row (document, version, time, IP, user agent); `users.terms_version` and
`users.privacy_version` name the newest accepted versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path

from markdown_it import MarkdownIt
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import Consent, User
from lunogen.audit import service as audit
from lunogen.errors import ConflictError, NotFoundError, ValidationFailedError
from lunogen.kit.time import utcnow
from lunogen.kit.web import ClientInfo
from lunogen.privacy import policy
from lunogen.privacy.models import PolicyVersion
from lunogen.privacy.policy import BUNDLED_EFFECTIVE_AT, BUNDLED_VERSION, KINDS, Versions
from lunogen.privacy.policy_notice import queue_notice

TEXTS_DIR = Path(__file__).parent / "texts"
MAX_TEXT_CHARS = 200_000
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_TAG = re.compile(r"^\[([a-z0-9][a-z0-9-]{0,60})\]\s*")


@dataclass(frozen=True)
class Document:
    """A version as pages and the API show it (the bundled text stands in for an empty table)."""

    kind: str
    version: str
    effective_at: datetime
    material: bool
    text: str
    summary: str
    published_at: datetime

    @property
    def title(self) -> str:
        return policy.TITLES[self.kind]

    def in_effect(self, now: datetime | None = None) -> bool:
        return self.effective_at <= (now or utcnow())


def _document(row: PolicyVersion) -> Document:
    return Document(
        kind=row.kind,
        version=row.version,
        effective_at=row.effective_at,
        material=row.material,
        text=row.text,
        summary=row.summary,
        published_at=row.published_at,
    )


def bundled_text(kind: str) -> str:
    return (TEXTS_DIR / f"{kind}.md").read_text(encoding="utf-8")


def _bundled(kind: str) -> Document:
    return Document(
        kind=kind,
        version=BUNDLED_VERSION,
        effective_at=BUNDLED_EFFECTIVE_AT,
        material=True,
        text=bundled_text(kind),
        summary="",
        published_at=BUNDLED_EFFECTIVE_AT,
    )


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise NotFoundError(f"No policy kind {kind!r}: use terms or privacy", error="Not found")
    return kind


async def list_versions(session: AsyncSession, *, kind: str) -> list[Document]:
    """Every version of `kind`, oldest first."""
    check_kind(kind)
    rows = await session.execute(
        select(PolicyVersion)
        .where(PolicyVersion.kind == kind)
        .order_by(PolicyVersion.effective_at, PolicyVersion.published_at)
    )
    found = [_document(row) for row in rows.scalars()]
    return found or [_bundled(kind)]


async def get_version(session: AsyncSession, *, kind: str, version: str) -> Document:
    for document in await list_versions(session, kind=kind):
        if document.version == version:
            return document
    raise NotFoundError(f"No version {version!r} of the {policy.TITLES[kind]}")


async def current_and_upcoming(
    session: AsyncSession, *, kind: str, now: datetime | None = None
) -> tuple[Document, list[Document]]:
    """The version in effect (the oldest one if none is yet) and those still to come."""
    now = now or utcnow()
    documents = await list_versions(session, kind=kind)
    effective = [d for d in documents if d.effective_at <= now]
    current = effective[-1] if effective else documents[0]
    return current, [d for d in documents if d.effective_at > now]


def parse_effective(value: str) -> datetime:
    """`YYYY-MM-DD` (the start of that day, UTC) or an ISO datetime with its offset."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0), tzinfo=UTC)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailedError(
            "effective must be a date (YYYY-MM-DD) or an ISO 8601 date and time",
            field="effective",
        ) from None
    if parsed.tzinfo is None:
        raise ValidationFailedError(
            "effective needs a time zone offset (or give a date only)", field="effective"
        )
    return parsed.astimezone(UTC)


def _sections(text: str) -> dict[str, str]:
    """The document's text per `## ` heading (the preamble under the empty name)."""
    sections: dict[str, list[str]] = {"": []}
    name = ""
    for line in text.splitlines():
        if line.startswith("## "):
            name = line[3:].strip()
            sections.setdefault(name, [])
        else:
            sections[name].append(line.strip())
    return {key: " ".join(" ".join(lines).split()) for key, lines in sections.items()}


def changed_sections(old: str, new: str) -> list[str]:
    """The headings whose text differs between two versions (new ones included)."""
    before, after = _sections(old), _sections(new)
    names = [n for n in after if n and before.get(n) != after[n]]
    names += [f"{n} (removed)" for n in before if n and n not in after]
    if before.get("") != after.get("") and "" in after:
        names.insert(0, "Introduction")
    return names


@dataclass(frozen=True)
class Publication:
    kind: str
    version: str
    effective: str
    material: bool
    text: str
    summary: str = ""


async def publish(
    session: AsyncSession,
    *,
    data: Publication,
    actor_user_id: str | None,
    client: ClientInfo | None,
    now: datetime | None = None,
    enqueue_notice: bool = True,
) -> Document:
    """Store a new version (audited). A material one must take effect after `now` and is
    announced to every active user by the `privacy.notify_policy_change` job after commit
    (`enqueue_notice=False` from a process that runs no jobs, the CLI: the server's sweeper
    finds the pending notice within `LUNOGEN_SWEEP_INTERVAL_SECONDS`)."""
    now = now or utcnow()
    kind = data.kind
    if kind not in KINDS:
        raise ValidationFailedError("kind must be terms or privacy", field="kind")
    effective_at = parse_effective(data.effective)
    if not _VERSION.match(data.version):
        raise ValidationFailedError(
            "version: 1 to 40 letters, digits, dots, dashes or underscores", field="version"
        )
    text = data.text.replace("\r\n", "\n").strip()
    if not text:
        raise ValidationFailedError("The document is empty", field="text")
    if len(text) > MAX_TEXT_CHARS:
        raise ValidationFailedError(
            f"The document is longer than {MAX_TEXT_CHARS} characters", field="text"
        )
    if data.material and effective_at <= now:
        raise ValidationFailedError(
            "A material change must take effect in the future, so people are told before it "
            "applies: give a later effective date",
            field="effective",
        )
    existing = list(
        (await session.execute(select(PolicyVersion).where(PolicyVersion.kind == kind))).scalars()
    )
    if any(row.version == data.version for row in existing):
        raise ConflictError(f"Version {data.version} of the {policy.TITLES[kind]} exists")
    previous = max(existing, key=lambda r: r.effective_at, default=None)
    summary = data.summary.strip()
    if not summary:
        changed = changed_sections(previous.text if previous else "", text)
        summary = (
            "Changed sections: " + "; ".join(changed) + "." if changed else "Wording changes only."
        )
    row = PolicyVersion(
        kind=kind,
        version=data.version,
        effective_at=effective_at,
        material=data.material,
        text=text,
        summary=summary[:2000],
        published_at=now,
        published_by=actor_user_id,
        notify_status="pending" if data.material else "none",
        notify_next_at=now if data.material else None,
        notified=0,
    )
    session.add(row)
    await session.flush()
    audit.record(
        session,
        action="privacy.policy_published",
        actor_user_id=actor_user_id,
        client=client,
        target_type="policy_version",
        target_id=row.id,
        details={
            "kind": kind,
            "version": data.version,
            "effective_at": effective_at.isoformat(),
            "material": data.material,
        },
    )
    if data.material and enqueue_notice:
        queue_notice(session, row.id)
    await policy.refresh_after_commit(session)
    return _document(row)


async def accept_versions(
    session: AsyncSession,
    *,
    user: User,
    client: ClientInfo,
    how: str,
    kinds: tuple[str, ...] = KINDS,
    now: datetime | None = None,
) -> list[tuple[str, str]]:
    """Record that `user` accepts the versions of `kinds` in effect now (those not yet
    accepted); returns the (kind, version) pairs recorded.

    Each kind is claimed with a conditional UPDATE of the user's row, so concurrent requests
    record one acceptance, not one each. `how` says what counted as accepting (audited):
    `notice` (the button on the notice page) or `continued_use` (an API call after the
    effective date, as the policy's [changes] clause says).
    """
    now = now or utcnow()
    snapshot: Versions = policy.versions()
    columns = {"terms": User.terms_version, "privacy": User.privacy_version}
    recorded: list[tuple[str, str]] = []
    for kind in kinds:
        current = snapshot.current(kind, now)
        accepted = getattr(user, f"{kind}_version")
        if current is None or accepted == current.version:
            continue
        column = columns[kind]
        condition = column.is_(None) if accepted is None else column == accepted
        result = await session.execute(
            update(User)
            .where(User.id == user.id, condition)
            .values({column: current.version})
            .execution_options(synchronize_session=False)
        )
        if not getattr(result, "rowcount", 0):
            # A concurrent request recorded it first (its UPDATE committed while this one
            # waited for the row): read what it stored.
            await session.refresh(user, [f"{kind}_version"])
            continue
        setattr(user, f"{kind}_version", current.version)
        session.add(
            Consent(
                user_id=user.id,
                document=kind,
                version=current.version,
                accepted_at=now,
                ip=client.ip,
                user_agent=client.user_agent,
            )
        )
        recorded.append((kind, current.version))
    if recorded:
        audit.record(
            session,
            action="account.policy_accepted",
            actor_user_id=user.id,
            client=client,
            details={"how": how, "versions": dict(recorded)},
        )
    return recorded


async def accept_on_continued_use(
    session: AsyncSession, *, user: User, client: ClientInfo
) -> list[tuple[str, str]]:
    """An API call by a person whose accepted versions are out of date: record acceptance of
    the versions in effect (the [changes] clause), once. No query when nothing is due."""
    if user.age_attested_at is None or user.terms_version is None:
        return []  # never consented at all: that is the onboarding's consent, not this
    due = policy.versions().due(user.terms_version, user.privacy_version)
    if not due:
        return []
    return await accept_versions(
        session, user=user, client=client, how="continued_use", kinds=tuple(due)
    )


def due_documents(user: User) -> list[str]:
    """The kinds `user` has an out-of-date acceptance of (for the notice page)."""
    return policy.versions().due(user.terms_version, user.privacy_version)


_MD = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


def render_html(text: str, *, heading_shift: int = 0) -> str:
    """The document as HTML. Raw HTML in the text is escaped, never passed through; a list
    item that starts with a `[tag]` gets it as its `id` (so `/privacy#no-training` links to
    the promise) and keeps the tag visible. A leading `# Title` line is left to the page;
    `heading_shift` lowers the other headings (inside a page section that has its own)."""
    lines = text.lstrip().splitlines()
    if lines and lines[0].startswith("# "):  # the page shows the title itself
        text = "\n".join(lines[1:])
    tokens = _MD.parse(text)
    for index, token in enumerate(tokens):
        if heading_shift and token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(6, int(token.tag[1]) + heading_shift)}"
        if token.type != "list_item_open":
            continue
        inline = next((t for t in tokens[index + 1 : index + 4] if t.type == "inline"), None)
        if inline is None:
            continue
        match = _TAG.match(inline.content)
        if match:
            token.attrSet("id", match.group(1))
    return str(_MD.renderer.render(tokens, _MD.options, {}))


async def all_versions(session: AsyncSession) -> list[PolicyVersion]:
    """Every published version of both documents with its notice progress, newest first
    (the admin console)."""
    rows = await session.execute(
        select(PolicyVersion).order_by(
            PolicyVersion.effective_at.desc(), PolicyVersion.published_at.desc()
        )
    )
    return list(rows.scalars())
