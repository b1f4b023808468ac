"""Skills: create, version, approve, block, delete, and what agents may use.

`visible_skills` is the one gate to a tenant's skills: every owner read and write goes through
it (via `get_skill`), so another tenant's skill looks exactly like an id that never existed.
Admins reach any skill through `get_any_skill`, and every admin action is audited.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from lunogen.account.models import User
from lunogen.agent.models import Agent
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.errors import ConflictError, ForbiddenError, NotFoundError
from lunogen.kit.time import utcnow
from lunogen.skill.models import Skill, SkillFile, SkillVersion
from lunogen.skill.package import ParsedSkill
from lunogen.skill.scanner import scan_package
from lunogen.skill.schemas import SkillStatus

MAX_SKILLS_PER_OWNER = 100
KEEP_VERSIONS = 20  # older versions are pruned (an approval never covers them anyway)
USABLE = frozenset({SkillStatus.CLEAN.value, SkillStatus.APPROVED.value})


@dataclass(frozen=True)
class ScannedPackage:
    """A parsed package and its scanner findings. Scanning happens before any transaction
    that writes (`scan`): it can take seconds of CPU, and on SQLite a write transaction holds
    the database's only write lock."""

    package: ParsedSkill
    findings: list[dict[str, object]]


async def scan(package: ParsedSkill) -> ScannedPackage:
    """Scan `package` off the event loop. Call it with no transaction open."""
    found = await asyncio.to_thread(scan_package, skill_md=package.skill_md, files=package.files)
    return ScannedPackage(package=package, findings=[f.as_dict() for f in found])


@dataclass(frozen=True)
class SkillPackage:
    """A usable skill's current version, as the runtime sees it."""

    id: str
    name: str
    description: str
    version: int
    status: str
    body: str
    files: dict[str, bytes]


def skill_not_found() -> NotFoundError:
    return NotFoundError(error="Skill not found")


def visible_skills(*, owner_id: str) -> Select[Skill]:
    """The owner's skills. Every owner query of skills starts here."""
    return select(Skill).where(Skill.owner_id == owner_id)


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def get_skill(
    session: AsyncSession, *, owner_id: str, skill_id: str, for_update: bool = False
) -> Skill:
    """One of the owner's skills, else `404 Skill not found` (whoever owns the id)."""
    if not _is_uuid(skill_id):
        raise skill_not_found()
    query = visible_skills(owner_id=owner_id).where(Skill.id == skill_id)
    if for_update:
        query = query.with_for_update()
    skill = (await session.execute(query)).scalar_one_or_none()
    if skill is None:
        raise skill_not_found()
    return skill


async def get_any_skill(session: AsyncSession, *, skill_id: str, for_update: bool = False) -> Skill:
    """Any owner's skill, for admins only (callers check the role)."""
    if not _is_uuid(skill_id):
        raise skill_not_found()
    query = select(Skill).where(Skill.id == skill_id)
    if for_update:
        query = query.with_for_update()
    skill = (await session.execute(query)).scalar_one_or_none()
    if skill is None:
        raise skill_not_found()
    return skill


async def list_skills(
    session: AsyncSession,
    *,
    owner_id: str | None,
    status: SkillStatus | None,
    limit: int,
    offset: int,
) -> tuple[list[Skill], int]:
    """A page of skills, newest first, and the total matching. `owner_id=None`: every owner's
    (admins only)."""
    query = select(Skill) if owner_id is None else visible_skills(owner_id=owner_id)
    if status is not None:
        query = query.where(Skill.status == status.value)
    total = int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )
    rows = await session.execute(
        query.order_by(Skill.created_at.desc(), Skill.id.desc()).limit(limit).offset(offset)
    )
    return list(rows.scalars()), total


async def current_version(session: AsyncSession, skill: Skill) -> SkillVersion:
    query = select(SkillVersion).where(
        SkillVersion.skill_id == skill.id, SkillVersion.version == skill.version
    )
    return (await session.execute(query)).scalar_one()


async def file_sizes(session: AsyncSession, *, version_id: str) -> list[tuple[str, int]]:
    rows = await session.execute(
        select(SkillFile.path, SkillFile.size)
        .where(SkillFile.version_id == version_id)
        .order_by(SkillFile.path)
    )
    return [(path, size) for path, size in rows.all()]


