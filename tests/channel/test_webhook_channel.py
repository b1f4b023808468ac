"""Whole turns through the webhook channel: signed inbound, sync replies, signed callbacks."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import pytest
from sqlalchemy import update

from lunogen.channel import delivery as delivery_jobs
from lunogen.channel import webhook
from lunogen.channel.models import Delivery
from lunogen.llm.models import UsageRecord
from lunogen.runtime import waiting
from lunogen.runtime.models import Message, Thread
from lunogen.worker import enqueue
from lunogen.worker.broker import runtime
from lunogen.worker.sweeps import sweep_registered
from tests.agent.support import create_agent, new_dev
from tests.channel.receiver import Receiver
from tests.channel.support import (
    all_rows,
    count_rows,
    delivery_in,
    new_hook,
    received,
    sign,
    until,
    verified,
)
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api

# sync ---------------------------------------------------------------------------------------


async def test_sync_mode_answers_with_the_reply(api: Api, openrouter: FakeOpenRouter) -> None:
    hook = await new_hook(api, mode="sync")
    openrouter.reply("Hello Ada!")
    response = await hook.post({"id": "m-1", "from": "ada", "text": "Hi"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["reply_to"] == "m-1" and body["text"] == "Hello Ada!"
    [inbound, reply] = sorted(await all_rows(api, Message), key=lambda m: m.seq)
    assert body["id"] == reply.id and reply.reply_to_id == inbound.id
    assert openrouter.last_chat.messages[-1] == {"role": "user", "content": "Hi"}
    # the sender has its own thread on this channel
    threads = (await hook.dev.http.get(f"/api/v1/agents/{hook.agent['id']}/threads")).json()
    assert [(t["channel"], t["contact"]) for t in threads["data"]] == [
        (f"webhook:{hook.id}", "ada")
    ]
    assert await all_rows(api, Delivery) == []


async def test_sync_mode_is_woken_by_the_turn_not_by_polling(
    api: Api, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were the caller to look at the database only now and then, it would answer after 60 s.
    monkeypatch.setattr(waiting, "CHECK_DATABASE_SECONDS", 60.0)
    monkeypatch.setattr(webhook, "SYNC_WAIT_SECONDS", 60.0)
    hook = await new_hook(api, mode="sync")
    openrouter.stall(0.3)  # the caller is already waiting when the reply is stored
    started = time.monotonic()
    response = await hook.post({"id": "w-1", "from": "ada", "text": "Wake me"})
    assert response.status_code == 200, response.text
    assert response.json()["text"] == "Wake me"
    assert time.monotonic() - started < 15
    # a repeat of an answered message is read from the database at once
    started = time.monotonic()
    again = await hook.post({"id": "w-1", "from": "ada", "text": "Wake me"})
    assert again.status_code == 200 and again.json() == response.json()
    assert time.monotonic() - started < 15
    assert len(openrouter.chat_requests) == 1


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("wrong secret", "does not match"),
        ("tampered", "does not match"),
        ("stale", "more than 5 minutes"),
        ("missing headers", "missing header(s)"),
        ("no v1", "no 'v1,' signature"),
    ],
)
async def test_a_bad_signature_is_refused(
    api: Api, openrouter: FakeOpenRouter, case: str, problem: str
) -> None:
    hook = await new_hook(api, mode="sync")
    payload = {"id": "m-1", "from": "ada", "text": "Hi"}
    if case == "wrong secret":
        other = "whsec_" + base64.b64encode(b"k" * 32).decode()
        response = await hook.post(payload, secret=other)
    elif case == "tampered":
        body = json.dumps(payload).encode()
        stamp = int(time.time())
        signed = {
            "webhook-id": "x",
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(hook.secret, "x", stamp, body),
        }
        response = await hook.post(body.replace(b"Hi", b"Ho"), headers=signed)
    elif case == "stale":
        response = await hook.post(payload, timestamp=int(time.time()) - 6 * 60)
    elif case == "missing headers":
        response = await hook.post(payload, headers={"content-type": "application/json"})
    else:
        stamp = int(time.time())
        body = json.dumps(payload).encode()
        sig = sign(hook.secret, "x", stamp, body).replace("v1,", "v2,")
        headers = {"webhook-id": "x", "webhook-timestamp": str(stamp), "webhook-signature": sig}
        response = await hook.post(body, headers=headers)
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "Invalid webhook signature"
    assert problem in response.json()["message"]
    assert await all_rows(api, Message) == []
    assert openrouter.chat_requests == []


async def test_the_payload_is_validated_after_the_signature(api: Api) -> None:
    hook = await new_hook(api, mode="sync")
    response = await hook.post({"id": "", "text": "Hi", "extra": 1})
    assert response.status_code == 422, response.text
    fields = {d["field"] for d in response.json()["details"]}
    assert fields == {"id", "from", "extra"}
    not_json = await hook.post(b"{nope")
    assert not_json.status_code == 400
    assert await all_rows(api, Message) == []


async def test_a_duplicate_id_is_answered_once(api: Api, openrouter: FakeOpenRouter) -> None:
    hook = await new_hook(api, mode="sync")
    openrouter.reply("Only once.")
    payload = {"id": "dup-1", "from": "ada", "text": "Hi"}
    answers = [await hook.post(payload) for _ in range(5)]
    assert [a.status_code for a in answers] == [200] * 5
    assert len({json.dumps(a.json(), sort_keys=True) for a in answers}) == 1
    assert answers[0].json()["text"] == "Only once."
    assert await count_rows(api, Message) == 2
    assert len(openrouter.chat_requests) == 1
    assert await count_rows(api, UsageRecord) == 1


async def test_concurrent_duplicates_make_one_turn(api: Api, openrouter: FakeOpenRouter) -> None:
    hook = await new_hook(api, mode="sync")
    payload = {"id": "dup-2", "from": "ada", "text": "Hi"}
    answers = await asyncio.gather(*(hook.post(payload) for _ in range(5)))
    assert {a.status_code for a in answers} == {200}
    assert {a.json()["id"] for a in answers} == {answers[0].json()["id"]}
    assert await count_rows(api, Message) == 2
    assert len(openrouter.chat_requests) == 1


async def test_a_stopped_agent_refuses_with_its_state(api: Api, openrouter: FakeOpenRouter) -> None:
    draft = await new_hook(api, mode="sync", deploy=False)
    response = await draft.post({"id": "m-1", "from": "ada", "text": "Hi"})
    assert response.status_code == 409, response.text
    assert response.json()["status"] == "draft"
    assert "draft" in response.json()["error"]

    hook = await new_hook(api, mode="sync")
    stopped = await hook.dev.http.post(f"/api/v1/agents/{hook.agent['id']}/stop")
    assert stopped.status_code == 200, stopped.text
    response = await hook.post({"id": "m-2", "from": "ada", "text": "Hi"})
    assert response.status_code == 409
    assert response.json()["status"] == "stopped"
    assert await all_rows(api, Message) == []
    assert openrouter.chat_requests == []


async def test_unknown_deleted_and_other_channels_are_404(api: Api) -> None:
    hook = await new_hook(api, mode="sync")
    payload = {"id": "m-1", "from": "ada", "text": "Hi"}
    for channel_id in ("00000000-0000-0000-0000-000000000000", "nope", "x" * 80):
        response = await hook.post(payload, channel_id=channel_id)
        assert response.status_code == 404
        assert response.json() == {"error": "Channel not found"}
    # another tenant's channel: the signature is checked with THAT channel's secret
    other = await new_hook(api, mode="sync")
    response = await hook.post(payload, channel_id=other.id)
    assert response.status_code == 401
    # a deleted agent's channel
    deleted = await hook.dev.http.delete(f"/api/v1/agents/{hook.agent['id']}")
    assert deleted.status_code in (200, 204), deleted.text
    response = await hook.post(payload)
    assert response.status_code == 404
    assert await all_rows(api, Message) == []


async def test_a_non_webhook_channel_id_is_404(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, channels=[{"type": "webchat"}])
    [channel] = agent["channels"]
    response = await api.new_client().post(
        f"/hooks/webhook/{channel['id']}", json={"id": "1", "from": "a", "text": "b"}
    )
    assert response.status_code == 404


async def test_sync_timeout_sends_the_reply_to_the_callback(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The model fails (the turn is retried later), so the caller's wait runs out first.
    monkeypatch.setattr(webhook, "SYNC_WAIT_SECONDS", 0.05)
    hook = await new_hook(api, mode="sync", callback_url=receiver.url)
    openrouter.fail(502, times=3)
    response = await hook.post({"id": "slow-1", "from": "ada", "text": "Take your time"})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "accepted"
    [waiting] = await all_rows(api, Delivery)
    assert waiting.status == "waiting" and waiting.message_id == response.json()["message_id"]
    # a duplicate while waiting: 202 again, nothing new
    again = await hook.post({"id": "slow-1", "from": "ada", "text": "Take your time"})
    assert again.status_code == 202
    assert await count_rows(api, Delivery) == 1 and await count_rows(api, Message) == 1
    assert receiver.received() == []

    async def retry_scheduled() -> bool:  # the failed turn let go of the thread
        async with api.app.state.sessionmaker() as session:
            inbound = await session.get(Message, waiting.message_id)
            thread = await session.get(Thread, inbound.thread_id) if inbound else None
            return bool(inbound and inbound.attempts == 1 and thread and not thread.lease_owner)

    await until(retry_scheduled, "the turn's retry to be scheduled")
    async with api.app.state.sessionmaker() as session:  # the turn's retry comes due
        inbound = await session.get(Message, waiting.message_id)
        assert inbound is not None and inbound.status == "pending"
        inbound.next_attempt_at = inbound.created_at
        await session.commit()
    await sweep_registered(api.app.state.sessionmaker)
    [got] = await received(receiver, 1)
    body = verified(hook, got)
    assert body["reply_to"] == "slow-1" and body["text"] == "Take your time"
    delivery = await delivery_in(api, "delivered")
    assert got.headers["webhook-id"] == delivery.id == waiting.id
    # asked again once answered: the stored reply, no new turn, no new callback
    again = await hook.post({"id": "slow-1", "from": "ada", "text": "Take your time"})
    assert again.status_code == 200 and again.json()["id"] == body["message_id"]
    assert again.json()["text"] == "Take your time"
    await enqueue.drain()
    assert len(receiver.received()) == 1


# async --------------------------------------------------------------------------------------


async def test_async_mode_accepts_then_posts_one_signed_reply(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    openrouter.reply("Async hello")
    response = await hook.post({"id": "a-1", "from": "bob", "text": "Hi"})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "accepted"
    inbound_id = response.json()["message_id"]
    [got] = await received(receiver, 1)
    body = verified(hook, got)
    assert body["type"] == "message.reply"
    assert body["agent_id"] == hook.agent["id"] and body["channel_id"] == hook.id
    assert body["reply_to"] == "a-1" and body["text"] == "Async hello"
    delivery = await delivery_in(api, "delivered")
    assert delivery.message_id == inbound_id and delivery.attempts == 1
    assert delivery.last_status_code == 200
    # a duplicate is accepted again but sends nothing new
    again = await hook.post({"id": "a-1", "from": "bob", "text": "Hi"})
    assert again.status_code == 202 and again.json()["message_id"] == inbound_id
    assert (await sweep_registered(api.app.state.sessionmaker))["threads"] == 0
    await enqueue.drain()
    assert len(receiver.received()) == 1
    assert await count_rows(api, Delivery) == 1


async def test_a_503_is_retried_with_the_same_webhook_id(
    api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_jobs, "BACKOFF_BASE_SECONDS", 0.01)
    receiver.answer(503)
    receiver.answer(429, retry_after="0")
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    response = await hook.post({"id": "r-1", "from": "bob", "text": "retry me"})
    assert response.status_code == 202
    first, second, third = await received(receiver, 3)
    assert [r.answered for r in (first, second, third)] == [503, 429, 200]
    assert (
        first.headers["webhook-id"] == second.headers["webhook-id"] == third.headers["webhook-id"]
    )
    assert first.body == third.body
    for got in (first, second, third):
        assert verified(hook, got)["text"] == "retry me"
    delivery = await delivery_in(api, "delivered")
    assert delivery.attempts == 3 and delivery.id == first.headers["webhook-id"]


async def test_a_long_retry_is_left_to_the_sweeper(
    api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.answer(500, retry_after="120")
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    await hook.post({"id": "s-1", "from": "bob", "text": "later"})
    await received(receiver, 1)

    async def scheduled() -> bool:
        rows = await all_rows(api, Delivery)
        return bool(rows) and rows[0].last_status_code == 500

    await until(scheduled, "the retry to be scheduled")
    [row] = await all_rows(api, Delivery)
    assert row.status == "queued" and row.next_attempt_at is not None
    # not due yet: the sweeper leaves it alone
    assert await delivery_jobs.requeue_due(api.app.state.sessionmaker) == 0
    async with api.app.state.sessionmaker() as session:
        stored = await session.get(Delivery, row.id)
        assert stored is not None
        stored.next_attempt_at = stored.created_at  # time passes
        await session.commit()
    await sweep_registered(api.app.state.sessionmaker)
    second = (await received(receiver, 2))[1]
    assert second.headers["webhook-id"] == row.id
    assert (await delivery_in(api, "delivered")).attempts == 2


async def test_410_disables_and_other_4xx_fail_without_retry(api: Api, receiver: Receiver) -> None:
    receiver.answer(410)
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    await hook.post({"id": "g-1", "from": "bob", "text": "gone"})
    delivery = await delivery_in(api, "disabled")
    assert delivery.last_status_code == 410 and delivery.attempts == 1
    assert len(receiver.received()) == 1
    logs = (await hook.dev.http.get(f"/api/v1/agents/{hook.agent['id']}/logs")).json()["data"]
    assert any(e["event"] == "delivery.disabled" and "410" in e["message"] for e in logs)


async def test_a_400_fails_and_is_logged(api: Api, receiver: Receiver) -> None:
    receiver.answer(400)
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    await hook.post({"id": "b-1", "from": "bob", "text": "bad"})
    delivery = await delivery_in(api, "failed")
    assert delivery.last_status_code == 400 and delivery.attempts == 1
    assert (await sweep_registered(api.app.state.sessionmaker))["threads"] == 0
    await enqueue.drain()
    assert len(receiver.received()) == 1
    logs = (await hook.dev.http.get(f"/api/v1/agents/{hook.agent['id']}/logs")).json()["data"]
    failed = [e for e in logs if e["event"] == "delivery.failed"]
    assert failed and "400" in failed[0]["message"] and failed[0]["level"] == "error"


async def test_retries_stop_after_the_last_attempt(
    api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_jobs, "BACKOFF_BASE_SECONDS", 0.001)
    receiver.answer(502, times=delivery_jobs.MAX_ATTEMPTS + 2)
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    await hook.post({"id": "x-1", "from": "bob", "text": "never"})
    delivery = await delivery_in(api, "failed")
    assert delivery.attempts == delivery_jobs.MAX_ATTEMPTS
    assert len(receiver.received()) == delivery_jobs.MAX_ATTEMPTS
    assert "gave up" in (delivery.last_error or "")


async def test_callbacks_to_loopback_are_refused_without_the_setting(
    api: Api, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    rt = runtime()
    monkeypatch.setattr(
        rt, "settings", rt.settings.model_copy(update={"allow_private_urls": False})
    )
    await hook.post({"id": "l-1", "from": "bob", "text": "hi"})
    delivery = await delivery_in(api, "failed")
    assert "loopback" in (delivery.last_error or "")
    assert receiver.received() == []


async def test_the_sweeper_sends_a_delivery_left_waiting_after_its_turn_ended(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    """A turn's end queues its deliveries in the transaction that stores the reply; if that
    was missed (a listener's job lost), the sweeper finds the waiting row by its message."""
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    openrouter.reply("Answered")
    await hook.post({"id": "s-1", "from": "bob", "text": "Hi"})
    openrouter.fail(400, "Refused")
    await hook.post({"id": "s-2", "from": "bob", "text": "Again"})
    await received(receiver, 2)

    async def both_delivered() -> bool:
        rows = await all_rows(api, Delivery)
        return [row.status for row in rows] == ["delivered", "delivered"]

    await until(both_delivered, "both deliveries")
    async with api.app.state.sessionmaker() as session:  # as if neither had been queued
        await session.execute(
            update(Delivery).values(status="waiting", attempts=0, delivered_at=None)
        )
        await session.commit()
    sent = await sweep_registered(api.app.state.sessionmaker)
    assert sent["channel_deliveries"] == 2
    kinds = sorted(verified(hook, got)["type"] for got in await received(receiver, 4))
    assert kinds == ["message.failed", "message.failed", "message.reply", "message.reply"]
    assert (await sweep_registered(api.app.state.sessionmaker))["channel_deliveries"] == 0
