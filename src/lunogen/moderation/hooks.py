"""Moderation plugged into the runtime (`runtime.screening`) and the data export; imported by
the composition root, so every process that answers messages screens them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.models import Agent
from lunogen.config import Settings
from lunogen.kit.crypto import KeyRing
from lunogen.moderation import rules, service
from lunogen.moderation.models import ModerationFlag, ModerationSuspension
from lunogen.moderation.tasks import classify_message
from lunogen.privacy import export as privacy_export  # noqa: F401  its sections come first
from lunogen.privacy.export_archive import Archive, ExportContext, register_section
from lunogen.runtime import screening
from lunogen.runtime.screening import Screen, TurnScreening
from lunogen.worker import after_commit
from lunogen.worker.enqueue import enqueue

RULES_CHANGED = "moderation_rules"


class Moderation:
    """The runtime's screener: the cached rules, and the rows a message's end writes."""

    async def screen(self, session: AsyncSession, settings: Settings) -> Screen:
        return await rules.current(session, settings)

    async def recorded(
        self,
        session: AsyncSession,
        ended: TurnScreening,
        *,
        settings: Settings,
        keyring: KeyRing,
    ) -> None:
        checks = await service.record_turn(session, ended, settings=settings, keyring=keyring)
        for check in checks:
            enqueue(session, classify_message, check.id)


screening.register(Moderation())


def rules_changed(session: AsyncSession) -> None:
    """Rebuild this process's compiled rules once the change commits."""
    after_commit.defer(session, RULES_CHANGED, True)


after_commit.register(RULES_CHANGED, lambda _items: rules.invalidate())


@register_section(
    "moderation",
    files="moderation.json",
    about="The acceptable-use flags raised on your agents' messages (the flagged text "
    "decrypted, the rule or classifier categories, the review's outcome) and the suspensions "
    "they led to, with your appeals.",
)
async def moderation_section(ctx: ExportContext, archive: Archive) -> None:
    query = select(ModerationFlag).where(ModerationFlag.owner_id == ctx.user_id)
    async with archive.stream("moderation.json") as out:
        await out.write('{"flags": ')
        async with out.array() as items:
            async for flags in ctx.batches(query, [ModerationFlag.created_at, ModerationFlag.id]):
                for flag in flags:
                    await items.add(_flag(ctx, flag))
        async with ctx.reader() as session:
            rows = await session.execute(
                select(ModerationSuspension, Agent.name)
                .join(Agent, Agent.id == ModerationSuspension.agent_id)
                .where(ModerationSuspension.owner_id == ctx.user_id)
                .order_by(ModerationSuspension.created_at)
            )
            suspensions = [
                {
                    "agent_id": row.agent_id,
                    "agent_name": name,
                    "reason": row.reason,
                    "flags": row.flags,
                    "suspended_at": row.created_at,
                    "appeal_ticket_id": row.ticket_id,
                    "appealed_at": row.appealed_at,
                }
                for row, name in rows.all()
            ]
        await out.write(', "suspensions": ')
        async with out.array() as items:
            for item in suspensions:
                await items.add(item)
        await out.write("}")


def _flag(ctx: ExportContext, flag: ModerationFlag) -> dict[str, Any]:
    return {
        "id": flag.id,
        "agent_id": flag.agent_id,
        "message_id": flag.message_id,
        "direction": flag.direction,
        "source": flag.source,
        "rule": flag.rule,
        "action": flag.action,
        "categories": flag.categories,
        "scores": flag.scores,
        "text": ctx.decrypt(flag.evidence),
        "status": flag.status,
        "reviewed_at": flag.reviewed_at,
        "review_note": flag.review_note,
        "created_at": flag.created_at,
    }
