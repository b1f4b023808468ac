"""The Telegram channel against the fake Bot API over real HTTP: the webhook set on deploy and
removed on stop, secret-checked updates answered once, groups, /start, long replies, rate limits,
blocked bots, typing and drafts while a turn runs, and the access policies."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from lunogen.channel import delivery as delivery_jobs
from lunogen.channel import telegram as telegram_channel
from lunogen.channel.access import refusal_text
from lunogen.channel.contract import (
    AnsweringTurn,
    ChannelView,
    InboundRejected,
    InboundRequest,
    Outgoing,
)
from lunogen.channel.models import ChannelContact, ChannelUnregistration, Delivery, PairingCode
from lunogen.channel.registration import provider_context
from lunogen.channel.telegram.channel import FAILURE_NOTICE
from lunogen.channel.telegram.updates import ONLY_TEXT, parse_update
from lunogen.channel.text import split_text, utf16_length
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow
from lunogen.runtime import events as turn_events
from lunogen.runtime.models import Message
from lunogen.worker import enqueue
from tests.agent.support import Dev, create_agent, new_dev
from tests.channel.support import all_rows, count_rows, until
from tests.fakes import telegram as fake_telegram
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api

FakeTelegram = fake_telegram.FakeTelegram
telegram = fake_telegram.telegram
SECRET_HEADER = fake_telegram.SECRET_HEADER


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter, telegram: FakeTelegram) -> dict[str, object]:
    return openrouter_settings(
        openrouter, sweep_interval_seconds=0, **fake_telegram.telegram_settings(telegram)
    )


@dataclass
class TgAgent:
    dev: Dev
    agent: dict[str, Any]
    channel_id: str
    bot: fake_telegram.Bot

    @property
    def agent_id(self) -> str:
        return str(self.agent["id"])


async def new_agent(
    api: Api,
    telegram: FakeTelegram,
    *,
    deploy: bool = True,
    access: dict[str, Any] | None = None,
    **config: Any,
) -> TgAgent:
    bot = telegram.add_bot()
    dev = await new_dev(api)
    channel = {
        "type": "telegram",
        "bot_token": bot.token,
        "access": access or {"policy": "open"},
        **config,
    }
    agent = await create_agent(dev, name="Luno", channels=[channel])
    [created] = agent["channels"]
    found = TgAgent(dev, agent, created["id"], bot)
    if deploy:
        deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
        assert deployed.status_code == 200, deployed.text
    return found


async def sent(telegram: FakeTelegram, chat_id: int, n: int) -> list[str]:
    async def enough() -> bool:
        await enqueue.drain()
        return len(telegram.sent_messages(chat_id)) >= n

    await until(enough, f"{n} message(s) to chat {chat_id}")
    return telegram.sent_messages(chat_id)


async def settled(api: Api) -> None:
    """Every turn and delivery started so far has ended."""

    async def quiet() -> bool:
        rows = await all_rows(api, Delivery)
        pending = await all_rows(api, Message)
        return all(r.status not in ("waiting", "queued") for r in rows) and all(
            m.status not in ("pending", "running") for m in pending
        )

    await until(quiet, "turns and deliveries to end")


# Registration ------------------------------------------------------------------------------


async def test_deploy_sets_the_webhook_with_a_secret(api: Api, telegram: FakeTelegram) -> None:
    tg = await new_agent(api, telegram)
    assert [c.method for c in telegram.calls(token=tg.bot.token)] == ["getMe", "setWebhook"]
    hook = telegram.webhook(tg.bot.token)
    assert hook is not None
    assert hook.url == f"http://testserver/hooks/telegram/{tg.channel_id}"
    assert hook.allowed_updates == ["message"] and hook.drop_pending_updates is False
    assert hook.secret_token and len(hook.secret_token) >= 32
    shown = (await tg.dev.http.get(f"/api/v1/agents/{tg.agent_id}")).json()
    [channel] = shown["channels"]
    assert channel["registered_at"] is not None
    assert channel["registration"]["username"] == "lunobot"
    assert channel["registration"]["id"] == tg.bot.bot_id
    # neither the token nor the webhook secret is ever shown
    assert tg.bot.token not in json.dumps(shown) and hook.secret_token not in json.dumps(shown)
    # a second deploy (after a stop) makes a new secret, and the old one stops working
    assert (await tg.dev.http.post(f"/api/v1/agents/{tg.agent_id}/stop")).status_code == 200
    await enqueue.drain()
    assert (await tg.dev.http.post(f"/api/v1/agents/{tg.agent_id}/deploy")).status_code == 200
    again = telegram.webhook(tg.bot.token)
    assert again is not None and again.secret_token != hook.secret_token
    update = telegram.private_text(tg.bot, text="Hi")
    stale = await telegram.deliver(
        tg.bot, update, client=api.new_client(), secret_token=hook.secret_token
    )
    assert stale == 401


async def test_a_revoked_token_fails_the_deploy(api: Api, telegram: FakeTelegram) -> None:
    tg = await new_agent(api, telegram, deploy=False)
    telegram.revoke(tg.bot.token)
    response = await tg.dev.http.post(f"/api/v1/agents/{tg.agent_id}/deploy")
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error.startswith("Deploy failed: telegram: Unauthorized"), error
    assert "@BotFather" in error and tg.bot.token not in response.text
    agent = (await tg.dev.http.get(f"/api/v1/agents/{tg.agent_id}")).json()
    assert agent["status"] == "error"
    assert telegram.webhook(tg.bot.token) is None


async def test_a_webhook_telegram_refuses_fails_the_deploy(
    api: Api, telegram: FakeTelegram
) -> None:
    tg = await new_agent(api, telegram, deploy=False)
    telegram.https_only = True  # as the real service: LunoGen's public URL here is http://
    response = await tg.dev.http.post(f"/api/v1/agents/{tg.agent_id}/deploy")
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error.startswith("Deploy failed: telegram: setWebhook: Bad Request: bad webhook")
    assert "https://" in error
    agent = (await tg.dev.http.get(f"/api/v1/agents/{tg.agent_id}")).json()
    assert agent["status"] == "error" and agent["channels"][0]["registered_at"] is None


async def _unregistered(api: Api) -> ChannelUnregistration:
    async def done() -> bool:
        rows = await all_rows(api, ChannelUnregistration)
        return bool(rows) and rows[0].status in ("done", "failed")

    await until(done, "the unregistration")
    [row] = await all_rows(api, ChannelUnregistration)
    return row


async def test_stop_removes_the_webhook(api: Api, telegram: FakeTelegram) -> None:
    tg = await new_agent(api, telegram)
    assert (await tg.dev.http.post(f"/api/v1/agents/{tg.agent_id}/stop")).status_code == 200
    assert (await _unregistered(api)).status == "done"
    assert telegram.webhook(tg.bot.token) is None
    methods = [c.method for c in telegram.calls(token=tg.bot.token)]
    assert methods[-2:] == ["getWebhookInfo", "deleteWebhook"]


async def test_stop_leaves_a_webhook_that_is_no_longer_ours(
    api: Api, telegram: FakeTelegram
) -> None:
    tg = await new_agent(api, telegram)
    async with httpx.AsyncClient() as http:  # the bot was given to another service since
        taken = await http.post(
            telegram.url(tg.bot.token, "setWebhook"), json={"url": "https://elsewhere.example/x"}
        )
    assert taken.json()["ok"] is True
    assert (await tg.dev.http.post(f"/api/v1/agents/{tg.agent_id}/stop")).status_code == 200
    assert (await _unregistered(api)).status == "done"
    hook = telegram.webhook(tg.bot.token)
    assert hook is not None and hook.url == "https://elsewhere.example/x"
    assert telegram.calls("deleteWebhook") == []


async def test_unregistering_retries_while_telegram_is_down(
    api: Api, telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lunogen.channel import registration

    monkeypatch.setattr(registration, "backoff_seconds", lambda attempt: 0.01)
    tg = await new_agent(api, telegram)
    telegram.fail_next("getWebhookInfo", status=502, times=2)
    assert (await tg.dev.http.post(f"/api/v1/agents/{tg.agent_id}/stop")).status_code == 200
    row = await _unregistered(api)
    assert row.status == "done" and row.attempts == 3
    assert telegram.webhook(tg.bot.token) is None
    assert tg.bot.token not in (row.last_error or "")


# Inbound ------------------------------------------------------------------------------------


async def test_a_message_is_answered_once(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram)
    openrouter.reply("Hello Ada!")
    update = telegram.private_text(tg.bot, text="Hi there")
    chat = update["message"]["chat"]["id"]
    client = api.new_client()
    statuses = [await telegram.deliver(tg.bot, update, client=client) for _ in range(5)]
    assert statuses == [200] * 5
    assert await sent(telegram, chat, 1) == ["Hello Ada!"]
    await settled(api)
    assert telegram.sent_messages(chat) == ["Hello Ada!"]
    assert len(openrouter.chat_requests) == 1
    assert openrouter.last_chat.messages[-1] == {"role": "user", "content": "Hi there"}
    [inbound, _reply] = sorted(await all_rows(api, Message), key=lambda m: m.seq)
    assert inbound.external_id == str(update["message"]["message_id"])
    assert inbound.sent_at is not None  # Telegram's own time for it
    assert int(inbound.sent_at.timestamp()) == update["message"]["date"]
    [row] = await all_rows(api, Delivery)
    assert row.status == "delivered" and row.parts_sent == 1
    # in a private chat the reply does not quote the message
    [shown] = telegram.sent_message_objects(chat)
    assert "reply_to_message" not in shown
    threads = (await tg.dev.http.get(f"/api/v1/agents/{tg.agent_id}/threads")).json()["data"]
    assert [(t["channel"], t["contact"]) for t in threads] == [
        (f"telegram:{tg.channel_id}", str(chat))
    ]


@pytest.mark.parametrize("secret", [None, "wrong-secret", ""])
async def test_a_wrong_or_missing_secret_is_refused(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter, secret: str | None
) -> None:
    tg = await new_agent(api, telegram)
    update = telegram.private_text(tg.bot, text="Hi")
    status = await telegram.deliver(tg.bot, update, client=api.new_client(), secret_token=secret)
    assert status == 401
    assert await count_rows(api, Message) == 0
    assert openrouter.chat_requests == [] and telegram.calls("sendMessage") == []


async def test_malformed_updates_are_refused(api: Api, telegram: FakeTelegram) -> None:
    tg = await new_agent(api, telegram)
    hook = telegram.webhook(tg.bot.token)
    assert hook is not None and hook.secret_token
    client = api.new_client()
    for body in (b"{nope", b"[]", b'{"message": {}}'):
        response = await client.post(
            hook.url, content=body, headers={SECRET_HEADER: hook.secret_token}
        )
        assert response.status_code == 400, body
    assert await count_rows(api, Message) == 0


async def test_start_is_greeted_without_the_model(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram, greeting="Welcome to Luno!")
    update = telegram.private_text(tg.bot, text="/start")
    chat = update["message"]["chat"]["id"]
    assert await telegram.deliver(tg.bot, update, client=api.new_client()) == 200
    assert await sent(telegram, chat, 1) == ["Welcome to Luno!"]
    # the default greeting names the agent; a deep-link payload is fine
    other = await new_agent(api, telegram)
    linked = telegram.private_text(other.bot, text="/start campaign42")
    chat2 = linked["message"]["chat"]["id"]
    assert await telegram.deliver(other.bot, linked, client=api.new_client()) == 200
    [hello] = await sent(telegram, chat2, 1)
    assert "Luno" in hello
    await settled(api)
    assert openrouter.chat_requests == []


async def test_a_photo_without_caption_is_answered_that_only_text_is_read(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram)
    update = telegram.photo(tg.bot)
    chat = update["message"]["chat"]["id"]
    assert await telegram.deliver(tg.bot, update, client=api.new_client()) == 200
    assert await sent(telegram, chat, 1) == [ONLY_TEXT]
    # with a caption, the caption is answered (the photo named in the text)
    openrouter.echo()
    captioned = telegram.photo(tg.bot, chat_id=chat, caption="What is this?")
    assert await telegram.deliver(tg.bot, captioned, client=api.new_client()) == 200
    assert (await sent(telegram, chat, 2))[1] == "[photo] What is this?"


async def test_groups_answer_mentions_and_replies_only(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram)
    group = -1001234567890
    client = api.new_client()
    quiet = telegram.group_text(tg.bot, text="Just chatting", chat_id=group)
    assert await telegram.deliver(tg.bot, quiet, client=client) == 200
    await settled(api)
    assert await count_rows(api, Message) == 0 and telegram.sent_messages(group) == []

    openrouter.reply("Sunny.")
    asked = telegram.group_text(tg.bot, text="what's the weather?", chat_id=group, mention=True)
    assert await telegram.deliver(tg.bot, asked, client=client) == 200
    assert await sent(telegram, group, 1) == ["Sunny."]
    assert openrouter.last_chat.messages[-1]["content"] == "Ada: what's the weather?"
    [answer] = telegram.sent_message_objects(group)
    assert answer["reply_to_message"]["message_id"] == asked["message"]["message_id"]

    openrouter.reply("You're welcome.")
    thanks = telegram.group_text(tg.bot, text="thanks!", chat_id=group, reply_to_bot=True)
    assert await telegram.deliver(tg.bot, thanks, client=client) == 200
    assert (await sent(telegram, group, 2))[1] == "You're welcome."


async def test_groups_off_takes_no_group_message(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram, groups="off")
    asked = telegram.group_text(tg.bot, text="hello?", chat_id=-4242, mention=True)
    assert await telegram.deliver(tg.bot, asked, client=api.new_client()) == 200
    await settled(api)
    assert await count_rows(api, Message) == 0 and openrouter.chat_requests == []


# Outbound -----------------------------------------------------------------------------------


def _long_reply() -> str:
    paragraphs = [f"Paragraph {i}: " + " ".join(["lorem"] * 80) for i in range(19)]
    text = "\n\n".join(paragraphs)
    assert 8_500 < len(text) < 9_500
    return text


async def test_a_long_reply_goes_out_in_parts_in_order(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram)
    text = _long_reply()
    openrouter.reply(text)
    update = telegram.private_text(tg.bot, text="Tell me everything")
    chat = update["message"]["chat"]["id"]
    assert await telegram.deliver(tg.bot, update, client=api.new_client()) == 200
    parts = await sent(telegram, chat, 3)
    await settled(api)
    assert len(telegram.sent_messages(chat)) == 3
    assert all(len(p) <= 4096 for p in parts)
    assert parts[0].startswith("Paragraph 0:") and parts[2].endswith("lorem")
    assert "\n\n".join(parts) == text  # cut at paragraph breaks, nothing lost
    [row] = await all_rows(api, Delivery)
    assert row.status == "delivered" and row.parts_sent == 3


async def test_a_rate_limit_is_waited_out(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_jobs, "BACKOFF_BASE_SECONDS", 0.01)
    tg = await new_agent(api, telegram)
    openrouter.reply("Patience pays.")
    update = telegram.private_text(tg.bot, text="Hi")
    chat = update["message"]["chat"]["id"]
    telegram.fail_next(
        "sendMessage", status=429, description="Too Many Requests: retry after 1", retry_after=1
    )
    assert await telegram.deliver(tg.bot, update, client=api.new_client()) == 200
    assert await sent(telegram, chat, 1) == ["Patience pays."]
    await settled(api)
    assert [c.status for c in telegram.calls("sendMessage")] == [429, 200]
    [row] = await all_rows(api, Delivery)
    assert row.status == "delivered" and row.attempts == 2


async def test_a_blocked_bot_stops_sending_until_the_contact_writes_again(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram)
    openrouter.reply("First.")
    openrouter.stall(30)  # the second turn ends once the first reply has met the block
    user = telegram.new_user()
    chat = user["id"]
    client = api.new_client()
    first = telegram.private_text(tg.bot, text="One", user=user)
    second = telegram.private_text(tg.bot, text="Two", user=user)
    telegram.block(chat)
    assert await telegram.deliver(tg.bot, first, client=client) == 200
    assert await telegram.deliver(tg.bot, second, client=client) == 200

    async def first_blocked() -> bool:
        return any(r.status == "blocked" for r in await all_rows(api, Delivery))

    await until(first_blocked, "the first reply to meet the block")
    openrouter.release_stalls()
    await settled(api)
    rows = await all_rows(api, Delivery)
    assert sorted(r.status for r in rows) == ["blocked", "blocked"]
    assert [c.status for c in telegram.calls("sendMessage")] == [403]  # the second: not tried
    contacts = (
        await tg.dev.http.get(f"/api/v1/agents/{tg.agent_id}/channels/{tg.channel_id}/contacts")
    ).json()
    assert [(c["contact"], c["blocked_at"] is not None) for c in contacts] == [(str(chat), True)]
    # they unblock the bot and write again: answered
    telegram.unblock(chat)
    openrouter.reply("Welcome back.")
    again = telegram.private_text(tg.bot, text="Three", user=user)
    assert await telegram.deliver(tg.bot, again, client=client) == 200
    assert await sent(telegram, chat, 1) == ["Welcome back."]


async def test_a_revoked_token_disables_the_channel(
    api: Api,
    telegram: FakeTelegram,
    openrouter: FakeOpenRouter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tg = await new_agent(api, telegram)
    openrouter.reply("Never seen.")
    update = telegram.private_text(tg.bot, text="Hi")
    telegram.revoke(tg.bot.token)
    assert await telegram.deliver(tg.bot, update, client=api.new_client()) == 200
    await settled(api)
    [row] = await all_rows(api, Delivery)
    assert row.status == "disabled" and "@BotFather" in (row.last_error or "")
    [channel] = (await tg.dev.http.get(f"/api/v1/agents/{tg.agent_id}")).json()["channels"]
    assert channel["disabled_at"] is not None
    notes = (await tg.dev.person.client.get("/api/v1/notifications")).json()["data"]
    assert "channel.disabled" in [n["kind"] for n in notes]
    # the token is in every Bot API URL: it is in no log line, the owner's log or a note
    logs = (await tg.dev.http.get(f"/api/v1/agents/{tg.agent_id}/logs")).text
    captured = capsys.readouterr()
    for text in (captured.out, captured.err, logs, json.dumps(notes), row.last_error or ""):
        assert tg.bot.token not in text
    assert "delivery.disabled" in logs


async def test_a_failed_turn_sends_a_polite_apology(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram)
    openrouter.fail(400, "Invalid request: secret internal detail")
    update = telegram.private_text(tg.bot, text="Hi")
    chat = update["message"]["chat"]["id"]
    assert await telegram.deliver(tg.bot, update, client=api.new_client()) == 200
    assert await sent(telegram, chat, 1) == [FAILURE_NOTICE]


async def _view_and_ctx(api: Api, tg: TgAgent) -> tuple[ChannelView, Any]:
    from lunogen.agent.models import AgentChannel
    from lunogen.channel.service import view_of

    keyring = api.app.state.keyring
    async with api.app.state.sessionmaker() as session:
        row = await session.get(AgentChannel, tg.channel_id)
        assert row is not None
        view = view_of(row, agent_name="Luno", keyring=keyring)
    return view, provider_context(Effects(settings=api.app.state.settings, keyring=keyring))


async def test_a_send_resumes_after_the_parts_already_sent(
    api: Api, telegram: FakeTelegram
) -> None:
    tg = await new_agent(api, telegram)
    view, ctx = await _view_and_ctx(api, tg)
    chat = 5_550_001
    telegram.add_chat(tg.bot, chat)
    text = _long_reply()
    outgoing = Outgoing(
        delivery_id="d-1",
        kind="reply",
        text=text,
        contact=str(chat),
        agent_id=tg.agent_id,
        inbound_id="m-1",
        inbound_reference="7",
        inbound_payload_id=None,
        contact_wrote_at=utcnow(),
        reply_id="r-1",
        created_at=utcnow(),
        parts_sent=1,
    )
    telegram.rate_limit(chat, retry_after=2)
    limited = await telegram_channel.TELEGRAM.send(ctx, view, outgoing)
    assert (limited.result, limited.retry_after, limited.parts_sent) == ("retry", 2, 1)
    done = await telegram_channel.TELEGRAM.send(ctx, view, outgoing)
    assert done.result == "delivered" and done.parts_sent == 3 and len(done.external_ids) == 2
    assert telegram.sent_messages(chat) == split_text(text)[1:]
    # a token nobody can read in an error: the network failure names the method only
    unreachable = provider_context(
        Effects(
            settings=api.app.state.settings.model_copy(
                update={"telegram_api_base": "http://127.0.0.1:9"}
            ),
            keyring=api.app.state.keyring,
        )
    )
    failed = await telegram_channel.TELEGRAM.send(unreachable, view, outgoing)
    assert failed.result in ("retry", "failed")
    assert tg.bot.token not in (failed.error or "") and "sendMessage" in (failed.error or "")


# While the agent answers ---------------------------------------------------------------------


async def test_typing_is_shown_while_the_turn_runs(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram, stream_drafts=False)
    openrouter.stall(30)  # the model "thinks" until the chat showed it
    update = telegram.private_text(tg.bot, text="Think")
    chat = update["message"]["chat"]["id"]
    assert await telegram.deliver(tg.bot, update, client=api.new_client()) == 200

    async def typing() -> bool:
        return telegram.chat_actions(chat) == ["typing"]

    await until(typing, "the typing action")
    assert telegram.sent_messages(chat) == []  # shown while the turn runs, before the reply
    openrouter.release_stalls()
    assert await sent(telegram, chat, 1) == ["Think"]
    assert telegram.drafts(chat) == []  # drafts are off for this channel


async def test_a_streamed_reply_is_previewed_as_a_draft(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    tg = await new_agent(api, telegram)
    openrouter.reply("Streaming replies feel alive and quick to read.")
    update = telegram.private_text(tg.bot, text="Stream please")
    chat = update["message"]["chat"]["id"]

    # The model writes on only once the first piece was shown (as a slower, real one would).
    for cls in (turn_events.TurnEvents, turn_events.RedisTurnEvents):

        async def slowly(
            self: Any, message_id: str, event: str, data: dict[str, Any], _o: Any = cls.publish
        ) -> None:
            await _o(self, message_id, event, data)
            deadline = time.monotonic() + 5
            while event == "delta" and not telegram.drafts(chat) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

        monkeypatch.setattr(cls, "publish", slowly)
    assert await telegram.deliver(tg.bot, update, client=api.new_client()) == 200
    assert await sent(telegram, chat, 1) == ["Streaming replies feel alive and quick to read."]
    drafts = telegram.drafts(chat)
    assert drafts, "no draft was shown"
    assert len({d.draft_id for d in drafts}) == 1 and drafts[0].draft_id != 0
    assert drafts[0].text == "Streaming"
    reply = "Streaming replies feel alive and quick to read."
    assert all(reply.startswith(d.text) for d in drafts)


async def test_drafts_are_throttled_and_stop_with_the_turn(
    api: Api, telegram: FakeTelegram
) -> None:
    tg = await new_agent(api, telegram)
    view, ctx = await _view_and_ctx(api, tg)
    chat = 5_550_002
    telegram.add_chat(tg.bot, chat)
    events = turn_events.TurnEvents()
    turn = AnsweringTurn("m-9", str(chat), "3", streams=True, events=events)
    started = time.monotonic()
    async with telegram_channel.TELEGRAM.answering(ctx, view, turn):
        for i in range(12):  # a word every 0.1 s
            await events.publish("m-9", "delta", {"text": f"w{i} "})
            await asyncio.sleep(0.1)
    assert time.monotonic() - started < 3  # leaving the turn does not wait on Telegram
    drafts = telegram.drafts(chat)
    assert 1 <= len(drafts) <= 3, [d.text for d in drafts]  # not one per word
    assert drafts[0].text == "w0" and len({d.draft_id for d in drafts}) == 1
    assert telegram.chat_actions(chat)[:1] == ["typing"]
    calls = len(telegram.calls())
    await asyncio.sleep(0.3)
    assert len(telegram.calls()) == calls  # nothing more once the turn is over


# Access policies ----------------------------------------------------------------------------


async def _refused_notes(dev: Dev) -> list[dict[str, Any]]:
    notes = (await dev.person.client.get("/api/v1/notifications")).json()["data"]
    return [n for n in notes if n["kind"] == "channel.contact_refused"]


async def test_pairing_refuses_once_then_pairs_with_a_code(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram, access={"policy": "pairing"})
    user = telegram.new_user(first_name="Grace")
    chat = user["id"]
    client = api.new_client()
    for text in ("Hello?", "Anyone?"):
        update = telegram.private_text(tg.bot, text=text, user=user)
        assert await telegram.deliver(tg.bot, update, client=client) == 200
    await settled(api)
    [refusal] = await sent(telegram, chat, 1)
    assert "pairing code" in refusal and "Luno" in refusal
    assert openrouter.chat_requests == []
    [note] = await _refused_notes(tg.dev)
    assert "Grace" in note["body"]
    # an expired code does nothing
    codes = f"/api/v1/agents/{tg.agent_id}/channels/{tg.channel_id}/pairing-codes"
    old = (await tg.dev.http.post(codes)).json()["code"]
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            sa.update(PairingCode).values(expires_at=utcnow() - timedelta(minutes=1))
        )
        await session.commit()
    stale = telegram.private_text(tg.bot, text=old, user=user)
    assert await telegram.deliver(tg.bot, stale, client=client) == 200
    await settled(api)
    assert len(telegram.sent_messages(chat)) == 1
    # a valid one pairs, and the agent answers from then on
    made = await tg.dev.http.post(codes)
    assert made.status_code == 201, made.text
    code = made.json()["code"]
    paired = telegram.private_text(tg.bot, text=code.lower(), user=user)
    assert await telegram.deliver(tg.bot, paired, client=client) == 200
    assert "paired" in (await sent(telegram, chat, 2))[1]
    openrouter.reply("Nice to meet you, Grace.")
    hello = telegram.private_text(tg.bot, text="Hi!", user=user)
    assert await telegram.deliver(tg.bot, hello, client=client) == 200
    assert (await sent(telegram, chat, 3))[2] == "Nice to meet you, Grace."
    async with api.app.state.sessionmaker() as session:
        contact = (await session.execute(sa.select(ChannelContact))).scalar_one()
        assert contact.paired_at is not None and contact.name == "Grace"


async def test_a_start_link_with_a_code_pairs(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram, access={"policy": "pairing"})
    codes = f"/api/v1/agents/{tg.agent_id}/channels/{tg.channel_id}/pairing-codes"
    code = (await tg.dev.http.post(codes)).json()["code"]
    update = telegram.private_text(tg.bot, text=f"/start {code}")
    chat = update["message"]["chat"]["id"]
    assert await telegram.deliver(tg.bot, update, client=api.new_client()) == 200
    [answer] = await sent(telegram, chat, 1)
    assert "paired" in answer
    assert openrouter.chat_requests == []


async def test_allowlist_lets_in_only_the_listed(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    friend, stranger = telegram.new_user(), telegram.new_user(first_name="Eve")
    tg = await new_agent(
        api, telegram, access={"policy": "allowlist", "allowlist": [str(friend["id"])]}
    )
    client = api.new_client()
    openrouter.reply("Hi friend.")
    ok = telegram.private_text(tg.bot, text="Hi", user=friend)
    assert await telegram.deliver(tg.bot, ok, client=client) == 200
    assert await sent(telegram, friend["id"], 1) == ["Hi friend."]
    no = telegram.private_text(tg.bot, text="Hi", user=stranger)
    assert await telegram.deliver(tg.bot, no, client=client) == 200
    view, _ = await _view_and_ctx(api, tg)
    assert await sent(telegram, stranger["id"], 1) == [refusal_text(view)]
    assert len(openrouter.chat_requests) == 1
    assert len(await _refused_notes(tg.dev)) == 1


async def test_a_pairing_can_be_revoked_and_does_not_pass_an_allowlist(
    api: Api, telegram: FakeTelegram, openrouter: FakeOpenRouter
) -> None:
    tg = await new_agent(api, telegram, access={"policy": "pairing"})
    user = telegram.new_user(first_name="Grace")
    chat = user["id"]
    client = api.new_client()
    codes = f"/api/v1/agents/{tg.agent_id}/channels/{tg.channel_id}/pairing-codes"
    code = (await tg.dev.http.post(codes)).json()["code"]
    pairing = telegram.private_text(tg.bot, text=code, user=user)
    assert await telegram.deliver(tg.bot, pairing, client=client) == 200
    assert "paired" in (await sent(telegram, chat, 1))[0]
    # switched to an allowlist that does not list them: their pairing no longer lets them in
    agent = (await tg.dev.http.get(f"/api/v1/agents/{tg.agent_id}")).json()
    [channel] = agent["channels"]
    listed = {"type": "telegram", "id": channel["id"], "access": {"policy": "allowlist"}}
    patched = await tg.dev.http.patch(f"/api/v1/agents/{tg.agent_id}", json={"channels": [listed]})
    assert patched.status_code == 200, patched.text
    later = telegram.private_text(tg.bot, text="Still there?", user=user)
    assert await telegram.deliver(tg.bot, later, client=client) == 200
    await settled(api)
    assert openrouter.chat_requests == []
    # back to pairing, and the owner revokes the pairing: refused (once) again
    back = {**listed, "access": {"policy": "pairing"}}
    assert (
        await tg.dev.http.patch(f"/api/v1/agents/{tg.agent_id}", json={"channels": [back]})
    ).status_code == 200
    unpair = f"/api/v1/agents/{tg.agent_id}/channels/{tg.channel_id}/contacts/{chat}/pairing"
    assert (await tg.dev.http.delete(unpair)).status_code == 204
    assert (await tg.dev.http.delete(unpair)).status_code == 404
    again = telegram.private_text(tg.bot, text="Hello?", user=user)
    assert await telegram.deliver(tg.bot, again, client=client) == 200
    await settled(api)
    assert openrouter.chat_requests == []
    assert "pairing code" in telegram.sent_messages(chat)[-1]
    other = await new_dev(api)
    elsewhere = await other.http.delete(unpair)
    assert elsewhere.status_code == 404  # another tenant's channel is not found


# Units: parsing and cutting -------------------------------------------------------------------


def _view(**config: Any) -> ChannelView:
    return ChannelView(
        id="ch-1",
        agent_id="a-1",
        agent_name="Luno",
        type="telegram",
        config={"groups": "mention", "stream_drafts": True, **config},
        secrets={"bot_token": "1:x", "webhook_secret": "s"},
        registration={"username": "lunobot", "id": 42},
    )


def _request(update: dict[str, Any] | bytes) -> bytes:
    return update if isinstance(update, bytes) else json.dumps(update).encode()


def test_parse_skips_what_is_not_for_the_agent() -> None:
    base = {"message_id": 3, "date": 1_700_000_000, "from": {"id": 7, "first_name": "Ada"}}
    private = {"id": 7, "type": "private", "first_name": "Ada"}
    edited = {"update_id": 1, "edited_message": {**base, "chat": private, "text": "fix"}}
    reaction = {"update_id": 2, "message_reaction": {}}
    service = {"update_id": 3, "message": {**base, "chat": private, "pinned_message": {}}}
    bot = {
        "update_id": 4,
        "message": {**base, "chat": private, "text": "x", "from": {"id": 9, "is_bot": True}},
    }
    other = {"update_id": 5, "message": {**base, "chat": private, "text": "/start@otherbot"}}
    for update, why in (
        (edited, "edited"),
        (reaction, "message_reaction"),
        (service, "service"),
        (bot, "bot"),
        (other, "@otherbot"),
    ):
        parsed = parse_update(_request(update), _view())
        assert parsed.messages == [] and why in parsed.ignored[0]
    good = {"update_id": 6, "message": {**base, "chat": private, "text": "Hi"}}
    [message] = parse_update(_request(good), _view()).messages
    assert (message.contact, message.text, message.contact_name) == ("7", "Hi", "Ada")
    assert message.dedupe_key == "telegram:ch-1:6" and message.reference == "3"
    assert message.stream is True and message.sent_at is not None
    assert parse_update(_request(good), _view(stream_drafts=False)).messages[0].stream is False
    far = {"update_id": 9, "message": {**base, "chat": private, "text": "Hi", "date": 10**20}}
    assert parse_update(_request(far), _view()).messages[0].sent_at is None
    anonymous = {
        **base,
        "chat": {"id": -5, "type": "supergroup", "title": "Team"},
        "from": {"id": 1087968824, "is_bot": True, "first_name": "Group"},
        "sender_chat": {"id": -5, "type": "supergroup", "title": "Team"},
        "text": "hello all",
    }
    [admin] = parse_update(
        _request({"update_id": 7, "message": anonymous}), _view(groups="all")
    ).messages
    assert admin.text == "Team: hello all"
    forwarded = {"update_id": 8, "message": {**anonymous, "is_automatic_forward": True}}
    assert parse_update(_request(forwarded), _view(groups="all")).messages == []
    with pytest.raises(InboundRejected) as bad:
        parse_update(b'{"update_id": true, "message": {}}', _view())
    assert bad.value.status == 400


def test_group_text_names_the_speaker_and_keeps_the_topic() -> None:
    group = {"id": -100, "type": "supergroup", "title": "Team"}
    message = {
        "message_id": 11,
        "date": 1_700_000_000,
        "from": {"id": 7, "first_name": "Ada", "last_name": "Lovelace"},
        "chat": group,
        "text": "@LunoBot, status?",
        "entities": [{"type": "mention", "offset": 0, "length": 8}],
        "is_topic_message": True,
        "message_thread_id": 5,
    }
    [found] = parse_update(_request({"update_id": 1, "message": message}), _view()).messages
    assert found.text == "Ada Lovelace: status?" and found.contact == "-100"
    assert found.contact_name == "Team" and found.reference == "11/5" and found.stream is False
    everyone = {**message, "text": "no mention", "entities": []}
    assert parse_update(_request({"update_id": 2, "message": everyone}), _view()).messages == []
    [taken] = parse_update(
        _request({"update_id": 3, "message": everyone}), _view(groups="all")
    ).messages
    assert taken.text == "Ada Lovelace: no mention"


def test_verify_compares_the_secret() -> None:
    kind = telegram_channel.TELEGRAM
    for headers in ({}, {SECRET_HEADER: "t"}, {SECRET_HEADER: "ś"}):
        with pytest.raises(InboundRejected) as refused:
            kind.verify(InboundRequest("POST", headers, {}, b"{}"), _view())
        assert refused.value.status == 401
    kind.verify(InboundRequest("POST", {SECRET_HEADER: "s"}, {}, b"{}"), _view())


def test_split_message_keeps_every_character_within_the_limit() -> None:
    assert split_text("") == [] and split_text("  \n ") == [] and split_text("hi") == ["hi"]
    word = "x" * 9000
    assert [len(p) for p in split_text(word)] == [4096, 4096, 808]
    emoji = "👍🏽" * 3000  # two code points, four UTF-16 units each
    parts = split_text(emoji)
    assert "".join(parts) == emoji and all(utf16_length(p) <= 4096 for p in parts)
    assert all(p.startswith("👍") for p in parts)  # no tone modifier cut from its hand
    lines = "\n".join(f"line {i} " + "y" * 50 for i in range(200))
    cut = split_text(lines)
    assert all(p.startswith("line ") for p in cut) and "\n".join(cut) == lines
