"""The sections of a data export, one producer per domain (see `privacy.export_archive`).

Every query here is scoped to `ctx.user_id` (the owner column of its table); nothing reads a
secret column: channel secrets become `{"configured": ...}` through the agent file, and the
password hash, API key hashes, session tokens and CSRF tokens are never selected into output.
"""

from __future__ import annotations

from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from lunogen.account.models import Consent, User, UserPicture
from lunogen.admin.models import ContentGrant, PrivacyRequest, Ticket, TicketMessage
from lunogen.agent.agentfile import file_of
from lunogen.agent.models import Agent, AgentVersion
from lunogen.audit.models import AuditEvent
from lunogen.auth.models import ApiKey, AuthSession
from lunogen.billing.models import CreditAccount, CreditEntry
from lunogen.billing.models_caps import SpendCap, SpendCounter
from lunogen.llm.models import UsageRecord
from lunogen.notification.models import Notification
from lunogen.privacy.export_archive import (
    Archive,
    ExportContext,
    dumps,
    register_section,
    slug,
)
from lunogen.runlog.models import AgentLogEvent
from lunogen.runtime.approval_models import ToolApproval
from lunogen.runtime.models import MemoryNote, Message, Thread
from lunogen.skill.models import Skill, SkillFile, SkillVersion

PICTURE_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
}


def agent_folder(agent: Agent) -> str:
    """The agent's name in the archive's paths, with its id's start to keep names apart."""
    return f"{slug(agent.name)}-{agent.id[:8]}"


async def _agents(ctx: ExportContext) -> list[Agent]:
    async with ctx.reader() as session:
        rows = await session.execute(
            select(Agent)
            .where(Agent.owner_id == ctx.user_id)
            .options(selectinload(Agent.channels))
            .order_by(Agent.created_at, Agent.id)
        )
        return list(rows.scalars())


@register_section(
    "profile",
    files="profile.json",
    about="Your account: email, name, role, plan, sign-in methods (a Google account is named "
    "by its subject id), the policy versions you accepted, your credit balance, your API keys "
    "(name, visible prefix, scopes, use; never the key) and your sign-in sessions (when, "
    "from where; never the token).",
)
async def profile(ctx: ExportContext, archive: Archive) -> None:
    async with ctx.reader() as session:
        user = await session.get(User, ctx.user_id)
        assert user is not None
        credit = await session.get(CreditAccount, ctx.user_id)
        keys = (
            await session.execute(
                select(ApiKey).where(ApiKey.user_id == ctx.user_id).order_by(ApiKey.created_at)
            )
        ).scalars()
        sessions = (
            await session.execute(
                select(AuthSession)
                .where(AuthSession.user_id == ctx.user_id)
                .order_by(AuthSession.created_at)
            )
        ).scalars()
        document = {
            "id": user.id,
            "email": user.email,
            "name": user.name,
            "email_verified_at": user.email_verified_at,
            "role": user.role,
            "plan": user.plan,
            "password": {"configured": user.password_hash is not None},
            "google": {"subject": user.google_sub, "picture_url": user.picture_url}
            if user.google_sub
            else None,
            "age_attested_at": user.age_attested_at,
            "terms_version": user.terms_version,
            "privacy_version": user.privacy_version,
            "created_at": user.created_at,
            "deleted_at": user.deleted_at,
            "credits": None
            if credit is None
            else {
                "balance_micro": credit.balance,
                "held_micro": credit.held,
                "low_credit_threshold_micro": credit.low_credit_threshold,
            },
            "api_keys": [
                {
                    "id": key.id,
                    "name": key.name,
                    "prefix": key.prefix,
                    "scopes": list(key.scopes),
                    "created_at": key.created_at,
                    "last_used_at": key.last_used_at,
                    "revoked_at": key.revoked_at,
                }
                for key in keys
            ],
            "sessions": [
                {
                    "id": row.id,
                    "created_at": row.created_at,
                    "last_seen_at": row.last_seen_at,
                    "expires_at": row.expires_at,
                    "revoked_at": row.revoked_at,
                    "ip": row.ip,
                    "user_agent": row.user_agent,
                }
                for row in sessions
            ],
        }
    await archive.write_json("profile.json", document)


