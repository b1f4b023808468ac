"""The `whatsapp` channel type: an agent answering on a WhatsApp Business number through Meta's
Cloud API, with the tenant's own WhatsApp Business Account (Meta bills that account).

Deploy checks the token and phone number id (`GET /{version}/{phone_number_id}`). Inbound
deliveries are verified by their `X-Hub-Signature-256` (see `inbound`). Replies are text
messages split at 4,096 characters, resumed after the parts already accepted.

WhatsApp allows free-form messages only within 24 hours of the contact's last message (the
customer-service window). A reply ready later goes out as the channel's approved template, if it
has one (a re-engagement message: the reply itself stays in the conversation), else it is `held`:
kept, logged, and the owner told. Meta accepts a free-form send outside the window and fails it
afterwards (a `failed` status with error 131047): `delivery.apply_statuses` holds the delivery
then. Errors are told apart by Graph's `error.code`, never by the HTTP status alone.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime, timedelta
from typing import Any, ClassVar

import structlog
from starlette.responses import Response

from lunogen.channel.contract import (
    AnsweringTurn,
    ChannelType,
    ChannelView,
    InboundRequest,
    Outgoing,
    Parsed,
    ProviderContext,
    Registration,
    RegistrationFailed,
    SendOutcome,
    register_type,
)
from lunogen.channel.schemas import WhatsappChannel, WhatsappChannelIn
from lunogen.channel.text import split_text
from lunogen.channel.whatsapp import inbound
from lunogen.channel.whatsapp.graph import GraphError, call
from lunogen.kit.http import FetchError, UnsafeUrlError
from lunogen.kit.time import utcnow

log = structlog.get_logger(__name__)

WINDOW = timedelta(hours=24)
# Our clock starts the window when the message reached us, Meta's when it was sent: leave a
# margin rather than send a free-form message Meta will fail.
WINDOW_MARGIN = timedelta(minutes=2)
MAX_INBOUND_BYTES = 1_000_000  # Meta batches many entries and statuses into one delivery
RE_ENGAGEMENT = inbound.RE_ENGAGEMENT
PAIR_RATE_WAIT_SECONDS = 6.0  # Meta: one message every 6 s to the same user
# Throttling codes → the least wait before the next attempt (None: the usual backoff).
THROTTLED: dict[int, float | None] = {
    130429: None,  # Cloud API throughput (80 messages/s per number by default)
    131056: PAIR_RATE_WAIT_SECONDS,  # pair rate: too many messages to one user
    4: 60.0,  # the app's call-rate limit
    80007: 60.0,  # the WhatsApp Business Account's rate limit
}
# Codes after which nothing can be sent until the owner acts: the channel is disabled.
DISABLING: dict[int, str] = {
    190: "WhatsApp refused the channel's access token",
    10: "the access token lacks the WhatsApp permissions",
    131005: "the access token lacks the WhatsApp permissions",
    131031: "the WhatsApp Business Account is locked",
}
MARK_READ_WAIT_SECONDS = 5.0
_PHONE = re.compile(r"^[0-9]{6,20}$")
_FIELDS = "display_phone_number,verified_name,quality_rating"


def _recipient(contact: str) -> dict[str, str]:
    """A phone number (`wa_id`) goes in `to`; a business-scoped user id in `recipient`."""
    return {"to": contact} if _PHONE.match(contact) else {"recipient": contact}


def _message(contact: str, kind: str, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        **_recipient(contact),
        "type": kind,
        kind: content,
    }


async def _post(ctx: ProviderContext, channel: ChannelView, body: dict[str, Any]) -> str:
    """Send one message; its wamid."""
    number = channel.config["phone_number_id"]
    answer = await call(ctx, channel, "POST", f"{number}/messages", body=body)
    messages = answer.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    wamid = first.get("id") if isinstance(first, dict) else None
    if not isinstance(wamid, str) or not wamid:
        # Accepted, but without the id we track it by: not retried (it may have gone out).
        raise GraphError(status=200, message="the Graph API accepted a message without its id")
    return wamid


def _told(text: str) -> str:
    """An error text that reaches the owner's notification (held, disabled), which
    `delivery` renders with `str.format`: Graph's braces (`must be one of {TEXT}`) would break
    it."""
    return text.replace("{", "(").replace("}", ")")


def _hours_ago(outgoing: Outgoing) -> str:
    hours = (utcnow() - outgoing.contact_wrote_at).total_seconds() / 3600
    return f"{hours:.0f} hours" if hours >= 2 else f"{hours * 60:.0f} minutes"


class WhatsappChannelType(ChannelType):
    name = "whatsapp"
    input_model = WhatsappChannelIn
    output_model = WhatsappChannel
    pushes_replies = True
    registers = True
    inbound_route = True
    has_access_policy = True
    max_inbound_bytes = MAX_INBOUND_BYTES
    openapi_extra: ClassVar[dict[str, Any] | None] = {
        "parameters": [
            {
                "name": inbound.SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "description": "`sha256=<hex HMAC-SHA256 of the raw body with the app secret>`",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "A WhatsApp Cloud API webhook envelope "
                        "(`object: whatsapp_business_account`, `entry[].changes[]`).",
                    }
                }
            },
        },
    }
    challenge_openapi_extra: ClassVar[dict[str, Any] | None] = {
        "parameters": [
            {"name": name, "in": "query", "required": True, "schema": {"type": "string"}}
            for name in ("hub.mode", "hub.verify_token", "hub.challenge")
        ],
        "responses": {
            "200": {
                "description": "`hub.challenge`, as plain text",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            "400": {"description": "The token matches but `hub.challenge` is not a token"},
            "403": {"description": "Not `subscribe`, or not the channel's verify token"},
        },
    }
    inbound_responses: ClassVar[dict[int | str, dict[str, Any]] | None] = {
        200: {"description": "Stored (or nothing in it for this channel)"},
        400: {"description": "The body is not a JSON object"},
        401: {"description": "Missing or wrong `X-Hub-Signature-256`"},
    }
    inbound_doc: ClassVar[str | None] = (
        "Meta's webhook deliveries for the channel's phone number: messages and delivery "
        "statuses, signed with the Meta app's secret. Set this URL as the app's webhook "
        "callback URL, with the channel's verify token."
    )

    # Inbound

    def challenge(self, request: InboundRequest, channel: ChannelView) -> Response:
        return inbound.challenge(request, channel)

    def verify(self, request: InboundRequest, channel: ChannelView) -> None:
        inbound.verify_signature(request, channel)

    def parse(self, request: InboundRequest, channel: ChannelView) -> Parsed:
        return inbound.parse(request, channel)

    # Outbound

    def proactive_refusal(self, *, last_inbound_at: datetime | None, now: datetime) -> str | None:
        """WhatsApp lets a business write free-form only within 24 hours of the contact's last
        message (the customer-service window; re-engagement needs a template)."""
        if last_inbound_at is None:
            return "the contact never wrote to the agent on WhatsApp"
        if now - last_inbound_at > WINDOW - WINDOW_MARGIN:
            return (
                "WhatsApp allows free-form messages only within 24 hours of the contact's last "
                f"message, and they last wrote at {last_inbound_at:%Y-%m-%d %H:%M} UTC"
            )
        return None

    def failure_notice(self, channel: ChannelView) -> str:
        return (
            f"Sorry, {channel.agent_name} could not answer your message just now. Please try "
            "again in a little while."
        )

    async def send(
        self, ctx: ProviderContext, channel: ChannelView, outgoing: Outgoing
    ) -> SendOutcome:
        text = outgoing.text if outgoing.kind == "reply" else self.failure_notice(channel)
        if utcnow() - outgoing.contact_wrote_at > WINDOW - WINDOW_MARGIN:
            return await self._outside_window(ctx, channel, outgoing, outgoing.parts_sent, ())
        parts = split_text(text)
        if not parts:
            return SendOutcome("failed", error="the reply is empty: nothing to send")
        sent: list[str] = []
        for index in range(outgoing.parts_sent, len(parts)):
            body = _message(outgoing.contact, "text", {"body": parts[index]})
            try:
                sent.append(await _post(ctx, channel, body))
            except GraphError as exc:
                if exc.code == RE_ENGAGEMENT:
                    why = f"WhatsApp refused a free-form message: {exc}"
                    return await self._outside_window(
                        ctx, channel, outgoing, index, tuple(sent), why=why
                    )
                return _refused(exc, parts_sent=index, sent=tuple(sent))
            except FetchError as exc:
                return _unreachable(exc, parts_sent=index, sent=tuple(sent))
        return SendOutcome(
            "delivered",
            status_code=200,
            parts_sent=max(len(parts), outgoing.parts_sent),
            external_ids=tuple(sent),
        )

    async def _outside_window(
        self,
        ctx: ProviderContext,
        channel: ChannelView,
        outgoing: Outgoing,
        parts_sent: int,
        sent: tuple[str, ...],
        *,
        why: str | None = None,
    ) -> SendOutcome:
        """The 24-hour window is closed: the configured template goes instead, else `held`."""
        why = why or (
            f"the contact last wrote {_hours_ago(outgoing)} ago and WhatsApp allows only "
            "approved templates more than 24 hours after a contact's last message"
        )
        if outgoing.kind == "failure":
            return SendOutcome(
                "failed",
                error=f"the failure notice was not sent: {why}",
                parts_sent=parts_sent,
                external_ids=sent,
            )
        name = channel.config.get("template_name")
        language = str(channel.config.get("template_language") or "en_US")
        if not name:
            return SendOutcome(
                "held",
                error=_told(
                    f"{why}, and the channel has no approved template to send instead "
                    "(its template_name)"
                ),
                parts_sent=parts_sent,
                external_ids=sent,
            )
        body = _message(
            outgoing.contact, "template", {"name": name, "language": {"code": language}}
        )
        try:
            wamid = await _post(ctx, channel, body)
        except GraphError as exc:
            outcome = _refused(exc, parts_sent=parts_sent, sent=sent)
            if outcome.result != "failed":
                return outcome
            return SendOutcome(
                "held",
                error=_told(
                    f"{why}, and WhatsApp refused the template {name!r} ({language}): {exc}"
                ),
                status_code=exc.status,
                parts_sent=parts_sent,
                external_ids=sent,
            )
        except FetchError as exc:
            return _unreachable(exc, parts_sent=parts_sent, sent=sent)
        return SendOutcome(
            "delivered",
            error=f"{why}: the template {name!r} was sent instead of the reply",
            status_code=200,
            parts_sent=parts_sent + 1,
            external_ids=(*sent, wamid),
        )

    @asynccontextmanager
    async def answering(
        self, ctx: ProviderContext, channel: ChannelView, turn: AnsweringTurn
    ) -> AsyncIterator[None]:
        """Mark the contact's message read, with the typing indicator (shown until the reply
        arrives, or 25 s), without holding up the turn."""
        if turn.reference is None:
            yield
            return
        task = asyncio.create_task(self._mark_read(ctx, channel, turn.reference))
        try:
            yield
        finally:
            await asyncio.wait({task}, timeout=MARK_READ_WAIT_SECONDS)
            if not task.done():
                task.cancel()
                with suppress(asyncio.CancelledError):
                    await task

    async def _mark_read(self, ctx: ProviderContext, channel: ChannelView, wamid: str) -> None:
        body = {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": wamid,
            "typing_indicator": {"type": "text"},
        }
        number = channel.config["phone_number_id"]
        try:
            await call(ctx, channel, "POST", f"{number}/messages", body=body)
        except (GraphError, FetchError) as exc:
            log.warning("whatsapp_mark_read_failed", channel_id=channel.id, error=str(exc))

    # Registration

    async def register(self, ctx: ProviderContext, channel: ChannelView) -> Registration:
        """Check the token and the phone number id; keep the number's public facts."""
        number = channel.config["phone_number_id"]
        try:
            answer = await call(ctx, channel, "GET", str(number), params={"fields": _FIELDS})
        except GraphError as exc:
            reason = exc.message if exc.code is None else f"{exc.message} (code {exc.code})"
            raise RegistrationFailed(reason) from exc
        details: dict[str, Any] = {
            key: answer[key] for key in _FIELDS.split(",") if isinstance(answer.get(key), str)
        }
        details["webhook_url"] = f"{ctx.public_url}/hooks/whatsapp/{channel.id}"
        return Registration(details=details)

    async def unregister(self, ctx: ProviderContext, channel: ChannelView) -> None:
        """Nothing to call: Meta's webhook subscription belongs to the owner's Meta app, not to
        the channel. Deliveries for a stopped agent are answered 200 and logged as dropped."""
        return None


