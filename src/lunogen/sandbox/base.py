"""The contract every LunoEdge backend keeps: run one command in one agent's workspace.

A backend only runs processes. Workspaces on the host (where they live, their quota, safe file
access from the platform side) belong to `sandbox.workspace`; the facade the platform calls is
`sandbox.edge.LunoEdge`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

# Inside every backend the workspace is mounted here, and is the working directory.
WORKSPACE_MOUNT = "/workspace"

# Which limit stopped a run. `output` means output past the cap was dropped (the run went on).
LimitHit = Literal[
    "wall_time", "cpu_time", "memory", "processes", "file_size", "disk_quota", "output"
]


@dataclass(frozen=True)
class SandboxLimits:
    """What one run may use. Built from the owner's plan (`account.plans`)."""

    cpu_seconds: int
    memory_mb: int
    processes: int
    open_files: int
    file_size_mb: int
    workspace_mb: int
    wall_seconds: float
    output_bytes: int = 64_000
    # Entries (files, directories, links: inodes) the workspace may hold, whatever their size.
    max_files: int = 10_000


@dataclass(frozen=True)
class RunResult:
    exit_code: int | None  # None when the run was killed (at a limit, or by a signal)
    stdout: bytes
    stderr: bytes
    duration_ms: float
    limit_hit: LimitHit | None = None
    truncated: bool = False  # stdout or stderr went past `output_bytes`
    signal: int | None = None  # the signal that ended the process, if any


class SandboxUnavailableError(RuntimeError):
    """The backend cannot run on this machine (binary missing, kernel feature off, ...)."""


class Backend(ABC):
    name: ClassVar[str]
    isolated: ClassVar[bool]  # False only for `process`

    @classmethod
    @abstractmethod
    def unavailable_reason(cls) -> str | None:
        """None when the backend can run here; otherwise why not, in words for an operator."""

    def workspace_owner(self, workspace: Path) -> tuple[int, int] | None:
        """(uid, gid) that must own the files of `workspace`, or None for the platform's own.

        Backends that run code as a per-agent host user say which, so that files the platform
        writes into the workspace stay usable from inside the sandbox.
        """
        return None

    @abstractmethod
    async def run(
        self,
        workspace: Path,
        argv: Sequence[str],
        *,
        limits: SandboxLimits,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        run_id: str,
    ) -> RunResult:
        """Run `argv` with `workspace` (a host directory) mounted at WORKSPACE_MOUNT.

        `env` has already been filtered by the allowlist; the backend adds nothing from the
        host's environment. Never raises for what the command does: a crash, a limit or a
        timeout is a RunResult. Raises SandboxUnavailableError when the backend itself fails.
        `run_id` names per-run resources (cgroups, containers) so parallel runs never collide.
        """