@register_section(
    "picture",
    files="picture.png (or .jpg, .webp, .gif)",
    about="The profile picture copied from your Google account, when one is stored.",
)
async def picture(ctx: ExportContext, archive: Archive) -> None:
    async with ctx.reader() as session:
        row = await session.get(UserPicture, ctx.user_id)
    if row is not None:
        extension = PICTURE_EXTENSIONS.get(row.content_type, "bin")
        await archive.write_bytes(f"picture.{extension}", row.data)


@register_section(
    "consents",
    files="consents.json",
    about="Each acceptance of the Terms of Service and the Privacy Policy: document, version, "
    "when, and the IP address and browser it came from.",
)
async def consents(ctx: ExportContext, archive: Archive) -> None:
    def item(row: Consent) -> dict[str, Any]:
        return {
            "document": row.document,
            "version": row.version,
            "accepted_at": row.accepted_at,
            "ip": row.ip,
            "user_agent": row.user_agent,
        }

    query = select(Consent).where(Consent.user_id == ctx.user_id)
    await ctx.write_rows(archive, "consents.json", query, [Consent.accepted_at, Consent.id], item)


def _channel_states(agent: Agent) -> list[dict[str, Any]]:
    return [
        {
            "id": row.id,
            "type": row.type,
            "position": row.position,
            "secrets": {"configured": row.secrets is not None},
            "registered_at": row.registered_at,
            "disabled_at": row.disabled_at,
            "disabled_reason": row.disabled_reason,
            "created_at": row.created_at,
        }
        for row in sorted(agent.channels, key=lambda c: c.position)
    ]


@register_section(
    "agents",
    files="agents/<agent>.json",
    about="One file per agent (deleted ones awaiting their purge included): its status and "
    "dates, its configuration as an agent file (the format `POST /api/v1/agents/import` "
    "takes; channel secrets only as configured or not), and the state of each channel.",
)
async def agents(ctx: ExportContext, archive: Archive) -> None:
    for agent in await _agents(ctx):
        async with ctx.reader() as session:
            configuration = await file_of(session, agent)
        document = {
            "id": agent.id,
            "name": agent.name,
            "status": agent.status,
            "status_changed_at": agent.status_changed_at,
            "created_at": agent.created_at,
            "updated_at": agent.updated_at,
            "started_at": agent.started_at,
            "deleted_at": agent.deleted_at,
            "last_error": agent.last_error,
            "max_output_tokens": agent.max_output_tokens,
            "agent_file": configuration,
            "channels": _channel_states(agent),
        }
        await archive.write_json(f"agents/{agent_folder(agent)}.json", document)


@register_section(
    "agent_versions",
    files="agent_versions.json",
    about="Every numbered version of your agents' configuration (deleted agents awaiting "
    "their purge included): who made it, when, its summary and its configuration (name, "
    "model, instructions, tools, skills; never a secret).",
)
async def agent_versions(ctx: ExportContext, archive: Archive) -> None:
    def item(row: AgentVersion) -> dict[str, Any]:
        return {
            "agent_id": row.agent_id,
            "number": row.number,
            "created_at": row.created_at,
            "created_by": row.created_by,
            "via": "api" if row.created_by_key_id else "dashboard",
            "summary": row.summary,
            "restored_from": row.restored_from,
            "config": row.config,
        }

    query = (
        select(AgentVersion)
        .join(Agent, Agent.id == AgentVersion.agent_id)
        .where(Agent.owner_id == ctx.user_id)
    )
    order = [AgentVersion.agent_id, AgentVersion.number]
    await ctx.write_rows(archive, "agent_versions.json", query, order, item)


def skill_md(front_matter: dict[str, Any], body: str) -> str:
    head = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{head}---\n{body}"


