"""Deploy's sandbox step: the agent's workspace, with its skills' files in `skills/<name>/`.

Deploy fails when the agent has code tools and no sandbox backend works on this server. The
workspace is a local directory made before the deploy transaction commits: making it again is
harmless, so a rolled-back deploy leaves at most an empty workspace behind.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.models import Agent
from lunogen.agent.workspace import edge_for, sandbox_limits, uses_sandbox
from lunogen.config import Settings
from lunogen.runlog.logs import log_event
from lunogen.sandbox.base import SandboxUnavailableError
from lunogen.sandbox.workspace import WorkspaceError
from lunogen.skill.service import usable_skills
from lunogen.tool.skill_loader import skill_dir


async def provision(session: AsyncSession, *, agent: Agent, settings: Settings) -> str | None:
    """Make the agent's workspace ready; the reason deploy must fail, or None."""
    if not agent.skills and not uses_sandbox(agent.tools):
        return None  # nothing of this agent runs in a sandbox (the first run would make one)
    edge, problem = edge_for(settings)
    if edge is None:
        if uses_sandbox(agent.tools):
            return f"its code tools need a sandbox, and none works on this server: {problem}"
        return None
    limits = await sandbox_limits(session, owner_id=agent.owner_id)
    skills = await usable_skills(
        session, owner_id=agent.owner_id, skill_ids=agent.skills, with_files=True
    )
    try:
        await edge.provision(agent.id, limits=limits)
        for skill in skills:
            if skill.files:
                await edge.copy_in(agent.id, skill_dir(skill.name), skill.files, limits=limits)
    except (WorkspaceError, SandboxUnavailableError, OSError) as exc:
        return f"the sandbox workspace could not be prepared: {exc}"
    copied = sum(1 for skill in skills if skill.files)
    log_event(
        session,
        agent_id=agent.id,
        event="sandbox.provisioned",
        message=f"Workspace ready ({edge.backend_name}; files of {copied} skill(s) copied)",
        details={"backend": edge.backend_name, "isolated": edge.isolated, "skills": copied},
    )
    return None
