"""The WhatsApp channel against the fake Cloud API: Meta's subscription check and signatures,
messages answered once through the inbox, statuses, the 24-hour window, Graph's error codes,
long replies, registration on deploy, and the read receipt with its typing indicator."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from lunogen.channel import delivery as delivery_jobs
from lunogen.channel.contract import ChannelView, InboundRequest, Outgoing, ProviderContext
from lunogen.channel.models import ChannelContact, DeliveryReceipt
from lunogen.channel.text import split_text, utf16_length
from lunogen.channel.whatsapp import WHATSAPP, inbound
from lunogen.config import Settings
from lunogen.kit.http import SafeHttp
from lunogen.runtime.models import Message, Thread
from lunogen.worker import enqueue
from tests.agent.support import Dev, create_agent, new_dev
from tests.channel.support import all_rows, count_rows, delivery_in, until
from tests.fakes import whatsapp as fake_whatsapp
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.fakes.whatsapp import FakeWhatsApp, Number, whatsapp_settings
from tests.helpers import Api

whatsapp = fake_whatsapp.whatsapp
ADA = "15551234567"
BOB = "447700900123"


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter, whatsapp: FakeWhatsApp) -> dict[str, object]:
    return {
        **openrouter_settings(openrouter, sweep_interval_seconds=0),
        **whatsapp_settings(whatsapp),
    }


@dataclass
class Wa:
    """A deployed agent with a WhatsApp channel on a number of the fake, and Meta's side."""

    api: Api
    fake: FakeWhatsApp
    dev: Dev
    agent: dict[str, Any]
    id: str
    number: Number
    client: httpx.AsyncClient

    @property
    def url(self) -> str:
        return f"/hooks/whatsapp/{self.id}"

    async def deliver(self, envelope: dict[str, Any], *, signature: str = "valid") -> int:
        return await self.fake.deliver(
            self.number, envelope, self.url, signature=signature, client=self.client
        )

    async def statuses(self, wamid: str, statuses: list[str] | None = None) -> list[int]:
        return await self.fake.deliver_statuses(
            self.number, self.url, wamid, statuses, client=self.client
        )

    async def channel(self) -> dict[str, Any]:
        got = await self.dev.http.get(f"/api/v1/agents/{self.agent['id']}")
        [channel] = got.json()["channels"]
        return dict(channel)

    async def events(self, event: str) -> list[dict[str, Any]]:
        logs = await self.dev.http.get(f"/api/v1/agents/{self.agent['id']}/logs")
        return [e for e in logs.json()["data"] if e["event"] == event]

    async def notifications(self, kind: str) -> list[dict[str, Any]]:
        await enqueue.drain()
        page = (await self.dev.person.client.get("/api/v1/notifications")).json()
        return [n for n in page["data"] if n["kind"] == kind]

    async def sent(self, n: int) -> list[str]:
        async def enough() -> bool:
            return len(self.fake.sent(self.number)) >= n

        await until(enough, f"{n} message(s) sent to the fake")
        return self.fake.sent_texts(self.number)


async def new_wa(api: Api, fake: FakeWhatsApp, *, deploy: bool = True, **config: Any) -> Wa:
    number = fake.add_number(verified_name="Luno Shop")
    dev = await new_dev(api)
    channel = {
        "type": "whatsapp",
        "phone_number_id": number.phone_number_id,
        "access_token": number.access_token,
        "app_secret": number.app_secret,
        "verify_token": number.verify_token,
        "api_version": "v23.0",
        **config,
    }
    agent = await create_agent(dev, name="Shop helper", channels=[channel])
    if deploy:
        deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
        assert deployed.status_code == 200, deployed.text
    [created] = agent["channels"]
    return Wa(api, fake, dev, agent, created["id"], number, api.new_client())


def first_wamid(envelope: dict[str, Any]) -> str:
    return str(envelope["entry"][0]["changes"][0]["value"]["messages"][0]["id"])


async def message_texts(api: Api, thread_contact: str) -> list[tuple[str, str]]:
    """(role, text) of the contact's thread, in order."""
    keyring = api.app.state.keyring
    async with api.app.state.sessionmaker() as session:
        rows = (
            await session.execute(
                select(Message)
                .join(Thread, Thread.id == Message.thread_id)
                .where(Thread.contact == thread_contact)
                .order_by(Message.seq)
            )
        ).scalars()
        return [(m.role, keyring.decrypt(m.content)) for m in rows]


