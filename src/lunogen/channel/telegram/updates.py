"""Telegram Updates as the platform's inbound messages.

What is taken: `message` updates from private chats, and from groups and supergroups as the
channel's `groups` setting says (`mention`: only messages that mention the bot, reply to it, or
are a command addressed to it; `all`; `off`). In groups the text is prefixed with the sender's
name, since one thread holds the whole group. `/start` is answered at once with the greeting;
`/start <pairing code>` (a `t.me/<bot>?start=<code>` link) sends the code, so that a link pairs.
A photo, voice note, file, sticker... is named in the text (`[photo] caption`) with its file id
kept as an attachment (not downloaded); without a caption it is answered at once that only text
is understood for now. Edited messages, service messages, messages from bots and every other
update type are skipped, with the reason logged (so are channel posts forwarded to a group).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

from lunogen.channel import access
from lunogen.channel.contract import Attachment, ChannelView, Inbound, InboundRejected, Parsed
from lunogen.channel.telegram.api import reference
from lunogen.kit import jsontext

GROUP_CHATS = ("group", "supergroup")
_START = re.compile(r"^/start(?:@([A-Za-z0-9_]{1,64}))?(?:\s+(\S.*))?$", re.DOTALL)
_COMMAND = re.compile(r"^/[A-Za-z0-9_]{1,64}(?:@([A-Za-z0-9_]{1,64}))?(?:\s|$)")
ONLY_TEXT = (
    "Sorry, I can only read text messages for now. Could you write what you wanted to say "
    "(or add a caption)?"
)


def greeting(channel: ChannelView) -> str:
    configured = str(channel.config.get("greeting") or "").strip()
    if configured:
        return configured
    return f"Hello! I'm {channel.agent_name}. Send me a message and I'll do my best to help."


@dataclass(frozen=True)
class _Media:
    label: str
    attachment: Attachment


def _media(message: Mapping[str, Any]) -> _Media | None:
    """What the message carries besides text, if anything (the first kind found)."""
    photo = message.get("photo")
    if isinstance(photo, list) and photo:
        largest = photo[-1] if isinstance(photo[-1], dict) else {}
        return _Media("photo", Attachment("image", _file_id(largest), "image/jpeg"))
    kinds = (
        ("voice", "voice message", "audio"),
        ("audio", "audio", "audio"),
        ("video", "video", "video"),
        ("video_note", "video message", "video"),
        ("animation", "GIF", "video"),
        ("document", "file", "document"),
        ("sticker", "sticker", "sticker"),
    )
    for key, label, kind in kinds:
        item = message.get(key)
        if isinstance(item, dict):
            name = item.get("file_name") or item.get("title") or item.get("emoji")
            shown = f"{label} {name}" if name else label
            mime = item.get("mime_type")
            return _Media(
                shown,
                Attachment(
                    kind,
                    _file_id(item),
                    str(mime) if mime else None,
                    str(name)[:255] if name else None,
                ),
            )
    for key, label, kind in (
        ("venue", "place", "location"),
        ("location", "location", "location"),
        ("contact", "contact", "contacts"),
        ("poll", "poll", "poll"),
        ("dice", "dice", "dice"),
        ("story", "story", "story"),
    ):
        if isinstance(message.get(key), dict):
            return _Media(label, Attachment(kind))
    return None


def _file_id(item: Mapping[str, Any]) -> str | None:
    value = item.get("file_id")
    return str(value) if value else None


def _person(user: Mapping[str, Any] | None) -> str | None:
    if not user:
        return None
    name = " ".join(
        str(user[key]).strip() for key in ("first_name", "last_name") if user.get(key)
    ).strip()
    if name:
        return name
    return f"@{user['username']}" if user.get("username") else None


def _entity_text(text: str, entity: Mapping[str, Any]) -> str:
    """The text an entity covers (offsets and lengths are in UTF-16 code units)."""
    encoded = text.encode("utf-16-le")
    offset, length = entity.get("offset"), entity.get("length")
    if not isinstance(offset, int) or not isinstance(length, int):
        return ""
    return encoded[offset * 2 : (offset + length) * 2].decode("utf-16-le", errors="ignore")


def _mentions(text: str, entities: Any, bot_username: str, bot_id: Any) -> list[dict[str, Any]]:
    """The entities of `text` that name the bot."""
    found: list[dict[str, Any]] = []
    if not isinstance(entities, list):
        return found
    for entity in entities:
        if not isinstance(entity, dict):
            continue
        kind = entity.get("type")
        if kind == "mention" and bot_username:
            if _entity_text(text, entity).lower() == f"@{bot_username}".lower():
                found.append(entity)
        elif kind == "text_mention" and bot_id is not None:
            user = entity.get("user")
            if isinstance(user, dict) and user.get("id") == bot_id:
                found.append(entity)
    return found


def _without_leading_mention(text: str, mentions: list[dict[str, Any]]) -> str:
    """`@bot what's up?` → `what's up?` (a mention elsewhere stays: it is part of the sentence)."""
    for entity in mentions:
        if entity.get("offset") == 0 and isinstance(entity.get("length"), int):
            prefix = _entity_text(text, entity)
            rest = text[len(prefix) :].lstrip(" ,:\n\t")
            if rest:
                return rest
    return text


def _when(date: Any) -> datetime | None:
    """A message's `date` (unix seconds), if it is one."""
    if not isinstance(date, int) or isinstance(date, bool):
        return None
    try:
        return datetime.fromtimestamp(date, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _is_int64(value: Any) -> TypeGuard[int]:
    """Telegram's ids are signed 64-bit integers; anything else is not an id of theirs."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


class _Skip(Exception):
    """This message is not for the agent; the text says why (logged)."""


def parse_update(body: bytes, channel: ChannelView) -> Parsed:
    """The messages of one Update; `InboundRejected` (400) when it is not one."""
    try:
        update: Any = jsontext.loads(body)
    except ValueError as exc:
        raise InboundRejected(400, "Bad request", "The body must be a JSON Update") from exc
    update_id = update.get("update_id") if isinstance(update, dict) else None
    if not _is_int64(update_id):
        raise InboundRejected(400, "Bad request", "The body must be an Update with an update_id")
    kind = next((key for key in update if key != "update_id"), "nothing")
    if kind != "message":
        if kind == "edited_message":
            why = "an edited message (the earlier version was the one answered)"
        else:
            why = f"a {kind} update"
        return Parsed(ignored=[f"update {update_id}: {why}"])
    message = update["message"]
    if not isinstance(message, dict):
        raise InboundRejected(400, "Bad request", "message must be a Message object")
    try:
        inbound = _inbound(message, update_id, channel)
    except _Skip as skip:
        return Parsed(ignored=[f"update {update_id}: {skip}"])
    return Parsed(messages=[inbound])


def _inbound(message: Mapping[str, Any], update_id: int, channel: ChannelView) -> Inbound:
    chat = message.get("chat")
    message_id = message.get("message_id")
    if not isinstance(chat, dict) or not _is_int64(chat.get("id")) or not _is_int64(message_id):
        raise InboundRejected(400, "Bad request", "message needs message_id and chat.id")
    chat_type = chat.get("type")
    sender = message.get("from") if isinstance(message.get("from"), dict) else None
    on_behalf = message.get("sender_chat") if isinstance(message.get("sender_chat"), dict) else None
    if message.get("is_automatic_forward"):
        raise _Skip("a channel post forwarded to its discussion group")
    if sender is not None and sender.get("is_bot") and on_behalf is None:
        raise _Skip("a message from a bot")  # (an anonymous admin's comes from a bot, as a chat)
    group = chat_type in GROUP_CHATS
    if chat_type != "private" and not group:
        raise _Skip(f"a message in a {chat_type} chat")
    text = message.get("text")
    entities = message.get("entities")
    caption = message.get("caption")
    if not isinstance(text, str):
        text = None
        if isinstance(caption, str):
            entities = message.get("caption_entities")
    media = _media(message) if text is None else None
    if text is None and media is None:
        raise _Skip("a service message (no text or media)")
    written = text if text is not None else (caption if isinstance(caption, str) else "")
    bot_username = str(channel.registration.get("username") or "")
    bot_id = channel.registration.get("id")
    mentions = _mentions(written, entities, bot_username, bot_id)
    command = _COMMAND.match(written)
    addressed_to = command.group(1) if command else None
    if addressed_to and bot_username and addressed_to.lower() != bot_username.lower():
        raise _Skip(f"a command for @{addressed_to}")
    if group:
        setting = channel.config.get("groups", "mention")
        replied = message.get("reply_to_message")
        replies_to_bot = (
            isinstance(replied, dict)
            and isinstance(replied.get("from"), dict)
            and bot_id is not None
            and replied["from"].get("id") == bot_id
        )
        if setting == "off":
            raise _Skip("group chats are off for this channel")
        if setting != "all" and not (mentions or replies_to_bot or addressed_to):
            raise _Skip("a group message that does not mention the bot")
        written = _without_leading_mention(written, mentions)
    topic = message.get("message_thread_id") if message.get("is_topic_message") else None
    instant: str | None = None
    start = _START.match(written.strip()) if text is not None else None
    if start is not None:
        instant = greeting(channel)
        payload = (start.group(2) or "").strip()
        if access.looks_like_code(payload):
            written = payload  # a t.me/<bot>?start=<code> link pairs like the code typed
    if media is not None:
        written = f"[{media.label}] {written}".strip() if written else f"[{media.label}]"
        if not caption:
            instant = ONLY_TEXT
    speaker = str(on_behalf.get("title") or "") if on_behalf is not None else _person(sender)
    if group and speaker and not access.looks_like_code(written):
        written = f"{speaker}: {written}"
    date = message.get("date")
    return Inbound(
        contact=str(chat["id"]),
        text=written,
        dedupe_key=f"telegram:{channel.id}:{update_id}",
        sent_at=_when(date),
        contact_name=(_person(sender) if not group else str(chat.get("title") or "")) or None,
        reference=reference(message_id, topic if isinstance(topic, int) else None),
        attachments=(media.attachment,) if media is not None else (),
        instant_reply=instant,
        stream=not group and bool(channel.config.get("stream_drafts", True)),
    )
