"""Schedules travel in the agent file: exported with the agent (a proactive one naming its
channel by position and type), recreated by an import, bad entries named and nothing made."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from lunogen.kit.time import utcnow
from lunogen.schedule.models import Schedule
from tests.channel.support import new_hook
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.schedule.support import create

LATER = (utcnow() + timedelta(days=30)).replace(microsecond=0)


async def _import(dev: Any, document: dict[str, Any]) -> Any:
    return await dev.http.post(
        "/api/v1/agents/import",
        content=json.dumps(document),
        headers={"Content-Type": "application/json"},
    )


async def test_schedules_round_trip_through_the_agent_file(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    hook = await new_hook(api, mode="sync")
    dev, agent_id = hook.dev, hook.agent["id"]
    openrouter.reply("Hi Ada.")
    assert (await hook.post({"id": "m-1", "from": "ada", "text": "Hello"})).status_code == 200
    exported = (await dev.http.get(f"/api/v1/agents/{agent_id}/export")).json()
    assert "schedules" not in exported  # none: nothing in the file

    await create(
        dev,
        agent_id,
        name="Digest",
        kind="cron",
        cron="0 9 * * 1-5",
        timezone="Europe/Berlin",
        prompt="Summarise.",
        run_cap_credits="0.5",
        day_cap_credits="2",
    )
    await create(
        dev,
        agent_id,
        name="Poll",
        kind="interval",
        interval_seconds=3600,
        run_at=LATER.isoformat(),
        enabled=False,
    )
    await create(
        dev,
        agent_id,
        name="Nudge Ada",
        kind="once",
        run_at=LATER.isoformat(),
        prompt="Remind Ada.",
        channel_id=hook.id,
        contact="ada",
    )
    done = await create(dev, agent_id, name="Past", kind="once", run_at=LATER.isoformat())
    async with api.app.state.sessionmaker() as session:  # a one-off whose time has passed
        await session.execute(
            update(Schedule)
            .where(Schedule.id == done["id"])
            .values(run_at=utcnow() - timedelta(hours=1), next_run_at=None)
        )
        await session.commit()

    exported = (await dev.http.get(f"/api/v1/agents/{agent_id}/export")).json()
    at = LATER.isoformat().replace("+00:00", "Z")
    assert exported["schedules"] == [
        {
            "name": "Digest",
            "kind": "cron",
            "cron": "0 9 * * 1-5",
            "timezone": "Europe/Berlin",
            "prompt": "Summarise.",
            "enabled": True,
            "run_cap_credits": "0.5",
            "day_cap_credits": "2",
        },
        {
            "name": "Poll",
            "kind": "interval",
            "timezone": "UTC",
            "run_at": at,
            "interval_seconds": 3600,
            "prompt": "Summarise the news.",
            "enabled": False,
            "run_cap_credits": None,
            "day_cap_credits": None,
        },
        {
            "name": "Nudge Ada",
            "kind": "once",
            "timezone": "UTC",
            "run_at": at,
            "prompt": "Remind Ada.",
            "enabled": True,
            "run_cap_credits": None,
            "day_cap_credits": None,
            "channel": {"position": 0, "type": "webhook"},
            "contact": "ada",
        },
    ]

    response = await _import(dev, exported)
    assert response.status_code == 201, response.text
    copy = response.json()["agent"]
    [channel] = copy["channels"]
    listed = (await dev.http.get(f"/api/v1/agents/{copy['id']}/schedules")).json()
    assert [s["name"] for s in listed] == ["Digest", "Poll", "Nudge Ada"]
    digest, poll, nudge = listed
    assert digest["next_run_at"] is not None and digest["day_cap_credits"] == "2"
    assert poll["enabled"] is False and poll["next_run_at"] is None
    assert (nudge["channel_id"], nudge["contact"]) == (channel["id"], "ada")
    again = (await dev.http.get(f"/api/v1/agents/{copy['id']}/export")).json()
    assert again["schedules"] == exported["schedules"]


async def test_bad_schedules_in_a_file_are_named_and_nothing_is_created(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    hook = await new_hook(api, mode="sync")
    dev = hook.dev
    exported = (await dev.http.get(f"/api/v1/agents/{hook.agent['id']}/export")).json()
    past = (utcnow() - timedelta(hours=1)).isoformat()
    base = {"name": "S", "prompt": "P"}
    exported["schedules"] = [
        {**base, "kind": "cron", "cron": "0 9 * *"},
        {**base, "kind": "cron", "cron": "0 9 * * *", "timezone": "Mars/Olympus"},
        {**base, "kind": "once", "run_at": past},
        {**base, "kind": "cron", "cron": "0 9 * * *", "interval_seconds": 60},
        {**base, "kind": "interval", "interval_seconds": 3600, "contact": "ada"},
        {
            **base,
            "kind": "interval",
            "interval_seconds": 3600,
            "channel": {"position": 3, "type": "webhook"},
            "contact": "ada",
        },
        {
            **base,
            "kind": "interval",
            "interval_seconds": 3600,
            "channel": {"position": 0, "type": "telegram"},
            "contact": "ada",
        },
        {**base, "kind": "cron", "cron": "0 9 * * *", "run_cap_credits": "-1"},
    ]
    response = await _import(dev, exported)
    assert response.status_code == 422, response.text
    fields = [item["field"] for item in response.json()["details"]]
    assert fields == [
        "schedules.7.run_cap_credits",
        "schedules.0.cron",
        "schedules.1.timezone",
        "schedules.2.run_at",
        "schedules.3.interval_seconds",
        "schedules.4.channel",
        "schedules.5.channel.position",
        "schedules.6.channel.type",
    ]
    listed = (await dev.http.get("/api/v1/agents")).json()
    assert listed["total"] == 1
