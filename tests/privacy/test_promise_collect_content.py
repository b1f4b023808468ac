"""[collect-content] For your agents we keep their settings, the messages they exchange with the
people who write to them, the memory notes they keep per contact, their runtime logs, and the
files in their workspaces.

After a conversation in which the agent writes a memory note about its contact, the owner reads
back through the API the settings, the messages, the note and the log lines; workspace files:
`tests/privacy/test_export.py`. What the export holds
of them: `tests/privacy/test_export.py`; their purge: `tests/privacy/test_retention.py`.
"""

from __future__ import annotations

from tests.agent.support import create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.privacy.promises import sentence

TAG = "collect-content"
SENTENCE = sentence(TAG)


async def test_settings_messages_memory_and_logs_are_kept(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(
        dev, instructions="Sell bikes.", tools=["remember", "recall", "forget"]
    )
    base = f"/api/v1/agents/{agent['id']}"
    assert (await dev.http.post(f"{base}/deploy")).status_code == 200
    openrouter.call_tool("remember", {"note": "prefers red bikes"})
    openrouter.reply("Red it is.")
    said = await dev.http.post(f"{base}/messages", json={"text": "I like red"})
    assert said.status_code == 200, said.text

    assert (await dev.http.get(base)).json()["instructions"] == "Sell bikes."
    (thread,) = (await dev.http.get(f"{base}/threads")).json()["data"]
    messages = (await dev.http.get(f"{base}/threads/{thread['id']}/messages")).text
    assert "I like red" in messages and "Red it is." in messages
    (note,) = (await dev.http.get(f"{base}/memory")).json()["data"]
    assert (note["text"], note["contact"]) == ("prefers red bikes", thread["contact"])
    assert (await dev.http.get(f"{base}/logs")).json()["data"]