@register_section(
    "skills",
    files="skills.json, skills/<skill>/SKILL.md and its files",
    about="Your skills: their status, versions and review findings in skills.json, and the "
    "current version of each as its package (SKILL.md and every file, as uploaded).",
)
async def skills(ctx: ExportContext, archive: Archive) -> None:
    async with ctx.reader() as session:
        owned = list(
            (
                await session.execute(
                    select(Skill)
                    .where(Skill.owner_id == ctx.user_id)
                    .order_by(Skill.created_at, Skill.id)
                )
            ).scalars()
        )
    listed = []
    for skill in owned:
        folder = f"skills/{slug(skill.name, limit=64)}-{skill.id[:8]}"
        async with ctx.reader() as session:
            version = (
                await session.execute(
                    select(SkillVersion).where(
                        SkillVersion.skill_id == skill.id, SkillVersion.version == skill.version
                    )
                )
            ).scalar_one_or_none()
            paths = (
                []
                if version is None
                else list(
                    (
                        await session.execute(
                            select(SkillFile.path)
                            .where(SkillFile.version_id == version.id)
                            .order_by(SkillFile.path)
                        )
                    ).scalars()
                )
            )
        if version is not None:
            await archive.write_bytes(
                f"{folder}/SKILL.md", skill_md(version.front_matter, version.body).encode()
            )
            for path in paths:  # one file in memory at a time
                async with ctx.reader() as session:
                    content = await session.get(SkillFile, (version.id, path))
                if content is not None:
                    await archive.write_bytes(f"{folder}/{path}", content.content)
        listed.append(
            {
                "id": skill.id,
                "name": skill.name,
                "description": skill.description,
                "status": skill.status,
                "version": skill.version,
                "folder": folder,
                "findings": skill.findings,
                "created_at": skill.created_at,
                "updated_at": skill.updated_at,
                "approved_at": skill.approved_at,
                "approved_version": skill.approved_version,
                "blocked_at": skill.blocked_at,
                "blocked_reason": skill.blocked_reason,
            }
        )
    await archive.write_json("skills.json", listed)


def _message(ctx: ExportContext, row: Message) -> dict[str, Any]:
    text = ctx.decrypt(row.content)
    out: dict[str, Any] = {
        "id": row.id,
        "seq": row.seq,
        "role": row.role,
        "text": text,
        "status": row.status,
        "created_at": row.created_at,
        "sent_at": row.sent_at,
        "completed_at": row.completed_at,
        "reply_to_id": row.reply_to_id,
    }
    if text is None:
        out["unreadable"] = True
    if row.source:  # not the contact's words: `schedule`, the owner's scheduled task
        out["source"] = row.source
    if row.failure:
        out["failure"] = row.failure
    return out


@register_section(
    "conversations",
    files="conversations/<agent>/<thread>.json",
    about="Every conversation of your agents, one file per thread (the channel, the contact, "
    "then each message in order, decrypted).",
)
async def conversations(ctx: ExportContext, archive: Archive) -> None:
    for agent in await _agents(ctx):
        threads = select(Thread).where(Thread.agent_id == agent.id, Thread.owner_id == ctx.user_id)
        async for batch in ctx.batches(threads, [Thread.created_at, Thread.id]):
            for thread in batch:
                name = f"conversations/{agent_folder(agent)}/{thread.id}.json"
                head = {
                    "id": thread.id,
                    "agent_id": agent.id,
                    "channel": thread.channel_key,
                    "contact": thread.contact,
                    "created_at": thread.created_at,
                    "last_message_at": thread.last_message_at,
                }
                async with archive.stream(name) as out:
                    opening = dumps(head)[:-1].rstrip()  # the object, still open
                    await out.write(opening + ',\n  "messages": ')
                    async with out.array() as items:
                        messages = select(Message).where(Message.thread_id == thread.id)
                        async for rows in ctx.batches(messages, [Message.seq, Message.id]):
                            for row in rows:
                                await items.add(_message(ctx, row))
                    await out.write("\n}")


@register_section(
    "memory",
    files="memory.json",
    about="Your agents' memory notes (what they chose to remember), decrypted, each with its "
    "agent and the contact it is about.",
)
async def memory(ctx: ExportContext, archive: Archive) -> None:
    def item(row: MemoryNote) -> dict[str, Any]:
        text = ctx.decrypt(row.content)
        note: dict[str, Any] = {
            "id": row.id,
            "agent_id": row.agent_id,
            "contact": row.contact,
            "text": text,
            "created_at": row.created_at,
        }
        if text is None:
            note["unreadable"] = True
        return note

    query = select(MemoryNote).where(MemoryNote.owner_id == ctx.user_id)
    order = [MemoryNote.created_at, MemoryNote.id]
    await ctx.write_rows(archive, "memory.json", query, order, item)


