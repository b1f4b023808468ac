"""A fake Telegram Bot API served over real HTTP on 127.0.0.1, speaking its wire format.

Methods live at `<api_base>/bot<token>/<method>` (names case-insensitive, like Telegram), take
their parameters as a query string, a form (urlencoded or multipart) or a JSON body, and answer
`{"ok": true, "result": ...}` or `{"ok": false, "error_code": N, "description": "...",
"parameters": {...}}` with HTTP status N. Served: `getMe`, `setWebhook`, `deleteWebhook`,
`getWebhookInfo`, `sendMessage`, `sendChatAction`, `sendMessageDraft`, `editMessageText`.

Like the real service: a token of the wrong shape is 404 `Not Found`, an unknown or revoked one
401 `Unauthorized`; a chat the bot has never seen is `Bad Request: chat not found`; texts are
parsed with `parse_mode` (HTML, MarkdownV2, Markdown) and refused with Telegram's "can't parse
entities" errors, and their length (at most 4096) is counted after parsing; message ids count up
per chat, shared by what the user and the bot send; `setWebhook` without `allowed_updates`
keeps the previous list; `getWebhookInfo` never shows the secret and reports the last failed
delivery.

Tests register bots, play the users and script failures:

    bot = telegram.add_bot()                            # a realistic token, username "lunobot"
    update = telegram.private_text(bot, text="/start")  # an Update, chat now known to the bot
    status = await telegram.deliver(bot, update, client=client)  # POST to the set webhook
    telegram.rate_limit(chat_id, retry_after=3)         # next send: 429 retry after 3
    telegram.block(chat_id)                             # 403 bot was blocked by the user
    telegram.fail_next("sendMessage", status=500)
    telegram.revoke(bot.token)                          # 401 from now on
    assert telegram.sent_messages(chat_id) == ["Hello!"]

Use the `telegram` fixture (`from tests.fakes.telegram import telegram  # noqa: F401`) and
`telegram_settings(telegram)` for the Settings that point LunoGen at it.
"""

from __future__ import annotations

import html
import itertools
import json
import re
import secrets
import string
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.server import loopback_socket, serve_in_thread

MAX_TEXT = 4096
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
# Update types Telegram sends when `allowed_updates` is empty or was never given.
NOT_SENT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
UPDATE_TYPES = frozenset(
    {
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
        "business_connection",
        "business_message",
        "edited_business_message",
        "deleted_business_messages",
        "message_reaction",
        "message_reaction_count",
        "inline_query",
        "chosen_inline_result",
        "callback_query",
        "shipping_query",
        "pre_checkout_query",
        "purchased_paid_media",
        "poll",
        "poll_answer",
        "my_chat_member",
        "chat_member",
        "chat_join_request",
        "chat_boost",
        "removed_chat_boost",
    }
)
_TOKEN_SHAPE = re.compile(r"\d{1,20}:[A-Za-z0-9_-]{1,64}")
_SECRET_CHARS = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN_ALPHABET = string.ascii_letters + string.digits + "_-"
_DEFAULT_ERRORS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


class TelegramError(Exception):
    """A request Telegram refuses; rendered as its `{"ok": false, ...}` body."""

    def __init__(
        self, status: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.parameters is not None:
            body["parameters"] = self.parameters
        return JSONResponse(body, status_code=self.status)


def _bad(description: str) -> TelegramError:
    return TelegramError(400, f"Bad Request: {description}")


# -- text: UTF-16 lengths, parse modes, detected entities -------------------------------------


def utf16_len(text: str) -> int:
    """Telegram's entity offsets and lengths are in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


class _Builder:
    """The plain text and entities a parser produces, with UTF-16 offsets."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.parts: list[str] = []
        self.position = 0  # UTF-16 units written so far
        self.entities: list[dict[str, Any]] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.position += utf16_len(text)

    def entity(self, kind: str, start: int, **extra: Any) -> None:
        if self.position > start:  # Telegram drops empty entities
            self.entities.append({"type": kind, "offset": start, "length": self.position - start})
            self.entities[-1].update(extra)

    def byte_offset(self, index: int) -> int:
        return len(self.source[:index].encode())

    def result(self) -> tuple[str, list[dict[str, Any]]]:
        ordered = sorted(self.entities, key=lambda e: (e["offset"], -e["length"]))
        return "".join(self.parts), ordered


_HTML_TAGS = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
}
_TAG = re.compile(
    r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s+[A-Za-z-]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>\"']+))?)*)\s*/?>"
)
_ATTRIBUTE = re.compile(r"([A-Za-z-]+)(?:\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>\"']+)))?")
_CHARREF = re.compile(r"&(#x[0-9A-Fa-f]+|#[0-9]+|lt|gt|amp|quot);")


