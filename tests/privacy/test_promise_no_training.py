"""[no-training] Conversations are stored only to give your agents memory; they are never used to
train models, and model calls are routed only to providers that do not keep or train on them.

Every model request through OpenRouter carries `provider.data_collection = "deny"` (OpenRouter
then routes only to providers that neither store nor train on prompts); a stored conversation
goes out only in its own agent's turn, to the configured model endpoint: another agent's turn,
even the same owner's, carries none of it. Where else data may go at all:
`test_promise_processors.py`. With an OpenAI-compatible endpoint instead of OpenRouter, the
operator chooses the provider (`docs/privacy.md`). Also `tests/llm/test_provider.py`.
"""

from __future__ import annotations

import json

from tests.agent.support import create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.privacy.promises import sentence

TAG = "no-training"
SENTENCE = sentence(TAG)
SECRET = "my sister's name is Philippa Quartermaine"


async def test_model_calls_deny_data_collection_and_carry_only_the_agents_own_thread(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev = await new_dev(api)
    first = await create_agent(dev)
    second = await create_agent(dev, name="Other bot")
    for agent in (first, second):
        assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    openrouter.reply("Nice to know.")
    said = await dev.http.post(f"/api/v1/agents/{first['id']}/messages", json={"text": SECRET})
    assert said.status_code == 200, said.text
    openrouter.reply("Hello.")
    other = await dev.http.post(f"/api/v1/agents/{second['id']}/messages", json={"text": "Hi"})
    assert other.status_code == 200, other.text
    openrouter.reply("You told me about Philippa.")
    again = await dev.http.post(
        f"/api/v1/agents/{first['id']}/messages", json={"text": "What did I say?"}
    )
    assert again.status_code == 200, again.text

    requests = openrouter.chat_requests
    assert len(requests) == 3
    for request in requests:
        assert request.body["provider"] == {"data_collection": "deny"}
        assert request.headers.get("authorization") == f"Bearer {openrouter.api_key}"
    bodies = [json.dumps(r.body) for r in requests]
    assert SECRET in bodies[0] and SECRET in bodies[2]  # its own agent's memory
    assert SECRET not in bodies[1]  # never in another agent's call
