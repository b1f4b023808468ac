"""The one table of what each plan allows. Later issues add their limits here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lunogen.sandbox.base import SandboxLimits

PlanName = Literal["free", "pro"]
PLANS: tuple[PlanName, ...] = ("free", "pro")


@dataclass(frozen=True)
class PlanLimits:
    label: str
    api_keys: int
    requests_per_minute: int
    agents: int
    channels_per_agent: int
    sandbox: SandboxLimits  # each run of an agent's code tools (LunoEdge)
    hide_powered_by: bool = False  # a web chat may hide its "Powered by LunoGen" link


PLAN_LIMITS: dict[str, PlanLimits] = {
    "free": PlanLimits(
        label="Free",
        api_keys=1,
        requests_per_minute=30,
        agents=3,
        channels_per_agent=4,
        sandbox=SandboxLimits(
            cpu_seconds=10,
            memory_mb=256,
            processes=64,
            open_files=256,
            file_size_mb=50,
            workspace_mb=100,
            wall_seconds=30,
            max_files=10_000,
        ),
    ),
    "pro": PlanLimits(
        label="Pro",
        api_keys=25,
        requests_per_minute=2000,
        agents=100,
        channels_per_agent=20,
        hide_powered_by=True,
        sandbox=SandboxLimits(
            cpu_seconds=60,
            memory_mb=1024,
            processes=256,
            open_files=1024,
            file_size_mb=500,
            workspace_mb=2048,
            wall_seconds=120,
            max_files=100_000,
        ),
    ),
}


def limits_for(plan: str) -> PlanLimits:
    return PLAN_LIMITS.get(plan, PLAN_LIMITS["free"])


def at_limit_advice(limits: PlanLimits, remedy: str) -> str:
    """What to tell someone at a limit of `limits`: `remedy` (e.g. "revoke one"), then how to get
    more: the next plan up, or, on the highest plan, us."""
    names = [name for name in PLANS if PLAN_LIMITS[name] == limits]
    higher = PLANS[PLANS.index(names[0]) + 1 :] if names else ()
    if higher:
        return f"{remedy} or upgrade to {PLAN_LIMITS[higher[0]].label}"
    return f"{remedy}, or contact us to raise the limit"
