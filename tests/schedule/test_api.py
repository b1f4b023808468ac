"""The schedules API: create, read, change, delete, history; bad input, tenants, scopes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

from lunogen.kit.time import utcnow
from tests.agent.support import create_agent, new_dev
from tests.helpers import Api
from tests.schedule.support import create

BERLIN = ZoneInfo("Europe/Berlin")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_cron_schedule_round_trip(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    created = await create(
        dev,
        agent["id"],
        kind="cron",
        cron="0 9 * * 1-5",
        timezone="Europe/Berlin",
        run_cap_credits="0.5",
        day_cap_credits="2",
    )
    assert created["kind"] == "cron" and created["enabled"] is True
    assert created["run_cap_credits"] == "0.5" and created["day_cap_credits"] == "2"
    assert created["thread_id"] is not None  # the conversation its runs will be written to
    runs = [_parse(t) for t in created["next_runs"]]
    assert len(runs) == 3 and runs == sorted(runs)
    assert runs[0] == _parse(created["next_run_at"]) and runs[0] > utcnow()
    for when in runs:
        local = when.astimezone(BERLIN)
        assert (local.hour, local.minute) == (9, 0) and local.isoweekday() <= 5

    base = f"/api/v1/agents/{agent['id']}/schedules"
    listed = (await dev.http.get(base)).json()
    assert [s["id"] for s in listed] == [created["id"]]
    got = await dev.http.get(f"{base}/{created['id']}")
    assert got.status_code == 200 and got.json()["prompt"] == "Summarise the news."

    changed = await dev.http.patch(
        f"{base}/{created['id']}", json={"cron": "30 7 * * *", "name": "Early", "enabled": True}
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["name"] == "Early" and body["cron"] == "30 7 * * *"
    first = _parse(body["next_run_at"]).astimezone(BERLIN)
    assert (first.hour, first.minute) == (7, 30)

    paused = await dev.http.patch(f"{base}/{created['id']}", json={"enabled": False})
    assert paused.json()["next_run_at"] is None and paused.json()["next_runs"] == []
    resumed = await dev.http.patch(f"{base}/{created['id']}", json={"enabled": True})
    assert resumed.json()["next_run_at"] is not None

    history = await dev.http.get(f"{base}/{created['id']}/runs")
    assert history.status_code == 200 and history.json()["data"] == []

    deleted = await dev.http.delete(f"{base}/{created['id']}")
    assert deleted.status_code == 204
    assert (await dev.http.get(f"{base}/{created['id']}")).status_code == 404
    assert (await dev.http.get(base)).json() == []


async def test_once_and_interval(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    when = utcnow() + timedelta(hours=2)
    once = await create(dev, agent["id"], kind="once", run_at=_iso(when))
    assert _parse(once["next_run_at"]) == when.replace(microsecond=when.microsecond)
    assert len(once["next_runs"]) == 1

    before = utcnow()
    every = await create(dev, agent["id"], kind="interval", interval_seconds=900)
    first = _parse(every["next_run_at"])
    assert before + timedelta(seconds=900) <= first <= utcnow() + timedelta(seconds=900)
    times = [_parse(t) for t in every["next_runs"]]
    gaps = [later - earlier for earlier, later in pairwise(times)]
    assert gaps == [timedelta(seconds=900)] * 2


async def test_bad_input_is_a_4xx_naming_the_field(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    base = f"/api/v1/agents/{agent['id']}/schedules"
    past = _iso(utcnow() - timedelta(minutes=1))
    cases = [
        ({"kind": "cron", "cron": "every day"}, "cron"),
        ({"kind": "cron", "cron": "0 25 * * *"}, "cron"),
        ({"kind": "cron", "cron": "0 9 * * *", "timezone": "Europe/Atlantis"}, "timezone"),
        ({"kind": "once", "run_at": past}, "run_at"),
        ({"kind": "once"}, "run_at"),
        ({"kind": "interval", "interval_seconds": 30}, "interval_seconds"),
        ({"kind": "hourly"}, "kind"),
        ({"kind": "cron", "cron": "0 9 * * *", "run_cap_credits": "-1"}, "run_cap_credits"),
        ({"kind": "cron", "cron": "0 9 * * *", "day_cap_credits": "0.0000001"}, "day_cap_credits"),
        ({"kind": "cron", "cron": "0 9 * * *", "prompt": ""}, "prompt"),
        ({"kind": "cron", "cron": "0 9 * * *", "surprise": 1}, "surprise"),
    ]
    for body, field in cases:
        values = {"name": "x", "prompt": "Do it.", **body}
        response = await dev.http.post(base, json=values)
        assert response.status_code == 422, (body, response.text)
        fields = [d["field"] for d in response.json()["details"]]
        assert any(field in f for f in fields), (body, response.json())

    created = await create(dev, agent["id"], kind="cron", cron="0 9 * * *")
    bad = await dev.http.patch(f"{base}/{created['id']}", json={"timezone": "Nowhere/Land"})
    assert bad.status_code == 422 and bad.json()["details"][0]["field"] == "timezone"
    foreign = await dev.http.patch(f"{base}/{created['id']}", json={"interval_seconds": 120})
    assert foreign.status_code == 422
    assert foreign.json()["details"][0]["field"] == "interval_seconds"
    unchanged = (await dev.http.get(f"{base}/{created['id']}")).json()
    assert unchanged["timezone"] == "UTC" and unchanged["interval_seconds"] is None
    malformed = await dev.http.post(
        base, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert malformed.status_code in (400, 422)


async def test_another_owners_agent_and_schedule_are_404(api: Api) -> None:
    owner = await new_dev(api)
    agent = await create_agent(owner)
    mine = await create(owner, agent["id"], kind="cron", cron="0 9 * * *")
    stranger = await new_dev(api)
    theirs = await create_agent(stranger)
    base = f"/api/v1/agents/{agent['id']}/schedules"
    for method, path in [
        ("GET", base),
        ("POST", base),
        ("GET", f"{base}/{mine['id']}"),
        ("PATCH", f"{base}/{mine['id']}"),
        ("DELETE", f"{base}/{mine['id']}"),
        ("GET", f"{base}/{mine['id']}/runs"),
    ]:
        body = {"name": "x", "kind": "cron", "cron": "0 9 * * *", "prompt": "p"}
        sent = body if method == "POST" else {"name": "x"} if method == "PATCH" else None
        response = await stranger.http.request(method, path, json=sent)
        assert response.status_code == 404, (method, path, response.text)
    # Their own agent's path with my schedule id: still not found.
    crossed = await stranger.http.get(f"/api/v1/agents/{theirs['id']}/schedules/{mine['id']}")
    assert crossed.status_code == 404 and crossed.json()["error"] == "Schedule not found"
    assert (await owner.http.get(f"{base}/{mine['id']}")).status_code == 200


async def test_scopes(api: Api) -> None:
    owner = await new_dev(api)
    agent = await create_agent(owner)
    created = await create(owner, agent["id"], kind="cron", cron="0 9 * * *")
    reader = api.key_client(await api.create_key(owner.person, ["agents:read"]))
    base = f"/api/v1/agents/{agent['id']}/schedules"
    assert (await reader.get(base)).status_code == 200
    assert (await reader.get(f"{base}/{created['id']}/runs")).status_code == 200
    body = {"name": "x", "kind": "cron", "cron": "0 9 * * *", "prompt": "p"}
    assert (await reader.post(base, json=body)).status_code == 403
    assert (await reader.patch(f"{base}/{created['id']}", json={"name": "y"})).status_code == 403
    assert (await reader.delete(f"{base}/{created['id']}")).status_code == 403
    other = api.key_client(await api.create_key(owner.person, ["skills:read"]))
    assert (await other.get(base)).status_code == 403
    anonymous = api.new_client()
    assert (await anonymous.get(base)).status_code == 401
