"""The tool registry: every tool an agent may enable, with its JSON schema.

A tool is a name, a description for the model, a JSON schema for its arguments and an async
`run`. Later issues register more (memory, web_fetch, sandboxed code tools, `load_skill`); agent
config validation only ever asks this registry which names exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.kit.crypto import KeyRing
from lunogen.kit.http import SafeHttp

if TYPE_CHECKING:
    from lunogen.sandbox.base import SandboxLimits
    from lunogen.sandbox.edge import LunoEdge

DEFAULT_TIMEOUT_SECONDS = 30.0

StagedWrite = Callable[[AsyncSession], Awaitable[None]]


class StagedWrites:
    """What a turn's tools change in the database, applied with the turn's reply.

    The model/tool loop runs outside any transaction (on SQLite a transaction blocks every
    writer), so tools stage their writes here; the turn applies them in the transaction that
    stores the reply. A failed or abandoned turn drops them: nothing half-written survives.
    `state` lets a tool keep its staged changes per turn (to read its own writes back).
    """

    def __init__(self) -> None:
        self._writes: list[StagedWrite] = []
        self.state: dict[str, Any] = {}

    def add(self, write: StagedWrite) -> None:
        self._writes.append(write)

    async def apply(self, session: AsyncSession) -> None:
        for write in self._writes:
            await write(session)


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the turn it runs in, and the services it may use.

    Network tools send HTTP only through `safe_http()`: `http` when the runtime passes one (shared,
    or a test's), else a guard built from `allow_private_urls` (`settings.allow_private_urls`).
    """

    agent_id: str
    owner_id: str
    contact: str | None = None
    allow_private_urls: bool = False
    http: SafeHttp | None = None
    # Reads: short transactions of their own. Writes: staged, applied with the turn's reply.
    sessionmaker: async_sessionmaker[AsyncSession] | None = None
    writes: StagedWrites | None = None
    keyring: KeyRing | None = None
    # Code and file tools: the agent's sandbox, or why there is none on this server.
    edge: LunoEdge | None = None
    sandbox_limits: SandboxLimits | None = None
    sandbox_problem: str | None = None
    # The agent's usable skills (clean or approved), by name → id.
    skills: dict[str, str] = field(default_factory=dict)

    def safe_http(self) -> SafeHttp:
        return self.http or SafeHttp(allow_private=self.allow_private_urls)


ToolRun = Callable[[ToolContext, dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    run: ToolRun
    tags: tuple[str, ...] = field(default_factory=tuple)
    # The turn stops waiting for the tool after this long (sandboxed tools add their wall time).
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    # Whether a call waits for the owner's approval unless the agent says otherwise.
    requires_approval: bool = False

    def openai_schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


class ToolRegistry:
    def __init__(self) -> None:
        self._tools: dict[str, ToolSpec] = {}

    def register(self, spec: ToolSpec) -> ToolSpec:
        if spec.name in self._tools:
            raise ValueError(f"tool {spec.name!r} is already registered")
        self._tools[spec.name] = spec
        return spec

    def get(self, name: str) -> ToolSpec | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def all(self) -> list[ToolSpec]:
        return [self._tools[n] for n in self.names()]

    def unknown(self, names: list[str]) -> list[str]:
        return [n for n in names if n not in self._tools]


async def _current_time(context: ToolContext, args: dict[str, Any]) -> str:
    zone_name = str(args.get("timezone") or "UTC")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"Unknown time zone {zone_name!r}; use an IANA name such as 'Europe/Paris'."
    now = datetime.now(UTC).astimezone(zone)
    return now.strftime(f"%A %d %B %Y, %H:%M:%S ({zone_name}, UTC%z)")


registry = ToolRegistry()
registry.register(
    ToolSpec(
        name="current_time",
        description="The current date and time, optionally in a given IANA time zone.",
        parameters={
            "type": "object",
            "properties": {
                "timezone": {"type": "string", "description": "IANA zone, e.g. 'Europe/Paris'"}
            },
            "additionalProperties": False,
        },
        run=_current_time,
        tags=("builtin",),
    )
)
