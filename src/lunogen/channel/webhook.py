"""The webhook channel: anyone holding the channel's `whsec_` secret talks to the agent by
POSTing signed JSON `{id, from, text}` (Standard Webhooks), and gets the reply in the response
(`sync` mode) or POSTed, signed, to the channel's `callback_url` (`async` mode, or when a sync
caller's wait ran out).

A 410 from the callback disables the channel (see `channel.delivery`); a caller of a disabled
channel is told so (409) once it has proved it holds the secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, ClassVar

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.responses import Response

from lunogen.channel import delivery
from lunogen.channel.contract import (
    AcceptedInbound,
    ChannelType,
    ChannelView,
    Inbound,
    InboundRejected,
    InboundRequest,
    Outgoing,
    Parsed,
    ProviderContext,
    SendOutcome,
    register_type,
)
from lunogen.channel.fields import Storable
from lunogen.channel.schemas import WebhookChannel as WebhookChannelOut
from lunogen.channel.schemas import WebhookChannelIn
from lunogen.errors import LunogenError
from lunogen.kit import jsontext
from lunogen.kit.crypto import KeyRing
from lunogen.kit.http import FetchError, UnsafeUrlError
from lunogen.runtime import waiting
from lunogen.runtime.events import TurnEvents

TOLERANCE_SECONDS = 5 * 60
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}")
SYNC_WAIT_SECONDS = 25.0
MAX_BODY_BYTES = 256_000
DEDUPE_PREFIX = "webhook:"


# Standard Webhooks ----------------------------------------------------------------------


class SignatureError(ValueError):
    """The request's Standard Webhooks headers do not authenticate it; the text says why."""