async def back_date(api: Api, *, hours: float) -> None:
    """Every inbound message and contact row as if the contact wrote `hours` ago."""
    then = datetime.now(UTC) - timedelta(hours=hours)
    async with api.app.state.sessionmaker() as session:
        await session.execute(update(Message).values(created_at=then, sent_at=then))
        await session.execute(update(ChannelContact).values(last_inbound_at=then))
        await session.commit()


async def model_called(openrouter: FakeOpenRouter, n: int = 1) -> None:
    async def called() -> bool:
        return len(openrouter.chat_requests) >= n

    await until(called, "the model call")


# Meta's side of the webhook -----------------------------------------------------------------


async def test_the_subscription_check_echoes_the_challenge_for_the_right_token(
    api: Api, whatsapp: FakeWhatsApp
) -> None:
    wa = await new_wa(api, whatsapp, deploy=False)  # set up in Meta before the first deploy
    ok = await whatsapp.verify_subscription(
        wa.url, wa.number.verify_token, "1158201444", client=wa.client
    )
    assert ok.status_code == 200 and ok.text == "1158201444"
    assert ok.headers["content-type"].startswith("text/plain")
    wrong = await whatsapp.verify_subscription(wa.url, "not-the-token", client=wa.client)
    assert wrong.status_code == 403 and "1158201444" not in wrong.text
    mode = await whatsapp.verify_subscription(
        wa.url, wa.number.verify_token, mode="unsubscribe", client=wa.client
    )
    assert mode.status_code == 403
    other = await new_wa(api, whatsapp, deploy=False)  # another channel's token
    crossed = await whatsapp.verify_subscription(
        other.url, wa.number.verify_token, client=wa.client
    )
    assert crossed.status_code == 403


@pytest.mark.parametrize("signature", ["invalid", "missing"])
async def test_an_unsigned_or_forged_delivery_is_refused_and_stores_nothing(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter, signature: str
) -> None:
    wa = await new_wa(api, whatsapp)
    envelope = whatsapp.text_message(wa.number, text="Hi", wa_id=ADA)
    assert await wa.deliver(envelope, signature=signature) == 401
    assert await count_rows(api, Message) == 0
    # a body changed after signing is refused too (the signature covers the raw bytes)
    body = fake_whatsapp.envelope_bytes(envelope)
    tampered = await wa.client.post(
        wa.url,
        content=body.replace(b"Hi", b"Ho"),
        headers={
            "X-Hub-Signature-256": fake_whatsapp.signature_for(body, wa.number.app_secret),
            "Content-Type": "application/json",
        },
    )
    assert tampered.status_code == 401
    assert tampered.json()["error"] == "Invalid signature"
    assert await all_rows(api, Message) == []
    assert openrouter.chat_requests == [] and whatsapp.sent(wa.number) == []
    # signed, but not JSON: 400; signed and irrelevant: 200 with nothing stored
    junk = b"{not json"
    signed = {"X-Hub-Signature-256": fake_whatsapp.signature_for(junk, wa.number.app_secret)}
    bad = await wa.client.post(wa.url, content=junk, headers=signed)
    assert bad.status_code == 400, bad.text
    irrelevant = {"object": "page", "entry": [{"id": "1", "changes": []}]}
    assert await wa.deliver(irrelevant) == 200
    assert await count_rows(api, Message) == 0


# Messages -----------------------------------------------------------------------------------


