"""The one table of what each plan allows. Later issues add their limits here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PlanName = Literal["free", "pro"]
PLANS: tuple[PlanName, ...] = ("free", "pro")


@dataclass(frozen=True)
class PlanLimits:
    label: str
    api_keys: int
    requests_per_minute: int
    agents: int
    channels_per_agent: int


PLAN_LIMITS: dict[str, PlanLimits] = {
    "free": PlanLimits(
        label="Free", api_keys=1, requests_per_minute=30, agents=3, channels_per_agent=4
    ),
    "pro": PlanLimits(
        label="Pro", api_keys=25, requests_per_minute=2000, agents=100, channels_per_agent=20
    ),
}


def limits_for(plan: str) -> PlanLimits:
    return PLAN_LIMITS.get(plan, PLAN_LIMITS["free"])
