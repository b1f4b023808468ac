from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    FULL = "full"
    AGENTS_READ = "agents:read"
    AGENTS_WRITE = "agents:write"
    AGENTS_EXECUTE = "agents:execute"
    TOOLS_READ = "tools:read"
    TOOLS_WRITE = "tools:write"
    SKILLS_READ = "skills:read"
    SKILLS_WRITE = "skills:write"
    LOGS_READ = "logs:read"


def grants(held: list[str] | frozenset[str], needed: Scope) -> bool:
    """`full` grants everything; any other scope grants only itself."""
    return Scope.FULL in held or needed in held
