"""What Meta sends to `/hooks/whatsapp/<channel id>`: the subscription check (GET), signed
deliveries (POST), and their envelopes turned into the platform's messages and statuses.

An envelope (`object: whatsapp_business_account`) batches entries (one per WhatsApp Business
Account), each with changes; only `field: messages` changes for this channel's phone number id
are read, the rest is skipped with a reason. Contacts are keyed on `wa_id` (the phone number in
digits). Since 2026 a change may also carry a business-scoped user id (`contacts[].user_id`,
`messages[].from_user_id`), and a user with a WhatsApp username may come with it alone: the
contact is then that id. A contact who has a `wa_id` keeps it as their key (their threads, the
allowlist and pairing stay the same), even when a user id arrives too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.responses import JSONResponse, PlainTextResponse, Response

from lunogen.channel.contract import (
    Attachment,
    ChannelView,
    Inbound,
    InboundRejected,
    InboundRequest,
    Parsed,
    StatusUpdate,
)
from lunogen.kit import jsontext

SIGNATURE_HEADER = "X-Hub-Signature-256"
DEDUPE_PREFIX = "whatsapp:"
_CHALLENGE = re.compile(r"^[A-Za-z0-9._-]{1,256}$")
_SIGNATURE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_STATUSES = ("sent", "delivered", "read", "failed")
# Media messages: the object holding the media id, and how a person would name it.
_MEDIA = {
    "image": "an image",
    "video": "a video",
    "audio": "an audio message",
    "document": "a document",
    "sticker": "a sticker",
}


# Graph's "re-engagement message": sent outside the 24-hour window, refused after acceptance.
RE_ENGAGEMENT = 131047


def dedupe_key(channel_id: str, wamid: str) -> str:
    return f"{DEDUPE_PREFIX}{channel_id}:{wamid}"


def only_text_reply(channel: ChannelView) -> str:
    return (
        f"Sorry, {channel.agent_name} can only read text messages for now. Could you write "
        "your message as text?"
    )


# The subscription check and the signature ----------------------------------------------------


def challenge(request: InboundRequest, channel: ChannelView) -> Response:
    """Echo `hub.challenge` when `hub.mode=subscribe` and `hub.verify_token` is the channel's."""
    mode = request.query.get("hub.mode", "")
    offered = request.query.get("hub.verify_token", "")
    expected = channel.secrets.get("verify_token", "")
    echo = request.query.get("hub.challenge", "")
    matches = bool(expected) and hmac.compare_digest(offered.encode(), expected.encode())
    if mode != "subscribe" or not matches:
        return JSONResponse(
            {
                "error": "Forbidden",
                "message": "hub.mode must be 'subscribe' and hub.verify_token the channel's "
                "verify token",
            },
            status_code=403,
        )
    if not _CHALLENGE.match(echo):
        return JSONResponse(
            {"error": "Bad request", "message": "hub.challenge is missing or not a token"},
            status_code=400,
        )
    return PlainTextResponse(echo)


def verify_signature(request: InboundRequest, channel: ChannelView) -> None:
    """`X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`, else 401."""
    header = request.headers.get(SIGNATURE_HEADER)
    if not header:
        raise InboundRejected(401, "Invalid signature", f"missing {SIGNATURE_HEADER} header")
    found = _SIGNATURE.match(header.strip())
    secret = channel.secrets.get("app_secret", "")
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    if found is None or not secret or not hmac.compare_digest(found.group(1).lower(), expected):
        raise InboundRejected(
            401,
            "Invalid signature",
            f"{SIGNATURE_HEADER} does not match the body signed with the channel's app secret",
        )


# Envelopes -----------------------------------------------------------------------------------


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _text(value: Any, limit: int = 4096) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


_DIGITS = re.compile(r"[0-9]{1,11}")  # unix seconds (ASCII digits: "²".isdigit() is true)


def _time(value: Any) -> datetime | None:
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        try:
            return datetime.fromtimestamp(int(value), UTC)
        except (OverflowError, OSError, ValueError):  # past the year 9999
            return None
    return None