def secret_bytes(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret."""
    value = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret must be 'whsec_' followed by base64") from exc


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """`v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>`."""
    payload = body.encode() if isinstance(body, str) else body
    signed = f"{msg_id}.{timestamp}.".encode() + payload
    digest = hmac.new(secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str, msg_id: str, body: bytes, *, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


def verify(
    headers: Mapping[str, str], body: bytes, secrets: Sequence[str], *, now: float | None = None
) -> str:
    """Check the signature headers against any of `secrets`; return the `webhook-id`.

    `headers` must look names up case-insensitively (Starlette and httpx headers do).
    """
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    missing = [
        name
        for name, value in (
            ("webhook-id", msg_id),
            ("webhook-timestamp", stamp),
            ("webhook-signature", signatures),
        )
        if not value
    ]
    if missing or msg_id is None or stamp is None or signatures is None:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    # ASCII digits, and few enough that the float arithmetic below cannot overflow.
    if not _UNIX_SECONDS.fullmatch(stamp):
        raise SignatureError("webhook-timestamp must be a unix time in seconds")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > TOLERANCE_SECONDS:
        raise SignatureError(
            f"webhook-timestamp is more than {TOLERANCE_SECONDS // 60} minutes from the "
            "server's time (stale or replayed request)"
        )
    offered = [
        part.removeprefix("v1,").encode()
        for part in signatures.split(" ")
        if part.startswith("v1,")
    ]
    if not offered:
        raise SignatureError("webhook-signature has no 'v1,' signature")
    for secret in secrets:
        expected = sign(secret, msg_id, timestamp, body).removeprefix("v1,").encode()
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return msg_id
    raise SignatureError("webhook-signature does not match the channel's secret")


# The channel type --------------------------------------------------------------------------


class WebhookMessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=200), Storable] = Field(
        description="Your id for this message; a repeated id is answered without a new turn."
    )
    sender: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), Storable
    ] = Field(alias="from", description="Who is talking; each sender has its own thread.")
    text: Annotated[str, StringConstraints(min_length=1, max_length=32_000), Storable]


def dedupe_key(channel_id: str, payload_id: str) -> str:
    return f"{DEDUPE_PREFIX}{channel_id}:{payload_id}"


def _timestamp_of(outgoing: Outgoing) -> str:
    return outgoing.created_at.isoformat().replace("+00:00", "Z")


def callback_body(channel: ChannelView, outgoing: Outgoing) -> bytes:
    """The callback's JSON: the reply, or (no reply will come) why the turn failed.

    Built from stored rows only, so every attempt of a delivery sends the same bytes.
    """
    payload: dict[str, Any] = {
        "type": "message.reply" if outgoing.kind == "reply" else "message.failed",
        "agent_id": outgoing.agent_id,
        "channel_id": channel.id,
        "reply_to": outgoing.inbound_payload_id,  # null: a proactive message (a schedule's)
        "to": outgoing.contact,  # the `from` of the conversation's messages
    }
    if outgoing.kind == "reply":
        payload["message_id"] = outgoing.reply_id
        payload["text"] = outgoing.text
    else:
        payload["error"] = outgoing.text
    payload["created_at"] = _timestamp_of(outgoing)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookChannelType(ChannelType):
    name = "webhook"
    input_model = WebhookChannelIn
    output_model = WebhookChannelOut
    pushes_replies = True
    inbound_route = True
    max_inbound_bytes = MAX_BODY_BYTES
    answers_errors_to_sender: ClassVar[bool] = True
    openapi_extra: ClassVar[dict[str, Any] | None] = {
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": True,
                "description": description,
                "schema": {"type": "string", "minLength": 1},
            }
            for name, description in (
                ("webhook-id", "The sender's message id (stable across its retries)"),
                ("webhook-timestamp", "Unix seconds; within 5 minutes of our clock"),
                ("webhook-signature", "`v1,<base64 HMAC-SHA256>` entries, space-separated"),
            )
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": WebhookMessageIn.model_json_schema()}},
        },
    }
    inbound_responses: ClassVar[dict[int | str, dict[str, Any]] | None] = {
        200: {"description": "sync mode: the reply `{id, reply_to, text}`"},
        202: {"description": "async mode, or the reply was not ready in time"},
        401: {"description": "Missing, invalid or stale Standard Webhooks signature"},
        409: {
            "description": "The agent is not running (`status` names its state), or the channel "
            "was disabled after its callback URL answered 410 (`Channel disabled`)"
        },
    }
    inbound_doc: ClassVar[str | None] = (
        "A message for the agent: JSON `{id, from, text}`, signed with the channel's secret."
    )

    def verify(self, request: InboundRequest, channel: ChannelView) -> None:
        try:
            verify(request.headers, request.body, [channel.secrets["secret"]])
        except SignatureError as exc:
            raise InboundRejected(401, "Invalid webhook signature", str(exc)) from exc

    def parse(self, request: InboundRequest, channel: ChannelView) -> Parsed:
        try:
            data: Any = jsontext.loads(request.body)
        except ValueError as exc:
            raise InboundRejected(400, "Bad request", "The body must be a JSON object") from exc
        try:
            message = WebhookMessageIn.model_validate(data)
        except ValidationError as exc:
            errors = [dict(e) for e in exc.errors(include_url=False, include_input=False)]
            raise InboundRejected(422, "Validation error", str(exc), details=errors) from exc
        inbound = Inbound(
            contact=message.sender,
            text=message.text,
            dedupe_key=dedupe_key(channel.id, message.id),
        )
        return Parsed(messages=[inbound])

    async def respond(
        self,
        request: Request,
        channel: ChannelView,
        accepted: list[AcceptedInbound],
        commit: Callable[[], Coroutine[Any, Any, None]],
    ) -> Response:
        (message,) = accepted
        if channel.config.get("mode", "sync") == "async":
            await commit()
            return _accepted(message.message_id)
        keyring: KeyRing = request.app.state.keyring
        events: TurnEvents = request.app.state.turn_events
        sessionmaker = request.app.state.sessionmaker
        # Follow the turn before the commit that enqueues it, so that its end cannot be missed.
        # A duplicate's turn may be over already: `wait_for_reply` reads the database first.
        async with events.follow(message.message_id) as subscription:
            await commit()
            inbound, reply = await waiting.wait_for_reply(
                sessionmaker, subscription, message.message_id, SYNC_WAIT_SECONDS
            )
        if reply is not None:
            return JSONResponse(
                {
                    "id": reply.id,
                    "reply_to": message.payload_id,
                    "text": keyring.decrypt(reply.content),
                }
            )
        if inbound.status in delivery.UNANSWERED:
            raise LunogenError(
                inbound.last_error or "The agent could not answer",
                error="Agent failed to answer",
                status_code=502,
                extra={"message_id": inbound.id},
            )
        if channel.config.get("callback_url") and not message.duplicate:
            await _deliver_later(
                request, inbound_id=inbound.id, agent_id=inbound.agent_id, channel_id=channel.id
            )
        return _accepted(inbound.id)

    def proactive_refusal(self, *, last_inbound_at: datetime | None, now: datetime) -> str | None:
        """A machine receiver takes a message whenever it is sent, to any contact it named."""
        return None

    def waits_for_turn(self, channel: ChannelView) -> bool:
        """Async mode: a delivery waits for every message's turn (sync mode makes one only when
        the caller's wait runs out)."""
        return channel.config.get("mode", "sync") == "async"

    async def send(
        self, ctx: ProviderContext, channel: ChannelView, outgoing: Outgoing
    ) -> SendOutcome:
        url = channel.config.get("callback_url")
        if not url:
            return SendOutcome("failed", error="the channel has no callback_url")
        body = callback_body(channel, outgoing)
        headers = {
            "content-type": "application/json",
            **signed_headers(channel.secrets["secret"], outgoing.delivery_id, body),
        }
        try:
            result = await ctx.http.send(
                "POST", str(url), headers=headers, content=body, max_bytes=4096
            )
        except UnsafeUrlError as exc:
            return SendOutcome("failed", error=str(exc))
        except FetchError as exc:
            return SendOutcome("retry", error=str(exc))
        code = result.status_code
        error = f"the receiver answered {code}"
        if 200 <= code < 300:
            return SendOutcome("delivered", status_code=code, parts_sent=1)
        if code == 410:
            return SendOutcome(
                "disable_channel",
                status_code=code,
                error=f"its callback URL answered 410 Gone (delivery {outgoing.delivery_id})",
            )
        if code == 429 or code >= 500:
            retry_after = delivery.retry_after_seconds(result.headers.get("retry-after"))
            return SendOutcome("retry", status_code=code, error=error, retry_after=retry_after)
        return SendOutcome("failed", status_code=code, error=error)


def _accepted(message_id: str) -> JSONResponse:
    return JSONResponse({"status": "accepted", "message_id": message_id}, status_code=202)


async def _deliver_later(
    request: Request, *, inbound_id: str, agent_id: str, channel_id: str
) -> None:
    """The sync caller gave up waiting: send the reply (or failure notice) to the callback."""
    sessionmaker = request.app.state.sessionmaker
    async with sessionmaker() as session:
        session.add(
            delivery.new_delivery(inbound_id=inbound_id, agent_id=agent_id, channel_id=channel_id)
        )
        try:
            await session.commit()
        except IntegrityError:  # already arranged (a duplicate request timed out first)
            await session.rollback()
    # The turn may have ended before our row existed: queue it ourselves then.
    async with sessionmaker() as session:
        await delivery.queue_if_settled(session, inbound_id=inbound_id)
        await session.commit()


WEBHOOK = register_type(WebhookChannelType())