async def test_a_text_message_delivered_five_times_is_answered_once(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter
) -> None:
    wa = await new_wa(api, whatsapp)
    openrouter.reply("Hello Ada! How can I help?")
    envelope = whatsapp.text_message(wa.number, text="Hi there", wa_id=ADA, name="Ada L")
    assert [await wa.deliver(envelope) for _ in range(5)] == [200] * 5
    assert await wa.sent(1) == ["Hello Ada! How can I help?"]
    [out] = whatsapp.sent(wa.number)
    assert out.payload == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": ADA,
        "type": "text",
        "text": {"body": "Hello Ada! How can I help?"},
    }
    posts = [r for r in whatsapp.requests if r.path.endswith("/messages") and "to" in r.body]
    assert [r.headers["authorization"] for r in posts] == [f"Bearer {wa.number.access_token}"]
    assert posts[0].path == f"/v23.0/{wa.number.phone_number_id}/messages"
    assert openrouter.last_chat.messages[-1] == {"role": "user", "content": "Hi there"}
    delivery = await delivery_in(api, "delivered")
    [receipt] = await all_rows(api, DeliveryReceipt)
    assert receipt.external_id == out.wamid and receipt.delivery_id == delivery.id
    # five deliveries, one message and one reply, on the contact's wa_id thread
    assert await message_texts(api, ADA) == [
        ("user", "Hi there"),
        ("assistant", "Hello Ada! How can I help?"),
    ]
    [inbound_row] = [m for m in await all_rows(api, Message) if m.role == "user"]
    assert inbound_row.external_id == first_wamid(envelope)
    assert inbound_row.dedupe_key == f"whatsapp:{wa.id}:{first_wamid(envelope)}"
    [contact] = await all_rows(api, ChannelContact)
    assert (contact.contact, contact.name) == (ADA, "Ada L")
    threads = (await wa.dev.http.get(f"/api/v1/agents/{wa.agent['id']}/threads")).json()
    assert [(t["channel"], t["contact"]) for t in threads["data"]] == [(f"whatsapp:{wa.id}", ADA)]
    assert len(openrouter.chat_requests) == 1
    await enqueue.drain()
    assert len(whatsapp.sent(wa.number)) == 1


async def test_a_batched_delivery_is_stored_in_order_and_others_numbers_skipped(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter
) -> None:
    wa = await new_wa(api, whatsapp)
    elsewhere = whatsapp.add_number()
    batch = whatsapp.combine(
        whatsapp.text_messages(wa.number, ["a1", "a2"], wa_id=ADA, name="Ada"),
        whatsapp.text_messages(wa.number, ["b1", "b2"], wa_id=BOB, name="Bob"),
        whatsapp.text_message(elsewhere, text="not ours", wa_id=ADA),
    )
    batch["entry"][0]["changes"].append({"field": "account_update", "value": {"x": 1}})
    assert await wa.deliver(batch) == 200
    await wa.sent(4)
    assert whatsapp.sent_texts(wa.number, to=ADA) == ["a1", "a2"]  # the model echoes
    assert whatsapp.sent_texts(wa.number, to=BOB) == ["b1", "b2"]
    for contact, texts in ((ADA, ["a1", "a2"]), (BOB, ["b1", "b2"])):
        thread = [t for role, t in await message_texts(api, contact) if role == "user"]
        assert thread == texts
    assert await count_rows(api, Thread) == 2
    assert len([m for m in await all_rows(api, Message) if m.role == "user"]) == 4


async def test_an_image_gets_the_only_text_reply_without_a_model_call(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter
) -> None:
    wa = await new_wa(api, whatsapp)
    envelope = whatsapp.image_message(wa.number, wa_id=ADA, caption="my receipt")
    assert await wa.deliver(envelope) == 200
    [reply] = await wa.sent(1)
    assert "Shop helper" in reply and "only read text" in reply
    [(_, said), (_, answered)] = await message_texts(api, ADA)
    assert said == "[The contact sent an image: my receipt]" and answered == reply
    assert openrouter.chat_requests == []
    assert (await delivery_in(api, "delivered")).parts_sent == 1
    # a type the Cloud API itself cannot show us gets the same answer
    assert await wa.deliver(whatsapp.unsupported_message(wa.number, wa_id=BOB)) == 200
    assert (await wa.sent(2))[1] == reply
    assert [t for _, t in await message_texts(api, BOB)] == [
        "[The contact sent a message WhatsApp does not support]",
        reply,
    ]
    assert openrouter.chat_requests == []


async def test_statuses_out_of_order_end_read(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter
) -> None:
    wa = await new_wa(api, whatsapp)
    await wa.deliver(whatsapp.text_message(wa.number, text="Hi", wa_id=ADA))
    await wa.sent(1)
    await delivery_in(api, "delivered")
    [out] = whatsapp.sent(wa.number)
    assert await wa.statuses(out.wamid, ["read", "sent", "delivered"]) == [200, 200, 200]
    [receipt] = await all_rows(api, DeliveryReceipt)
    assert receipt.status == "read" and receipt.error is None
    # a failure after it was read changes nothing
    assert await wa.statuses(out.wamid, ["failed"]) == [200]
    [receipt] = await all_rows(api, DeliveryReceipt)
    assert receipt.status == "read"
    assert (await delivery_in(api, "delivered")).status == "delivered"


