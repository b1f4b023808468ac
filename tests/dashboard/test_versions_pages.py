"""The Versions pages over HTTP, as a signed-in browser uses them: history, a version's diff,
deploy and roll back by forms with the CSRF field; another tenant's ids → 404."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from tests.agent.support import MODEL, raw_rows
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api, Signed


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


def _form(person: Signed, **fields: Any) -> dict[str, Any]:
    return {"csrf_token": person.csrf, **fields}


async def _agent(person: Signed, instructions: str) -> str:
    body = {"name": "Shop helper", "model": MODEL, "instructions": instructions}
    made = await person.client.post("/agents/new", data=_form(person, **body))
    assert made.status_code == 303, made.text
    match = re.fullmatch(r"/agents/([0-9a-f-]{36})\?outcome=created", made.headers["location"])
    assert match, made.headers["location"]
    return match.group(1)


async def _edit(person: Signed, agent_id: str, instructions: str) -> None:
    body = {"name": "Shop helper", "model": MODEL, "instructions": instructions}
    saved = await person.client.post(f"/agents/{agent_id}/edit", data=_form(person, **body))
    assert saved.status_code == 303, saved.text


async def _instructions(api: Api, agent_id: str) -> list[Any]:
    [row] = await raw_rows(
        api,
        "select instructions, latest_version, deployed_version from agents where id = :a",
        a=agent_id,
    )
    return [row["instructions"], row["latest_version"], row["deployed_version"]]


async def test_history_diff_deploy_and_roll_back_by_forms(api: Api) -> None:
    person = await api.sign_up()
    agent_id = await _agent(person, "Sell bikes.\nBe kind.")
    deployed = await person.client.post(f"/agents/{agent_id}/deploy", data=_form(person))
    assert deployed.status_code == 303, deployed.text
    await _edit(person, agent_id, "Sell boats.\nBe kind.")
    saved = await person.client.get(f"/agents/{agent_id}?outcome=saved")
    assert "Changes saved as a new version" in saved.text
    assert "undeployed changes: deploy version 2" in saved.text
    assert f'href="/agents/{agent_id}/versions"' in saved.text

    history = await person.client.get(f"/agents/{agent_id}/versions")
    assert history.status_code == 200
    text = html.unescape(history.text)
    assert "There are undeployed changes" in text and "version 1 until you deploy version 2" in text
    assert "Changed instructions" in text and "Created" in text
    assert f'action="/agents/{agent_id}/versions/2/deploy"' in text
    assert text.count("(dashboard)") == 2

    second = await person.client.get(f"/agents/{agent_id}/versions/2")
    assert second.status_code == 200
    diff = html.unescape(second.text)
    assert '<span class="diff-del">-Sell bikes.</span>' in diff
    assert '<span class="diff-add">+Sell boats.</span>' in diff
    assert '<span class="">\u0020Be kind.</span>' in diff
    assert f'action="/agents/{agent_id}/versions/2/deploy"' in diff
    assert "/rollback" not in diff  # the latest version has nothing to roll back to

    pinned = await person.client.post(f"/agents/{agent_id}/versions/2/deploy", data=_form(person))
    assert pinned.status_code == 303
    assert pinned.headers["location"] == f"/agents/{agent_id}/versions?outcome=deployed"
    shown = await person.client.get(pinned.headers["location"])
    assert "Deployed: the agent serves this version." in shown.text
    assert "There are undeployed changes" not in shown.text
    assert await _instructions(api, agent_id) == ["Sell boats.\nBe kind.", 2, 2]

    first = await person.client.get(f"/agents/{agent_id}/versions/1")
    assert f'action="/agents/{agent_id}/versions/1/rollback"' in first.text
    rolled = await person.client.post(f"/agents/{agent_id}/versions/1/rollback", data=_form(person))
    assert rolled.status_code == 303
    assert rolled.headers["location"] == f"/agents/{agent_id}/versions?outcome=rolled_back"
    assert await _instructions(api, agent_id) == ["Sell bikes.\nBe kind.", 3, 3]
    after = html.unescape((await person.client.get(rolled.headers["location"])).text)
    assert "Rolled back to version 1" in after and "Rolled back: the restored" in after
    [status] = await raw_rows(api, "select status from agents where id = :a", a=agent_id)
    assert status["status"] == "running"


async def test_a_refused_rollback_shows_the_reason_and_writes_nothing(api: Api) -> None:
    person = await api.sign_up()
    agent_id = await _agent(person, "One.")
    refused = await person.client.post(
        f"/agents/{agent_id}/versions/1/rollback", data=_form(person)
    )
    assert refused.status_code == 422
    assert "not earlier than the latest version (1)" in html.unescape(refused.text)
    assert 'role="alert"' in refused.text
    assert await _instructions(api, agent_id) == ["One.", 1, None]
    missing = await person.client.post(f"/agents/{agent_id}/versions/7/deploy", data=_form(person))
    assert missing.status_code == 404


async def test_other_tenants_and_missing_csrf(api: Api) -> None:
    owner = await api.sign_up()
    agent_id = await _agent(owner, "One.")
    await _edit(owner, agent_id, "Two.")
    other = await api.sign_up()
    base = f"/agents/{agent_id}/versions"
    for path in (base, f"{base}/1", f"{base}/2"):
        assert (await other.client.get(path)).status_code == 404, path
    for path in (f"{base}/2/deploy", f"{base}/1/rollback"):
        assert (await other.client.post(path, data=_form(other))).status_code == 404, path
        refused = await owner.client.post(path, data={})
        assert refused.status_code == 403 and "CSRF" in refused.text, path
    assert await _instructions(api, agent_id) == ["Two.", 2, None]
