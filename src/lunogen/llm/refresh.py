"""Refresh the model catalog and its prices from the provider's `GET {llm_base_url}/models`.

A refresh only adds and updates models: a model that disappears upstream stays in the catalog
(agents may reference it; calling it then fails with the provider's own error). When the
provider cannot be reached or answers nonsense, the catalog is left exactly as it was (at worst
the bundled snapshot seeded at first start).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.config import Settings
from lunogen.errors import LunogenError
from lunogen.llm.catalog import CatalogEntry, parse_models, upsert_models
from lunogen.llm.models import CatalogModel

log = structlog.get_logger(__name__)

# OpenAI-compatible servers other than OpenRouter (Ollama, vLLM) list models without prices or,
# for Ollama, without a context length: such models are free, with this conservative window.
LOCAL_CONTEXT_LENGTH = 4096


class CatalogRefreshError(LunogenError):
    status_code = 502
    error = "Catalog refresh failed"


@dataclass(frozen=True)
class RefreshResult:
    models: int  # listed by the provider and now in the catalog
    added: int  # of which new to the catalog


def _headers(settings: Settings) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if settings.llm_uses_openrouter:
        headers.update({"HTTP-Referer": settings.public_url, "X-Title": settings.llm_app_name})
    key = settings.llm_key
    if key:  # OpenRouter needs none for /models; a private server may
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _as_priced(item: Any) -> Any:
    """A model of a non-OpenRouter server, given the fields OpenRouter always sends."""
    if not isinstance(item, dict) or "id" not in item:
        return item
    pricing = item.get("pricing")
    if not isinstance(pricing, dict) or "prompt" not in pricing or "completion" not in pricing:
        pricing = {"prompt": "0", "completion": "0"}
    context = item.get("context_length") or item.get("max_model_len") or LOCAL_CONTEXT_LENGTH
    return {**item, "pricing": pricing, "context_length": context}


def parse_listing(document: dict[str, Any], *, openrouter: bool) -> list[CatalogEntry]:
    if openrouter:
        return parse_models(document)
    items = document.get("data")
    if not isinstance(items, list):
        return []
    return parse_models({"data": [_as_priced(item) for item in items]})


async def fetch_catalog(
    settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> list[CatalogEntry]:
    """The provider's model list. Raises `CatalogRefreshError` saying what went wrong."""
    url = f"{settings.llm_base_url}/models"
    try:
        async with httpx.AsyncClient(
            timeout=settings.llm_timeout_seconds, transport=transport
        ) as client:
            response = await client.get(url, headers=_headers(settings))
    except httpx.HTTPError as exc:
        raise CatalogRefreshError(
            f"Could not reach {url}: {str(exc) or type(exc).__name__}"
        ) from exc
    if response.status_code != 200:
        raise CatalogRefreshError(f"{url} answered HTTP {response.status_code}")
    try:
        document = response.json()
    except ValueError as exc:
        raise CatalogRefreshError(f"{url} did not answer with JSON") from exc
    if not isinstance(document, dict):
        raise CatalogRefreshError(f"{url} did not answer with a model list")
    entries = parse_listing(document, openrouter=settings.llm_uses_openrouter)
    if not entries:
        raise CatalogRefreshError(f"{url} listed no usable model")
    return entries


async def refresh_catalog(
    session: AsyncSession, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
) -> RefreshResult:
    """Fetch and upsert (flushes; the caller commits). Raises `CatalogRefreshError`, in which
    case nothing was written."""
    entries = await fetch_catalog(settings, transport=transport)
    known = set((await session.execute(select(CatalogModel.id))).scalars())
    count = await upsert_models(session, entries)
    added = len({e.id for e in entries} - known)
    return RefreshResult(models=count, added=added)


async def refresh_catalog_job(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> int:
    """The periodic refresh: never raises for a provider failure, logs a warning and returns 0,
    leaving the catalog as it was. Returns the number of models refreshed."""
    try:
        entries = await fetch_catalog(settings)
    except CatalogRefreshError as exc:
        log.warning("model_catalog_refresh_failed", reason=exc.message)
        return 0
    async with sessionmaker() as session:
        count = await upsert_models(session, entries)
        await session.commit()
    log.info("model_catalog_refreshed", models=count)
    return count
