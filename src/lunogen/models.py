"""Imports every table so that the metadata is complete (Alembic, tests)."""

from lunogen.account.models import Consent, EmailToken, User
from lunogen.admin.models import ContentGrant, PrivacyRequest, Ticket, TicketMessage
from lunogen.agent.models import Agent, AgentChannel, AgentVersion
from lunogen.audit.models import AuditEvent
from lunogen.auth.models import ApiKey, AuthSession
from lunogen.billing.grants import StarterGrantClaim
from lunogen.billing.models import CreditAccount, CreditEntry, CreditHold, CreditPause
from lunogen.billing.models_caps import CappedHold, SpendCap, SpendCounter
from lunogen.billing.models_stripe import StripeEvent
from lunogen.channel.models import (
    ChannelContact,
    ChannelUnregistration,
    Delivery,
    DeliveryReceipt,
    EarlyStatus,
    PairingCode,
)
from lunogen.db import Base
from lunogen.llm.models import CatalogModel, UsageRecord
from lunogen.moderation.models import (
    ModerationCheck,
    ModerationFlag,
    ModerationRule,
    ModerationSuspension,
)
from lunogen.notification.models import Notification, OutboundEmail
from lunogen.privacy.models import DataExport, PolicyVersion, StripeCancellation
from lunogen.runlog.models import AgentLogEvent
from lunogen.runtime.approval_models import ToolApproval
from lunogen.runtime.models import MemoryNote, Message, Thread
from lunogen.schedule.models import Schedule, ScheduleRun
from lunogen.skill.models import Skill, SkillFile, SkillVersion
from lunogen.tool.mcp.models import McpServer, McpToolCall

metadata = Base.metadata

__all__ = [
    "Agent",
    "AgentChannel",
    "AgentLogEvent",
    "AgentVersion",
    "ApiKey",
    "AuditEvent",
    "AuthSession",
    "CappedHold",
    "CatalogModel",
    "ChannelContact",
    "ChannelUnregistration",
    "Consent",
    "ContentGrant",
    "CreditAccount",
    "CreditEntry",
    "CreditHold",
    "CreditPause",
    "DataExport",
    "Delivery",
    "DeliveryReceipt",
    "EarlyStatus",
    "EmailToken",
    "McpServer",
    "McpToolCall",
    "MemoryNote",
    "Message",
    "ModerationCheck",
    "ModerationFlag",
    "ModerationRule",
    "ModerationSuspension",
    "Notification",
    "OutboundEmail",
    "PairingCode",
    "PolicyVersion",
    "PrivacyRequest",
    "Schedule",
    "ScheduleRun",
    "Skill",
    "SkillFile",
    "SkillVersion",
    "SpendCap",
    "SpendCounter",
    "StarterGrantClaim",
    "StripeCancellation",
    "StripeEvent",
    "Thread",
    "Ticket",
    "TicketMessage",
    "ToolApproval",
    "UsageRecord",
    "User",
    "metadata",
]