async def file_texts(session: AsyncSession, *, version_id: str) -> tuple[dict[str, str], list[str]]:
    """A version's files for an editor: the UTF-8 text ones by path, and the paths of the others
    (binary assets, which only a zip can replace)."""
    rows = await session.execute(
        select(SkillFile.path, SkillFile.content)
        .where(SkillFile.version_id == version_id)
        .order_by(SkillFile.path)
    )
    texts: dict[str, str] = {}
    binary: list[str] = []
    for path, content in rows:
        try:
            texts[path] = bytes(content).decode("utf-8")
        except UnicodeDecodeError:
            binary.append(path)
    return texts, binary


async def list_versions(session: AsyncSession, *, skill_id: str) -> list[SkillVersion]:
    """The stored versions, newest first, without their bodies."""
    rows = await session.execute(
        select(SkillVersion)
        .options(defer(SkillVersion.body), defer(SkillVersion.front_matter))
        .where(SkillVersion.skill_id == skill_id)
        .order_by(SkillVersion.version.desc())
    )
    return list(rows.scalars())


async def _lock_owner(session: AsyncSession, owner_id: str) -> None:
    # Serialises name and quota checks of one owner (PostgreSQL); SQLite writers are serial.
    await session.execute(select(User.id).where(User.id == owner_id).with_for_update())


async def _check_name_free(
    session: AsyncSession, *, owner_id: str, name: str, skill_id: str | None = None
) -> None:
    query = visible_skills(owner_id=owner_id).where(Skill.name == name)
    if skill_id is not None:
        query = query.where(Skill.id != skill_id)
    existing = (await session.execute(query)).scalar_one_or_none()
    if existing is not None:
        raise ConflictError(
            f"You already have a skill named '{name}'; update it with PUT /api/v1/skills/"
            f"{existing.id}, or choose another name",
            error="Skill name taken",
            extra={"skill_id": existing.id},
        )


def _add_version(
    session: AsyncSession, *, skill: Skill, number: int, scanned: ScannedPackage, actor_id: str
) -> list[dict[str, object]]:
    package, findings = scanned.package, scanned.findings
    version = SkillVersion(
        skill_id=skill.id,
        version=number,
        created_by=actor_id,
        front_matter=package.front_matter,
        body=package.body,
        sha256=package.sha256,
        size=package.size,
        file_count=len(package.files),
        findings=findings,
    )
    version.files = [
        SkillFile(path=path, size=len(content), content=content)
        for path, content in sorted(package.files.items())
    ]
    session.add(version)
    return findings


def _audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    skill: Skill,
    details: dict[str, object],
) -> None:
    audit.record(
        session,
        action=action,
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        subject_user_id=skill.owner_id,
        target_type="skill",
        target_id=skill.id,
        details={"name": skill.name, "version": skill.version, **details},
    )


def _rules(findings: Sequence[dict[str, object]]) -> list[str]:
    return sorted({str(f["rule"]) for f in findings})


async def create_skill(
    session: AsyncSession, *, principal: Principal, scanned: ScannedPackage
) -> Skill:
    """Store version 1 of a scanned package: `clean` without findings, else `flagged`."""
    package = scanned.package
    owner = principal.user
    await _lock_owner(session, owner.id)
    count_query = select(func.count()).select_from(visible_skills(owner_id=owner.id).subquery())
    if int((await session.execute(count_query)).scalar_one()) >= MAX_SKILLS_PER_OWNER:
        raise ForbiddenError(
            f"You can have at most {MAX_SKILLS_PER_OWNER} skills; delete one to add another"
        )
    await _check_name_free(session, owner_id=owner.id, name=package.name)
    now = utcnow()
    skill = Skill(
        owner_id=owner.id,
        name=package.name,
        description=package.description,
        status=SkillStatus.CLEAN.value,
        version=1,
        findings=[],
        created_at=now,
        updated_at=now,
    )
    session.add(skill)
    await session.flush()
    findings = _add_version(session, skill=skill, number=1, scanned=scanned, actor_id=owner.id)
    skill.findings = findings
    skill.status = (SkillStatus.FLAGGED if findings else SkillStatus.CLEAN).value
    await session.flush()
    _audit(
        session,
        principal,
        "skill.created",
        skill,
        {"sha256": package.sha256, "status": skill.status, "rules": _rules(findings)},
    )
    return skill


