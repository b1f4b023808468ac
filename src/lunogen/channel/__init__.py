"""Channels: how people reach an agent (webhook, WhatsApp, Telegram, web chat)."""
