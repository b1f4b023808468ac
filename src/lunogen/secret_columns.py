"""Every column that holds AES-GCM ciphertext. `lunogen secrets rotate` walks this list."""

from __future__ import annotations

from sqlalchemy.orm import InstrumentedAttribute

from lunogen.agent.models import AgentChannel
from lunogen.notification.models import OutboundEmail
from lunogen.runtime.approval_models import ToolApproval
from lunogen.runtime.models import MemoryNote, Message
from lunogen.tool.mcp.models import McpServer

ENCRYPTED_COLUMNS: list[InstrumentedAttribute[str | None]] = [
    AgentChannel.secrets,
    OutboundEmail.body_encrypted,
    Message.content,
    MemoryNote.content,
    ToolApproval.arguments,
    ToolApproval.result,
    McpServer.credentials,
    McpServer.oauth_pending,
]