async def update_skill(
    session: AsyncSession, *, principal: Principal, skill_id: str, scanned: ScannedPackage
) -> Skill:
    """Store the scanned package as the next version.

    The same package as the current version (same sha256) changes nothing. Otherwise the
    status becomes `clean` or `flagged` from the new findings (an approval covers only the
    version it approved), except that a `blocked` skill stays blocked.
    """
    package = scanned.package
    owner = principal.user
    skill = await get_skill(session, owner_id=owner.id, skill_id=skill_id, for_update=True)
    current = await current_version(session, skill)
    if current.sha256 == package.sha256:
        return skill
    if package.name != skill.name:
        await _lock_owner(session, owner.id)
        await _check_name_free(session, owner_id=owner.id, name=package.name, skill_id=skill.id)
    number = skill.version + 1
    findings = _add_version(session, skill=skill, number=number, scanned=scanned, actor_id=owner.id)
    previous = {"name": skill.name, "status": skill.status}
    skill.name = package.name
    skill.description = package.description
    skill.version = number
    skill.findings = findings
    if skill.status != SkillStatus.BLOCKED.value:
        skill.status = (SkillStatus.FLAGGED if findings else SkillStatus.CLEAN).value
    skill.updated_at = utcnow()
    await session.flush()
    await session.execute(
        delete(SkillVersion).where(
            SkillVersion.skill_id == skill.id, SkillVersion.version <= number - KEEP_VERSIONS
        )
    )
    _audit(
        session,
        principal,
        "skill.updated",
        skill,
        {
            "sha256": package.sha256,
            "status": skill.status,
            "previous_status": previous["status"],
            "previous_name": previous["name"],
            "rules": _rules(findings),
        },
    )
    return skill


async def agents_using(session: AsyncSession, *, owner_id: str, skill_id: str) -> list[Agent]:
    """The owner's live agents whose `skills` list this skill."""
    rows = await session.execute(
        select(Agent).where(Agent.owner_id == owner_id, Agent.deleted_at.is_(None))
    )
    return [agent for agent in rows.scalars() if skill_id in agent.skills]


async def delete_skill(session: AsyncSession, *, principal: Principal, skill_id: str) -> None:
    """Delete the skill and all its versions, unless an agent still lists it (409)."""
    owner = principal.user
    skill = await get_skill(session, owner_id=owner.id, skill_id=skill_id, for_update=True)
    users = await agents_using(session, owner_id=owner.id, skill_id=skill.id)
    if users:
        names = ", ".join(f"'{a.name}'" for a in users)
        raise ConflictError(
            f"Skill '{skill.name}' is attached to agent{'s' if len(users) > 1 else ''} {names}; "
            "remove it from their skills first",
            error="Skill in use",
            extra={"agents": [{"id": a.id, "name": a.name} for a in users]},
        )
    _audit(session, principal, "skill.deleted", skill, {"status": skill.status})
    await session.delete(skill)
    await session.flush()


async def approve_skill(
    session: AsyncSession, *, principal: Principal, skill_id: str, version: int | None
) -> Skill:
    """The owner accepts the findings of the current version; only a `flagged` skill."""
    skill = await get_skill(session, owner_id=principal.user.id, skill_id=skill_id, for_update=True)
    if version is not None and version != skill.version:
        raise ConflictError(
            f"Version {version} is not the current version ({skill.version}); review it first",
            error="Version not current",
            extra={"version": skill.version},
        )
    if skill.status != SkillStatus.FLAGGED.value:
        why = {
            SkillStatus.CLEAN.value: "it has no findings",
            SkillStatus.APPROVED.value: "this version is approved already",
            SkillStatus.BLOCKED.value: "it is blocked by an administrator",
        }[skill.status]
        raise ConflictError(
            f"Only a flagged skill can be approved; '{skill.name}' is {skill.status}: {why}",
            error=f"Skill is {skill.status}",
            extra={"status": skill.status},
        )
    now = utcnow()
    skill.status = SkillStatus.APPROVED.value
    skill.approved_at = now
    skill.approved_version = skill.version
    skill.approved_by = principal.user.id
    skill.updated_at = now
    await session.flush()
    _audit(session, principal, "skill.approved", skill, {"rules": _rules(skill.findings)})
    return skill


