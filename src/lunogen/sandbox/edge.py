"""LunoEdge: the one API the platform uses for agent sandboxes (workspaces and runs)."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import structlog

from lunogen.config import Settings
from lunogen.sandbox import diskimage
from lunogen.sandbox.backends import AUTO_ORDER, BACKENDS, backend_class
from lunogen.sandbox.base import Backend, RunResult, SandboxLimits, SandboxUnavailableError
from lunogen.sandbox.workspace import (
    FileEntry,
    QuotaMode,
    Workspace,
    WorkspaceQuotaError,
    WorkspaceUnavailableError,
    validate_agent_id,
)

log = structlog.get_logger(__name__)

# Environment names a caller may pass into a run; anything else is dropped (and logged). Locale,
# time zone, terminal and Python's own switches are harmless; `SKILL_*` carries a skill's own
# settings. PATH, HOME, TMPDIR are always the sandbox's; LD_* and the like never pass.
ENV_ALLOWLIST: frozenset[str] = frozenset(
    {
        "LANG",
        "LANGUAGE",
        "LC_ALL",
        "LC_CTYPE",
        "LC_MESSAGES",
        "TZ",
        "TERM",
        "COLUMNS",
        "LINES",
        "NO_COLOR",
        "PYTHONPATH",
        "PYTHONUNBUFFERED",
        "PYTHONIOENCODING",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
    }
)
ENV_ALLOWED_PREFIXES: tuple[str, ...] = ("SKILL_",)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ENV_VALUE = 32_768


def filter_env(env: Mapping[str, str] | None) -> tuple[dict[str, str], list[str]]:
    """(the allowed variables, the names dropped)."""
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for name, value in (env or {}).items():
        allowed = name in ENV_ALLOWLIST or name.startswith(ENV_ALLOWED_PREFIXES)
        if (
            allowed
            and _ENV_NAME.match(name)
            and isinstance(value, str)
            and "\x00" not in value
            and len(value) <= MAX_ENV_VALUE
        ):
            kept[name] = value
        else:
            dropped.append(str(name))
    return kept, dropped


def backend_unavailable_reason(name: str) -> str | None:
    """Why backend `name` cannot run here (None when it can), including "not in this build"."""
    if name not in BACKENDS:
        return f"unknown sandbox backend {name!r}"
    try:
        cls = backend_class(name)
    except ImportError as exc:
        return f"not installed in this build ({exc})"
    return cls.unavailable_reason()


def choose_backend(choice: str) -> str:
    """The backend name LUNOGEN_SANDBOX=`choice` runs with; SandboxUnavailableError if none."""
    if choice == "auto":
        reasons: dict[str, str] = {}
        for name in AUTO_ORDER:
            reason = backend_unavailable_reason(name)
            if reason is None:
                return name
            reasons[name] = reason
        listed = "; ".join(f"{name}: {reason}" for name, reason in reasons.items())
        raise SandboxUnavailableError(
            f"no isolating sandbox backend works on this machine ({listed}). Install "
            "bubblewrap or runsc, or set LUNOGEN_SANDBOX=process for development only "
            "(agent code then runs without isolation)."
        )
    reason = backend_unavailable_reason(choice)
    if reason is not None:
        raise SandboxUnavailableError(f"LUNOGEN_SANDBOX={choice} cannot run here: {reason}")
    return choice


QuotaChoice = Literal["auto", "kernel", "watcher"]


def choose_quota_mode(choice: QuotaChoice, workspaces_dir: Path) -> QuotaMode:
    """How workspace quotas hold for LUNOGEN_SANDBOX_QUOTA=`choice`: "auto" is the kernel's
    (a loop-mounted image per workspace) where it works, else the watcher's; "kernel" raises
    SandboxUnavailableError where it does not."""
    if choice == "watcher":
        return "watcher"
    reason = diskimage.unavailable_reason_for(workspaces_dir)
    if reason is None:
        return "kernel"
    if choice == "kernel":
        raise SandboxUnavailableError(f"LUNOGEN_SANDBOX_QUOTA=kernel cannot work here: {reason}")
    return "watcher"


class LunoEdge:
    def __init__(
        self, *, workspaces_dir: Path, backend: Backend, quota: QuotaChoice = "auto"
    ) -> None:
        self.workspaces_dir = Path(workspaces_dir)
        self.backend = backend
        self.quota_mode: QuotaMode = choose_quota_mode(quota, self.workspaces_dir)

    @classmethod
    def from_settings(cls, settings: Settings) -> LunoEdge:
        name = choose_backend(settings.sandbox)
        if name == "process":
            log.warning(
                "sandbox.not_isolated",
                backend=name,
                message=(
                    "LUNOGEN_SANDBOX=process: agent code runs as a plain subprocess with NO "
                    "isolation (host files, network and processes are reachable). "
                    "Development only."
                ),
            )
        edge = cls(
            workspaces_dir=settings.workspaces_dir,
            backend=backend_class(name)(),
            quota=settings.sandbox_quota,
        )
        log.info(
            "sandbox.quota_mode",
            backend=name,
            quota=edge.quota_mode,
            reason=(
                diskimage.unavailable_reason_for(edge.workspaces_dir)
                if edge.quota_mode == "watcher"
                else None
            ),
        )
        return edge

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def isolated(self) -> bool:
        return self.backend.isolated

    def _workspace(self, agent_id: str) -> Workspace:
        root = self.workspaces_dir / validate_agent_id(agent_id)
        return Workspace(
            root,
            owner=self.backend.workspace_owner(root),
            kernel_quota=self.quota_mode == "kernel",
        )

    async def provision(self, agent_id: str, *, limits: SandboxLimits) -> None:
        await asyncio.to_thread(self._workspace(agent_id).ensure)

    async def destroy(self, agent_id: str) -> None:
        await asyncio.to_thread(self._workspace(agent_id).destroy)

    async def run(
        self,
        agent_id: str,
        argv: Sequence[str],
        *,
        limits: SandboxLimits,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> RunResult:
        workspace = self._workspace(agent_id)
        kept, dropped = filter_env(env)
        if dropped:
            log.info("sandbox.env_dropped", agent_id=agent_id, names=sorted(dropped))
        run_id = uuid.uuid4().hex
        started = time.perf_counter()
        quota: QuotaMode | None = None
        try:
            quota = await asyncio.to_thread(workspace.prepare, limits)
            held = await asyncio.to_thread(workspace.hold)
            try:
                result = await self.backend.run(
                    workspace.root, list(argv), limits=limits, stdin=stdin, env=kept, run_id=run_id
                )
            finally:
                held.close()
        except (WorkspaceUnavailableError, SandboxUnavailableError) as exc:
            log.error(
                "sandbox.run_failed",
                agent_id=agent_id,
                backend=self.backend_name,
                run_id=run_id,
                error=str(exc),
            )
            if isinstance(exc, SandboxUnavailableError):
                raise
            raise SandboxUnavailableError(str(exc)) from exc
        log.info(
            "sandbox.run",
            agent_id=agent_id,
            backend=self.backend_name,
            run_id=run_id,
            duration_ms=round(result.duration_ms, 1),
            wall_ms=round((time.perf_counter() - started) * 1000, 1),
            exit_code=result.exit_code,
            signal=result.signal,
            limit_hit=result.limit_hit,
            truncated=result.truncated,
            quota=quota,
        )
        return result

    async def read_file(self, agent_id: str, path: str, *, max_bytes: int) -> bytes:
        workspace = self._workspace(agent_id)
        return await asyncio.to_thread(workspace.read, path, max_bytes=max_bytes)

    async def write_file(
        self, agent_id: str, path: str, data: bytes, *, limits: SandboxLimits
    ) -> None:
        workspace = self._workspace(agent_id)
        await asyncio.to_thread(workspace.write, path, data, limits=limits)

    async def list_files(
        self, agent_id: str, path: str = ".", *, recursive: bool = False, limit: int = 500
    ) -> list[FileEntry]:
        workspace = self._workspace(agent_id)
        return await asyncio.to_thread(workspace.list_files, path, recursive=recursive, limit=limit)

    async def copy_in(
        self, agent_id: str, dest: str, files: Mapping[str, bytes], *, limits: SandboxLimits
    ) -> None:
        workspace = self._workspace(agent_id)
        await asyncio.to_thread(workspace.replace_dir, dest, dict(files), limits=limits)

    async def copy_out(
        self, agent_id: str, path: str = ".", *, max_bytes: int, max_files: int = 1000
    ) -> dict[str, bytes]:
        """Every regular file under `path`, by its path relative to the workspace.

        The same confinement as read_file; WorkspaceQuotaError when the files are more than
        `max_files` or `max_bytes` together (nothing is returned half).
        """
        entries = await self.list_files(agent_id, path, recursive=True, limit=max_files + 1)
        files = [entry for entry in entries if not entry.is_dir]
        if len(entries) > max_files:
            raise WorkspaceQuotaError(f"{path} holds more than {max_files} entries")
        if sum(entry.size for entry in files) > max_bytes:
            raise WorkspaceQuotaError(f"the files under {path} are over {max_bytes} bytes")
        copied: dict[str, bytes] = {}
        for entry in files:
            data = await self.read_file(agent_id, entry.path, max_bytes=max_bytes + 1)
            copied[entry.path] = data
            if sum(len(d) for d in copied.values()) > max_bytes:  # grew while we read
                raise WorkspaceQuotaError(f"the files under {path} are over {max_bytes} bytes")
        return copied

    def workspace_usage(self, agent_id: str) -> int:
        return self._workspace(agent_id).usage()
