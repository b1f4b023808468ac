"""Support tables: tickets and their threads, content grants, privacy requests.

Free text a person or staff member writes (ticket messages, privacy request bodies and
responses) is AES-GCM ciphertext, like conversation messages. A ticket's subject is plain text:
the queue lists and searches it, and the dashboard asks people to keep it short and general.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin
from lunogen.kit.time import utcnow


class Ticket(IdMixin, CreatedMixin, Base):
    """A support ticket. `status`: open (support's turn), waiting (the person's turn), closed."""

    __tablename__ = "tickets"
    __table_args__ = (
        Index("ix_tickets_user_id_updated_at", "user_id", "updated_at"),
        Index("ix_tickets_status_updated_at", "status", "updated_at"),
    )

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="open")
    assignee_id: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TicketMessage(IdMixin, CreatedMixin, Base):
    """One message of a ticket's thread; `author_role` is `user` (the owner) or `staff`."""

    __tablename__ = "ticket_messages"
    __table_args__ = (Index("ix_ticket_messages_ticket_id_created_at", "ticket_id", "created_at"),)

    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    author_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    author_role: Mapped[str] = mapped_column(String(10))
    body: Mapped[str] = mapped_column(Text)


class ContentGrant(IdMixin, Base):
    """The owner's permission, given on a ticket, for support staff to read their conversations
    until `expires_at` (at most 72 hours after `granted_at`) unless revoked earlier."""

    __tablename__ = "content_grants"
    __table_args__ = (Index("ix_content_grants_user_id_expires_at", "user_id", "expires_at"),)

    ticket_id: Mapped[str] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class PrivacyRequest(IdMixin, CreatedMixin, Base):
    """A person's privacy request. `kind`: objection, access_question, correction, other;
    `status`: received, in_progress, answered, closed. `handled_by`: the last staff member who
    changed it."""

    __tablename__ = "privacy_requests"
    __table_args__ = (
        Index("ix_privacy_requests_user_id_created_at", "user_id", "created_at"),
        Index("ix_privacy_requests_status_created_at", "status", "created_at"),
    )

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20), default="received")
    response: Mapped[str | None] = mapped_column(Text)
    handled_by: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
