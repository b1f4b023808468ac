"""What a Telegram chat shows while the agent answers: "typing…" now and every few seconds, and
in private chats the reply as it is written (`sendMessageDraft`, at most once a second, one
`draft_id` per turn). Both stop when the turn ends; Telegram's refusals are logged, never raised.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import structlog

from lunogen.channel.contract import ProviderContext
from lunogen.channel.telegram import api
from lunogen.channel.telegram.api import BotApiError
from lunogen.channel.text import split_text
from lunogen.kit.http import FetchError
from lunogen.runtime.events import Subscription

log = structlog.get_logger(__name__)

TYPING_EVERY_SECONDS = 4.5  # Telegram shows "typing…" for about 5 s
DRAFT_EVERY_SECONDS = 1.0  # at most one draft a second per chat (Telegram's flood limits)
PRESENCE_TIMEOUT_SECONDS = 5.0


def draft_id_of(inbound_id: str) -> int:
    """A stable, non-zero draft id for the turn answering `inbound_id`."""
    value = int.from_bytes(hashlib.sha256(inbound_id.encode()).digest()[:4], "big") & 0x7FFFFFFF
    return value or 1


async def keep_typing(
    ctx: ProviderContext,
    token: str,
    chat: int | str,
    topic: int | None,
    channel_id: str,
    over: asyncio.Event,
) -> None:
    """`typing` now and every few seconds until cancelled; stops when Telegram refuses it."""
    params: dict[str, Any] = {"chat_id": chat, "action": "typing"}
    if topic is not None:
        params["message_thread_id"] = topic
    while not over.is_set():
        wait = TYPING_EVERY_SECONDS
        try:
            await api.call(ctx, token, "sendChatAction", params, timeout=PRESENCE_TIMEOUT_SECONDS)
        except BotApiError as exc:
            log.info("telegram_typing_failed", channel_id=channel_id, code=exc.code)
            if exc.code != 429 and exc.code < 500:
                return  # blocked, token refused, unknown chat: it will not get better
            wait = max(wait, exc.retry_after or 0.0)
        except FetchError as exc:
            log.info("telegram_typing_failed", channel_id=channel_id, error=str(exc))
        await asyncio.sleep(wait)


class Drafts:
    """The reply so far, shown in the private chat as a draft at most once a second."""

    def __init__(
        self,
        ctx: ProviderContext,
        token: str,
        chat: int | str,
        draft_id: int,
        channel_id: str,
        over: asyncio.Event,
    ) -> None:
        self.over = over
        self.ctx = ctx
        self.token = token
        self.chat = chat
        self.draft_id = draft_id
        self.channel_id = channel_id
        self.text = ""
        self.shown = ""
        self.next_at = 0.0

    def _take(self, event_name: str, data: dict[str, Any]) -> bool:
        """Fold one event into the text; False when the turn is over."""
        if event_name == "delta":
            self.text += str(data.get("text") or "")
        elif event_name == "tool":  # a new model call follows the tool: a new text
            self.text = ""
        elif event_name in ("done", "error"):
            return False
        return True

    async def follow(self, subscription: Subscription) -> None:
        loop = asyncio.get_running_loop()
        while not self.over.is_set():
            event = await subscription.next(30.0)
            if event is None or self.over.is_set():
                continue
            if not self._take(event.event, event.data):
                return
            while loop.time() < self.next_at:  # gather what comes until a draft may go
                more = await subscription.next(self.next_at - loop.time())
                if more is None or self.over.is_set():
                    break
                if not self._take(more.event, more.data):
                    return
            if self.over.is_set():
                return
            if self.text.strip() and self.text != self.shown and not await self._show():
                return

    async def _show(self) -> bool:
        """Send the draft; False when Telegram will not take drafts for this chat."""
        parts = split_text(self.text)
        params = {"chat_id": self.chat, "draft_id": self.draft_id, "text": parts[-1]}
        loop = asyncio.get_running_loop()
        self.next_at = loop.time() + DRAFT_EVERY_SECONDS
        self.shown = self.text
        try:
            await api.call(
                self.ctx, self.token, "sendMessageDraft", params, timeout=PRESENCE_TIMEOUT_SECONDS
            )
        except BotApiError as exc:
            log.info("telegram_draft_failed", channel_id=self.channel_id, code=exc.code)
            if exc.code == 429:
                self.next_at = loop.time() + max(DRAFT_EVERY_SECONDS, exc.retry_after or 0.0)
                return True
            return exc.code >= 500
        except FetchError as exc:
            log.info("telegram_draft_failed", channel_id=self.channel_id, error=str(exc))
        return True