def parse(request: InboundRequest, channel: ChannelView) -> Parsed:
    try:
        envelope: Any = jsontext.loads(request.body)
    except ValueError as exc:
        raise InboundRejected(400, "Bad request", "The body must be a JSON object") from exc
    if not isinstance(envelope, dict):
        raise InboundRejected(400, "Bad request", "The body must be a JSON object")
    parsed = Parsed()
    if envelope.get("object") != "whatsapp_business_account":
        parsed.ignored.append(f"object {str(envelope.get('object'))[:60]!r} is not WhatsApp's")
        return parsed
    own_number = str(channel.config.get("phone_number_id", ""))
    for entry in _dicts(envelope.get("entry")):
        for change in _dicts(entry.get("changes")):
            field = change.get("field")
            value = change.get("value")
            if field != "messages" or not isinstance(value, dict):
                parsed.ignored.append(f"a {str(field)[:60]!r} change is not handled")
                continue
            metadata = value.get("metadata")
            number = str(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
            if number != own_number:
                parsed.ignored.append(
                    f"a change for phone number id {str(number)[:40]}, not this channel's"
                )
                continue
            _read_value(value, channel, parsed)
    return parsed


def _read_value(value: Mapping[str, Any], channel: ChannelView, parsed: Parsed) -> None:
    contacts = _dicts(value.get("contacts"))
    for message in _dicts(value.get("messages")):
        inbound = _message(message, contacts, channel, parsed)
        if inbound is not None:
            parsed.messages.append(inbound)
    for status in _dicts(value.get("statuses")):
        update = _status(status)
        if update is None:
            parsed.ignored.append(f"status {str(status.get('status'))[:30]!r} is not tracked")
        else:
            parsed.statuses.append(update)


def _sender(
    message: Mapping[str, Any], contacts: list[dict[str, Any]]
) -> tuple[str | None, str | None]:
    """The contact key (wa_id, else the business-scoped user id) and their profile name."""
    sender = _text(message.get("from"), 64)
    user_id = _text(message.get("from_user_id"), 128)
    for contact in contacts:
        wa_id = _text(contact.get("wa_id"), 64)
        scoped = _text(contact.get("user_id"), 128)
        if (sender and wa_id == sender) or (user_id and scoped == user_id):
            profile = contact.get("profile")
            name = _text(profile.get("name"), 255) if isinstance(profile, dict) else None
            return wa_id or sender or scoped or user_id, name
    return sender or user_id, None


def _message(
    message: Mapping[str, Any],
    contacts: list[dict[str, Any]],
    channel: ChannelView,
    parsed: Parsed,
) -> Inbound | None:
    wamid = _text(message.get("id"), 1000)
    contact, name = _sender(message, contacts)
    kind = str(message.get("type") or "unknown")[:40]
    if wamid is None or len(wamid) > 200 or contact is None:
        parsed.ignored.append(f"a {kind} message without a usable id or sender")
        return None
    if message.get("group_id"):
        # The Groups API: answering the sender alone would take a group talk private.
        parsed.ignored.append(f"a {kind} message in a group is not answered")
        return None
    if kind in ("reaction", "system", "request_welcome", "ephemeral"):
        # A reaction acknowledges a message; `system` says a number changed: neither asks
        # anything, and an answer to them would be noise.
        parsed.ignored.append(f"a {kind} message is not answered")
        return None
    text, attachments = _content(kind, message)
    return Inbound(
        contact=contact,
        text=text,
        dedupe_key=dedupe_key(channel.id, wamid),
        sent_at=_time(message.get("timestamp")),
        contact_name=name,
        reference=wamid,
        attachments=attachments or (),
        instant_reply=None if attachments is None else only_text_reply(channel),
    )


def _content(kind: str, message: Mapping[str, Any]) -> tuple[str, tuple[Attachment, ...] | None]:
    """The message's text, and its attachments (None: it is text, answered by a turn)."""
    body = message.get(kind)
    body = body if isinstance(body, dict) else {}
    if kind == "text" and _text(body.get("body"), 10_000):
        return str(body["body"]), None
    if kind == "button" and _text(body.get("text")):  # a template's quick-reply button
        return str(body["text"]), None
    reply = (body.get("button_reply") or body.get("list_reply")) if kind == "interactive" else None
    if isinstance(reply, dict) and _text(reply.get("title")):
        return str(reply["title"]), None
    if kind in _MEDIA:
        named = "a voice message" if kind == "audio" and body.get("voice") else _MEDIA[kind]
        caption = _text(body.get("caption"))
        attachment = Attachment(
            kind=kind,
            provider_id=_text(body.get("id"), 200),
            mime_type=_text(body.get("mime_type"), 200),
            name=_text(body.get("filename"), 255),
        )
        file = f" ({attachment.name})" if attachment.name else ""
        said = f": {caption}" if caption else ""
        return f"[The contact sent {named}{file}{said}]", (attachment,)
    if kind == "location":
        place = ", ".join(str(body[k]) for k in ("name", "address") if isinstance(body.get(k), str))
        where = f"{body.get('latitude')}, {body.get('longitude')}"
        label = f"{place} ({where})" if place else where
        return f"[The contact shared a location: {label[:500]}]", (Attachment(kind="location"),)
    if kind == "contacts":
        names = [
            str(card["name"].get("formatted_name"))
            for card in _dicts(message.get("contacts"))
            if isinstance(card.get("name"), dict) and card["name"].get("formatted_name")
        ]
        shown = f": {', '.join(names)[:500]}" if names else ""
        return f"[The contact shared contact cards{shown}]", (Attachment(kind="contacts"),)
    if kind == "unsupported":
        return "[The contact sent a message WhatsApp does not support]", (Attachment(kind=kind),)
    return f"[The contact sent a message of type {kind!r}]", (Attachment(kind=kind),)


def _status(status: Mapping[str, Any]) -> StatusUpdate | None:
    wamid = _text(status.get("id"), 200)
    state = status.get("status")
    if wamid is None or state not in _STATUSES:
        return None
    errors = _dicts(status.get("errors"))
    code = message = None
    if errors:
        first = errors[0]
        code = first.get("code") if isinstance(first.get("code"), int) else None
        data = first.get("error_data")
        details = data.get("details") if isinstance(data, dict) else None
        title = _text(first.get("title")) or _text(first.get("message"))
        message = ": ".join(str(part) for part in (title, details) if part)[:1000] or None
    return StatusUpdate(
        external_id=wamid,
        status=state,
        at=_time(status.get("timestamp")),
        error_code=code,
        error=message,
        window_closed=code == RE_ENGAGEMENT,
    )
