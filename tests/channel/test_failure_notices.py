"""A turn that fails for good sends the waiting callback a signed `message.failed` notice."""

from __future__ import annotations

from typing import Any

import pytest

from lunogen.channel import delivery as delivery_jobs
from lunogen.channel import webhook
from lunogen.channel.models import Delivery
from lunogen.runtime.models import Message, Thread
from lunogen.worker import enqueue
from lunogen.worker.sweeps import sweep_registered
from tests.channel.receiver import Received, Receiver
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

FAILURE_FIELDS = {"type", "agent_id", "channel_id", "reply_to", "to", "error", "created_at"}


async def _inbound(api: Api, message_id: str) -> Message:
    async with api.app.state.sessionmaker() as session:
        inbound = await session.get(Message, message_id)
        assert inbound is not None
        return inbound


async def _settled(api: Api, message_id: str, status: str) -> Message:
    async def reached() -> bool:
        return (await _inbound(api, message_id)).status == status

    await until(reached, f"the message to be {status}")
    return await _inbound(api, message_id)


async def _retry_scheduled(api: Api, message_id: str) -> None:
    async def scheduled() -> bool:
        async with api.app.state.sessionmaker() as session:
            inbound = await session.get(Message, message_id)
            thread = await session.get(Thread, inbound.thread_id) if inbound else None
            return bool(inbound and inbound.attempts == 1 and thread and not thread.lease_owner)

    await until(scheduled, "the turn's retry to be scheduled")


async def _retry_now(api: Api, message_id: str) -> None:
    async with api.app.state.sessionmaker() as session:
        inbound = await session.get(Message, message_id)
        assert inbound is not None and inbound.status == "pending"
        inbound.next_attempt_at = inbound.created_at
        await session.commit()
    await sweep_registered(api.app.state.sessionmaker)


def _failure(hook: Hook, got: Received, *, reply_to: str) -> dict[str, Any]:
    body = verified(hook, got)
    assert set(body) == FAILURE_FIELDS
    assert body["type"] == "message.failed"
    assert body["agent_id"] == hook.agent["id"] and body["channel_id"] == hook.id
    assert body["reply_to"] == reply_to
    return body


async def test_async_model_failure_sends_one_signed_failure_notice(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    openrouter.fail(400, "This model does not accept the request")
    response = await hook.post({"id": "f-1", "from": "bob", "text": "Hi"})
    assert response.status_code == 202, response.text
    message_id = response.json()["message_id"]
    [got] = await received(receiver, 1)
    body = _failure(hook, got, reply_to="f-1")
    inbound = await _inbound(api, message_id)
    assert inbound.status == "failed" and inbound.last_error
    assert body["error"] == inbound.last_error
    assert "This model does not accept the request" in str(body["error"])
    assert inbound.completed_at is not None
    assert body["created_at"] == inbound.completed_at.isoformat().replace("+00:00", "Z")
    delivery = await delivery_in(api, "delivered")
    assert delivery.message_id == message_id and delivery.attempts == 1
    assert got.headers["webhook-id"] == delivery.id
    assert await count_rows(api, Message) == 1  # no reply was stored
    logs = (await hook.dev.http.get(f"/api/v1/agents/{hook.agent['id']}/logs")).json()["data"]
    assert any(e["event"] == "failure.sent" for e in logs)
    assert not any(e["event"] == "reply.sent" for e in logs)
    # exactly one: neither the sweeper nor a repeat of the message sends another
    again = await hook.post({"id": "f-1", "from": "bob", "text": "Hi"})
    assert again.status_code == 202 and again.json()["message_id"] == message_id
    await sweep_registered(api.app.state.sessionmaker)
    await enqueue.drain()
    assert len(receiver.received()) == 1


async def test_a_sync_caller_that_got_202_gets_the_failure_notice(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhook, "SYNC_WAIT_SECONDS", 0.05)
    hook = await new_hook(api, mode="sync", callback_url=receiver.url)
    openrouter.fail(502, times=3)  # the first attempt fails; the turn is retried later
    response = await hook.post({"id": "s-1", "from": "ada", "text": "Take your time"})
    assert response.status_code == 202, response.text
    message_id = response.json()["message_id"]
    [waiting] = await all_rows(api, Delivery)
    assert waiting.status == "waiting"
    await _retry_scheduled(api, message_id)
    assert receiver.received() == []
    openrouter.fail(400, "Bad request to the model")  # the retry fails for good
    await _retry_now(api, message_id)
    [got] = await received(receiver, 1)
    body = _failure(hook, got, reply_to="s-1")
    assert "Bad request to the model" in str(body["error"])
    assert (await delivery_in(api, "delivered")).id == waiting.id
    # the caller asking again learns it failed
    again = await hook.post({"id": "s-1", "from": "ada", "text": "Take your time"})
    assert again.status_code == 502
    assert again.json()["error"] == "Agent failed to answer"
    await enqueue.drain()
    assert len(receiver.received()) == 1


async def test_a_message_skipped_by_a_stopped_agent_gets_a_failure_notice(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    openrouter.fail(502, times=3)
    response = await hook.post({"id": "k-1", "from": "ada", "text": "Hello?"})
    message_id = response.json()["message_id"]
    await _retry_scheduled(api, message_id)
    stopped = await hook.dev.http.post(f"/api/v1/agents/{hook.agent['id']}/stop")
    assert stopped.status_code == 200, stopped.text
    await _retry_now(api, message_id)  # the turn finds the agent stopped: the message is skipped
    skipped = await _settled(api, message_id, "skipped")
    # the sweeper sends the notice of a turn that ended without telling the deliveries
    await sweep_registered(api.app.state.sessionmaker)
    [got] = await received(receiver, 1)
    body = _failure(hook, got, reply_to="k-1")
    assert body["error"] == skipped.last_error and "stopped" in str(body["error"])
    await delivery_in(api, "delivered")


async def test_a_failure_notice_is_retried_and_its_410_disables_the_channel(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_jobs, "BACKOFF_BASE_SECONDS", 0.01)
    receiver.answer(503)
    receiver.answer(410)
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    openrouter.fail(400)
    await hook.post({"id": "r-1", "from": "bob", "text": "Hi"})
    first, second = await received(receiver, 2)
    assert [first.answered, second.answered] == [503, 410]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    _failure(hook, second, reply_to="r-1")
    delivery = await delivery_in(api, "disabled")
    assert delivery.attempts == 2
    channel = (await hook.dev.http.get(f"/api/v1/agents/{hook.agent['id']}")).json()["channels"][0]
    assert channel["disabled_at"] is not None
    refused = await hook.post({"id": "r-2", "from": "bob", "text": "Hi"})
    assert refused.status_code == 409 and refused.json()["error"] == "Channel disabled"