@register_section(
    "approvals",
    files="approvals.json",
    about="The tool calls your agents asked you to approve: the tool, its arguments, your "
    "decision and when, decrypted (the output of an approved call is in its conversation).",
)
async def tool_approvals(ctx: ExportContext, archive: Archive) -> None:
    def item(row: ToolApproval) -> dict[str, Any]:
        return {
            "id": row.id,
            "agent_id": row.agent_id,
            "message_id": row.message_id,
            "tool": row.tool_name,
            "arguments": ctx.decrypt(row.arguments),
            "status": row.status,
            "created_at": row.created_at,
            "expires_at": row.expires_at,
            "decided_at": row.decided_at,
            "executed_at": row.executed_at,
        }

    query = select(ToolApproval).where(ToolApproval.owner_id == ctx.user_id)
    order = [ToolApproval.created_at, ToolApproval.id]
    await ctx.write_rows(archive, "approvals.json", query, order, item)


@register_section(
    "logs",
    files="logs/<agent>.json",
    about="Your agents' runtime logs still kept (they are purged after their retention).",
)
async def logs(ctx: ExportContext, archive: Archive) -> None:
    def item(row: AgentLogEvent) -> dict[str, Any]:
        return {
            "at": row.created_at,
            "level": row.level,
            "event": row.event,
            "message": row.message,
            "details": row.details,
        }

    for agent in await _agents(ctx):
        query = select(AgentLogEvent).where(AgentLogEvent.agent_id == agent.id)
        name = f"logs/{agent_folder(agent)}.json"
        await ctx.write_rows(archive, name, query, [AgentLogEvent.id], item)


@register_section(
    "usage",
    files="usage.json",
    about="Every model call your agents made: models, tokens, cost (nano-USD), latency and "
    "outcome.",
)
async def usage(ctx: ExportContext, archive: Archive) -> None:
    def item(row: UsageRecord) -> dict[str, Any]:
        return {
            "id": row.id,
            "at": row.created_at,
            "agent_id": row.agent_id,
            "thread_id": row.thread_id,
            "message_id": row.message_id,
            "requested_model": row.requested_model,
            "answered_model": row.answered_model,
            "prompt_tokens": row.prompt_tokens,
            "completion_tokens": row.completion_tokens,
            "cached_tokens": row.cached_tokens,
            "reasoning_tokens": row.reasoning_tokens,
            "cost_nano_usd": row.cost_nano_usd,
            "cost_source": row.cost_source,
            "latency_ms": row.latency_ms,
            "outcome": row.outcome,
            "error": row.error,
        }

    query = select(UsageRecord).where(UsageRecord.owner_id == ctx.user_id)
    order = [UsageRecord.created_at, UsageRecord.id]
    await ctx.write_rows(archive, "usage.json", query, order, item)


@register_section(
    "ledger",
    files="ledger.json",
    about="Your credit ledger: every entry (grants, purchases, holds, charges, releases, "
    "adjustments) in micro-credits, with the balance after each.",
)
async def ledger(ctx: ExportContext, archive: Archive) -> None:
    def item(row: CreditEntry) -> dict[str, Any]:
        return {
            "id": row.id,
            "at": row.created_at,
            "kind": row.kind,
            "amount_micro": row.amount,
            "held_delta_micro": row.held_delta,
            "balance_after_micro": row.balance_after,
            "held_after_micro": row.held_after,
            "reference": row.reference,
            "description": row.description,
        }

    query = select(CreditEntry).where(CreditEntry.account_id == ctx.user_id)
    order = [CreditEntry.id]
    await ctx.write_rows(archive, "ledger.json", query, order, item)


@register_section(
    "spend_caps",
    files="spend_caps.json, spend_periods.json",
    about="The spend caps you set (per agent and for the account, in micro-credits; the "
    "over-cap reply) and what each capped agent and the account spent per UTC day and month.",
)
async def spend_caps(ctx: ExportContext, archive: Archive) -> None:
    def cap(row: SpendCap) -> dict[str, Any]:
        return {
            "agent_id": row.agent_id,
            "daily_micro": row.daily_micro,
            "monthly_micro": row.monthly_micro,
            "turn_micro": row.turn_micro,
            "turn_tokens": row.turn_tokens,
            "reply_text": row.reply_text,
            "updated_at": row.updated_at,
        }

    def period(row: SpendCounter) -> dict[str, Any]:
        return {
            "agent_id": None if row.subject == ctx.user_id else row.subject,
            "period": row.period,
            "spent_micro": row.spent,
            "warned_at_80_percent": row.warned,
            "reached": row.reached,
        }

    caps = select(SpendCap).where(SpendCap.owner_id == ctx.user_id)
    await ctx.write_rows(archive, "spend_caps.json", caps, [SpendCap.subject], cap)
    periods = select(SpendCounter).where(SpendCounter.owner_id == ctx.user_id)
    order = [SpendCounter.subject, SpendCounter.period]
    await ctx.write_rows(archive, "spend_periods.json", periods, order, period)


