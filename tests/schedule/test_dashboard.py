"""The schedules pages: list with next runs, create, edit, delete, history with cost; owner
only, CSRF on every form."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from lunogen.kit.time import utcnow
from tests.agent.support import create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api, Signed
from tests.schedule.support import create, fire_at, running_agent


def _form(person: Signed, **fields: Any) -> dict[str, Any]:
    return {"csrf_token": person.csrf, **fields}


async def test_create_edit_and_delete_from_the_pages(api: Api) -> None:
    dev = await new_dev(api)
    person = dev.person
    agent = await create_agent(dev, name="Helper")
    base = f"/agents/{agent['id']}/schedules"
    detail = await person.client.get(f"/agents/{agent['id']}")
    assert f'href="{base}"' in detail.text
    empty = await person.client.get(base)
    assert empty.status_code == 200 and "No schedule yet." in empty.text

    made = await person.client.post(
        base,
        data=_form(
            person,
            name="Weekday digest",
            kind="cron",
            cron="0 9 * * 1-5",
            timezone="Europe/Berlin",
            prompt="Summarise yesterday.",
            run_cap_credits="0.5",
            day_cap_credits="",
            enabled="on",
        ),
    )
    assert made.status_code == 303, made.text
    assert made.headers["location"] == f"{base}?done=created"
    listed = await person.client.get(made.headers["location"])
    assert "Schedule created." in listed.text and "Weekday digest" in listed.text
    assert listed.text.count(" 09:00<") + listed.text.count(" 09:00<br>") >= 1
    [schedule] = (await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules")).json()
    assert schedule["cron"] == "0 9 * * 1-5" and schedule["run_cap_credits"] == "0.5"
    assert schedule["timezone"] == "Europe/Berlin" and schedule["day_cap_credits"] is None

    one = await person.client.get(f"{base}/{schedule['id']}")
    assert one.status_code == 200 and "No run yet." in one.text
    assert 'id="next-runs"' in one.text
    saved = await person.client.post(
        f"{base}/{schedule['id']}",
        data=_form(
            person,
            name="Morning digest",
            cron="30 7 * * *",
            timezone="Europe/Berlin",
            prompt="Summarise yesterday.",
            run_cap_credits="0.5",
            day_cap_credits="2",
            enabled="on",
        ),
    )
    assert saved.status_code == 303, saved.text
    got = (await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules/{schedule['id']}")).json()
    assert got["name"] == "Morning digest" and got["day_cap_credits"] == "2"
    first = utcnow().fromisoformat(got["next_run_at"].replace("Z", "+00:00"))
    assert first.astimezone(ZoneInfo("Europe/Berlin")).strftime("%H:%M") == "07:30"

    paused = await person.client.post(
        f"{base}/{schedule['id']}",
        data=_form(
            person,
            name="Morning digest",
            cron="30 7 * * *",
            timezone="Europe/Berlin",
            prompt="Summarise yesterday.",
        ),
    )
    assert paused.status_code == 303
    got = (await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules/{schedule['id']}")).json()
    assert got["enabled"] is False and got["next_run_at"] is None

    gone = await person.client.post(f"{base}/{schedule['id']}/delete", data=_form(person))
    assert gone.status_code == 303 and gone.headers["location"] == f"{base}?done=deleted"
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules")).json() == []


async def test_bad_input_is_shown_and_nothing_is_saved(api: Api) -> None:
    dev = await new_dev(api)
    person = dev.person
    agent = await create_agent(dev)
    base = f"/agents/{agent['id']}/schedules"
    past = (utcnow() - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M")
    for fields, words in [
        ({"kind": "cron", "cron": "every morning"}, "Cron expression:"),
        ({"kind": "cron", "cron": "0 9 * * *", "timezone": "Moon/Base"}, "Time zone:"),
        ({"kind": "once", "run_at": past}, "in the past"),
        ({"kind": "interval", "interval_minutes": "0"}, "shortest interval"),
        ({"kind": "interval", "interval_minutes": "soon"}, "whole number"),
        ({"kind": "cron", "cron": "0 9 * * *", "run_cap_credits": "-2"}, "Cap per run:"),
    ]:
        refused = await person.client.post(
            base, data=_form(person, name="Bad", prompt="p", enabled="on", **fields)
        )
        assert refused.status_code == 422, (fields, refused.text[:300])
        assert 'role="alert"' in refused.text and words in refused.text, fields
    assert (await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules")).json() == []
    no_csrf = await person.client.post(
        base, data={"name": "x", "kind": "cron", "cron": "0 9 * * *", "prompt": "p"}
    )
    assert no_csrf.status_code == 403 and "CSRF" in no_csrf.text


async def test_history_shows_each_runs_cost_and_strangers_see_nothing(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent = await running_agent(api)
    start = (utcnow() + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    schedule = await create(
        dev, agent["id"], kind="interval", interval_seconds=3600, run_at=start.isoformat()
    )
    openrouter.reply("Report.", prompt_tokens=100, completion_tokens=20, cost=Decimal("0.003"))
    await fire_at(api, start)
    await dev.http.post(f"/api/v1/agents/{agent['id']}/stop")
    await fire_at(api, start + timedelta(hours=1))
    runs = (
        await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules/{schedule['id']}/runs")
    ).json()["data"]
    cost = next(r["cost_credits"] for r in runs if r["status"] == "started")
    assert Decimal(cost) > 0
    path = f"/agents/{agent['id']}/schedules/{schedule['id']}"
    page = await dev.person.client.get(path)
    assert page.status_code == 200
    assert f"<td>{cost}</td>" in page.text
    assert "skipped: the agent is stopped" in page.text
    assert "The runs&#39; conversation" in page.text or "The runs' conversation" in page.text

    stranger = await new_dev(api)
    client = stranger.person.client
    assert (await client.get(path)).status_code == 404
    assert (await client.get(f"/agents/{agent['id']}/schedules")).status_code == 404
    posted = await client.post(f"{path}/delete", data=_form(stranger.person))
    assert posted.status_code == 404
    edited = await client.post(path, data=_form(stranger.person, name="Mine", prompt="p"))
    assert edited.status_code == 404
    assert len((await dev.http.get(f"/api/v1/agents/{agent['id']}/schedules")).json()) == 1