def _parse_html(text: str) -> tuple[str, list[dict[str, Any]]]:
    out = _Builder(text)
    stack: list[tuple[str, int, dict[str, str]]] = []  # tag, start, attributes
    index = 0
    while index < len(text):
        char = text[index]
        if char == "<":
            match = _TAG.match(text, index)
            if match is None:
                found = re.match(r"</?([^\s>]*)", text[index:])
                raise _bad(
                    "can't parse entities: Unsupported start tag "
                    f'"{found.group(1) if found else ""}" at byte offset {out.byte_offset(index)}'
                )
            closing, name = match.group(1) == "/", match.group(2).lower()
            if name not in _HTML_TAGS:
                kind = "end" if closing else "start"
                raise _bad(
                    f'can\'t parse entities: Unsupported {kind} tag "{name}" at byte offset '
                    f"{out.byte_offset(index)}"
                )
            if closing:
                if not stack:
                    raise _bad(
                        "can't parse entities: Unexpected end tag at byte offset "
                        f"{out.byte_offset(index)}"
                    )
                opened, start, attributes = stack.pop()
                if opened != name:
                    raise _bad(
                        f"can't parse entities: Unmatched end tag at byte offset "
                        f'{out.byte_offset(index)}, expected "</{opened}>", found "</{name}>"'
                    )
                _close_html(out, opened, start, attributes)
            else:
                attributes = {
                    a.group(1).lower(): next((g for g in a.group(2, 3, 4) if g is not None), "")
                    for a in _ATTRIBUTE.finditer(match.group(3))
                }
                if name == "span" and attributes.get("class") != "tg-spoiler":
                    raise _bad(
                        'can\'t parse entities: Tag "span" must have class "tg-spoiler" at byte '
                        f"offset {out.byte_offset(index)}"
                    )
                stack.append((name, out.position, attributes))
            index = match.end()
        elif char == "&":
            ref = _CHARREF.match(text, index)
            if ref is None:
                out.add("&")
                index += 1
            else:
                out.add(html.unescape(ref.group(0)))
                index = ref.end()
        elif char == ">":
            out.add(">")  # tolerated, like Telegram
            index += 1
        else:
            out.add(char)
            index += 1
    if stack:
        raise _bad(
            "can't parse entities: Can't find end tag corresponding to start tag "
            f'"{stack[-1][0]}"'
        )
    return out.result()


def _close_html(out: _Builder, tag: str, start: int, attributes: dict[str, str]) -> None:
    kind = _HTML_TAGS[tag]
    if kind == "text_link":
        href = attributes.get("href", "")
        user = re.fullmatch(r"tg://user\?id=(\d+)", href)
        if user:
            out.entity("text_mention", start, user={"id": int(user.group(1)), "is_bot": False})
        elif href:
            out.entity("text_link", start, url=href)
    elif kind == "pre":
        language = attributes.get("language")
        out.entity("pre", start, **({"language": language} if language else {}))
    elif kind == "code" and attributes.get("class", "").startswith("language-"):
        # <pre><code class="language-x">: the language goes onto the enclosing pre
        out.entity("code", start)
        out.entities[-1]["_language"] = attributes["class"].removeprefix("language-")
    elif kind == "blockquote" and "expandable" in attributes:
        out.entity("expandable_blockquote", start)
    elif kind == "custom_emoji":
        out.entity("custom_emoji", start, custom_emoji_id=attributes.get("emoji-id", ""))
    else:
        out.entity(kind, start)


_V2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")
_V2_NAMES = {
    "*": "Bold",
    "_": "Italic",
    "__": "Underline",
    "~": "Strikethrough",
    "||": "Spoiler",
    "[": "TextUrl",
}
_V2_KINDS = {"*": "bold", "_": "italic", "__": "underline", "~": "strikethrough", "||": "spoiler"}


def _parse_markdown_v2(text: str) -> tuple[str, list[dict[str, Any]]]:
    out = _Builder(text)
    stack: list[tuple[str, int, int]] = []  # marker, start, byte offset
    index = 0
    line_start = True
    while index < len(text):
        char = text[index]
        at_line_start, line_start = line_start, char == "\n"
        if char == "\\" and index + 1 < len(text) and 0 < ord(text[index + 1]) < 127:
            out.add(text[index + 1])
            index += 2
            continue
        if char == "`":
            index = _v2_code(text, index, out)
            continue
        if char == ">" and at_line_start:
            end = text.find("\n", index)
            end = len(text) if end == -1 else end
            start = out.position
            inner, entities = _parse_markdown_v2(text[index + 1 : end])
            for entity in entities:
                entity["offset"] += start
            out.add(inner)
            out.entities.extend(entities)
            out.entity("blockquote", start)
            index = end
            continue
        marker = None
        if text.startswith("__", index):
            marker = "__"
        elif text.startswith("||", index):
            marker = "||"
        elif char in "*_~":
            marker = char
        if marker is not None:
            if stack and stack[-1][0] == marker:
                _, start, _ = stack.pop()
                out.entity(_V2_KINDS[marker], start)
            else:
                stack.append((marker, out.position, out.byte_offset(index)))
            index += len(marker)
            continue
        if char == "[":
            stack.append(("[", out.position, out.byte_offset(index)))
            index += 1
            continue
        if char == "]" and stack and stack[-1][0] == "[":
            _, start, offset = stack.pop()
            if not text.startswith("(", index + 1):
                raise _bad(
                    "can't parse entities: Can't find end of TextUrl entity at byte offset "
                    f"{offset}"
                )
            url, index = _v2_url(text, index + 2, offset)
            user = re.fullmatch(r"tg://user\?id=(\d+)", url)
            if user:
                out.entity("text_mention", start, user={"id": int(user.group(1)), "is_bot": False})
            else:
                out.entity("text_link", start, url=url)
            continue
        if char in _V2_RESERVED:
            raise _bad(
                f"can't parse entities: Character '{char}' is reserved and must be escaped with "
                "the preceding '\\'"
            )
        out.add(char)
        index += 1
    if stack:
        marker, _, offset = stack[-1]
        raise _bad(
            f"can't parse entities: Can't find end of {_V2_NAMES[marker]} entity at byte "
            f"offset {offset}"
        )
    return out.result()