@register_section(
    "notifications",
    files="notifications.json",
    about="The notifications LunoGen showed (and emailed) you, read or not.",
)
async def notifications(ctx: ExportContext, archive: Archive) -> None:
    def item(row: Notification) -> dict[str, Any]:
        return {
            "id": row.id,
            "at": row.created_at,
            "kind": row.kind,
            "title": row.title,
            "body": row.body,
            "agent_id": row.agent_id,
            "read_at": row.read_at,
        }

    query = select(Notification).where(Notification.user_id == ctx.user_id)
    order = [Notification.created_at, Notification.id]
    await ctx.write_rows(archive, "notifications.json", query, order, item)


@register_section(
    "audit",
    files="audit.json",
    about="The security log of your account: every audited action you took or that concerned "
    "you (sign-ins, keys, settings, exports, an operator's changes), with IP address and "
    "browser.",
)
async def audit(ctx: ExportContext, archive: Archive) -> None:
    # Events about you (your own actions included); an operator's actions on other people
    # are about them, and go in their archives.
    def item(row: AuditEvent) -> dict[str, Any]:
        return {
            "id": row.id,
            "at": row.created_at,
            "action": row.action,
            "by_you": row.actor_user_id == ctx.user_id,
            "with_api_key": row.actor_key_id,
            "target_type": row.target_type,
            "target_id": row.target_id,
            "ip": row.ip,
            "user_agent": row.user_agent,
            "details": row.details,
        }

    query = select(AuditEvent).where(AuditEvent.subject_user_id == ctx.user_id)
    order = [AuditEvent.created_at, AuditEvent.id]
    await ctx.write_rows(archive, "audit.json", query, order, item)


@register_section(
    "support",
    files="support_tickets.json",
    about="Your support tickets with their messages (decrypted; staff shown by role only) and "
    "the times you let support read your conversations.",
)
async def support_tickets(ctx: ExportContext, archive: Archive) -> None:
    query = select(Ticket).where(Ticket.user_id == ctx.user_id)
    async with archive.stream("support_tickets.json") as out, out.array() as items:
        async for tickets in ctx.batches(query, [Ticket.created_at, Ticket.id]):
            for ticket in tickets:
                async with ctx.reader() as session:
                    said = await session.execute(
                        select(TicketMessage)
                        .where(TicketMessage.ticket_id == ticket.id)
                        .order_by(TicketMessage.created_at, TicketMessage.id)
                    )
                    granted = await session.execute(
                        select(ContentGrant)
                        .where(ContentGrant.ticket_id == ticket.id)
                        .order_by(ContentGrant.granted_at, ContentGrant.id)
                    )
                    messages, grants = list(said.scalars()), list(granted.scalars())
                await items.add(
                    {
                        "id": ticket.id,
                        "subject": ticket.subject,
                        "status": ticket.status,
                        "created_at": ticket.created_at,
                        "updated_at": ticket.updated_at,
                        "messages": [
                            {
                                "from": message.author_role,
                                "at": message.created_at,
                                "text": ctx.decrypt(message.body),
                            }
                            for message in messages
                        ],
                        "conversation_access_granted": [
                            {
                                "granted_at": grant.granted_at,
                                "expires_at": grant.expires_at,
                                "revoked_at": grant.revoked_at,
                            }
                            for grant in grants
                        ],
                    }
                )


@register_section(
    "privacy_requests",
    files="privacy_requests.json",
    about="Your privacy requests (objections, questions, corrections) and our answers, decrypted.",
)
async def privacy_requests(ctx: ExportContext, archive: Archive) -> None:
    def item(row: PrivacyRequest) -> dict[str, Any]:
        return {
            "id": row.id,
            "kind": row.kind,
            "status": row.status,
            "text": ctx.decrypt(row.body),
            "answer": ctx.decrypt(row.response) if row.response else None,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }

    query = select(PrivacyRequest).where(PrivacyRequest.user_id == ctx.user_id)
    order = [PrivacyRequest.created_at, PrivacyRequest.id]
    await ctx.write_rows(archive, "privacy_requests.json", query, order, item)
