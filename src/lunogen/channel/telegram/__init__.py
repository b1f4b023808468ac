"""Telegram bots as agent channels (the Bot API over webhooks): `channel` is the type,
`updates` reads what Telegram sends, `text` cuts replies to its size, `presence` shows typing
and drafts, `api` calls it."""

from __future__ import annotations

from lunogen.channel.telegram.channel import TELEGRAM, TelegramChannelType

__all__ = ["TELEGRAM", "TelegramChannelType"]
