from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from lunogen.db import Base, CreatedMixin, IdMixin


class User(IdMixin, CreatedMixin, Base):
    __tablename__ = "users"

    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str | None] = mapped_column(Text)
    email_verified_at: Mapped[datetime | None]
    role: Mapped[str] = mapped_column(String(20), default="user")
    plan: Mapped[str] = mapped_column(String(20), default="free")
    google_sub: Mapped[str | None] = mapped_column(String(255), unique=True)
    picture_url: Mapped[str | None] = mapped_column(Text)
    age_attested_at: Mapped[datetime | None]
    terms_version: Mapped[str | None] = mapped_column(String(40))
    privacy_version: Mapped[str | None] = mapped_column(String(40))
    deleted_at: Mapped[datetime | None]
    suspended_at: Mapped[datetime | None]  # by an admin: every session and key refused
    suspended_reason: Mapped[str | None] = mapped_column(Text)


class Consent(IdMixin, Base):
    """One accepted document version; append-only, kept as the proof of consent."""

    __tablename__ = "consents"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    document: Mapped[str] = mapped_column(String(40))
    version: Mapped[str] = mapped_column(String(40))
    accepted_at: Mapped[datetime]
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(500))


class EmailToken(IdMixin, CreatedMixin, Base):
    """Single-use, expiring link token (email verification, password reset, email change);
    only its hash."""

    __tablename__ = "email_tokens"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(30))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    new_email: Mapped[str | None] = mapped_column(String(320))  # `change_email` only


class UserPicture(Base):
    """The person's Google profile picture, copied at sign-in and served from our own origin.

    At most one per user (keyed on it). `source_url` is the URL it was downloaded from: a sign-in
    whose `picture` claim names another URL downloads it again. Kept out of `users` so the row
    every authenticated request loads carries no image. Removed with the user (ON DELETE
    CASCADE); a soft deletion removes it through `account.picture.delete_picture`.
    """

    __tablename__ = "user_pictures"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    content_type: Mapped[str] = mapped_column(String(40))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    source_url: Mapped[str] = mapped_column(Text)
    fetched_at: Mapped[datetime]
