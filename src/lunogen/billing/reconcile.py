"""Fill in costs the provider did not report when the call was settled.

A call settled at catalog prices (the provider's response carried no cost) is looked up later on
OpenRouter's generation endpoint; when the final figure is known, the usage row takes it and the
difference is charged or given back as an `adjustment`, keyed on the generation id so it
applies once.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import structlog
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.billing import ledger
from lunogen.billing.units import nano_usd_to_micro_credits
from lunogen.config import Settings
from lunogen.kit.time import utcnow
from lunogen.llm.models import UsageRecord
from lunogen.llm.provider import ModelCallError, ModelClient

log = structlog.get_logger(__name__)

NANO = Decimal(1_000_000_000)
GIVE_UP_AFTER = timedelta(days=2)


async def reconcile_costs(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    model_client: ModelClient | None,
    *,
    settle_delay: timedelta = timedelta(seconds=30),
    limit: int = 100,
) -> int:
    """Reconcile up to `limit` calls; returns how many got their final cost."""
    if model_client is None or not model_client.openrouter:
        return 0
    now = utcnow()
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                select(UsageRecord.id, UsageRecord.generation_id)
                .where(
                    UsageRecord.outcome == "ok",
                    UsageRecord.generation_id.is_not(None),
                    or_(UsageRecord.cost_source.is_(None), UsageRecord.cost_source == "catalog"),
                    UsageRecord.created_at <= now - settle_delay,
                    UsageRecord.created_at >= now - GIVE_UP_AFTER,
                )
                .order_by(UsageRecord.created_at)
                .limit(limit)
            )
        ).all()
    done = 0
    for usage_id, generation_id in rows:
        try:
            final = await model_client.generation_cost(str(generation_id))
        except ModelCallError as exc:
            log.warning("reconcile_lookup_failed", generation_id=generation_id, error=str(exc))
            continue
        if final is None or final.total_cost is None:
            continue
        nano = int((final.total_cost * NANO).to_integral_value())
        async with sessionmaker() as session:
            if await _apply(session, settings, usage_id=usage_id, nano_usd=nano):
                done += 1
            await session.commit()
    if done:
        log.info("usage_costs_reconciled", calls=done)
    return done


async def _apply(
    session: AsyncSession, settings: Settings, *, usage_id: str, nano_usd: int
) -> bool:
    usage = await session.get(UsageRecord, usage_id, with_for_update=True)
    if usage is None or usage.cost_source == "provider":
        return False
    charged = _micro(usage.cost_nano_usd or 0, settings)
    owed = _micro(nano_usd, settings)
    usage.cost_nano_usd = nano_usd
    usage.cost_source = "provider"
    if owed != charged:
        await ledger.post(
            session,
            account_id=usage.owner_id,
            kind="adjustment",
            amount=charged - owed,
            key=f"reconcile:{usage.generation_id}",
            reference=usage.id,
            description="Final cost reported by the provider",
        )
    return True


def _micro(nano_usd: int, settings: Settings) -> int:
    return nano_usd_to_micro_credits(
        nano_usd, usd_per_credit=settings.usd_per_credit, markup_percent=settings.markup_percent
    )
