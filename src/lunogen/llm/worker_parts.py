"""What llm adds to every job process: the model client (with the catalog seeded before it is
first needed) and the periodic catalog refresh. Registered with the worker on import."""

from __future__ import annotations

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.config import Settings
from lunogen.llm import catalog
from lunogen.llm.provider import ModelClient
from lunogen.llm.refresh import refresh_catalog_job
from lunogen.worker.broker import JobRuntime
from lunogen.worker.maintenance import register_periodic
from lunogen.worker.resources import Resource, provide

log = structlog.get_logger(__name__)

# None when no model provider is configured (`settings.llm_configured`).
MODEL_CLIENT: Resource[ModelClient | None] = Resource("model_client")


async def _open_model_client(
    settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
) -> ModelClient | None:
    async with sessionmaker() as session:
        seeded = await catalog.seed_if_empty(session)
        await session.commit()
    if seeded:
        log.info("model_catalog_seeded", models=seeded)
    return ModelClient.from_settings(settings) if settings.llm_configured else None


async def _close_model_client(client: ModelClient | None) -> None:
    if client is not None:
        await client.aclose()


provide(MODEL_CLIENT, open=_open_model_client, close=_close_model_client)


def _refresh_every(settings: Settings) -> float:
    return settings.catalog_refresh_hours * 3600  # 0: never


@register_periodic("catalog_refresh", every=_refresh_every, at_start=False)
async def refresh_periodically(rt: JobRuntime) -> None:
    await refresh_catalog_job(rt.sessionmaker, rt.settings)
