"""[right-deletion] You can delete any agent, conversation or memory note, and your whole
account, from the dashboard or the API.

A memory note, a conversation and the agent, each deleted once over the API and once with the
dashboard's forms: gone at once (404, and out of the lists). The account, by the API and by
Settings, and what its deletion does: `tests/privacy/test_deletion.py`.
"""

from __future__ import annotations

from typing import Any

from tests.agent.support import Dev, create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.privacy.promises import sentence

TAG = "right-deletion"
SENTENCE = sentence(TAG)


async def _agent_with_a_note_and_a_thread(
    dev: Dev, openrouter: FakeOpenRouter
) -> tuple[str, str, str]:
    agent: dict[str, Any] = await create_agent(dev, tools=["remember", "recall", "forget"])
    base = f"/api/v1/agents/{agent['id']}"
    assert (await dev.http.post(f"{base}/deploy")).status_code == 200
    openrouter.call_tool("remember", {"note": "likes green tea"})
    openrouter.reply("Noted.")
    assert (await dev.http.post(f"{base}/messages", json={"text": "I like tea"})).status_code == 200
    (note,) = (await dev.http.get(f"{base}/memory")).json()["data"]
    (thread,) = (await dev.http.get(f"{base}/threads")).json()["data"]
    return agent["id"], note["id"], thread["id"]


async def _gone(dev: Dev, agent_id: str, note_id: str, thread_id: str) -> None:
    base = f"/api/v1/agents/{agent_id}"
    for path in (base, f"{base}/threads/{thread_id}/messages", f"{base}/memory"):
        assert (await dev.http.get(path)).status_code == 404, path
    assert agent_id not in (await dev.http.get("/api/v1/agents")).text


async def test_over_the_api(api: Api, openrouter: FakeOpenRouter) -> None:
    dev = await new_dev(api)
    agent_id, note_id, thread_id = await _agent_with_a_note_and_a_thread(dev, openrouter)
    base = f"/api/v1/agents/{agent_id}"
    assert (await dev.http.delete(f"{base}/memory/{note_id}")).status_code == 204
    assert (await dev.http.get(f"{base}/memory")).json()["total"] == 0
    assert (await dev.http.delete(f"{base}/threads/{thread_id}")).status_code in (200, 204)
    assert (await dev.http.get(f"{base}/threads/{thread_id}/messages")).status_code == 404
    assert (await dev.http.get(f"{base}/threads")).json()["data"] == []
    assert (await dev.http.delete(base)).status_code in (200, 202, 204)
    await _gone(dev, agent_id, note_id, thread_id)


async def test_with_the_dashboard(api: Api, openrouter: FakeOpenRouter) -> None:
    dev = await new_dev(api)
    agent_id, note_id, thread_id = await _agent_with_a_note_and_a_thread(dev, openrouter)
    browser, form = dev.person.client, {"csrf_token": dev.person.csrf}
    base = f"/api/v1/agents/{agent_id}"
    note = await browser.post(f"/agents/{agent_id}/memory/{note_id}/delete", data=form)
    assert note.status_code == 303, note.text
    assert (await dev.http.get(f"{base}/memory")).json()["total"] == 0
    thread = await browser.post(f"/agents/{agent_id}/conversations/{thread_id}/delete", data=form)
    assert thread.status_code == 303, thread.text
    assert (await dev.http.get(f"{base}/threads")).json()["data"] == []
    agent = await browser.post(f"/agents/{agent_id}/delete", data=form)
    assert agent.status_code == 303, agent.text
    await _gone(dev, agent_id, note_id, thread_id)
    refused = await browser.post(f"/agents/{agent_id}/delete", data={})
    assert refused.status_code in (403, 404)