def _v2_code(text: str, index: int, out: _Builder) -> int:
    """A `code` or ```pre``` span starting at `index`; inside, only ` and \\ are escaped."""
    fence = "```" if text.startswith("```", index) else "`"
    offset = out.byte_offset(index)
    cursor = index + len(fence)
    language = None
    if fence == "```":
        newline = text.find("\n", cursor)
        first_line = text[cursor:newline] if newline != -1 else ""
        if newline != -1 and re.fullmatch(r"[A-Za-z0-9_+#.-]*", first_line):
            language = first_line or None
            cursor = newline + 1
    start = out.position
    while cursor < len(text):
        if text[cursor] == "\\" and cursor + 1 < len(text) and text[cursor + 1] in "`\\":
            out.add(text[cursor + 1])
            cursor += 2
            continue
        if text.startswith(fence, cursor):
            if fence == "```":
                out.entity("pre", start, **({"language": language} if language else {}))
            else:
                out.entity("code", start)
            return cursor + len(fence)
        out.add(text[cursor])
        cursor += 1
    name = "Pre" if fence == "```" else "Code"
    raise _bad(f"can't parse entities: Can't find end of {name} entity at byte offset {offset}")


def _v2_url(text: str, cursor: int, offset: int) -> tuple[str, int]:
    url: list[str] = []
    while cursor < len(text):
        char = text[cursor]
        if char == "\\" and cursor + 1 < len(text):
            url.append(text[cursor + 1])
            cursor += 2
            continue
        if char == ")":
            return "".join(url), cursor + 1
        url.append(char)
        cursor += 1
    raise _bad(f"can't parse entities: Can't find end of TextUrl entity at byte offset {offset}")


def _parse_markdown(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Legacy Markdown: *bold*, _italic_, `code`, ```pre```, [text](url); no nesting."""
    out = _Builder(text)
    index = 0
    kinds = {"*": "bold", "_": "italic"}
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "*_`[":
            out.add(text[index + 1])
            index += 2
            continue
        offset = out.byte_offset(index)
        missing = _bad(
            f"can't parse entities: Can't find end of the entity starting at byte offset {offset}"
        )
        if char in kinds or char == "`":
            fence = "```" if text.startswith("```", index) else char
            end = text.find(fence, index + len(fence))
            if end == -1:
                raise missing
            start = out.position
            out.add(text[index + len(fence) : end])
            out.entity({"```": "pre", "`": "code"}.get(fence, kinds.get(fence, "")), start)
            index = end + len(fence)
            continue
        if char == "[":
            link = re.compile(r"\[([^\]]*)\]\(([^)]*)\)").match(text, index)
            if link is None:
                raise missing
            start = out.position
            out.add(link.group(1))
            out.entity("text_link", start, url=link.group(2))
            index = link.end()
            continue
        out.add(char)
        index += 1
    return out.result()


def parse_text(text: str, parse_mode: str | None) -> tuple[str, list[dict[str, Any]]]:
    """The text as the user will see it and its entities, or Telegram's 400 for bad markup."""
    if not parse_mode:
        return text, []
    mode = parse_mode.lower()
    if mode == "html":
        plain, entities = _parse_html(text)
        for entity in entities:  # <pre><code class="language-x">
            language = entity.pop("_language", None)
            if language is not None:
                for outer in entities:
                    if outer["type"] == "pre" and outer["offset"] == entity["offset"]:
                        outer["language"] = language
        entities = [
            e
            for e in entities
            if not (
                e["type"] == "code"
                and any(
                    o["type"] == "pre" and o["offset"] == e["offset"] and o["length"] == e["length"]
                    for o in entities
                )
            )
        ]
        return plain, entities
    if mode == "markdownv2":
        return _parse_markdown_v2(text)
    if mode == "markdown":
        return _parse_markdown(text)
    raise _bad(f"unsupported parse_mode: {parse_mode}")


_DETECTED = re.compile(
    r"(?P<bot_command>(?<![\w/])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{5,32})?(?![\w/]))"
    r"|(?P<mention>(?<![\w@])@[A-Za-z0-9_]{5,32}(?!\w))"
    r"|(?P<url>\bhttps?://[^\s<>\"]+)"
    r"|(?P<hashtag>(?<![\w#])#[^\W\d][\w]*)"
)


def detected_entities(text: str) -> list[dict[str, Any]]:
    """The entities Telegram finds in plain text by itself: commands, mentions, URLs, hashtags."""
    found = []
    for match in _DETECTED.finditer(text):
        kind = match.lastgroup
        assert kind is not None
        found.append(
            {
                "offset": utf16_len(text[: match.start()]),
                "length": utf16_len(match.group(0)),
                "type": kind,
            }
        )
    return found


# -- state ------------------------------------------------------------------------------------


@dataclass
class Webhook:
    url: str
    secret_token: str | None
    allowed_updates: list[str] | None  # None: never given (every type but the opt-in ones)
    max_connections: int
    ip_address: str | None
    drop_pending_updates: bool
    set_at: int


@dataclass
class Bot:
    token: str
    bot_id: int
    username: str
    first_name: str
    revoked: bool = False
    webhook: Webhook | None = None
    chats: dict[int, dict[str, Any]] = field(default_factory=dict)  # chat id → Chat
    last_error_date: int | None = None
    last_error_message: str | None = None
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)  # update id → Update

    @property
    def user(self) -> dict[str, Any]:
        """The bot as a `User` (the `from` of what it sends)."""
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }


@dataclass(frozen=True)
class Call:
    http_method: str
    method: str  # canonical name when known (`sendMessage`), else as requested
    token: str
    params: dict[str, Any]
    headers: dict[str, str]
    status: int


@dataclass(frozen=True)
class Delivery:
    token: str
    url: str
    update: dict[str, Any]
    headers: dict[str, str]
    status: int | None  # None: the receiver could not be reached
    error: str | None


