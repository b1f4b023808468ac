"""The Telegram channel type: a bot (its token from @BotFather) whose webhook LunoGen sets on
deploy and removes on stop.

Inbound updates are authenticated by the random `secret_token` set with the webhook (Telegram
sends it back in `X-Telegram-Bot-Api-Secret-Token`; compared in constant time) and parsed by
`updates`. Replies go out with `sendMessage`, cut at 4,096 characters (`text`), resumed after the
parts already sent; the Bot API's errors map onto the delivery outcomes (429 → retry after its
`retry_after`, 403 → the contact blocked the bot, 401 → the token was revoked: the channel is
disabled). While a turn runs, the chat shows "typing…" and, in private chats, the reply as it is
written (`sendMessageDraft`, a preview; the reply itself is still sent whole).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import structlog

from lunogen.channel.contract import (
    AnsweringTurn,
    ChannelType,
    ChannelView,
    InboundRejected,
    InboundRequest,
    Outgoing,
    Parsed,
    ProviderContext,
    Registration,
    RegistrationFailed,
    SendOutcome,
    SendResult,
    register_type,
)
from lunogen.channel.schemas import TelegramChannel, TelegramChannelIn
from lunogen.channel.telegram import api
from lunogen.channel.telegram.api import BotApiError, chat_id_of, is_private, parse_reference
from lunogen.channel.telegram.presence import Drafts, draft_id_of, keep_typing
from lunogen.channel.telegram.updates import parse_update
from lunogen.channel.text import split_text
from lunogen.kit.http import FetchError, UnsafeUrlError

log = structlog.get_logger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
# `message` only: edited messages would be skipped (the first version was answered), and every
# other kind (reactions, inline queries, member changes...) means nothing to an agent.
ALLOWED_UPDATES = ["message"]
STOP_WAIT_SECONDS = 2.0
REGISTER_RETRY_MAX_SECONDS = 5.0
FAILURE_NOTICE = (
    "Sorry, something went wrong and I couldn't answer your last message. Please try again in "
    "a little while."
)


def webhook_url(ctx: ProviderContext, channel: ChannelView) -> str:
    return f"{ctx.public_url}/hooks/telegram/{channel.id}"


def _header(headers: Any, name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return str(value) if value is not None else None


class TelegramChannelType(ChannelType):
    name = "telegram"
    input_model = TelegramChannelIn
    output_model = TelegramChannel
    pushes_replies = True
    registers = True
    inbound_route = True
    has_access_policy = True
    openapi_extra: ClassVar[dict[str, Any] | None] = {
        "parameters": [
            {
                "name": SECRET_HEADER,
                "in": "header",
                "required": True,
                "description": "The secret LunoGen set with the bot's webhook.",
                "schema": {"type": "string", "minLength": 1, "maxLength": 256},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "description": "A Telegram Update (core.telegram.org/bots/api#update).",
                        "required": ["update_id"],
                        "properties": {
                            "update_id": {"type": "integer"},
                            "message": {"type": "object"},
                        },
                    }
                }
            },
        },
    }
    inbound_responses: ClassVar[dict[int | str, dict[str, Any]] | None] = {
        200: {"description": "Taken (or skipped, logged): Telegram does not send it again"},
        400: {"description": "The body is not a Telegram Update"},
        401: {"description": "Missing or wrong X-Telegram-Bot-Api-Secret-Token"},
    }
    inbound_doc: ClassVar[str | None] = (
        "Telegram's webhook for the channel's bot: set by LunoGen when the agent is deployed; "
        "not for other callers."
    )

    # Inbound --------------------------------------------------------------------------------

    def verify(self, request: InboundRequest, channel: ChannelView) -> None:
        expected = channel.secrets.get("webhook_secret")
        offered = _header(request.headers, SECRET_HEADER)
        if not expected:
            raise InboundRejected(
                401, "Unauthorized", "This channel's webhook is not registered with Telegram"
            )
        if offered is None:
            raise InboundRejected(401, "Unauthorized", f"Missing {SECRET_HEADER}")
        if not hmac.compare_digest(offered.encode(), expected.encode()):
            raise InboundRejected(401, "Unauthorized", f"Wrong {SECRET_HEADER}")

    def parse(self, request: InboundRequest, channel: ChannelView) -> Parsed:
        return parse_update(request.body, channel)

    # Outbound -------------------------------------------------------------------------------

    def failure_notice(self, channel: ChannelView) -> str | None:
        """An apology only: the real error is in the owner's log, never shown to a contact."""
        return FAILURE_NOTICE

    async def send(
        self, ctx: ProviderContext, channel: ChannelView, outgoing: Outgoing
    ) -> SendOutcome:
        token = channel.secrets.get("bot_token")
        if not token:
            return SendOutcome("failed", error="the channel has no bot token")
        text = outgoing.text if outgoing.kind == "reply" else self.failure_notice(channel) or ""
        parts = split_text(text)
        if not parts:
            return SendOutcome("failed", error="the reply is empty; Telegram sends no empty text")
        chat = chat_id_of(outgoing.contact)
        answered, topic = parse_reference(outgoing.inbound_reference)
        sent: list[str] = []
        for index in range(min(outgoing.parts_sent, len(parts)), len(parts)):
            params: dict[str, Any] = {"chat_id": chat, "text": parts[index]}
            if topic is not None:
                params["message_thread_id"] = topic
            if index == 0 and answered is not None and not is_private(outgoing.contact):
                params["reply_parameters"] = {
                    "message_id": answered,
                    "allow_sending_without_reply": True,
                }
            try:
                answer = await api.call(ctx, token, "sendMessage", params)
            except BotApiError as exc:
                return _outcome_of_error(exc, parts_sent=index, sent=sent)
            except FetchError as exc:  # unsafe: LUNOGEN_TELEGRAM_API_BASE is not allowed
                kind: SendResult = "failed" if isinstance(exc, UnsafeUrlError) else "retry"
                return SendOutcome(kind, error=str(exc), parts_sent=index, external_ids=(*sent,))
            message_id = answer.get("message_id") if isinstance(answer, dict) else None
            # A message id is unique only within its chat: the receipt names both.
            sent.append(f"{chat}:{message_id}" if message_id is not None else "")
        return SendOutcome(
            "delivered", status_code=200, parts_sent=len(parts), external_ids=tuple(sent)
        )

    @asynccontextmanager
    async def answering(
        self, ctx: ProviderContext, channel: ChannelView, turn: AnsweringTurn
    ) -> AsyncIterator[None]:
        token = channel.secrets.get("bot_token")
        if not token:
            yield
            return
        chat = chat_id_of(turn.contact)
        _, topic = parse_reference(turn.reference)
        async with contextlib.AsyncExitStack() as stack:
            # Cancelling is not enough on its own: `asyncio.wait_for` (3.11) can swallow a
            # cancellation that meets a finished get, so the loops also watch `over`.
            over = asyncio.Event()
            tasks = [asyncio.create_task(keep_typing(ctx, token, chat, topic, channel.id, over))]
            try:
                if (
                    turn.streams
                    and turn.events is not None
                    and channel.config.get("stream_drafts", True)
                    and is_private(turn.contact)
                ):
                    try:
                        subscription = await stack.enter_async_context(
                            turn.events.follow(turn.inbound_id)
                        )
                    except Exception as exc:  # the reply still goes out whole, without drafts
                        log.warning(
                            "telegram_drafts_unavailable", channel_id=channel.id, error=str(exc)
                        )
                    else:
                        draft = Drafts(
                            ctx, token, chat, draft_id_of(turn.inbound_id), channel.id, over
                        )
                        tasks.append(asyncio.create_task(draft.follow(subscription)))
                yield
            finally:
                over.set()
                for task in tasks:
                    task.cancel()
                await asyncio.wait(tasks, timeout=STOP_WAIT_SECONDS)

    # Provider registration ------------------------------------------------------------------

    async def register(self, ctx: ProviderContext, channel: ChannelView) -> Registration:
        token = channel.secrets.get("bot_token")
        if not token:
            raise RegistrationFailed("the channel has no bot token (from @BotFather)")
        try:
            me = await _patiently(lambda: api.call(ctx, token, "getMe"))
        except BotApiError as exc:
            if exc.token_refused:
                raise RegistrationFailed(
                    f"{exc.description}: Telegram does not know this bot token (revoked or "
                    "mistyped); copy the current one from @BotFather"
                ) from None
            raise RegistrationFailed(f"getMe: {exc.description}") from None
        if not isinstance(me, dict) or not me.get("username") or not me.get("id"):
            raise RegistrationFailed("getMe did not describe a bot")
        url = webhook_url(ctx, channel)
        secret = secrets.token_urlsafe(32)  # A-Z a-z 0-9 _ -, as setWebhook requires
        params = {
            "url": url,
            "secret_token": secret,
            "allowed_updates": ALLOWED_UPDATES,
            "drop_pending_updates": False,
        }
        try:
            await _patiently(lambda: api.call(ctx, token, "setWebhook", params))
        except BotApiError as exc:
            hint = ""
            if "webhook" in exc.description.lower():
                hint = (
                    " (Telegram must reach LunoGen's public URL: https://, a public address, "
                    "port 443, 80, 88 or 8443)"
                )
            raise RegistrationFailed(f"setWebhook: {exc.description}{hint}") from None
        username = str(me["username"])
        details = {
            "id": me["id"],
            "username": username,
            "name": me.get("first_name"),
            "link": f"https://t.me/{username}",
            "can_read_all_group_messages": bool(me.get("can_read_all_group_messages")),
            "webhook_url": url,
        }
        return Registration(secrets={"webhook_secret": secret}, details=details)

    async def unregister(self, ctx: ProviderContext, channel: ChannelView) -> None:
        """Remove the webhook if it is still ours: the bot may have been given to another
        channel (or another service) since. A failure to reach Telegram raises (retried)."""
        token = channel.secrets.get("bot_token")
        if not token:
            return
        try:
            info = await api.call(ctx, token, "getWebhookInfo")
            current = str(info.get("url") or "") if isinstance(info, dict) else ""
            ours = {webhook_url(ctx, channel), str(channel.registration.get("webhook_url") or "")}
            if not current or current not in ours:
                log.info("telegram_webhook_not_ours", channel_id=channel.id, kept=bool(current))
                return
            await api.call(ctx, token, "deleteWebhook", {"drop_pending_updates": False})
        except BotApiError as exc:
            if exc.token_refused:  # revoked: nobody can use the bot or its webhook any more
                log.info("telegram_token_refused_on_unregister", channel_id=channel.id)
                return
            raise RegistrationFailed(f"Telegram: {exc.description}") from None


def _outcome_of_error(exc: BotApiError, *, parts_sent: int, sent: list[str]) -> SendOutcome:
    result: SendResult = "failed"
    error = exc.description
    if exc.code == 429 or exc.code >= 500:
        result = "retry"
    elif exc.code == 403:  # blocked by the user, user deactivated, kicked from the group
        result = "blocked"
    elif exc.token_refused:
        result = "disable_channel"
        error = (
            f"Telegram refused its bot token ({exc.description}): it was revoked or replaced in "
            "@BotFather. Set the bot's current token on the channel, then enable it"
        )
    return SendOutcome(
        result,
        error=error,
        status_code=exc.code,
        retry_after=exc.retry_after if exc.code == 429 else None,
        parts_sent=parts_sent,
        external_ids=tuple(sent),
    )


async def _patiently(attempt: Callable[[], Awaitable[Any]]) -> Any:
    """One call, made once more after Telegram's `retry_after` when it is short."""
    try:
        return await attempt()
    except BotApiError as exc:
        wait = exc.retry_after
        if exc.code != 429 or wait is None or wait > REGISTER_RETRY_MAX_SECONDS:
            raise
        await asyncio.sleep(wait)
        return await attempt()


TELEGRAM = register_type(TelegramChannelType())
