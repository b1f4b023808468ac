"""The agent file: one agent's configuration as a versioned JSON (or YAML) document.

Export writes what a person configured (name, model, fallbacks, instructions, tools, skills by
name and version, channels with their public settings) and never a secret: each secret field of a
channel reads `{"configured": true|false}`. Import checks the whole file first and refuses it
with one 422 naming every problem by its path (`skills.0.version`, `channels.1.type`), creating
nothing; otherwise it creates a `draft` agent in the caller's transaction, audited.

Channel types are known only through the channel contract's registry: a type's `input_model`
says which fields are public and which are secret. A type whose secrets the owner must supply
(tokens, app secrets) is created without them and disabled, its reason saying what to add; the
secrets the platform generates (a webhook's signing secret) are generated anew and shown once.
The format is documented in docs/agent-file.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeGuard

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.account.plans import at_limit_advice, limits_for
from lunogen.agent import schemas, versions
from lunogen.agent.models import Agent, AgentChannel
from lunogen.agent.service import Revealed, get_agent, visible_agents
from lunogen.audit import service as audit
from lunogen.auth.principal import Principal
from lunogen.billing import caps_service
from lunogen.billing.caps_schemas import AgentCapsIn
from lunogen.channel.contract import registered_types
from lunogen.channel.schemas import ChannelInBase
from lunogen.channel.service import apply_channels
from lunogen.errors import (
    BadRequestError,
    PayloadTooLargeError,
    ValidationFailedError,
    validation_details,
)
from lunogen.kit.crypto import KeyRing
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.llm import catalog
from lunogen.schedule import agentfile as schedule_file
from lunogen.skill.models import Skill, SkillVersion
from lunogen.skill.service import visible_skills
from lunogen.tool.mcp import service as mcp_service
from lunogen.tool.mcp.schemas import McpServerFileEntry
from lunogen.tool.registry import registry

FORMAT_KEY = "lunogen_agent_file"
VERSION = 1
MAX_FILE_BYTES = 1024 * 1024
YAML_MEDIA_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
Format = Literal["json", "yaml"]
MEDIA_TYPES: dict[str, str] = {"json": "application/json", "yaml": "application/yaml"}

Problems = list[tuple[str, str]]


# The format ---------------------------------------------------------------------------------


class SkillRef(BaseModel):
    """A skill of the importing account, by its name and version."""

    model_config = ConfigDict(extra="forbid")

    name: schemas.Identifier = Field(
        description="The skill's name (unique among one account's skills)."
    )
    version: Annotated[int, Strict(), Field(ge=1, le=1_000_000)] = Field(
        description="The skill's version. Agents use a skill's current version, so on import it "
        "must be the importing account's current version of that skill."
    )


class AgentFile(BaseModel):
    """Version 1 of the agent file. Unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", title="AgentFile")

    lunogen_agent_file: Literal[1] = Field(description="The format's version: 1.")
    agent_version: Annotated[int, Strict(), Field(ge=1, le=1_000_000_000)] | None = Field(
        default=None,
        description="The version of the agent this file was exported from (informational: an "
        "import creates a new agent at its version 1 and records this number there).",
    )
    name: schemas.Name
    description: schemas.Description = ""
    model: schemas.ModelId = Field(description="A model id from `GET /api/v1/models`.")
    fallback_models: list[schemas.ModelId] = Field(
        default_factory=list, max_length=schemas.MAX_FALLBACKS, description="At most 3, in order."
    )
    instructions: schemas.Instructions = ""
    tools: list[schemas.Identifier] = Field(
        default_factory=list, max_length=100, description="Names from `GET /api/v1/tools`."
    )
    skills: list[SkillRef] = Field(default_factory=list, max_length=100)
    channels: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=schemas.MAX_CHANNELS,
        description="Each channel's `type` and public settings, as in `POST /api/v1/agents`; "
        'each secret field reads `{"configured": true}` or `{"configured": false}` and is '
        "never read on import.",
    )
    caps: AgentCapsIn | None = Field(
        default=None,
        description="Spend caps and the over-cap reply, as in `PUT /api/v1/agents/{id}/caps` "
        "(credits as decimal strings); left out: no caps.",
    )
    mcp_servers: list[McpServerFileEntry] = Field(
        default_factory=list,
        max_length=mcp_service.MAX_SERVERS_PER_AGENT,
        description="Remote MCP servers: URL, auth kind and allowed tools, never credentials "
        "(after an import, set the bearer token or connect OAuth, then list the tools).",
    )
    schedules: list[schedule_file.ScheduleFileEntry] = Field(
        default_factory=list,
        max_length=schedule_file.MAX_SCHEDULES,
        description="Schedules, as in `POST /api/v1/agents/{id}/schedules` (a proactive one "
        "names its channel by its `position` in `channels` and its `type`, and keeps its "
        "contact); one-offs whose time has passed are left out of an export.",
    )