@dataclass(frozen=True)
class Draft:
    chat_id: int
    draft_id: int
    text: str
    token: str


USE_WEBHOOK_SECRET: Any = object()  # `deliver`'s default: the secret the webhook was set with

METHODS = (
    "getMe",
    "setWebhook",
    "deleteWebhook",
    "getWebhookInfo",
    "sendMessage",
    "sendChatAction",
    "sendMessageDraft",
    "editMessageText",
)
_CANONICAL = {name.lower(): name for name in METHODS}


@dataclass
class FakeTelegram:
    root_url: str = ""
    # Refuse webhook URLs Telegram refuses (not HTTPS, or a port other than 443/80/88/8443);
    # off by default so that tests can point webhooks at http://127.0.0.1.
    https_only: bool = False
    bots: dict[str, Bot] = field(default_factory=dict)  # token → bot
    deliveries: list[Delivery] = field(default_factory=list)
    _calls: list[Call] = field(default_factory=list)
    _failures: dict[str, deque[TelegramError]] = field(default_factory=dict)  # method (lower)
    _rate_limits: dict[int | str, deque[int]] = field(default_factory=dict)  # chat → retry_after
    _blocked: set[int | str] = field(default_factory=set)
    _messages: dict[tuple[int, int], list[dict[str, Any]]] = field(default_factory=dict)
    _message_ids: dict[tuple[int, int], int] = field(default_factory=dict)
    _sent: list[tuple[str, int, dict[str, Any]]] = field(default_factory=list)  # token, chat
    _actions: list[tuple[str, int, str]] = field(default_factory=list)
    _drafts: list[Draft] = field(default_factory=list)
    _update_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(700_000_001))
    _user_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(5_000_001))
    _bot_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(7_000_000_001))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def api_base(self) -> str:
        """What LUNOGEN_TELEGRAM_API_BASE is set to."""
        return self.root_url

    def url(self, token: str, method: str) -> str:
        return f"{self.root_url}/bot{token}/{method}"

    def reset(self) -> None:
        with self._lock:
            self.https_only = False
            self.bots.clear()
            self.deliveries.clear()
            self._calls.clear()
            self._failures.clear()
            self._rate_limits.clear()
            self._blocked.clear()
            self._messages.clear()
            self._message_ids.clear()
            self._sent.clear()
            self._actions.clear()
            self._drafts.clear()

    # -- set-up and failures -----------------------------------------------------------------

    def add_bot(
        self,
        token: str | None = None,
        *,
        username: str = "lunobot",
        first_name: str = "Luno Bot",
        bot_id: int | None = None,
    ) -> Bot:
        """Register a bot; `token` defaults to a realistic `<bot id>:<35 characters>`."""
        with self._lock:
            if token is None:
                number = bot_id if bot_id is not None else next(self._bot_ids)
                tail = "AA" + "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(33))
                token = f"{number}:{tail}"
            if not _TOKEN_SHAPE.fullmatch(token):
                raise ValueError(f"not a bot token: {token!r} (want <digits>:<characters>)")
            if bot_id is None:
                bot_id = int(token.partition(":")[0])
            bot = Bot(token=token, bot_id=bot_id, username=username, first_name=first_name)
            self.bots[token] = bot
            return bot

    def revoke(self, token: str) -> None:
        """The token stops working (as after /revoke in BotFather): 401 from now on."""
        with self._lock:
            self.bots[token].revoked = True

    def rate_limit(self, chat_id: int | str, retry_after: int = 3, *, times: int = 1) -> None:
        """The next `times` calls aimed at `chat_id` answer 429 `retry after <retry_after>`."""
        with self._lock:
            self._rate_limits.setdefault(_chat_key(chat_id), deque()).extend([retry_after] * times)

    def block(self, chat_id: int | str) -> None:
        """The user blocked the bot (a group: the bot was kicked): sends answer 403."""
        with self._lock:
            self._blocked.add(_chat_key(chat_id))

    def unblock(self, chat_id: int | str) -> None:
        with self._lock:
            self._blocked.discard(_chat_key(chat_id))

    def fail_next(
        self,
        method: str,
        status: int = 500,
        *,
        times: int = 1,
        description: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        """The next `times` calls of `method` (after the token is checked) answer `status`."""
        text = description or _DEFAULT_ERRORS.get(status, f"Error {status}")
        parameters = {"retry_after": retry_after} if retry_after is not None else None
        with self._lock:
            queue = self._failures.setdefault(method.lower(), deque())
            queue.extend(TelegramError(status, text, parameters) for _ in range(times))

    def add_chat(
        self,
        bot: Bot,
        chat_id: int,
        *,
        type: str | None = None,
        title: str = "Luno Group",
        username: str | None = None,
        first_name: str = "Ada",
    ) -> dict[str, Any]:
        """Make `chat_id` known to `bot` (as when a user starts it or adds it to a group)."""
        kind = type or (
            "private" if chat_id > 0 else "supergroup" if chat_id < -(10**12) else "group"
        )
        chat: dict[str, Any] = {"id": chat_id, "type": kind}
        if kind == "private":
            chat["first_name"] = first_name
            if username:
                chat["username"] = username
        else:
            chat["title"] = title
            if username:
                chat["username"] = username
        with self._lock:
            bot.chats.setdefault(chat_id, chat)
            return bot.chats[chat_id]

    # -- assertions ----------------------------------------------------------------------------

    def calls(self, method: str | None = None, token: str | None = None) -> list[Call]:
        with self._lock:
            return [
                c
                for c in self._calls
                if (method is None or c.method.lower() == method.lower())
                and (token is None or c.token == token)
            ]

    def sent_messages(self, chat_id: int | str, *, token: str | None = None) -> list[str]:
        """The texts sent to `chat_id` (as shown to the user, after parsing), in order."""
        return [m["text"] for m in self.sent_message_objects(chat_id, token=token)]

    def sent_message_objects(
        self, chat_id: int | str, *, token: str | None = None
    ) -> list[dict[str, Any]]:
        key = _chat_key(chat_id)
        with self._lock:
            return [
                message
                for sent_token, chat, message in self._sent
                if chat == key and (token is None or sent_token == token)
            ]

    def webhook(self, token: str) -> Webhook | None:
        with self._lock:
            return self.bots[token].webhook

    def chat_actions(self, chat_id: int | str) -> list[str]:
        key = _chat_key(chat_id)
        with self._lock:
            return [action for _, chat, action in self._actions if chat == key]

    def drafts(self, chat_id: int | str) -> list[Draft]:
        key = _chat_key(chat_id)
        with self._lock:
            return [d for d in self._drafts if d.chat_id == key]

    # -- users' side: updates --------------------------------------------------------------------

    def new_user(
        self,
        *,
        id: int | None = None,
        first_name: str = "Ada",
        last_name: str | None = None,
        username: str | None = "ada_lovelace",
        language_code: str | None = "en",
    ) -> dict[str, Any]:
        """A Telegram `User` (a person, not a bot)."""
        user: dict[str, Any] = {
            "id": id if id is not None else next(self._user_ids),
            "is_bot": False,
            "first_name": first_name,
        }
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        if language_code:
            user["language_code"] = language_code
        return user

    def private_text(
        self,
        bot: Bot,
        *,
        text: str = "Hello",
        chat_id: int | None = None,
        user: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An Update: `user` writes `text` to `bot` in their private chat (id = the user's id)."""
        if user is None:
            user = self.new_user(id=chat_id)
        chat_id = user["id"] if chat_id is None else chat_id
        chat = self._private_chat(bot, chat_id, user)
        message = self._message(bot, chat, user, text=text, entities=detected_entities(text))
        return self._update(bot, "message", message)

    def group_text(
        self,
        bot: Bot,
        *,
        text: str = "Hello",
        chat_id: int = -1001234567890,
        title: str = "Luno Group",
        user: dict[str, Any] | None = None,
        mention: bool = False,
        reply_to_bot: bool = False,
    ) -> dict[str, Any]:
        """An Update: a message in a group; `mention` puts `@<bot username>` in front (a
        `mention` entity), `reply_to_bot` makes it a reply to the bot's last message there."""
        if user is None:
            user = self.new_user()
        chat = self.add_chat(bot, chat_id, title=title)
        if mention and f"@{bot.username}".lower() not in text.lower():
            text = f"@{bot.username} {text}"
        reply = self._last_bot_message(bot, chat) if reply_to_bot else None
        message = self._message(
            bot, chat, user, text=text, entities=detected_entities(text), reply_to=reply
        )
        return self._update(bot, "message", message)

    def photo(
        self,
        bot: Bot,
        *,
        chat_id: int | None = None,
        caption: str | None = None,
        user: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An Update: a photo (no `text`; a `photo` array of sizes and maybe a `caption`)."""
        if user is None:
            user = self.new_user(id=chat_id if chat_id is not None and chat_id > 0 else None)
        chat_id = user["id"] if chat_id is None else chat_id
        chat = (
            self._private_chat(bot, chat_id, user) if chat_id > 0 else self.add_chat(bot, chat_id)
        )
        unique = secrets.token_urlsafe(10)
        sizes = [
            {
                "file_id": f"AgACAgIAAxkBAAI{secrets.token_urlsafe(40)}",
                "file_unique_id": f"AQAD{unique}{suffix}",
                "file_size": size,
                "width": width,
                "height": height,
            }
            for suffix, size, width, height in (
                ("s", 1363, 90, 67),
                ("m", 17287, 320, 240),
                ("x", 74913, 800, 600),
            )
        ]
        extra: dict[str, Any] = {"photo": sizes}
        if caption:
            extra["caption"] = caption
            entities = detected_entities(caption)
            if entities:
                extra["caption_entities"] = entities
        message = self._message(bot, chat, user, **extra)
        return self._update(bot, "message", message)

    def edited_text(self, bot: Bot, update: dict[str, Any], text: str) -> dict[str, Any]:
        """An `edited_message` Update: the user edited the message of an earlier Update."""
        original = dict(update["message"])
        original["text"] = text
        original["edit_date"] = int(time.time())
        entities = detected_entities(text)
        original.pop("entities", None)
        if entities:
            original["entities"] = entities
        return self._update(bot, "edited_message", original)

    def _private_chat(self, bot: Bot, chat_id: int, user: dict[str, Any]) -> dict[str, Any]:
        return self.add_chat(
            bot,
            chat_id,
            type="private",
            first_name=user.get("first_name", "Ada"),
            username=user.get("username"),
        )

    def _next_message_id(self, bot: Bot, chat_id: int) -> int:
        key = (bot.bot_id, chat_id)
        self._message_ids[key] = self._message_ids.get(key, 0) + 1
        return self._message_ids[key]

    def _message(
        self,
        bot: Bot,
        chat: dict[str, Any],
        sender: dict[str, Any],
        *,
        reply_to: dict[str, Any] | None = None,
        **content: Any,
    ) -> dict[str, Any]:
        with self._lock:
            message: dict[str, Any] = {
                "message_id": self._next_message_id(bot, chat["id"]),
                "from": dict(sender),
                "chat": dict(chat),
                "date": int(time.time()),
            }
            if reply_to is not None:
                shallow = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
                message["reply_to_message"] = shallow
            for key, value in content.items():
                if value not in (None, []):
                    message[key] = value
            self._messages.setdefault((bot.bot_id, chat["id"]), []).append(message)
            return message

    def _last_bot_message(self, bot: Bot, chat: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            history = self._messages.get((bot.bot_id, chat["id"]), [])
            for message in reversed(history):
                if message["from"]["id"] == bot.bot_id:
                    return message
        # The bot has said nothing here yet (as far as the fake knows): it said something once.
        return self._message(bot, chat, bot.user, text="Hi, I am here.")

    def _update(self, bot: Bot, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            return {"update_id": next(self._update_ids), kind: payload}

    # -- delivering updates, like Telegram ------------------------------------------------------

    async def deliver(
        self,
        bot: Bot,
        update: dict[str, Any],
        *,
        client: httpx.AsyncClient | None = None,
        secret_token: Any = USE_WEBHOOK_SECRET,
        timeout: float = 10.0,
    ) -> int:
        """POST `update` to the bot's webhook as Telegram does and return the status.

        `secret_token`: by default the one the webhook was set with (no header when none);
        `None` sends no header, a string sends that value (a forged delivery). `client`: an
        httpx client to send with (e.g. over ASGITransport to an in-process app); by default
        a fresh one over real HTTP. A failed delivery is kept as pending and reported by
        `getWebhookInfo`, like Telegram does.
        """
        with self._lock:
            webhook = bot.webhook
        if webhook is None or not webhook.url:
            raise AssertionError(
                f"bot @{bot.username} has no webhook: Telegram would not deliver (call "
                "setWebhook first)"
            )
        kind = next((k for k in update if k != "update_id"), "")
        allowed = webhook.allowed_updates
        if (allowed and kind not in allowed) or (not allowed and kind in NOT_SENT_BY_DEFAULT):
            raise AssertionError(
                f"Telegram would not send a {kind!r} update: allowed_updates is {allowed}"
            )
        body = json.dumps(update, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        secret = webhook.secret_token if secret_token is USE_WEBHOOK_SECRET else secret_token
        if secret is not None:
            headers[SECRET_HEADER] = secret
        status: int | None = None
        error: str | None = None
        try:
            if client is not None:
                response = await client.post(webhook.url, content=body, headers=headers)
            else:
                async with httpx.AsyncClient(timeout=timeout) as own:
                    response = await own.post(webhook.url, content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"Wrong response from the webhook: {status} {response.reason_phrase}"
        except httpx.HTTPError as exc:
            error = f"Connection refused ({type(exc).__name__})"
        with self._lock:
            self.deliveries.append(Delivery(bot.token, webhook.url, update, headers, status, error))
            if error is None:
                bot.pending.pop(update["update_id"], None)
            else:
                bot.pending[update["update_id"]] = update
                bot.last_error_date = int(time.time())
                bot.last_error_message = error
        return status if status is not None else 0

    async def deliver_until_accepted(
        self,
        bot: Bot,
        update: dict[str, Any],
        *,
        attempts: int = 5,
        client: httpx.AsyncClient | None = None,
    ) -> list[int]:
        """Deliver `update` again while the webhook answers non-2xx, as Telegram retries (at
        most `attempts` times, without Telegram's waits); the statuses, in order (0: the
        receiver could not be reached)."""
        statuses: list[int] = []
        for _ in range(attempts):
            status = await self.deliver(bot, update, client=client)
            statuses.append(status)
            if 200 <= status < 300:
                break
        return statuses

    # -- HTTP ------------------------------------------------------------------------------------

    def asgi_app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._endpoint, methods=["GET", "POST"])])

    async def _endpoint(self, request: Request) -> Response:
        match = re.fullmatch(r"/bot([^/]*)/([A-Za-z0-9_]*)", request.url.path)
        if match is None or not _TOKEN_SHAPE.fullmatch(match.group(1)):
            return TelegramError(404, "Not Found").response()
        token, requested = match.group(1), match.group(2)
        method = _CANONICAL.get(requested.lower(), requested)
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            params = await _params(request)
        except TelegramError as error:
            self._record(request.method, method, token, {}, headers, error.status)
            return error.response()
        with self._lock:
            try:
                result = self._call(token, method, params)
            except TelegramError as error:
                self._record(request.method, method, token, params, headers, error.status)
                return error.response()
            self._record(request.method, method, token, params, headers, 200)
        body: dict[str, Any] = {"ok": True, "result": result[0]}
        if result[1] is not None:
            body["description"] = result[1]
        return JSONResponse(body)

    def _record(
        self,
        http_method: str,
        method: str,
        token: str,
        params: dict[str, Any],
        headers: dict[str, str],
        status: int,
    ) -> None:
        with self._lock:
            self._calls.append(Call(http_method, method, token, params, headers, status))

    def _call(self, token: str, method: str, params: dict[str, Any]) -> tuple[Any, str | None]:
        bot = self.bots.get(token)
        if bot is None or bot.revoked:
            raise TelegramError(401, "Unauthorized")
        handler = {
            "getMe": self._get_me,
            "setWebhook": self._set_webhook,
            "deleteWebhook": self._delete_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "sendMessage": self._send_message,
            "sendChatAction": self._send_chat_action,
            "sendMessageDraft": self._send_message_draft,
            "editMessageText": self._edit_message_text,
        }.get(method)
        if handler is None:
            raise TelegramError(404, "Not Found")
        queue = self._failures.get(method.lower())
        if queue:
            raise queue.popleft()
        return handler(bot, params)

    def _get_me(self, bot: Bot, params: dict[str, Any]) -> tuple[Any, str | None]:
        return {
            **bot.user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }, None

    def _set_webhook(self, bot: Bot, params: dict[str, Any]) -> tuple[Any, str | None]:
        url = _string(params, "url")
        if url is None:
            raise _bad('parameter "url" is required')
        drop = _boolean(params, "drop_pending_updates")
        if url == "":
            return self._delete_webhook(bot, params)
        parsed = urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise _bad("bad webhook: Failed to resolve host: Name or service not known")
        if self.https_only:
            if parsed.scheme != "https":
                raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
            if (parsed.port or 443) not in (443, 80, 88, 8443):
                raise _bad("bad webhook: Webhook can be set up only on ports 80, 88, 443 or 8443")
        secret = _string(params, "secret_token")
        if secret is not None:
            if not 1 <= len(secret) <= 256:
                raise _bad("secret token must be 1-256 characters long")
            if not _SECRET_CHARS.fullmatch(secret):
                raise _bad("secret token contains unallowed characters")
        max_connections = _integer(params, "max_connections")
        if max_connections is None:
            max_connections = 40
        elif not 1 <= max_connections <= 100:
            raise _bad("max_connections must be between 1 and 100")
        allowed = _json(params, "allowed_updates")
        if allowed is not None:
            if not isinstance(allowed, list) or not all(isinstance(u, str) for u in allowed):
                raise _bad("can't parse allowed updates JSON object")
            allowed = [u for u in allowed if u in UPDATE_TYPES]
        elif bot.webhook is not None:
            allowed = bot.webhook.allowed_updates  # "If not specified, the previous setting"
        new = Webhook(
            url=url,
            secret_token=secret,
            allowed_updates=allowed,
            max_connections=max_connections,
            ip_address=_string(params, "ip_address"),
            drop_pending_updates=drop,
            set_at=int(time.time()),
        )
        if drop:
            bot.pending.clear()
        old = bot.webhook
        bot.webhook = new
        if old is not None and (old.url, old.secret_token, old.allowed_updates) == (
            new.url,
            new.secret_token,
            new.allowed_updates,
        ):
            return True, "Webhook is already set"
        bot.last_error_date = bot.last_error_message = None
        return True, "Webhook was set"

    def _delete_webhook(self, bot: Bot, params: dict[str, Any]) -> tuple[Any, str | None]:
        if _boolean(params, "drop_pending_updates"):
            bot.pending.clear()
        if bot.webhook is None:
            return True, "Webhook is already deleted"
        bot.webhook = None
        return True, "Webhook was deleted"

    def _get_webhook_info(self, bot: Bot, params: dict[str, Any]) -> tuple[Any, str | None]:
        webhook = bot.webhook
        info: dict[str, Any] = {
            "url": webhook.url if webhook else "",
            "has_custom_certificate": False,
            "pending_update_count": len(bot.pending),
        }
        if webhook is not None:
            info["ip_address"] = webhook.ip_address or "127.0.0.1"
            info["max_connections"] = webhook.max_connections
            if webhook.allowed_updates:
                info["allowed_updates"] = list(webhook.allowed_updates)
            if bot.last_error_date is not None:
                info["last_error_date"] = bot.last_error_date
                info["last_error_message"] = bot.last_error_message
        return info, None

    def _target(self, bot: Bot, params: dict[str, Any]) -> dict[str, Any]:
        """The chat a send goes to, after Telegram's checks: known chat, not blocked, no flood."""
        raw = params.get("chat_id")
        if raw is None or raw == "":
            raise _bad("chat_id is empty")
        chat: dict[str, Any] | None
        if isinstance(raw, str) and raw.startswith("@"):
            name = raw[1:].lower()
            chat = next(
                (
                    c
                    for c in bot.chats.values()
                    if c["type"] != "private" and str(c.get("username", "")).lower() == name
                ),
                None,
            )
        else:
            try:
                chat = bot.chats.get(int(raw))
            except (TypeError, ValueError):
                raise _bad("chat not found") from None
        if chat is None:
            raise _bad("chat not found")
        if chat["id"] in self._blocked:
            if chat["type"] == "private":
                raise TelegramError(403, "Forbidden: bot was blocked by the user")
            raise TelegramError(403, f"Forbidden: bot was kicked from the {chat['type']} chat")
        waits = self._rate_limits.get(chat["id"])
        if waits:
            retry_after = waits.popleft()
            raise TelegramError(
                429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after}
            )
        return chat

    def _text(self, params: dict[str, Any], *, allow_empty: bool = False) -> tuple[str, list[Any]]:
        raw = params.get("text")
        if raw is None or raw == "":
            if allow_empty:
                return "", []
            raise _bad("message text is empty")
        text = str(raw)
        parse_mode = _string(params, "parse_mode")
        entities = _json(params, "entities")
        if parse_mode:
            plain, parsed = parse_text(text, parse_mode)
        else:
            plain, parsed = text, entities if isinstance(entities, list) else []
        if not plain.strip() and not allow_empty:
            raise _bad("message text is empty")
        if len(plain) > MAX_TEXT:  # counted in characters after entities parsing
            raise _bad("message is too long")
        if not parse_mode and not parsed:
            parsed = detected_entities(plain)
        return plain, parsed

    def _send_message(self, bot: Bot, params: dict[str, Any]) -> tuple[Any, str | None]:
        chat = self._target(bot, params)
        text, entities = self._text(params)
        reply = self._reply_target(bot, chat, params)
        message = self._message(bot, chat, bot.user, text=text, entities=entities, reply_to=reply)
        self._sent.append((bot.token, chat["id"], message))
        return message, None

    def _reply_target(
        self, bot: Bot, chat: dict[str, Any], params: dict[str, Any]
    ) -> dict[str, Any] | None:
        reply_parameters = _json(params, "reply_parameters")
        allow_missing = _boolean(params, "allow_sending_without_reply")
        if isinstance(reply_parameters, dict):
            message_id = reply_parameters.get("message_id")
            allow_missing = bool(reply_parameters.get("allow_sending_without_reply"))
        elif reply_parameters is not None:
            raise _bad("can't parse reply parameters JSON object")
        else:
            message_id = _integer(params, "reply_to_message_id")
        if message_id is None:
            return None
        history = self._messages.get((bot.bot_id, chat["id"]), [])
        found = next((m for m in history if m["message_id"] == message_id), None)
        if found is None and not allow_missing:
            raise _bad("message to be replied not found")
        return found

    def _send_chat_action(self, bot: Bot, params: dict[str, Any]) -> tuple[Any, str | None]:
        action = _string(params, "action")
        chat = self._target(bot, params)
        if action not in CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        self._actions.append((bot.token, chat["id"], action))
        return True, None

    def _send_message_draft(self, bot: Bot, params: dict[str, Any]) -> tuple[Any, str | None]:
        chat = self._target(bot, params)
        if chat["type"] != "private":
            raise _bad("drafts can be sent only to private chats")
        draft_id = _integer(params, "draft_id")
        if not draft_id:
            raise _bad("draft_id must be non-zero")
        text, _ = self._text(params, allow_empty=True)  # empty: a "Thinking…" placeholder
        self._drafts.append(Draft(chat["id"], draft_id, text, bot.token))
        return True, None

    def _edit_message_text(self, bot: Bot, params: dict[str, Any]) -> tuple[Any, str | None]:
        if params.get("inline_message_id"):
            raise _bad("MESSAGE_ID_INVALID")  # the fake keeps no inline messages
        chat = self._target(bot, params)
        message_id = _integer(params, "message_id")
        if message_id is None:
            raise _bad("message identifier is not specified")
        history = self._messages.get((bot.bot_id, chat["id"]), [])
        message = next((m for m in history if m["message_id"] == message_id), None)
        if message is None:
            raise _bad("message to edit not found")
        if message["from"]["id"] != bot.bot_id:
            raise _bad("message can't be edited")
        text, entities = self._text(params)
        if text == message.get("text") and entities == message.get("entities", []):
            raise _bad(
                "message is not modified: specified new message content and reply markup are "
                "exactly the same as a current content and reply markup of the message"
            )
        message["text"] = text
        message.pop("entities", None)
        if entities:
            message["entities"] = entities
        message["edit_date"] = int(time.time())
        return dict(message), None

    # -- running ---------------------------------------------------------------------------------

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[FakeTelegram]:
        fake = cls()
        sock, port = loopback_socket()
        fake.root_url = f"http://127.0.0.1:{port}"
        with serve_in_thread(fake.asgi_app(), sock, name="the fake Telegram Bot API"):
            yield fake


def _chat_key(chat_id: int | str) -> int | str:
    if isinstance(chat_id, str) and re.fullmatch(r"-?\d+", chat_id):
        return int(chat_id)
    return chat_id


async def _params(request: Request) -> dict[str, Any]:
    """Query string, then the body (JSON, urlencoded or multipart), like the Bot API reads them."""
    params: dict[str, Any] = dict(request.query_params)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if request.method != "POST":
        return params
    if content_type == "application/json":
        raw = await request.body()
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise _bad("can't parse JSON object") from None
            if not isinstance(body, dict):
                raise _bad("can't parse JSON object")
            params.update(body)
    elif content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                params[key] = (await value.read()).decode("utf-8", "replace")
            else:
                params[key] = value
    return params


def _string(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


def _integer(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _bad(f"{name} must be a Number")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise _bad(f"{name} must be a Number")


def _boolean(params: dict[str, Any], name: str) -> bool:
    value = params.get(name)
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "on")
    return bool(value)


def _json(params: dict[str, Any], name: str) -> Any:
    """A JSON-serialized parameter: already decoded in a JSON body, a JSON string in a form."""
    value = params.get(name)
    if isinstance(value, str):
        if value == "":
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise _bad(f"can't parse {name.replace('_', ' ')} JSON object") from None
    return value


def telegram_settings(fake: FakeTelegram, **overrides: object) -> dict[str, object]:
    """Settings overrides that point LunoGen's Telegram client at `fake`."""
    values: dict[str, object] = {"telegram_api_base": fake.api_base, "allow_private_urls": True}
    values.update(overrides)
    return values


_SHARED: dict[str, FakeTelegram] = {}


def _shared(config: pytest.Config) -> FakeTelegram:
    """One server for the whole run, started on first use (so one import gives the fixture)."""
    fake = _SHARED.get("fake")
    if fake is None:
        stack = ExitStack()
        fake = stack.enter_context(FakeTelegram.running())
        _SHARED["fake"] = fake

        def stop() -> None:
            _SHARED.pop("fake", None)
            stack.close()

        config.add_cleanup(stop)
    return fake


@pytest.fixture(scope="session")
def telegram_server(request: pytest.FixtureRequest) -> FakeTelegram:
    return _shared(request.config)


@pytest.fixture
def telegram(request: pytest.FixtureRequest) -> Iterator[FakeTelegram]:
    """The fake Telegram Bot API, reset for this test (no bots, calls, chats or failures)."""
    fake = _shared(request.config)
    fake.reset()
    yield fake
    fake.reset()
