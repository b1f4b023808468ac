"""A callback answered 410 Gone: the channel is disabled until its owner re-enables it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from lunogen.audit.models import AuditEvent
from lunogen.channel.models import Delivery
from lunogen.runtime.models import Message, Thread
from lunogen.worker import enqueue
from lunogen.worker.sweeps import sweep_registered
from tests.agent.support import NOT_FOUND, new_dev
from tests.channel.receiver import Receiver
from tests.channel.support import (
    Hook,
    all_rows,
    count_rows,
    delivery_in,
    new_hook,
    received,
    until,
    verified,
)
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api


def _enable_url(hook: Hook, *, agent_id: str | None = None, channel_id: str | None = None) -> str:
    agent = agent_id or hook.agent["id"]
    return f"/api/v1/agents/{agent}/channels/{channel_id or hook.id}/enable"


async def _channel(hook: Hook) -> dict[str, Any]:
    got = await hook.dev.http.get(f"/api/v1/agents/{hook.agent['id']}")
    assert got.status_code == 200, got.text
    [channel] = got.json()["channels"]
    assert channel["id"] == hook.id
    return channel


async def _events(hook: Hook, event: str) -> list[dict[str, Any]]:
    logs = await hook.dev.http.get(f"/api/v1/agents/{hook.agent['id']}/logs")
    assert logs.status_code == 200, logs.text
    return [e for e in logs.json()["data"] if e["event"] == event]


async def _disabled_hook(api: Api, receiver: Receiver) -> Hook:
    """An async channel whose first callback was answered 410."""
    receiver.answer(410)
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    response = await hook.post({"id": "g-1", "from": "bob", "text": "gone"})
    assert response.status_code == 202, response.text
    await delivery_in(api, "disabled")
    return hook


async def _pending_retry(api: Api, message_id: str) -> None:
    """Wait until the first attempt of the message's turn failed and let go of its thread."""

    async def scheduled() -> bool:
        async with api.app.state.sessionmaker() as session:
            inbound = await session.get(Message, message_id)
            thread = await session.get(Thread, inbound.thread_id) if inbound else None
            return bool(inbound and inbound.attempts == 1 and thread and not thread.lease_owner)

    await until(scheduled, "the turn's retry to be scheduled")


async def _make_due(api: Api, model: Any, row_id: str) -> None:
    async with api.app.state.sessionmaker() as session:
        row = await session.get(model, row_id)
        assert row is not None
        row.next_attempt_at = row.created_at
        await session.commit()