def json_schema() -> dict[str, Any]:
    """The file's JSON Schema with its parts inlined (for the OpenAPI document)."""
    schema = AgentFile.model_json_schema(ref_template="#/$defs/{model}")
    parts: dict[str, Any] = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return inline(parts[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    inlined: dict[str, Any] = inline(schema)
    return inlined


@dataclass
class Checked:
    """A file that passed every check: what the import will create."""

    file: AgentFile
    skill_ids: list[str]
    channels: list[ChannelInBase]
    # Channels created without the secrets their type needs: index → secret field names.
    needs_secrets: dict[int, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ChannelSetup:
    """A channel the import created that cannot work until its owner adds its secrets."""

    path: str
    channel_id: str
    type: str
    missing_secrets: list[str]


@dataclass
class Imported:
    agent: Agent
    revealed: Revealed
    needs_setup: list[ChannelSetup]


# Reading a body -------------------------------------------------------------------------------


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: a few bytes of `*alias` can expand into gigabytes."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted in an agent file", event.start_mark
            )
        return super().compose_node(parent, index)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_document(body: bytes, *, yaml_text: bool) -> Any:
    """The document in `body` (JSON, or YAML when `yaml_text`); 400 naming what is wrong."""
    if len(body) > MAX_FILE_BYTES:
        raise PayloadTooLargeError(f"An agent file must be at most {MAX_FILE_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequestError(
            f"The file is not UTF-8 text (byte {exc.start})", error="Invalid agent file"
        ) from None
    if yaml_text:
        try:
            return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 (a SafeLoader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise BadRequestError(
                f"The file is not valid YAML: {exc.problem or exc.context}{where}",
                error="Invalid agent file",
            ) from None
        except (yaml.YAMLError, RecursionError):
            raise BadRequestError(
                "The file is not valid YAML (or nests too deeply)", error="Invalid agent file"
            ) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise BadRequestError(
            f"The file is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
            " (send Content-Type: application/yaml for YAML)",
            error="Invalid agent file",
        ) from None
    except (ValueError, RecursionError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "it nests too deeply"
        raise BadRequestError(
            f"The file is not valid JSON: {message}", error="Invalid agent file"
        ) from None


def looks_like_yaml(text: bytes, filename: str | None = None) -> bool:
    """For uploads without a media type: a `.yaml`/`.yml` name, or text not starting with `{`."""
    if filename and filename.lower().endswith((".yaml", ".yml")):
        return True
    if filename and filename.lower().endswith(".json"):
        return False
    return not text.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{")


# Writing a file -------------------------------------------------------------------------------


def _channel_models() -> dict[str, type[ChannelInBase]]:
    """The channel types an agent file can hold: those the registry knows with a config."""
    return {
        name: kind.input_model
        for name, kind in sorted(registered_types().items())
        if kind.input_model is not None
    }


def _channel_entry(row: AgentChannel) -> dict[str, Any]:
    model = _channel_models().get(row.type)
    if model is None:  # a type this server no longer has: its settings as stored
        return {"type": row.type, **row.config}
    try:  # the canonical form: every field, in the model's order, defaults filled
        config = model.model_validate({**row.config, "type": row.type}).public_config()
    except ValidationError:
        config = dict(row.config)
    entry: dict[str, Any] = {"type": row.type, **config}
    for name in model.all_secret_fields():
        entry[name] = {"configured": row.secrets is not None}
    return entry


async def file_of(session: AsyncSession, agent: Agent) -> dict[str, Any]:
    """The agent file of `agent`, as a JSON-ready dict (no ids, no timestamps, no secrets)."""
    skills: dict[str, Skill] = {}
    if agent.skills:
        rows = await session.execute(
            visible_skills(owner_id=agent.owner_id).where(Skill.id.in_(list(agent.skills)))
        )
        skills = {s.id: s for s in rows.scalars()}
    return {
        FORMAT_KEY: VERSION,
        **({"agent_version": agent.latest_version} if agent.latest_version else {}),
        "name": agent.name,
        "description": agent.description,
        "model": agent.model,
        "fallback_models": list(agent.fallback_models),
        "instructions": agent.instructions,
        "tools": list(agent.tools),
        "skills": [
            {"name": skills[i].name, "version": skills[i].version}
            for i in agent.skills
            if i in skills
        ],
        "channels": [_channel_entry(row) for row in agent.channels],
        **await _caps_entry(session, agent),
        **await _mcp_entry(session, agent),
        **await _schedules_entry(session, agent),
    }


async def _schedules_entry(session: AsyncSession, agent: Agent) -> dict[str, Any]:
    entries = await schedule_file.file_entries(
        session,
        agent_id=agent.id,
        channels=[(row.id, row.type) for row in agent.channels],
        now=utcnow(),
    )
    return {"schedules": entries} if entries else {}


async def _mcp_entry(session: AsyncSession, agent: Agent) -> dict[str, Any]:
    servers = await mcp_service.file_entries(session, agent_id=agent.id)
    return {"mcp_servers": servers} if servers else {}


async def _caps_entry(session: AsyncSession, agent: Agent) -> dict[str, Any]:
    caps = await caps_service.file_entry(session, agent_id=agent.id)
    return {} if caps is None else {"caps": caps}


def serialise(document: dict[str, Any], fmt: Format) -> bytes:
    if fmt == "yaml":
        text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
        return text.encode("utf-8")
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def file_name(agent_name: str, fmt: Format) -> str:
    """A safe download name: the agent's name in lower-case ASCII words."""
    stem = re.sub(r"[^a-z0-9]+", "-", agent_name.lower()).strip("-")[:60] or "agent"
    return f"{stem}.agent.{fmt}"


async def export_agent(
    session: AsyncSession, *, principal: Principal, agent_id: str, fmt: Format
) -> tuple[Agent, dict[str, Any]]:
    """One of the caller's agents as an agent file (404 for anyone else's). Audited."""
    agent = await get_agent(session, owner_id=principal.user.id, agent_id=agent_id)
    document = await file_of(session, agent)
    audit.record(
        session,
        action="agent.exported",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent.id,
        details={"format": fmt},
    )
    return agent, document


# Checking a file ------------------------------------------------------------------------------


def _details(errors: Sequence[Any], prefix: tuple[Any, ...] = ()) -> Problems:
    shaped = [{**dict(e), "loc": (*prefix, *e["loc"])} for e in errors]
    return [(d["field"], d["message"]) for d in validation_details(shaped)]


def _is_secret_state(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and set(value) <= {"configured"}
        and isinstance(value.get("configured", True), bool)
    )


def _check_channel(
    index: int, entry: Any, models: dict[str, type[ChannelInBase]]
) -> tuple[ChannelInBase | None, Problems]:
    path = f"channels.{index}"
    if not isinstance(entry, dict):
        return None, []  # the file's own validation names it
    kind = entry.get("type")
    if not isinstance(kind, str) or kind not in models:
        known = ", ".join(models)
        shown = f"'{kind[:50]}'" if _usable(kind) else "missing or not text"
        return None, [(f"{path}.type", f"unknown channel type {shown}; expected one of {known}")]
    model = models[kind]
    secrets = set(model.all_secret_fields())
    problems: Problems = []
    values: dict[str, Any] = {}
    for key, value in entry.items():
        if key in secrets:
            if not _is_secret_state(value):
                problems.append(
                    (
                        f"{path}.{key}",
                        'secrets are never read from an agent file: write {"configured": true} '
                        "or leave it out, and add the secret after the import",
                    )
                )
        elif key == "id":
            problems.append((f"{path}.id", "channel ids are not part of an agent file"))
        else:
            values[key] = value
    try:
        channel = model.model_validate(values)
    except ValidationError as exc:
        return None, problems + _details(exc.errors(), ("channels", index))
    return (channel if not problems else None), problems


def _usable(value: Any) -> TypeGuard[str]:
    """A string a database can look up and an answer can quote (else its field's own check
    names it): no NUL, no lone surrogate, not empty, and of a length a reference can have."""
    if not isinstance(value, str) or not value.strip() or len(value) > 200 or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _items(raw: dict[str, Any], key: str) -> list[Any]:
    """The list at `key`, cut at the field's own bound: a longer list is refused by the file's
    validation already, and its surplus is not looked up one by one."""
    value = raw.get(key)
    if not isinstance(value, list):
        return []
    bound = AgentFile.model_fields[key].metadata
    limit = next((m.max_length for m in bound if getattr(m, "max_length", None)), len(value))
    return value[:limit]


def _strings(raw: dict[str, Any], key: str) -> list[tuple[int, str]]:
    return [(i, v.strip()) for i, v in enumerate(_items(raw, key)) if _usable(v)]


async def _skill_problems(
    session: AsyncSession, *, owner_id: str, refs: list[tuple[int, str, int]]
) -> tuple[list[str], Problems]:
    """The ids of the skills named, in order, and the problems of those that do not match."""
    problems: Problems = []
    names = [name for _, name, _ in refs]
    found: dict[str, Skill] = {}
    if names:
        rows = await session.execute(
            visible_skills(owner_id=owner_id).where(Skill.name.in_(list(set(names))))
        )
        found = {s.name: s for s in rows.scalars()}
    ids: list[str] = []
    seen: set[str] = set()
    for index, name, version in refs:
        path = f"skills.{index}"
        skill = found.get(name)
        if name in seen:
            problems.append((f"{path}.name", f"skill '{name}' is listed twice"))
            continue
        seen.add(name)
        if skill is None:
            problems.append((f"{path}.name", f"you have no skill named '{name}'; upload it first"))
            continue
        ids.append(skill.id)
        if version == skill.version:
            continue
        exists = (
            await session.execute(
                select(SkillVersion.id).where(
                    SkillVersion.skill_id == skill.id, SkillVersion.version == version
                )
            )
        ).first()
        if exists is None:
            problems.append(
                (
                    f"{path}.version",
                    f"skill '{name}' has no version {version}; its current version is "
                    f"{skill.version}",
                )
            )
        else:
            problems.append(
                (
                    f"{path}.version",
                    f"skill '{name}' is at version {skill.version}, not {version}; agents use a "
                    f"skill's current version, so write {skill.version} to use it",
                )
            )
    return ids, problems


async def _reference_problems(session: AsyncSession, raw: dict[str, Any]) -> Problems:
    problems: Problems = []
    model = raw.get("model")
    model = model.strip() if _usable(model) else ""
    if model and await catalog.get_model(session, model) is None:
        problems.append(("model", f"unknown model '{model}'; see GET /api/v1/models"))
    for index, value in _strings(raw, "fallback_models"):
        if await catalog.get_model(session, value) is None:
            problems.append(
                (f"fallback_models.{index}", f"unknown model '{value}'; see GET /api/v1/models")
            )
    for index, value in _strings(raw, "tools"):
        if registry.get(value) is None:
            problems.append((f"tools.{index}", f"unknown tool '{value}'; see GET /api/v1/tools"))
    return problems


async def check_file(
    session: AsyncSession, *, principal: Principal, raw: Any, allow_private_urls: bool = False
) -> Checked:
    """Every problem of the file and of what it refers to, raised as one 422, else what to
    create. Takes the owner's row lock (PostgreSQL) so the agent count stays true."""
    if not isinstance(raw, dict):
        _raise([("body", "an agent file is an object with a 'lunogen_agent_file' version")])
    version = raw.get(FORMAT_KEY)
    if FORMAT_KEY not in raw:
        _raise([(FORMAT_KEY, "missing: this is not a LunoGen agent file")])
    if version != VERSION or isinstance(version, bool):
        shown = json.dumps(version)[:40] if _jsonable(version) else "that value"
        _raise([(FORMAT_KEY, f"version {shown} cannot be read here; this server reads version 1")])

    problems: Problems = []
    file: AgentFile | None = None
    try:
        file = AgentFile.model_validate(raw)
    except ValidationError as exc:
        problems += _details(exc.errors())

    owner = principal.user
    problems += await _reference_problems(session, raw)
    refs = [
        (i, s["name"].strip(), s["version"])
        for i, s in enumerate(_items(raw, "skills"))
        if isinstance(s, dict) and _usable(s.get("name")) and type(s.get("version")) is int
    ]
    skill_ids, skill_problems = await _skill_problems(session, owner_id=owner.id, refs=refs)
    problems += skill_problems

    models = _channel_models()
    entries = raw.get("channels") if isinstance(raw.get("channels"), list) else []
    channels: list[tuple[int, ChannelInBase]] = []
    for index, entry in enumerate(_items(raw, "channels")):
        channel, channel_problems = _check_channel(index, entry, models)
        problems += channel_problems
        if channel is not None:
            channels.append((index, channel))
    problems += await _plan_problems(session, owner=owner, entries=entries, channels=channels)
    if file is not None:
        problems += mcp_service.file_problems(file.mcp_servers, allow_private=allow_private_urls)
    types = [e.get("type") if isinstance(e, dict) else None for e in entries]
    problems += schedule_file.file_problems(
        _items(raw, "schedules"),
        channel_types=[t if isinstance(t, str) else None for t in types],
        now=utcnow(),
    )

    _raise(problems)
    assert file is not None  # no problem means the file validated
    return Checked(
        file=file,
        skill_ids=skill_ids,
        channels=[channel for _, channel in channels],
        needs_secrets={i: list(c.secret_fields) for i, c in channels if c.secret_fields},
    )


async def _plan_problems(
    session: AsyncSession,
    *,
    owner: User,
    entries: list[Any],
    channels: list[tuple[int, ChannelInBase]],
) -> Problems:
    """The plan's limits, as `create_agent` applies them (there as a 403, here in the list)."""
    problems: Problems = []
    limits = limits_for(owner.plan)
    # Serialises quota checks of one owner (PostgreSQL); SQLite writers are serial already.
    await session.execute(select(User.id).where(User.id == owner.id).with_for_update())
    count = select(func.count()).select_from(visible_agents(owner_id=owner.id).subquery())
    if int((await session.execute(count)).scalar_one()) >= limits.agents:
        noun = "agent" if limits.agents == 1 else "agents"
        problems.append(
            (
                "body",
                f"Your {limits.label} plan allows {limits.agents} {noun}; "
                + at_limit_advice(limits, "delete one"),
            )
        )
    if len(entries) > limits.channels_per_agent:
        problems.append(
            (
                "channels",
                f"Your {limits.label} plan allows {limits.channels_per_agent} channels per "
                f"agent; {at_limit_advice(limits, 'remove one')}",
            )
        )
    for index, channel in channels:
        refused = channel.plan_problem(limits)
        if refused is not None:
            problem, remedy = refused
            problems.append((f"channels.{index}", f"{problem}; {at_limit_advice(limits, remedy)}"))
    return problems


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _raise(problems: Problems) -> None:
    if not problems:
        return
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    error = ValidationFailedError(
        f"The agent file has {count}: "
        + "; ".join(f"{path}: {message}" for path, message in problems),
        field=problems[0][0],
    )
    error.extra["details"] = [{"field": path, "message": message} for path, message in problems]
    raise error


# Importing ----------------------------------------------------------------------------------


def _needs_setup_reason(missing: list[str]) -> str:
    return (
        f"it was imported from an agent file without its secrets ({', '.join(missing)}); "
        "add them to use it"
    )


async def import_agent(
    session: AsyncSession,
    *,
    principal: Principal,
    raw: Any,
    keyring: KeyRing,
    fmt: Format,
    allow_private_urls: bool = False,
) -> Imported:
    """Create a `draft` agent from an agent file, or raise one 422 naming every problem.

    Nothing is written unless the whole file passes. Channels whose type needs secrets the
    owner supplies are created disabled and without them (`needs_setup`); generated secrets
    (a webhook's signing secret) are made anew and returned to be shown once. Audited as
    `agent.imported`.
    """
    checked = await check_file(
        session, principal=principal, raw=raw, allow_private_urls=allow_private_urls
    )
    data = checked.file
    ready = [c for i, c in enumerate(checked.channels) if i not in checked.needs_secrets]
    changes = apply_channels(ready, existing=[], keyring=keyring)
    if changes.problems:  # a type whose generated secrets fail: no file can fix it
        _raise(changes.problems)
    now = utcnow()
    made = iter(changes.rows)
    rows: list[AgentChannel] = []
    setup: list[tuple[int, AgentChannel]] = []
    for index, channel in enumerate(checked.channels):
        missing = checked.needs_secrets.get(index)
        if missing is None:
            rows.append(next(made))
            continue
        row = AgentChannel(
            id=new_id(),
            type=channel.type,
            config=channel.public_config(),
            secrets=None,
            disabled_at=now,
            disabled_reason=_needs_setup_reason(missing),
        )
        rows.append(row)
        setup.append((index, row))
    for position, row in enumerate(rows):
        row.position = position

    agent = Agent(
        owner_id=principal.user.id,
        name=data.name,
        description=data.description,
        model=data.model,
        fallback_models=[m for m in dict.fromkeys(data.fallback_models) if m != data.model],
        instructions=data.instructions,
        status=schemas.AgentStatus.DRAFT.value,
        status_changed_at=now,
        skills=checked.skill_ids,
        tools=list(dict.fromkeys(data.tools)),
        created_at=now,
        updated_at=now,
        channels=rows,
    )
    session.add(agent)
    await session.flush()
    source = f" (version {data.agent_version} of its source)" if data.agent_version else ""
    await versions.record(
        session, agent=agent, principal=principal, summary=f"Imported from an agent file{source}"
    )
    if data.caps is not None:
        await caps_service.store_agent_caps(
            session, owner_id=agent.owner_id, agent_id=agent.id, data=data.caps
        )
    mcp_service.add_from_file(
        session,
        owner_id=agent.owner_id,
        agent_id=agent.id,
        entries=data.mcp_servers,
        allow_private=allow_private_urls,
    )
    schedule_file.add_from_file(
        session,
        owner_id=agent.owner_id,
        agent_id=agent.id,
        entries=data.schedules,
        channel_ids=[row.id for row in rows],
        now=now,
    )
    needs_setup = [
        ChannelSetup(
            path=f"channels.{index}",
            channel_id=row.id,
            type=row.type,
            missing_secrets=checked.needs_secrets[index],
        )
        for index, row in setup
    ]
    audit.record(
        session,
        action="agent.imported",
        actor_user_id=principal.user.id,
        actor_key_id=principal.key_id,
        client=principal.client,
        target_type="agent",
        target_id=agent.id,
        details={
            "name": agent.name,
            "model": agent.model,
            "format": fmt,
            "channels": [row.type for row in rows],
            "tools": agent.tools,
            "skills": [s.name for s in data.skills],
            "needs_setup": [item.channel_id for item in needs_setup],
        },
    )
    return Imported(agent=agent, revealed=changes.revealed, needs_setup=needs_setup)
