"""What a person at a plan limit is told: upgrade on Free, never "upgrade to Pro" on Pro.

Keys per plan are in tests/auth/test_keys.py; agents and channels per plan are here.
"""

from __future__ import annotations

from typing import Any

import pytest

from lunogen.account.plans import PLAN_LIMITS, PLANS, at_limit_advice
from tests.agent.support import agent_body, new_dev, webchat
from tests.helpers import Api


@pytest.mark.parametrize(
    ("plan", "advice"),
    [
        ("free", "delete one or upgrade to Pro"),
        ("pro", "delete one, or contact us to raise the limit"),
    ],
)
def test_advice_names_the_next_plan_or_us(plan: str, advice: str) -> None:
    assert at_limit_advice(PLAN_LIMITS[plan], "delete one") == advice


def test_every_plan_but_the_highest_has_somewhere_to_go() -> None:
    *lower, highest = PLANS
    for plan in lower:
        assert "upgrade to" in at_limit_advice(PLAN_LIMITS[plan], "x")
    assert "upgrade" not in at_limit_advice(PLAN_LIMITS[highest], "x")


def _forbidden(message: str) -> dict[str, Any]:
    return {"error": "Forbidden", "message": message}


async def test_free_agent_limit_says_upgrade_to_pro(api: Api) -> None:
    dev = await new_dev(api, plan="free")
    for n in range(PLAN_LIMITS["free"].agents):
        assert (await dev.http.post("/api/v1/agents", json=agent_body(name=f"A{n}"))).is_success
    over = await dev.http.post("/api/v1/agents", json=agent_body(name="Over"))
    assert over.status_code == 403
    assert over.json() == _forbidden("Your Free plan allows 3 agents; delete one or upgrade to Pro")


async def test_pro_agent_limit_does_not_say_upgrade(api: Api) -> None:
    dev = await new_dev(api, plan="pro")
    for n in range(PLAN_LIMITS["pro"].agents):
        created = await dev.http.post("/api/v1/agents", json=agent_body(name=f"A{n}"))
        assert created.status_code == 201, (n, created.text)
    over = await dev.http.post("/api/v1/agents", json=agent_body(name="Over"))
    assert over.status_code == 403
    assert over.json() == _forbidden(
        "Your Pro plan allows 100 agents; delete one, or contact us to raise the limit"
    )


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("free", "Your Free plan allows 4 channels per agent; remove one or upgrade to Pro"),
        (
            "pro",
            "Your Pro plan allows 20 channels per agent; remove one, or contact us to raise the "
            "limit",
        ),
    ],
)
async def test_channel_limit_advice_per_plan(api: Api, plan: str, message: str) -> None:
    dev = await new_dev(api, plan=plan)
    channels = [webchat() for _ in range(PLAN_LIMITS[plan].channels_per_agent + 1)]
    over = await dev.http.post("/api/v1/agents", json=agent_body(channels=channels))
    assert over.status_code == 403
    assert over.json() == _forbidden(message)
