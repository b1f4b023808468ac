"""Delivery bookkeeping the providers' timing can upset: statuses that arrive before the receipt
they are about, provider message ids that repeat across chats, and attempts that keep failing
after their claim."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from lunogen.agent.models import AgentChannel
from lunogen.channel import contract, delivery
from lunogen.channel.contract import (
    ChannelType,
    ChannelView,
    Outgoing,
    ProviderContext,
    SendOutcome,
    StatusUpdate,
    channel_type,
)
from lunogen.channel.models import Delivery, DeliveryReceipt, EarlyStatus
from lunogen.channel.service import view_of
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow
from lunogen.worker.sweeps import sweep_registered
from tests.channel.receiver import Receiver
from tests.channel.support import Hook, all_rows, delivery_in, new_hook
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api


async def _delivered_hook(api: Api, openrouter: FakeOpenRouter, receiver: Receiver) -> Hook:
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    openrouter.reply("Hi")
    await hook.post({"id": "m-1", "from": "ada", "text": "Hello"})
    await delivery_in(api, "delivered")
    return hook


def _effects(api: Api) -> Effects:
    return Effects(settings=api.app.state.settings, keyring=api.app.state.keyring)


async def _store(api: Api, hook: Hook, outcome: SendOutcome) -> None:
    """Store `outcome` as the result of an attempt of the hook's delivery (made queued again)."""
    async with api.app.state.sessionmaker() as session:
        row = (await session.execute(select(Delivery))).scalar_one()
        row.status = "queued"
        channel = await session.get(AgentChannel, hook.id)
        assert channel is not None
        view = view_of(channel, agent_name="Support bot", keyring=api.app.state.keyring)
        outgoing = Outgoing(
            delivery_id=row.id,
            kind="reply",
            text="Hi",
            contact="ada",
            agent_id=row.agent_id,
            inbound_id=row.message_id,
            inbound_reference=None,
            inbound_payload_id="m-1",
            contact_wrote_at=utcnow(),
            reply_id=None,
            created_at=utcnow(),
        )
        webhook = channel_type("webhook")
        assert webhook is not None
        attempt = delivery._Attempt(webhook, view, outgoing)
        await delivery._store_outcome(session, _effects(api), row, attempt, outcome)
        await session.commit()


async def test_a_status_before_its_receipt_is_applied_when_the_receipt_is_written(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await _delivered_hook(api, openrouter, receiver)
    async with api.app.state.sessionmaker() as session:
        news = [StatusUpdate("wamid.early", "delivered"), StatusUpdate("wamid.early", "read")]
        assert await delivery.apply_statuses(session, channel_id=hook.id, statuses=news) == 0
        await session.commit()
    assert {row.status for row in await all_rows(api, EarlyStatus)} == {"delivered", "read"}

    await _store(api, hook, SendOutcome("delivered", parts_sent=1, external_ids=("wamid.early",)))
    [receipt] = await all_rows(api, DeliveryReceipt)
    assert (receipt.external_id, receipt.status) == ("wamid.early", "read")
    assert await all_rows(api, EarlyStatus) == []


async def test_news_no_receipt_ever_matches_is_dropped_after_a_day(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    hook = await _delivered_hook(api, openrouter, receiver)
    async with api.app.state.sessionmaker() as session:
        await delivery.apply_statuses(
            session, channel_id=hook.id, statuses=[StatusUpdate("wamid.stray", "sent")]
        )
        await session.commit()
    await sweep_registered(api.app.state.sessionmaker)
    assert len(await all_rows(api, EarlyStatus)) == 1  # kept a while
    async with api.app.state.sessionmaker() as session:
        await session.execute(update(EarlyStatus).values(created_at=utcnow() - timedelta(days=2)))
        await session.commit()
    await sweep_registered(api.app.state.sessionmaker)
    assert await all_rows(api, EarlyStatus) == []


async def test_the_same_provider_id_in_two_deliveries_never_fails_the_outcome(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver
) -> None:
    """Telegram message ids repeat across chats: receipts are unique per delivery and part,
    never per provider id, so storing an outcome cannot fail after the send."""
    first = await _delivered_hook(api, openrouter, receiver)
    await _store(api, first, SendOutcome("delivered", parts_sent=1, external_ids=("7",)))
    async with api.app.state.sessionmaker() as session:
        row = (await session.execute(select(Delivery))).scalar_one()
        twin = DeliveryReceipt(
            id="00000000-0000-0000-0000-000000000001",
            delivery_id=row.id,
            channel_id=first.id,
            external_id="7",
            part=1,
            status="sent",
        )
        session.add(twin)
        await session.commit()
    async with api.app.state.sessionmaker() as session:
        await delivery.apply_statuses(
            session, channel_id=first.id, statuses=[StatusUpdate("7", "delivered")]
        )
        await session.commit()
    assert {r.status for r in await all_rows(api, DeliveryReceipt)} == {"delivered"}


class _Exploding(ChannelType):
    name = "webhook"
    pushes_replies = True

    async def send(
        self, ctx: ProviderContext, channel: ChannelView, outgoing: Outgoing
    ) -> SendOutcome:
        raise RuntimeError("a bug in the sender")


async def test_an_attempt_that_keeps_crashing_ends_failed_at_the_cap(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "BACKOFF_BASE_SECONDS", 0.001)
    monkeypatch.setattr(delivery, "MAX_ATTEMPTS", 3)
    monkeypatch.setitem(contract._types, "webhook", _Exploding())
    hook = await new_hook(api, mode="async", callback_url=receiver.url)
    openrouter.reply("Hi")
    await hook.post({"id": "m-1", "from": "ada", "text": "Hello"})
    row = await delivery_in(api, "failed")
    assert row.attempts == 3 and "a bug in the sender" in (row.last_error or "")
    assert receiver.received() == []


async def test_a_claim_left_by_a_dead_attempt_is_retried_and_capped(
    api: Api, openrouter: FakeOpenRouter, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that died after claiming leaves the row claimed: the sweeper takes it again
    once the claim runs out, and an attempt past the cap ends it `failed` without a send."""
    monkeypatch.setattr(delivery, "MAX_ATTEMPTS", 2)
    hook = await _delivered_hook(api, openrouter, receiver)
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(Delivery).values(
                status="queued", attempts=2, next_attempt_at=utcnow() - timedelta(seconds=1)
            )
        )
        await session.commit()
    sent: Any = await sweep_registered(api.app.state.sessionmaker)
    assert sent["channel_deliveries"] == 1
    row = await delivery_in(api, "failed")
    assert "attempts" in (row.last_error or "")
    assert len(receiver.received()) == 1  # only the first, successful one
    assert hook.id