# The 24-hour window -------------------------------------------------------------------------


@pytest.mark.parametrize("template", [True, False])
async def test_a_reply_ready_25_hours_later_goes_as_the_template_or_is_held(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter, template: bool
) -> None:
    config: dict[str, Any] = (
        {"template_name": "reply_ready", "template_language": "en_GB"} if template else {}
    )
    wa = await new_wa(api, whatsapp, **config)
    whatsapp.approve_template(wa.number, "reply_ready", "en_GB")
    openrouter.stall()  # the reply is ready only once the window has closed
    await wa.deliver(whatsapp.text_message(wa.number, text="Can you check?", wa_id=ADA))
    await model_called(openrouter)
    await back_date(api, hours=25)
    whatsapp.set_last_inbound(wa.number, ADA, time.time() - 25 * 3600)
    openrouter.release_stalls()
    if template:
        await wa.sent(1)
        [out] = whatsapp.sent(wa.number)
        assert out.type == "template" and out.to == ADA
        assert out.payload["template"] == {"name": "reply_ready", "language": {"code": "en_GB"}}
        delivery = await delivery_in(api, "delivered")
        assert "template 'reply_ready' was sent instead" in (delivery.last_error or "")
        assert await wa.notifications("delivery.held") == []
        return
    delivery = await delivery_in(api, "held")
    assert "no approved template" in (delivery.last_error or "")
    assert whatsapp.sent(wa.number) == []
    [note] = await wa.notifications("delivery.held")
    assert ADA in note["body"] and "Shop helper" in note["body"]
    [logged] = await wa.events("delivery.held")
    assert logged["level"] == "warning"
    # the reply is kept in the conversation
    assert [role for role, _ in await message_texts(api, ADA)] == ["user", "assistant"]


async def test_a_message_redelivered_after_an_outage_is_timed_by_when_it_was_written(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter
) -> None:
    """Meta retries for days: a message written 25 hours ago and delivered now is outside the
    window, though it reached us a moment ago."""
    wa = await new_wa(api, whatsapp)
    openrouter.reply("Sorry for the wait")
    written = time.time() - 25 * 3600
    whatsapp.set_last_inbound(wa.number, ADA, written)
    await wa.deliver(whatsapp.text_message(wa.number, text="Hello?", wa_id=ADA, timestamp=written))
    delivery = await delivery_in(api, "held")
    assert "no approved template" in (delivery.last_error or "")
    assert whatsapp.sent(wa.number) == []


async def test_131047_in_a_failed_status_holds_the_delivery_and_tells_the_owner_once(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter
) -> None:
    wa = await new_wa(api, whatsapp)
    openrouter.stall()
    await wa.deliver(whatsapp.text_message(wa.number, text="Hi", wa_id=ADA))
    await model_called(openrouter)
    # Meta's clock says the window closed (ours does not): the send is accepted, then fails
    whatsapp.set_last_inbound(wa.number, ADA, time.time() - 25 * 3600)
    openrouter.release_stalls()
    await wa.sent(1)
    [out] = whatsapp.sent(wa.number)
    assert out.error == 131047
    await delivery_in(api, "delivered")
    assert await wa.statuses(out.wamid) == [200]  # `failed`, error 131047
    delivery = await delivery_in(api, "held")
    assert "Re-engagement message" in (delivery.last_error or "")
    [receipt] = await all_rows(api, DeliveryReceipt)
    assert receipt.status == "failed"
    await wa.statuses(out.wamid, ["failed"])  # Meta repeats itself
    [note] = await wa.notifications("delivery.held")
    assert ADA in note["body"] and "template_name" in note["body"]
    assert len(await wa.events("delivery.held")) == 1


# Graph's errors -----------------------------------------------------------------------------


