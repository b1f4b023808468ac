"""The WhatsApp Business Cloud API channel: `kind` (the channel type, registered as
`whatsapp`), `inbound` (the subscription check, signatures, envelopes), `graph` (a thin Graph API
client on the SSRF-safe HTTP kit) and `text` (splitting replies at 4,096 characters)."""

from __future__ import annotations

from lunogen.channel.whatsapp.kind import WHATSAPP, WhatsappChannelType

__all__ = ["WHATSAPP", "WhatsappChannelType"]
