"""LunoEdge: per-agent sandboxes (backends, workspaces, limits). `LunoEdge` is the entry point."""

from lunogen.sandbox.base import (
    WORKSPACE_MOUNT,
    Backend,
    LimitHit,
    RunResult,
    SandboxLimits,
    SandboxUnavailableError,
)
from lunogen.sandbox.edge import ENV_ALLOWLIST, LunoEdge
from lunogen.sandbox.workspace import (
    FileEntry,
    WorkspaceError,
    WorkspaceNotFoundError,
    WorkspacePathError,
    WorkspaceQuotaError,
)

__all__ = [
    "ENV_ALLOWLIST",
    "WORKSPACE_MOUNT",
    "Backend",
    "FileEntry",
    "LimitHit",
    "LunoEdge",
    "RunResult",
    "SandboxLimits",
    "SandboxUnavailableError",
    "WorkspaceError",
    "WorkspaceNotFoundError",
    "WorkspacePathError",
    "WorkspaceQuotaError",
]
