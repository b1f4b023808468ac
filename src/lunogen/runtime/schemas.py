"""API shapes of conversations, shared by the channels that answer in the response."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from lunogen.kit.crypto import KeyRing
from lunogen.runtime.models import Message


class MessageOut(BaseModel):
    id: str
    thread_id: str
    role: str
    text: str
    status: str
    created_at: datetime
    reply_to_id: str | None = None


def message_out(message: Message, keyring: KeyRing) -> MessageOut:
    return MessageOut(
        id=message.id,
        thread_id=message.thread_id,
        role=message.role,
        text=keyring.decrypt(message.content),
        status=message.status,
        created_at=message.created_at,
        reply_to_id=message.reply_to_id,
    )
