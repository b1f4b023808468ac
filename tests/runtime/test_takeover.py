"""Human takeover: the owner answers a contact as the agent; the agent stays silent for that
contact until handed back or until the takeover runs out."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from lunogen.kit.time import utcnow
from lunogen.runtime.models import Message, Thread
from lunogen.runtime.tasks import sweep_once
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.agent.support import Dev, create_agent, new_dev
from tests.channel.receiver import Receiver
from tests.channel.support import new_hook, received, verified
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    """Sweeps by hand only; webhook callbacks go to a receiver on 127.0.0.1."""
    return openrouter_settings(openrouter, allow_private_urls=True, sweep_interval_seconds=0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver.running() as fake:
        yield fake


async def _talking(api: Api, openrouter: FakeOpenRouter) -> tuple[Dev, str, str]:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    openrouter.reply("Hello Ada, I am the agent.")
    said = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/messages", json={"text": "Hi", "contact": "ada"}
    )
    assert said.status_code == 200, said.text
    return dev, str(agent["id"]), str(said.json()["message"]["thread_id"])


async def _say(dev: Dev, agent_id: str, text: str) -> dict[str, Any]:
    response = await dev.http.post(
        f"/api/v1/agents/{agent_id}/messages",
        json={"text": text, "contact": "ada", "wait_seconds": 0.3},
    )
    body: dict[str, Any] = response.json()
    return body


async def _messages(dev: Dev, agent_id: str, thread_id: str) -> list[tuple[str, str, str]]:
    listed = await dev.http.get(f"/api/v1/agents/{agent_id}/threads/{thread_id}/messages")
    return [(m["role"], m["text"], m["status"]) for m in listed.json()["data"]]


async def test_the_owner_answers_as_the_agent_while_the_agent_stays_silent(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id, thread_id = await _talking(api, openrouter)
    base = f"/api/v1/agents/{agent_id}/threads/{thread_id}"
    taken = await dev.http.post(f"{base}/takeover", json={"minutes": 30})
    assert taken.status_code == 200, taken.text
    assert taken.json()["taken_over_until"] is not None
    threads = (await dev.http.get(f"/api/v1/agents/{agent_id}/threads")).json()["data"]
    assert threads[0]["taken_over_until"] is not None

    asked = await _say(dev, agent_id, "Are you a person?")
    assert asked["status"] == "pending" and asked["reply"] is None
    await enqueue.drain()
    await wait_idle()
    assert len(openrouter.chat_requests) == 1  # no turn for it
    replied = await dev.http.post(f"{base}/replies", json={"text": "Yes, this is Sam."})
    assert replied.status_code == 201, replied.text
    assert replied.json()["role"] == "assistant"
    assert (await _messages(dev, agent_id, thread_id))[-2:] == [
        ("user", "Are you a person?", "done"),
        ("assistant", "Yes, this is Sam.", "done"),
    ]
    nothing = await dev.http.post(f"{base}/replies", json={"text": "And more"})
    assert nothing.status_code == 409 and "has not written" in nothing.json()["message"]

    later = await _say(dev, agent_id, "Thanks! One more question")
    assert later["status"] == "pending"
    openrouter.reply("The agent is back.")
    handed = await dev.http.delete(f"{base}/takeover")
    assert handed.status_code == 200 and handed.json()["waiting"] == 1
    await enqueue.drain()
    await wait_idle()
    assert (await _messages(dev, agent_id, thread_id))[-1] == (
        "assistant",
        "The agent is back.",
        "done",
    )
    assert len(openrouter.chat_requests) == 2
    audit = (await dev.http.get("/api/v1/audit", params={"limit": 50})).json()["data"]
    assert {
        "agent.thread_taken_over",
        "agent.thread_replied",
        "agent.thread_handed_back",
    } <= {event["action"] for event in audit}


async def test_the_agent_answers_again_when_the_takeover_runs_out(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id, thread_id = await _talking(api, openrouter)
    base = f"/api/v1/agents/{agent_id}/threads/{thread_id}"
    assert (await dev.http.post(f"{base}/takeover", json={"minutes": 5})).status_code == 200
    waiting = await _say(dev, agent_id, "Hello?")
    assert waiting["status"] == "pending"
    past = utcnow() - timedelta(minutes=10)
    async with api.app.state.sessionmaker() as session:  # five minutes later
        await session.execute(
            update(Thread).where(Thread.id == thread_id).values(taken_over_until=past)
        )
        await session.execute(
            update(Message)
            .where(Message.id == waiting["message"]["id"])
            .values(next_attempt_at=past, created_at=past)
        )
        await session.commit()
    openrouter.reply("Sorry for the wait.")
    assert await sweep_once(api.app.state.sessionmaker) == 1
    await enqueue.drain()
    await wait_idle()
    assert (await _messages(dev, agent_id, thread_id))[-1][1] == "Sorry for the wait."


async def test_the_owners_reply_is_sent_by_the_channel(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    openrouter.reply("Agent here")
    assert (await hook.post({"id": "m-1", "from": "bob", "text": "Hi"})).status_code == 202
    [first] = await received(receiver, 1)
    assert verified(hook, first)["text"] == "Agent here"
    threads = (await hook.dev.http.get(f"/api/v1/agents/{hook.agent['id']}/threads")).json()
    base = f"/api/v1/agents/{hook.agent['id']}/threads/{threads['data'][0]['id']}"
    assert (await hook.dev.http.post(f"{base}/takeover", json={})).status_code == 200
    assert (await hook.post({"id": "m-2", "from": "bob", "text": "Human?"})).status_code == 202
    replied = await hook.dev.http.post(f"{base}/replies", json={"text": "Sam here, hello Bob"})
    assert replied.status_code == 201, replied.text
    [_, second] = await received(receiver, 2)
    body = verified(hook, second)
    assert body["type"] == "message.reply"
    assert body["reply_to"] == "m-2" and body["text"] == "Sam here, hello Bob"
    assert len(openrouter.chat_requests) == 1


async def test_takeover_is_the_owners_alone_and_checks_its_input(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    dev, agent_id, thread_id = await _talking(api, openrouter)
    other = await new_dev(api)
    base = f"/api/v1/agents/{agent_id}/threads/{thread_id}"
    assert (await other.http.post(f"{base}/takeover", json={})).status_code == 404
    assert (await other.http.post(f"{base}/replies", json={"text": "x"})).status_code == 404
    assert (await other.http.delete(f"{base}/takeover")).status_code == 404
    assert (await dev.http.post(f"{base}/takeover", json={"minutes": 0})).status_code == 422
    assert (await dev.http.post(f"{base}/replies", json={"text": ""})).status_code == 422
    threads = (await dev.http.get(f"/api/v1/agents/{agent_id}/threads")).json()["data"]
    assert threads[0]["taken_over_until"] is None
