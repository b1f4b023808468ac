"""The `load_skill` tool: progressive disclosure of an agent's skills.

The system prompt names each usable skill with its description only; the model calls
`load_skill` for the full instructions when a skill fits the task. The skill's files are
copied into the workspace under `skills/<name>/` at that moment (and at deploy), so its scripts
run only inside the sandbox, always from the version the body describes.
"""

from __future__ import annotations

from typing import Any

from lunogen.sandbox.workspace import WorkspaceError
from lunogen.skill.service import SkillPackage, usable_skills
from lunogen.tool.registry import ToolContext, ToolSpec, registry

SKILLS_DIR = "skills"


def skill_dir(name: str) -> str:
    return f"{SKILLS_DIR}/{name}"


async def _files_note(context: ToolContext, skill: SkillPackage) -> str:
    if not skill.files:
        return ""
    listing = "\n".join(f"- {skill_dir(skill.name)}/{path}" for path in sorted(skill.files))
    if context.edge is None or context.sandbox_limits is None:
        problem = context.sandbox_problem or "no sandbox is configured on this server"
        return f"\n\n(This skill's files cannot be used here: {problem}.)\n{listing}"
    try:
        await context.edge.copy_in(
            context.agent_id, skill_dir(skill.name), skill.files, limits=context.sandbox_limits
        )
    except WorkspaceError as exc:
        return f"\n\n(This skill's files could not be copied into your workspace: {exc}.)"
    return (
        f"\n\nThis skill's files are in your workspace (run scripts with run_code, "
        f"from the workspace root):\n{listing}"
    )


async def load_skill(context: ToolContext, args: dict[str, Any]) -> str:
    name = args.get("name")
    if not isinstance(name, str) or not name:
        return "Error: the argument `name` (one of your skills) is required."
    skill_id = context.skills.get(name)
    if skill_id is None:
        known = ", ".join(sorted(context.skills)) or "none"
        return f"Error: you have no skill named {name!r}. Your skills: {known}."
    if context.sessionmaker is None:
        return "Error: skills are not available in this conversation."
    async with context.sessionmaker() as session:
        found = await usable_skills(
            session, owner_id=context.owner_id, skill_ids=[skill_id], with_files=True
        )
    if not found:
        return f"Error: the skill {name!r} can no longer be used (it was changed or blocked)."
    skill = found[0]
    return f"# Skill: {skill.name} (version {skill.version})\n\n{skill.body}" + await _files_note(
        context, skill
    )


LOAD_SKILL = registry.register(
    ToolSpec(
        name="load_skill",
        description=(
            "Load the full instructions of one of your skills (listed in your instructions "
            "under 'Skills'). Call it before doing a task the skill covers."
        ),
        parameters={
            "type": "object",
            "properties": {"name": {"type": "string", "description": "The skill's name"}},
            "required": ["name"],
            "additionalProperties": False,
        },
        run=load_skill,
        tags=("skills",),
    )
)
