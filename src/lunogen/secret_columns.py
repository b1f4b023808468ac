"""Every column that holds AES-GCM ciphertext. `lunogen secrets rotate` walks this list."""

from __future__ import annotations

from sqlalchemy.orm import InstrumentedAttribute

from lunogen.agent.models import AgentChannel
from lunogen.notification.models import OutboundEmail
from lunogen.runtime.models import MemoryNote, Message

ENCRYPTED_COLUMNS: list[InstrumentedAttribute[str | None]] = [
    AgentChannel.secrets,
    OutboundEmail.body_encrypted,
    Message.content,
    MemoryNote.content,
]