def _refused(exc: GraphError, *, parts_sent: int, sent: tuple[str, ...]) -> SendOutcome:
    """The outcome of an error Graph answered, decided by its code."""
    common: dict[str, Any] = {
        "status_code": exc.status,
        "parts_sent": parts_sent,
        "external_ids": sent,
    }
    if exc.code in THROTTLED:
        wait = THROTTLED[exc.code]
        error = f"WhatsApp throttled it: {exc}"
        return SendOutcome("retry", error=error, retry_after=wait, **common)
    if exc.code in DISABLING:
        reason = _told(f"{DISABLING[exc.code]}: {exc}")
        return SendOutcome("disable_channel", error=reason, **common)
    if exc.retryable:
        return SendOutcome("retry", error=f"WhatsApp failed: {exc}", **common)
    return SendOutcome("failed", error=f"WhatsApp refused it: {exc}", **common)


def _unreachable(exc: FetchError, *, parts_sent: int, sent: tuple[str, ...]) -> SendOutcome:
    if isinstance(exc, UnsafeUrlError):  # the API root is not reachable under the SSRF rules
        return SendOutcome("failed", error=str(exc), parts_sent=parts_sent, external_ids=sent)
    return SendOutcome("retry", error=str(exc), parts_sent=parts_sent, external_ids=sent)


WHATSAPP = register_type(WhatsappChannelType())
