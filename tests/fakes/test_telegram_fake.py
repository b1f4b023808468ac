"""The fake Telegram Bot API, over real HTTP: wire shapes, errors, injection, webhook delivery."""

from __future__ import annotations

import hmac
import json
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.fakes import telegram as fake_telegram
from tests.fakes.server import loopback_socket, serve_in_thread
from tests.fakes.telegram import Bot, FakeTelegram, parse_text, telegram_settings

telegram = fake_telegram.telegram


@dataclass
class Receiver:
    """A webhook endpoint that checks Telegram's secret header in constant time."""

    port: int = 0
    secret: str | None = None
    received: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)
    script: deque[int] = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/telegram/chan_1"

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        given = request.headers.get("x-telegram-bot-api-secret-token", "")
        with self.lock:
            if self.secret is not None and not hmac.compare_digest(given, self.secret):
                status = 401
            else:
                status = self.script.popleft() if self.script else 200
            self.received.append(({k.lower(): v for k, v in request.headers.items()}, body, status))
        return Response(status_code=status)


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    sock, port = loopback_socket()
    receiver = Receiver(port=port)
    app = Starlette(routes=[Route("/hooks/telegram/chan_1", receiver.hook, methods=["POST"])])
    with serve_in_thread(app, sock, name="telegram webhook receiver"):
        yield receiver


@pytest.fixture
def receiver(receiver_server: Receiver) -> Iterator[Receiver]:
    receiver_server.secret = None
    receiver_server.received.clear()
    receiver_server.script.clear()
    yield receiver_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def call(
    http: httpx.AsyncClient, fake: FakeTelegram, bot: Bot, method: str, **params: Any
) -> httpx.Response:
    return await http.post(fake.url(bot.token, method), json=params)


# -- tokens, paths, encodings -------------------------------------------------------------------


