"""Housekeeping on a timer: log retention, expired credit holds, the model catalog refresh.

In the embedded shape the server runs it; each step is idempotent, so a second process
running it too would only repeat work, never corrupt it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.agent.logs import purge_events_before
from lunogen.billing import ledger
from lunogen.billing.reconcile import reconcile_costs
from lunogen.config import Settings
from lunogen.kit.time import utcnow
from lunogen.llm.provider import ModelClient
from lunogen.llm.refresh import refresh_catalog_job

log = structlog.get_logger(__name__)

LOG_PURGE_EVERY_SECONDS = 3600.0
HOLD_EXPIRY_EVERY_SECONDS = 60.0
RECONCILE_EVERY_SECONDS = 300.0


async def expire_credit_holds(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    """Return the credits held for calls whose worker died before settling them."""
    async with sessionmaker() as session:
        expired = await ledger.expire_holds(session)
        await session.commit()
    if expired:
        log.info("credit_holds_expired", holds=expired)
    return expired


async def purge_old_logs(sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    cutoff = utcnow() - timedelta(days=settings.log_retention_days)
    async with sessionmaker() as session:
        removed = await purge_events_before(session, cutoff=cutoff)
    if removed:
        log.info("agent_logs_purged", removed=removed, retention_days=settings.log_retention_days)
    return removed


async def maintenance_forever(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    model_client: ModelClient | None = None,
    tick_seconds: float = 1.0,
) -> None:
    """Expire dead holds every minute, reconcile unreported costs every 5 minutes, purge old
    logs hourly, refresh the catalog every `catalog_refresh_hours` (0: never)."""
    next_purge = time.monotonic()
    next_expiry = time.monotonic()
    next_reconcile = time.monotonic() + RECONCILE_EVERY_SECONDS
    refresh_every = settings.catalog_refresh_hours * 3600
    next_refresh = time.monotonic() + refresh_every
    while True:
        now = time.monotonic()
        try:
            if now >= next_expiry:
                next_expiry = now + HOLD_EXPIRY_EVERY_SECONDS
                await expire_credit_holds(sessionmaker)
            if now >= next_reconcile:
                next_reconcile = now + RECONCILE_EVERY_SECONDS
                await reconcile_costs(sessionmaker, settings, model_client)
            if now >= next_purge:
                next_purge = now + LOG_PURGE_EVERY_SECONDS
                await purge_old_logs(sessionmaker, settings)
            if refresh_every > 0 and now >= next_refresh:
                next_refresh = now + refresh_every
                await refresh_catalog_job(sessionmaker, settings)
        except Exception:
            log.exception("maintenance_failed")
        await asyncio.sleep(tick_seconds)