async def test_a_throttled_send_is_retried_and_delivered_once(
    api: Api,
    whatsapp: FakeWhatsApp,
    openrouter: FakeOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery_jobs, "BACKOFF_BASE_SECONDS", 0.01)
    wa = await new_wa(api, whatsapp)
    whatsapp.throttle(wa.number, 130429)  # HTTP 400: told apart by its code
    openrouter.reply("Sorry for the wait.")
    await wa.deliver(whatsapp.text_message(wa.number, text="Hello?", wa_id=ADA))
    delivery = await delivery_in(api, "delivered")
    assert whatsapp.sent_texts(wa.number) == ["Sorry for the wait."]
    assert delivery.attempts == 2
    refused = [r for r in whatsapp.requests if r.status == 400]
    assert len(refused) == 1 and refused[0].body["text"] == {"body": "Sorry for the wait."}


async def test_an_expired_token_disables_the_channel_and_tells_the_owner(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter
) -> None:
    wa = await new_wa(api, whatsapp)
    whatsapp.expire_token(wa.number.access_token)
    await wa.deliver(whatsapp.text_message(wa.number, text="Hi", wa_id=ADA))
    delivery = await delivery_in(api, "disabled")
    assert delivery.last_status_code == 401 and "code 190" in (delivery.last_error or "")
    channel = await wa.channel()
    assert channel["disabled_at"] is not None
    assert "access token" in channel["disabled_reason"]
    assert wa.number.access_token not in channel["disabled_reason"]
    [note] = await wa.notifications("channel.disabled")
    assert "Shop helper" in note["body"]
    attempts = len(whatsapp.requests)
    # later messages are taken (200, so that Meta does not retry), logged and not answered
    assert await wa.deliver(whatsapp.text_message(wa.number, text="Anyone?", wa_id=ADA)) == 200
    await enqueue.drain()
    assert len(whatsapp.requests) == attempts
    assert len(openrouter.chat_requests) == 1
    assert await wa.events("inbound.dropped")


async def test_a_9000_character_reply_goes_as_three_messages(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter
) -> None:
    wa = await new_wa(api, whatsapp)
    paragraphs = [f"Paragraph {i}. " + "word " * 598 for i in range(3)]
    reply = "\n\n".join(p.strip() for p in paragraphs)
    assert 8_900 < len(reply) < 9_100
    openrouter.reply(reply)
    await wa.deliver(whatsapp.text_message(wa.number, text="Tell me everything", wa_id=ADA))
    delivery = await delivery_in(api, "delivered")
    texts = whatsapp.sent_texts(wa.number)
    assert len(texts) == 3 and all(len(t) <= 4096 for t in texts)
    assert " ".join(" ".join(texts).split()) == " ".join(reply.split())
    assert [t[:12] for t in texts] == ["Paragraph 0.", "Paragraph 1.", "Paragraph 2."]
    assert delivery.parts_sent == 3
    receipts = sorted(await all_rows(api, DeliveryReceipt), key=lambda r: r.part)
    assert [r.external_id for r in receipts] == [o.wamid for o in whatsapp.sent(wa.number)]


# Deploy, and the turn in progress -----------------------------------------------------------


async def test_deploy_checks_the_token_and_number(api: Api, whatsapp: FakeWhatsApp) -> None:
    wa = await new_wa(api, whatsapp)
    channel = await wa.channel()
    assert channel["registered_at"] is not None
    assert channel["registration"] == {
        "display_phone_number": "+1 555-0100",
        "verified_name": "Luno Shop",
        "quality_rating": "GREEN",
        "webhook_url": f"http://testserver/hooks/whatsapp/{wa.id}",
    }
    [check] = [r for r in whatsapp.requests if r.method == "GET"]
    assert check.path == f"/v23.0/{wa.number.phone_number_id}"
    assert check.query == {"fields": "display_phone_number,verified_name,quality_rating"}

    expired = await new_wa(api, whatsapp, deploy=False)
    whatsapp.expire_token(expired.number.access_token)
    refused = await expired.dev.http.post(f"/api/v1/agents/{expired.agent['id']}/deploy")
    assert refused.status_code == 502, refused.text
    error = refused.json()["error"]
    assert error.startswith("Deploy failed: whatsapp: Error validating access token")
    assert error.endswith("(code 190)") and expired.number.access_token not in error
    agent = (await expired.dev.http.get(f"/api/v1/agents/{expired.agent['id']}")).json()
    assert agent["status"] != "running"


