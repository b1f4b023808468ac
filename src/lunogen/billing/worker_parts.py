"""What billing runs on the worker's timer: credit holds of dead workers expire every minute,
costs the provider did not report are reconciled every five. Registered with the worker on
import."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.billing import ledger
from lunogen.billing.reconcile import reconcile_costs
from lunogen.llm.worker_parts import MODEL_CLIENT
from lunogen.worker.broker import JobRuntime
from lunogen.worker.maintenance import register_periodic

log = structlog.get_logger(__name__)

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


@register_periodic("credit_hold_expiry", every=HOLD_EXPIRY_EVERY_SECONDS)
async def _expire_periodically(rt: JobRuntime) -> None:
    await expire_credit_holds(rt.sessionmaker)


@register_periodic("cost_reconcile", every=RECONCILE_EVERY_SECONDS, at_start=False)
async def _reconcile_periodically(rt: JobRuntime) -> None:
    await reconcile_costs(rt.sessionmaker, rt.settings, rt.get(MODEL_CLIENT))