async def test_a_410_disables_the_channel_and_refuses_later_messages(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await _disabled_hook(api, receiver)
    [delivery] = await all_rows(api, Delivery)
    assert delivery.last_status_code == 410 and delivery.attempts == 1

    channel = await _channel(hook)
    assert channel["disabled_at"] is not None
    assert datetime.fromisoformat(channel["disabled_at"]) >= delivery.created_at
    assert "410" in channel["disabled_reason"] and delivery.id in channel["disabled_reason"]
    [logged] = await _events(hook, "channel.disabled")
    assert logged["level"] == "warning"
    assert _enable_url(hook) in logged["message"]
    assert logged["details"]["channel_id"] == hook.id

    chats = len(openrouter.chat_requests)
    refused = await hook.post({"id": "g-2", "from": "bob", "text": "anyone?"})
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert set(body) == {"error", "message", "disabled_at", "reason"}
    assert body["error"] == "Channel disabled"
    assert body["reason"] == channel["disabled_reason"]
    assert body["disabled_at"].replace("Z", "+00:00") == channel["disabled_at"].replace(
        "Z", "+00:00"
    )
    assert _enable_url(hook) in body["message"] and "callback_url" in body["message"]
    # a repeat of the first message is refused too, and nothing reaches the model or receiver
    again = await hook.post({"id": "g-1", "from": "bob", "text": "gone"})
    assert again.status_code == 409
    assert await count_rows(api, Message) == 2  # g-1 and its reply
    assert len(openrouter.chat_requests) == chats
    await enqueue.drain()
    assert len(receiver.received()) == 1
    # the state is told only to whoever holds the secret
    other = "whsec_" + "a" * 44
    unsigned = await hook.post({"id": "g-3", "from": "bob", "text": "hi"}, secret=other)
    assert unsigned.status_code == 401


async def test_pending_deliveries_of_a_disabled_channel_end_without_a_request(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    # w-1's turn fails for now (it is retried later): its delivery waits for the reply
    openrouter.fail(502, times=3)
    waiting = await hook.post({"id": "w-1", "from": "ada", "text": "one"})
    assert waiting.status_code == 202
    waiting_id = waiting.json()["message_id"]
    await _pending_retry(api, waiting_id)
    # w-2 (another sender, another thread) is answered; its callback is answered 410
    receiver.answer(410)
    gone = await hook.post({"id": "w-2", "from": "bob", "text": "two"})
    assert gone.status_code == 202
    await received(receiver, 1)

    async def both_disabled() -> bool:
        rows = await all_rows(api, Delivery)
        return len(rows) == 2 and {r.status for r in rows} == {"disabled"}

    await until(both_disabled, "both deliveries to end disabled")
    by_message = {r.message_id: r for r in await all_rows(api, Delivery)}
    dropped = by_message[waiting_id]
    assert dropped.attempts == 0 and dropped.last_status_code is None
    assert "the channel is disabled" in (dropped.last_error or "")
    assert by_message[gone.json()["message_id"]].last_status_code == 410
    assert len(await _events(hook, "channel.disabled")) == 1

    # w-1's turn now answers: the reply is stored, and nothing is sent
    await _make_due(api, Message, waiting_id)
    await sweep_registered(api.app.state.sessionmaker)

    async def answered() -> bool:
        async with api.app.state.sessionmaker() as session:
            inbound = await session.get(Message, waiting_id)
            return inbound is not None and inbound.status == "done"

    await until(answered, "w-1 to be answered")
    await enqueue.drain()
    await sweep_registered(api.app.state.sessionmaker)
    await enqueue.drain()
    assert len(receiver.received()) == 1

    # a delivery that raced the disable (queued meanwhile) ends at its attempt, unsent
    async with api.app.state.sessionmaker() as session:
        row = await session.get(Delivery, dropped.id)
        assert row is not None
        row.status, row.next_attempt_at, row.last_error = "queued", row.created_at, None
        await session.commit()
    await sweep_registered(api.app.state.sessionmaker)

    async def ended() -> bool:
        async with api.app.state.sessionmaker() as session:
            row = await session.get(Delivery, dropped.id)
            return row is not None and row.status == "disabled" and row.attempts == 1

    await until(ended, "the raced delivery to end disabled")
    await enqueue.drain()
    assert len(receiver.received()) == 1


async def test_reenabling_lets_messages_and_callbacks_through_again(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await _disabled_hook(api, receiver)
    response = await hook.dev.http.post(_enable_url(hook))
    assert response.status_code == 200, response.text
    enabled = response.json()
    assert enabled["id"] == hook.id and enabled["type"] == "webhook"
    assert enabled["disabled_at"] is None and enabled["disabled_reason"] is None
    assert enabled["secret"] == {"configured": True}
    assert await _channel(hook) == enabled
    [logged] = await _events(hook, "channel.enabled")
    assert logged["level"] == "info" and logged["details"]["channel_id"] == hook.id

    openrouter.reply("Back again")
    accepted = await hook.post({"id": "e-1", "from": "bob", "text": "still there?"})
    assert accepted.status_code == 202, accepted.text
    _, got = await received(receiver, 2)
    body = verified(hook, got)
    assert body["type"] == "message.reply" and body["text"] == "Back again"

    # enabling an enabled channel changes nothing (and is audited once)
    again = await hook.dev.http.post(_enable_url(hook))
    assert again.status_code == 200 and again.json() == enabled
    async with api.app.state.sessionmaker() as session:
        audited = list(
            (
                await session.execute(
                    select(AuditEvent).where(AuditEvent.action == "agent.channel_enabled")
                )
            ).scalars()
        )
    assert [(e.target_id, e.details["channel_id"]) for e in audited] == [
        (hook.agent["id"], hook.id)
    ]
    assert len(await _events(hook, "channel.enabled")) == 1


async def test_a_new_callback_url_reenables_the_channel(api: Api, receiver: Receiver) -> None:
    hook = await _disabled_hook(api, receiver)
    url = f"/api/v1/agents/{hook.agent['id']}"
    same = {"type": "webhook", "id": hook.id, "mode": "async", "callback_url": receiver.url}
    kept = await hook.dev.http.patch(url, json={"name": "Renamed", "channels": [same]})
    assert kept.status_code == 200, kept.text
    assert kept.json()["channels"][0]["disabled_at"] is not None  # same receiver: still gone

    moved = {**same, "callback_url": receiver.url + "?v=2"}
    response = await hook.dev.http.patch(url, json={"channels": [moved]})
    assert response.status_code == 200, response.text
    [channel] = response.json()["channels"]
    assert channel["disabled_at"] is None and channel["disabled_reason"] is None
    assert channel["callback_url"] == receiver.url + "?v=2"
    accepted = await hook.post({"id": "n-1", "from": "bob", "text": "new home"})
    assert accepted.status_code == 202, accepted.text
    _, got = await received(receiver, 2)
    assert verified(hook, got)["reply_to"] == "n-1"


async def test_enable_is_scoped_to_the_owner(api: Api, receiver: Receiver) -> None:
    hook = await _disabled_hook(api, receiver)
    stranger = await new_dev(api)
    theirs = await new_hook(api, mode="sync")
    for client, path in [
        (stranger.http, _enable_url(hook)),  # another tenant's agent
        (hook.dev.http, _enable_url(hook, agent_id="00000000-0000-0000-0000-000000000000")),
        (hook.dev.http, _enable_url(hook, agent_id="not-a-uuid")),
        (hook.dev.http, _enable_url(hook, agent_id=theirs.agent["id"])),  # their agent, my channel
    ]:
        response = await client.post(path)
        assert (response.status_code, response.json()) == (404, NOT_FOUND), path
    for channel_id in (theirs.id, "00000000-0000-0000-0000-000000000000", "x" * 80):
        response = await hook.dev.http.post(_enable_url(hook, channel_id=channel_id))
        assert (response.status_code, response.json()) == (404, {"error": "Channel not found"})
    read_only = api.key_client(await api.create_key(hook.dev.person, ["agents:read"]))
    forbidden = await read_only.post(_enable_url(hook))
    assert forbidden.status_code == 403
    assert "agents:write" in forbidden.json()["message"]
    assert (await _channel(hook))["disabled_at"] is not None