async def test_the_message_is_marked_read_with_typing_while_the_turn_runs(
    api: Api, whatsapp: FakeWhatsApp, openrouter: FakeOpenRouter
) -> None:
    wa = await new_wa(api, whatsapp)
    openrouter.stall()
    envelope = whatsapp.text_message(wa.number, text="Are you there?", wa_id=ADA)
    await wa.deliver(envelope)
    wamid = first_wamid(envelope)

    async def typing() -> bool:
        return whatsapp.typing_indicators(wa.number) == [wamid]

    await until(typing, "the typing indicator")
    assert whatsapp.read_receipts(wa.number) == [wamid]
    assert whatsapp.sent(wa.number) == []  # shown before the reply, while the model works
    openrouter.release_stalls()
    assert await wa.sent(1) == ["Are you there?"]
    [read] = [r for r in whatsapp.requests if r.body and r.body.get("status") == "read"]
    assert read.body == {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": wamid,
        "typing_indicator": {"type": "text"},
    }


# The type on its own (no database) ----------------------------------------------------------


def _context(fake: FakeWhatsApp) -> ProviderContext:
    settings = Settings(whatsapp_api_base=fake.api_base, allow_private_urls=True)
    return ProviderContext(settings=settings, http=SafeHttp(allow_private=True, timeout=10))


def _view(number: Number, **config: Any) -> ChannelView:
    return ChannelView(
        id="ch-1",
        agent_id="ag-1",
        agent_name="Shop helper",
        type="whatsapp",
        config={"phone_number_id": number.phone_number_id, "api_version": "v23.0", **config},
        secrets={
            "access_token": number.access_token,
            "app_secret": number.app_secret,
            "verify_token": number.verify_token,
        },
        registration={},
    )


def _outgoing(text: str, *, parts_sent: int = 0, to: str = ADA, kind: str = "reply") -> Outgoing:
    now = datetime.now(UTC)
    return Outgoing(
        delivery_id="d-1",
        kind=kind,  # type: ignore[arg-type]
        text=text,
        contact=to,
        agent_id="ag-1",
        inbound_id="m-1",
        inbound_reference=None,
        inbound_payload_id=None,
        contact_wrote_at=now - timedelta(minutes=5),
        reply_id="r-1",
        created_at=now,
        parts_sent=parts_sent,
    )


async def test_send_resumes_after_the_parts_already_sent(whatsapp: FakeWhatsApp) -> None:
    number = whatsapp.add_number()
    whatsapp.set_last_inbound(number, ADA, time.time())
    text = "\n\n".join(["a" * 4000, "b" * 4000, "c" * 100])
    outcome = await WHATSAPP.send(_context(whatsapp), _view(number), _outgoing(text, parts_sent=1))
    assert outcome.result == "delivered" and outcome.parts_sent == 3
    assert whatsapp.sent_texts(number) == ["b" * 4000, "c" * 100]
    assert outcome.external_ids == tuple(o.wamid for o in whatsapp.sent(number))


async def test_graph_error_codes_decide_the_outcome(whatsapp: FakeWhatsApp) -> None:
    number = whatsapp.add_number()
    ctx, view = _context(whatsapp), _view(number)
    whatsapp.throttle(number, 131056, to=ADA, status=429)
    pair = await WHATSAPP.send(ctx, view, _outgoing("Hi"))
    assert pair.result == "retry" and (pair.retry_after or 0) >= 6
    assert "131056" in (pair.error or "")
    whatsapp.fail_next(503)
    assert (await WHATSAPP.send(ctx, view, _outgoing("Hi"))).result == "retry"
    bad = await WHATSAPP.send(ctx, view, _outgoing("Hi", to="12"))  # not a WhatsApp number
    assert bad.result == "failed" and "code 100" in (bad.error or "")
    whatsapp.expire_token(number.access_token)
    gone = await WHATSAPP.send(ctx, view, _outgoing("Hi"))
    assert gone.result == "disable_channel" and "code 190" in (gone.error or "")
    assert number.access_token not in (gone.error or "")


async def test_a_failure_notice_is_a_polite_apology(whatsapp: FakeWhatsApp) -> None:
    number = whatsapp.add_number()
    internal = "openrouter: 502 All requested models are down"
    outcome = await WHATSAPP.send(
        _context(whatsapp), _view(number), _outgoing(internal, kind="failure")
    )
    assert outcome.result == "delivered"
    [notice] = whatsapp.sent_texts(number)
    assert notice.startswith("Sorry, Shop helper could not answer") and "502" not in notice


