from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin


class ToolApproval(IdMixin, CreatedMixin, Base):
    """A tool call the model asked for that waits for its owner's decision, then its run.

    `status`: `pending` → `approved` | `denied` | `expired` (the owner's decision, or none in
    time); an approved call is claimed (`running`) by the one turn that runs it and ends
    `executed` with its output kept in `result`, so a turn that resumes again reuses the output
    instead of running the tool twice. `arguments` and `result` are AES-GCM ciphertext.
    """

    __tablename__ = "tool_approvals"
    __table_args__ = (
        UniqueConstraint("message_id", "tool_call_id"),
        Index("ix_tool_approvals_agent_id_status", "agent_id", "status"),
    )

    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    owner_id: Mapped[str] = mapped_column(String(36), index=True)
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    thread_id: Mapped[str] = mapped_column(String(36))
    step: Mapped[int]
    tool_call_id: Mapped[str] = mapped_column(String(200))
    tool_name: Mapped[str] = mapped_column(String(200))
    arguments: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    expires_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    decided_by: Mapped[str | None] = mapped_column(String(36))
    executed_at: Mapped[datetime | None]
    result: Mapped[str | None] = mapped_column(Text)