async def test_get_me_answers_the_bot_user_in_every_encoding(
    telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    bot = telegram.add_bot(username="lunobot")
    number, _, secret = bot.token.partition(":")
    assert number.isdigit() and len(secret) == 35 and secret.startswith("AA")

    for response in (
        await http.get(telegram.url(bot.token, "getMe")),
        await http.post(telegram.url(bot.token, "getMe"), json={}),
        await http.post(telegram.url(bot.token, "getme"), data={}),  # names are case-insensitive
    ):
        assert response.status_code == 200
        body = response.json()
        assert body["ok"] is True
        assert body["result"]["id"] == bot.bot_id == int(number)
        assert body["result"]["is_bot"] is True
        assert body["result"]["username"] == "lunobot"
    assert [c.method for c in telegram.calls(token=bot.token)] == ["getMe"] * 3


async def test_unknown_revoked_and_malformed_tokens_answer_like_telegram(
    telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    bot = telegram.add_bot()
    unauthorized = {"ok": False, "error_code": 401, "description": "Unauthorized"}
    not_found = {"ok": False, "error_code": 404, "description": "Not Found"}

    response = await http.get(telegram.url("123456:AAnotARealTokenAtAll", "getMe"))
    assert (response.status_code, response.json()) == (401, unauthorized)
    response = await http.get(f"{telegram.root_url}/botnot-a-token/getMe")
    assert (response.status_code, response.json()) == (404, not_found)
    response = await http.get(f"{telegram.root_url}/getMe")
    assert response.status_code == 404
    response = await http.get(telegram.url(bot.token, "noSuchMethod"))
    assert (response.status_code, response.json()) == (404, not_found)

    telegram.revoke(bot.token)
    response = await http.get(telegram.url(bot.token, "getMe"))
    assert (response.status_code, response.json()) == (401, unauthorized)


# -- webhooks -------------------------------------------------------------------------------------


async def test_set_webhook_validates_and_get_webhook_info_never_shows_the_secret(
    telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    bot = telegram.add_bot()
    url = "https://lunogen.test/hooks/telegram/chan_1"

    for bad, description in (
        ({"secret_token": "has space"}, "Bad Request: secret token contains unallowed characters"),
        ({"secret_token": "x" * 257}, "Bad Request: secret token must be 1-256 characters long"),
        ({"max_connections": 0}, "Bad Request: max_connections must be between 1 and 100"),
        ({"allowed_updates": "message"}, "Bad Request: can't parse allowed updates JSON object"),
    ):
        response = await call(http, telegram, bot, "setWebhook", url=url, **bad)
        assert response.status_code == 400
        assert response.json() == {"ok": False, "error_code": 400, "description": description}
    assert telegram.webhook(bot.token) is None

    response = await call(
        http,
        telegram,
        bot,
        "setWebhook",
        url=url,
        secret_token="s3cr3t_-Token",
        allowed_updates=["message", "edited_message"],
        drop_pending_updates=True,
    )
    assert response.json() == {"ok": True, "result": True, "description": "Webhook was set"}
    hook = telegram.webhook(bot.token)
    assert hook is not None
    assert (hook.url, hook.secret_token, hook.allowed_updates, hook.max_connections) == (
        url,
        "s3cr3t_-Token",
        ["message", "edited_message"],
        40,
    )
    assert hook.drop_pending_updates is True

    # Without allowed_updates the previous list is kept, as the docs say.
    form = {"url": url, "secret_token": "s3cr3t_-Token", "max_connections": "10"}
    response = await http.post(telegram.url(bot.token, "setWebhook"), data=form)
    assert response.json()["description"] == "Webhook is already set"
    hook = telegram.webhook(bot.token)
    assert hook is not None and hook.allowed_updates == ["message", "edited_message"]

    info = (await call(http, telegram, bot, "getWebhookInfo")).json()["result"]
    assert info["url"] == url
    assert info["pending_update_count"] == 0
    assert info["max_connections"] == 10
    assert info["allowed_updates"] == ["message", "edited_message"]
    assert "secret_token" not in json.dumps(info)

    telegram.https_only = True  # what the real service refuses
    for refused, description in (
        ("http://lunogen.test/hook", "An HTTPS URL must be provided for webhook"),
        (
            "https://lunogen.test:8000/hook",
            "Webhook can be set up only on ports 80, 88, 443 or 8443",
        ),
    ):
        response = await call(http, telegram, bot, "setWebhook", url=refused)
        assert response.json()["description"] == f"Bad Request: bad webhook: {description}"
    hook = telegram.webhook(bot.token)
    assert hook is not None and hook.url == url

    response = await call(http, telegram, bot, "deleteWebhook", drop_pending_updates=True)
    assert response.json() == {"ok": True, "result": True, "description": "Webhook was deleted"}
    response = await call(http, telegram, bot, "deleteWebhook")
    assert response.json()["description"] == "Webhook is already deleted"
    info = (await call(http, telegram, bot, "getWebhookInfo")).json()["result"]
    assert info == {"url": "", "has_custom_certificate": False, "pending_update_count": 0}


# -- sending --------------------------------------------------------------------------------------


async def test_send_message_returns_a_message_with_ids_counting_per_chat(
    telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    bot = telegram.add_bot()
    response = await call(http, telegram, bot, "sendMessage", chat_id=42, text="hi")
    assert response.json() == {
        "ok": False,
        "error_code": 400,
        "description": "Bad Request: chat not found",
    }

    update = telegram.private_text(bot, chat_id=42, text="/start")
    assert update["message"]["message_id"] == 1
    first = (await call(http, telegram, bot, "sendMessage", chat_id=42, text="Hello!")).json()
    second = await http.post(
        telegram.url(bot.token, "sendMessage"), data={"chat_id": "42", "text": "Again"}
    )
    assert first["ok"] is True
    message = first["result"]
    assert message["message_id"] == 2
    assert second.json()["result"]["message_id"] == 3
    assert message["from"] == bot.user
    assert message["chat"] == {
        "id": 42,
        "type": "private",
        "first_name": "Ada",
        "username": "ada_lovelace",
    }
    assert message["text"] == "Hello!"
    assert isinstance(message["date"], int)
    query = await http.get(
        telegram.url(bot.token, "sendMessage"), params={"chat_id": "42", "text": "By query"}
    )
    assert query.json()["result"]["message_id"] == 4
    assert telegram.sent_messages(42) == ["Hello!", "Again", "By query"]
    other = telegram.private_text(bot, chat_id=43)
    assert other["message"]["message_id"] == 1  # another chat, its own sequence


async def test_text_length_is_counted_after_entities_parsing(
    telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    bot = telegram.add_bot()
    telegram.private_text(bot, chat_id=7)

    ok = await call(http, telegram, bot, "sendMessage", chat_id=7, text="é" * 4096)
    assert ok.json()["ok"] is True
    too_long = await call(http, telegram, bot, "sendMessage", chat_id=7, text="a" * 4097)
    assert too_long.status_code == 400
    assert too_long.json()["description"] == "Bad Request: message is too long"
    markup = "<b>" + "a" * 4096 + "</b>"  # 4,103 characters, 4,096 once parsed
    html = await call(http, telegram, bot, "sendMessage", chat_id=7, text=markup, parse_mode="HTML")
    assert html.json()["result"]["entities"] == [{"type": "bold", "offset": 0, "length": 4096}]

    for text in ("", "   ", "<b></b>"):
        empty = await call(
            http, telegram, bot, "sendMessage", chat_id=7, text=text, parse_mode="HTML"
        )
        assert empty.json()["description"] == "Bad Request: message text is empty"
    missing = await call(http, telegram, bot, "sendMessage", chat_id=7)
    assert missing.json()["description"] == "Bad Request: message text is empty"


async def test_parse_modes_refuse_bad_markup_like_telegram(
    telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    bot = telegram.add_bot()
    telegram.private_text(bot, chat_id=7)

    response = await call(
        http, telegram, bot, "sendMessage", chat_id=7, text="Total: 1.5", parse_mode="MarkdownV2"
    )
    assert response.status_code == 400
    assert response.json()["description"] == (
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with "
        "the preceding '\\'"
    )
    response = await call(
        http, telegram, bot, "sendMessage", chat_id=7, text="*bold", parse_mode="MarkdownV2"
    )
    assert response.json()["description"] == (
        "Bad Request: can't parse entities: Can't find end of Bold entity at byte offset 0"
    )
    response = await call(
        http, telegram, bot, "sendMessage", chat_id=7, text="a <b>b</i>", parse_mode="HTML"
    )
    assert "Unmatched end tag at byte offset 6" in response.json()["description"]
    response = await call(
        http, telegram, bot, "sendMessage", chat_id=7, text="x", parse_mode="Textile"
    )
    assert response.json()["description"] == "Bad Request: unsupported parse_mode: Textile"

    escaped = r"*Total:* 1\.5 [docs](https://lunogen.test/a\)b) `co\`de`"
    text, entities = parse_text(escaped, "MarkdownV2")
    assert text == "Total: 1.5 docs co`de"
    assert entities == [
        {"type": "bold", "offset": 0, "length": 6},
        {"type": "text_link", "offset": 11, "length": 4, "url": "https://lunogen.test/a)b"},
        {"type": "code", "offset": 16, "length": 5},
    ]
    # Offsets are UTF-16 code units: an emoji counts two.
    assert parse_text("😀 <i>x</i> &lt;", "HTML") == (
        "😀 x <",
        [{"type": "italic", "offset": 3, "length": 1}],
    )


async def test_replies_chat_actions_drafts_and_edits(
    telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    bot = telegram.add_bot()
    inbound = telegram.private_text(bot, chat_id=9, text="question")["message"]

    reply = await call(
        http,
        telegram,
        bot,
        "sendMessage",
        chat_id=9,
        text="answer",
        reply_parameters={"message_id": inbound["message_id"]},
    )
    assert reply.json()["result"]["reply_to_message"]["text"] == "question"
    legacy = await http.post(
        telegram.url(bot.token, "sendMessage"),
        data={"chat_id": "9", "text": "x", "reply_parameters": json.dumps({"message_id": 99})},
    )
    assert legacy.json()["description"] == "Bad Request: message to be replied not found"

    typing = await call(http, telegram, bot, "sendChatAction", chat_id=9, action="typing")
    assert typing.json() == {"ok": True, "result": True}
    wrong = await call(http, telegram, bot, "sendChatAction", chat_id=9, action="dancing")
    assert wrong.json()["description"] == "Bad Request: wrong parameter action in request"
    assert telegram.chat_actions(9) == ["typing"]

    for text in ("", "Thinking about", "Thinking about it"):
        draft = await call(
            http, telegram, bot, "sendMessageDraft", chat_id=9, draft_id=5, text=text
        )
        assert draft.json() == {"ok": True, "result": True}
    assert [d.text for d in telegram.drafts(9)] == ["", "Thinking about", "Thinking about it"]
    zero = await call(http, telegram, bot, "sendMessageDraft", chat_id=9, draft_id=0, text="x")
    assert zero.json()["description"] == "Bad Request: draft_id must be non-zero"
    telegram.group_text(bot, chat_id=-1001, text="hi")
    group = await call(http, telegram, bot, "sendMessageDraft", chat_id=-1001, draft_id=1, text="x")
    assert group.status_code == 400

    sent = reply.json()["result"]
    edited = await call(
        http,
        telegram,
        bot,
        "editMessageText",
        chat_id=9,
        message_id=sent["message_id"],
        text="better answer",
    )
    assert edited.json()["result"]["text"] == "better answer"
    assert "edit_date" in edited.json()["result"]
    same = await call(
        http,
        telegram,
        bot,
        "editMessageText",
        chat_id=9,
        message_id=sent["message_id"],
        text="better answer",
    )
    assert same.json()["description"].startswith("Bad Request: message is not modified")
    theirs = await call(
        http,
        telegram,
        bot,
        "editMessageText",
        chat_id=9,
        message_id=inbound["message_id"],
        text="no",
    )
    assert theirs.json()["description"] == "Bad Request: message can't be edited"


# -- failures -------------------------------------------------------------------------------------


async def test_rate_limits_blocks_and_scripted_failures(
    telegram: FakeTelegram, http: httpx.AsyncClient
) -> None:
    bot = telegram.add_bot()
    telegram.private_text(bot, chat_id=11)
    telegram.private_text(bot, chat_id=12)

    telegram.rate_limit(11, retry_after=3, times=2)
    for _ in range(2):
        limited = await call(http, telegram, bot, "sendMessage", chat_id=11, text="hi")
        assert limited.status_code == 429
        assert limited.json() == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3},
        }
    assert (await call(http, telegram, bot, "sendMessage", chat_id=11, text="hi")).is_success
    assert telegram.sent_messages(11) == ["hi"]

    telegram.block(12)
    for method, extra in (
        ("sendMessage", {"text": "hi"}),
        ("sendChatAction", {"action": "typing"}),
    ):
        blocked = await call(http, telegram, bot, method, chat_id=12, **extra)
        assert blocked.status_code == 403
        assert blocked.json()["description"] == "Forbidden: bot was blocked by the user"
    telegram.group_text(bot, chat_id=-1001234567890)
    telegram.block(-1001234567890)
    kicked = await call(http, telegram, bot, "sendMessage", chat_id=-1001234567890, text="hi")
    assert kicked.json()["description"] == "Forbidden: bot was kicked from the supergroup chat"

    telegram.fail_next("sendMessage", status=500, times=1)
    failed = await call(http, telegram, bot, "sendMessage", chat_id=11, text="again")
    assert failed.json() == {"ok": False, "error_code": 500, "description": "Internal Server Error"}
    assert (await call(http, telegram, bot, "sendMessage", chat_id=11, text="again")).is_success
    statuses = [c.status for c in telegram.calls("sendMessage", token=bot.token)]
    assert statuses == [429, 429, 200, 403, 403, 500, 200]
    assert telegram.calls("sendMessage")[0].params == {"chat_id": 11, "text": "hi"}


# -- updates and delivery ---------------------------------------------------------------------


def test_update_builders_look_like_telegram_updates(telegram: FakeTelegram) -> None:
    bot = telegram.add_bot(username="lunobot")
    start = telegram.private_text(bot, text="/start")
    message = start["message"]
    assert message["chat"]["id"] == message["from"]["id"]
    assert message["chat"]["type"] == "private"
    assert message["from"]["is_bot"] is False
    assert message["from"]["language_code"] == "en"
    assert message["entities"] == [{"offset": 0, "length": 6, "type": "bot_command"}]

    mention = telegram.group_text(bot, text="what's up?", mention=True)
    assert mention["update_id"] > start["update_id"]
    group = mention["message"]
    assert group["chat"]["type"] == "supergroup" and group["chat"]["id"] < 0
    assert group["text"] == "@lunobot what's up?"
    assert group["entities"] == [{"offset": 0, "length": 8, "type": "mention"}]

    reply = telegram.group_text(bot, text="and you?", reply_to_bot=True)["message"]
    assert reply["reply_to_message"]["from"] == bot.user
    assert "entities" not in reply

    photo = telegram.photo(bot, caption="look")["message"]
    assert "text" not in photo
    assert photo["caption"] == "look"
    assert [size["width"] for size in photo["photo"]] == [90, 320, 800]


async def test_deliver_posts_updates_with_the_secret_header(
    telegram: FakeTelegram, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    bot = telegram.add_bot()
    update = telegram.private_text(bot, text="hello")
    with pytest.raises(AssertionError, match="no webhook"):
        await telegram.deliver(bot, update)

    receiver.secret = "Sekr3t"
    await call(
        http,
        telegram,
        bot,
        "setWebhook",
        url=receiver.url,
        secret_token="Sekr3t",
        allowed_updates=["message"],
    )
    assert await telegram.deliver(bot, update) == 200
    headers, body, _ = receiver.received[-1]
    assert headers["x-telegram-bot-api-secret-token"] == "Sekr3t"
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == update

    assert await telegram.deliver(bot, update, secret_token="forged") == 401
    assert await telegram.deliver(bot, update, secret_token=None) == 401
    assert "x-telegram-bot-api-secret-token" not in receiver.received[-1][0]

    edited = telegram.edited_text(bot, update, "hello again")
    with pytest.raises(AssertionError, match="would not send"):
        await telegram.deliver(bot, edited)

    info = (await call(http, telegram, bot, "getWebhookInfo")).json()["result"]
    assert info["pending_update_count"] == 1
    assert info["last_error_message"] == "Wrong response from the webhook: 401 Unauthorized"


async def test_deliver_until_accepted_retries_like_telegram(
    telegram: FakeTelegram, receiver: Receiver, http: httpx.AsyncClient
) -> None:
    bot = telegram.add_bot()
    await call(http, telegram, bot, "setWebhook", url=receiver.url)
    update = telegram.private_text(bot, text="hello")

    receiver.script.extend([500, 502])
    assert await telegram.deliver_until_accepted(bot, update, attempts=5) == [500, 502, 200]
    bodies = [json.loads(body)["update_id"] for _, body, _ in receiver.received]
    assert bodies == [update["update_id"]] * 3
    info = (await call(http, telegram, bot, "getWebhookInfo")).json()["result"]
    assert info["pending_update_count"] == 0

    receiver.script.extend([503] * 5)
    assert await telegram.deliver_until_accepted(bot, update, attempts=2) == [503, 503]


async def test_deliver_through_a_given_client_reaches_an_in_process_app(
    telegram: FakeTelegram,
) -> None:
    seen: list[dict[str, Any]] = []

    async def hook(request: Request) -> Response:
        seen.append(await request.json())
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hooks/telegram/{id}", hook, methods=["POST"])])
    bot = telegram.add_bot()
    async with httpx.AsyncClient() as real:
        await real.post(
            telegram.url(bot.token, "setWebhook"),
            json={"url": "http://lunogen.test/hooks/telegram/c1"},
        )
    update = telegram.private_text(bot, text="hi")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://lunogen.test") as client:
        assert await telegram.deliver(bot, update, client=client) == 204
    assert seen == [update]


def test_settings_point_lunogen_at_the_fake(telegram: FakeTelegram) -> None:
    assert telegram_settings(telegram) == {
        "telegram_api_base": telegram.root_url,
        "allow_private_urls": True,
    }
    assert telegram.root_url.startswith("http://127.0.0.1:")