async def block_skill(
    session: AsyncSession, *, admin: Principal, skill_id: str, reason: str
) -> Skill:
    """An admin blocks any owner's skill: no agent may deploy with it or load it."""
    skill = await get_any_skill(session, skill_id=skill_id, for_update=True)
    if skill.status == SkillStatus.BLOCKED.value:
        raise ConflictError("The skill is blocked already", error="Skill is blocked")
    previous = skill.status
    now = utcnow()
    skill.status = SkillStatus.BLOCKED.value
    skill.blocked_at = now
    skill.blocked_reason = reason
    skill.blocked_by = admin.user.id
    skill.updated_at = now
    await session.flush()
    _audit(session, admin, "skill.blocked", skill, {"reason": reason, "previous_status": previous})
    return skill


async def unblock_skill(session: AsyncSession, *, admin: Principal, skill_id: str) -> Skill:
    """Lift a block: the status follows the current version's scan and approval again."""
    skill = await get_any_skill(session, skill_id=skill_id, for_update=True)
    if skill.status != SkillStatus.BLOCKED.value:
        raise ConflictError(
            f"The skill is not blocked (it is {skill.status})", error=f"Skill is {skill.status}"
        )
    if not skill.findings:
        status = SkillStatus.CLEAN
    elif skill.approved_version == skill.version:
        status = SkillStatus.APPROVED
    else:
        status = SkillStatus.FLAGGED
    skill.status = status.value
    skill.blocked_at = None
    skill.blocked_reason = None
    skill.blocked_by = None
    skill.updated_at = utcnow()
    await session.flush()
    _audit(session, admin, "skill.unblocked", skill, {"status": skill.status})
    return skill


# -- what agents use -----------------------------------------------------------------------


async def _owned(
    session: AsyncSession, *, owner_id: str, skill_ids: Sequence[str]
) -> dict[str, Skill]:
    ids = [i for i in dict.fromkeys(skill_ids) if _is_uuid(i)]
    if not ids:
        return {}
    rows = await session.execute(visible_skills(owner_id=owner_id).where(Skill.id.in_(ids)))
    return {skill.id: skill for skill in rows.scalars()}


async def unknown_skill_ids(
    session: AsyncSession, *, owner_id: str, skill_ids: Sequence[str]
) -> list[str]:
    """The ids in `skill_ids` that are not skills of `owner_id`, in order."""
    found = await _owned(session, owner_id=owner_id, skill_ids=skill_ids)
    return [i for i in skill_ids if i not in found]


async def skill_problems(
    session: AsyncSession, *, owner_id: str, skill_ids: Sequence[str]
) -> list[str]:
    """Why an agent with these skills cannot deploy, one reason per skill; [] when all fine."""
    found = await _owned(session, owner_id=owner_id, skill_ids=skill_ids)
    problems: list[str] = []
    for skill_id in skill_ids:
        skill = found.get(skill_id)
        if skill is None:
            problems.append(f"unknown skill {skill_id}")
        elif skill.status == SkillStatus.FLAGGED.value:
            problems.append(
                f"skill {skill.name} is flagged by the scanner: approve it or remove it"
            )
        elif skill.status == SkillStatus.BLOCKED.value:
            problems.append(f"skill {skill.name} is blocked by an administrator")
    return problems


async def usable_skills(
    session: AsyncSession,
    *,
    owner_id: str,
    skill_ids: Sequence[str],
    with_files: bool = False,
) -> list[SkillPackage]:
    """The owner's skills among `skill_ids` that are `clean` or `approved`, in that order, with
    their current version's body (and files when `with_files`)."""
    found = await _owned(session, owner_id=owner_id, skill_ids=skill_ids)
    usable = [
        found[i] for i in dict.fromkeys(skill_ids) if i in found and found[i].status in USABLE
    ]
    if not usable:
        return []
    versions: dict[str, SkillVersion] = {}
    for skill in usable:
        versions[skill.id] = await current_version(session, skill)
    files: dict[str, dict[str, bytes]] = {skill.id: {} for skill in usable}
    if with_files:
        by_version = {versions[s.id].id: s.id for s in usable}
        rows = await session.execute(
            select(SkillFile.version_id, SkillFile.path, SkillFile.content)
            .where(SkillFile.version_id.in_(list(by_version)))
            .order_by(SkillFile.path)
        )
        for version_id, path, content in rows.all():
            files[by_version[version_id]][path] = content
    return [
        SkillPackage(
            id=skill.id,
            name=skill.name,
            description=skill.description,
            version=skill.version,
            status=skill.status,
            body=versions[skill.id].body,
            files=files[skill.id],
        )
        for skill in usable
    ]
