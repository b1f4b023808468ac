"""An agent's LunoEdge workspace: the sandbox its tools use, its limits, and its removal.

Deleting an agent destroys its workspace in a job, after the deletion commits.
"""

from __future__ import annotations

import asyncio
import threading
from functools import lru_cache

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.account.models import User
from lunogen.account.plans import limits_for
from lunogen.config import Settings
from lunogen.sandbox.base import SandboxLimits, SandboxUnavailableError
from lunogen.sandbox.edge import LunoEdge
from lunogen.sandbox.workspace import Workspace, validate_agent_id
from lunogen.tool.registry import registry
from lunogen.worker.broker import job, runtime

log = structlog.get_logger(__name__)
# One probe per settings at a time: a server probes in the background once it answers, and a
# deploy or turn that needs the sandbox meanwhile waits for that verdict instead of probing again.
_probing = threading.Lock()


@lru_cache(maxsize=64)
def _edge(settings: Settings) -> LunoEdge | str:
    try:
        return LunoEdge.from_settings(settings)
    except SandboxUnavailableError as exc:
        return str(exc)


def edge_for(settings: Settings) -> tuple[LunoEdge | None, str | None]:
    """This process's sandbox for `settings`, or why there is none (checked once per process)."""
    with _probing:
        edge = _edge(settings)
    return (None, edge) if isinstance(edge, str) else (edge, None)


def uses_sandbox(tools: list[str]) -> bool:
    return any("sandbox" in spec.tags for name in tools if (spec := registry.get(name)))


async def sandbox_limits(session: AsyncSession, *, owner_id: str) -> SandboxLimits:
    plan = (await session.execute(select(User.plan).where(User.id == owner_id))).scalar_one()
    return limits_for(plan).sandbox


@job("sandbox.destroy_workspace")
async def destroy_workspace(agent_id: str) -> None:
    """Remove a deleted agent's workspace and everything in it (no backend needed)."""
    root = runtime().settings.workspaces_dir / validate_agent_id(agent_id)
    await asyncio.to_thread(Workspace(root).destroy)
    log.info("workspace_destroyed", agent_id=agent_id)
