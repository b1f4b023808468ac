"""API shapes of conversations, shared by the channels that answer in the response."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

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
    source: str | None = Field(
        default=None,
        description="Who wrote an inbound message that is not the contact's own words: "
        "`schedule` (the agent's owner, through a proactive schedule); null: the contact",
    )


def message_out(message: Message, keyring: KeyRing) -> MessageOut:
    return MessageOut(
        id=message.id,
        thread_id=message.thread_id,
        role=message.role,
        text=keyring.decrypt(message.content),
        status=message.status,
        created_at=message.created_at,
        reply_to_id=message.reply_to_id,
        source=message.source,
    )
