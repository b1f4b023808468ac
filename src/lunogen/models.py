"""Imports every table so that the metadata is complete (Alembic, tests)."""

from lunogen.account.models import Consent, EmailToken, User
from lunogen.agent.models import Agent, AgentChannel
from lunogen.audit.models import AuditEvent
from lunogen.auth.models import ApiKey, AuthSession
from lunogen.db import Base
from lunogen.llm.models import CatalogModel
from lunogen.notification.models import OutboundEmail

metadata = Base.metadata

__all__ = [
    "Agent",
    "AgentChannel",
    "ApiKey",
    "AuditEvent",
    "AuthSession",
    "CatalogModel",
    "Consent",
    "EmailToken",
    "OutboundEmail",
    "User",
    "metadata",
]
