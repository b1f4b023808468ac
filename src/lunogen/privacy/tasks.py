"""The privacy domain's background parts: the daily retention purge (the Stripe cancellation
job and its sweep register from `privacy.subscriptions`)."""

from __future__ import annotations

from lunogen.privacy import subscriptions  # noqa: F401  job and sweep: Stripe cancellations
from lunogen.privacy.retention import purge_due
from lunogen.worker.broker import JobRuntime
from lunogen.worker.maintenance import register_periodic

DAY_SECONDS = 24 * 3600.0


@register_periodic("retention_purge", every=DAY_SECONDS)
async def purge_deleted(rt: JobRuntime) -> int:
    """Purge the agents and accounts whose grace period has ended (see `privacy.retention`)."""
    report = await purge_due(rt.sessionmaker, rt.settings)
    return report.agents + report.accounts