async def test_a_template_refused_by_whatsapp_holds_the_reply(whatsapp: FakeWhatsApp) -> None:
    number = whatsapp.add_number()  # the template is not approved
    late = _outgoing("Here is your answer")
    late = Outgoing(**{**late.__dict__, "contact_wrote_at": datetime.now(UTC) - timedelta(days=2)})
    view = _view(number, template_name="reply_ready", template_language="en_US")
    outcome = await WHATSAPP.send(_context(whatsapp), view, late)
    assert outcome.result == "held" and "132001" in (outcome.error or "")
    assert whatsapp.sent(number) == []


def test_envelopes_name_what_was_sent() -> None:
    view = ChannelView("ch-1", "ag-1", "Shop helper", "whatsapp", {"phone_number_id": "1"}, {}, {})
    meta = {"display_phone_number": "15550100", "phone_number_id": "1"}
    messages = [
        {"from": ADA, "id": "wamid.1", "timestamp": "1765000000", "type": "audio",
         "audio": {"id": "77", "mime_type": "audio/ogg", "voice": True}},
        {"from": ADA, "id": "wamid.2", "timestamp": "1765000001", "type": "location",
         "location": {"latitude": 52.52, "longitude": 13.4, "name": "Cafe"}},
        {"from": ADA, "id": "wamid.3", "timestamp": "1765000002", "type": "reaction",
         "reaction": {"message_id": "wamid.x", "emoji": "👍"}},
        {"from_user_id": "US.123", "id": "wamid.4", "timestamp": "1765000003", "type": "text",
         "text": {"body": "from a username"}},
        {"from": ADA, "id": "wamid.5", "timestamp": "1765000004", "type": "text",
         "group_id": "120363", "text": {"body": "in a group"}},
    ]  # fmt: skip
    statuses = [
        {"id": "wamid.9", "status": "failed", "timestamp": "1765000004",
         "errors": [{"code": 131047, "title": "Re-engagement message",
                     "error_data": {"details": "More than 24 hours"}}]},
        {"id": "wamid.9", "status": "deleted", "timestamp": "1765000005"},
    ]  # fmt: skip
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "w",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "metadata": meta,
                            "contacts": [
                                {"wa_id": ADA, "user_id": "US.9", "profile": {"name": "Ada"}},
                                {"user_id": "US.123", "profile": {"name": "Anon"}},
                            ],
                            "messages": messages,
                            "statuses": statuses,
                        },
                    }
                ],
            }
        ],
    }
    request = fake_whatsapp.envelope_bytes(body)
    parsed = inbound.parse(InboundRequest("POST", {}, {}, request), view)
    voice, place, username = parsed.messages
    assert voice.text == "[The contact sent a voice message]" and voice.contact == ADA
    assert voice.attachments[0].provider_id == "77" and voice.instant_reply
    assert voice.sent_at == datetime.fromtimestamp(1765000000, UTC)
    assert place.text == "[The contact shared a location: Cafe (52.52, 13.4)]"
    assert (username.contact, username.text, username.instant_reply) == (
        "US.123",
        "from a username",
        None,
    )
    assert username.contact_name == "Anon"
    [failed] = parsed.statuses
    assert (failed.status, failed.error_code) == ("failed", 131047)
    assert failed.error == "Re-engagement message: More than 24 hours"
    assert len(parsed.ignored) == 3  # the reaction, the group message, the `deleted` status


def test_split_text_keeps_characters_whole() -> None:
    flags = "🇩🇪" * 2100  # two code points, four UTF-16 units each
    parts = split_text(flags)
    assert "".join(parts) == flags and all(utf16_length(p) <= 4096 for p in parts)
    assert all(len(p) % 2 == 0 for p in parts)  # no flag cut in half
    family = "👩\u200d👩\u200d👧" * 700
    parts = split_text(family)
    assert "".join(parts) == family and all(p.startswith("👩") for p in parts)
    accents = "e\u0301" * 3000
    assert all(not p.startswith("\u0301") for p in split_text(accents))
    words = "word " * 2000
    assert all(not p.endswith("wor") for p in split_text(words))
    assert split_text("  \n ") == [] and split_text("short") == ["short"]
