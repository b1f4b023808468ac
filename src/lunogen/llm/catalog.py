"""The model catalog: a bundled snapshot of OpenRouter's `/models`, loaded into the database."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.kit.time import utcnow
from lunogen.llm.models import CatalogModel


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    name: str
    context_length: int
    prompt_price: str
    completion_price: str
    supported_parameters: list[str]


def _price(value: Any) -> str:
    try:
        price = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"price {value!r} is not a decimal") from exc
    if price < 0 or not price.is_finite():
        raise ValueError(f"price {value!r} must be a non-negative number")
    return format(price.normalize(), "f")


def parse_models(document: dict[str, Any]) -> list[CatalogEntry]:
    """Parse an OpenRouter `/models` body, skipping entries that lack what we need."""
    entries = []
    for item in document.get("data", []):
        try:
            pricing = item["pricing"]
            entries.append(
                CatalogEntry(
                    id=str(item["id"]),
                    name=str(item.get("name") or item["id"]),
                    context_length=int(item["context_length"]),
                    prompt_price=_price(pricing["prompt"]),
                    completion_price=_price(pricing["completion"]),
                    supported_parameters=[str(p) for p in item.get("supported_parameters", [])],
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return entries


def bundled_models() -> list[CatalogEntry]:
    text = resources.files("lunogen.llm").joinpath("data/models.json").read_text()
    return parse_models(json.loads(text))


async def upsert_models(session: AsyncSession, entries: list[CatalogEntry]) -> int:
    existing = {m.id: m for m in (await session.execute(select(CatalogModel))).scalars()}
    now = utcnow()
    for entry in entries:
        row = existing.get(entry.id)
        if row is None:
            row = CatalogModel(id=entry.id)
            session.add(row)
        row.name = entry.name
        row.context_length = entry.context_length
        row.prompt_price = entry.prompt_price
        row.completion_price = entry.completion_price
        row.supported_parameters = entry.supported_parameters
        row.updated_at = now
    await session.flush()
    return len(entries)


async def seed_if_empty(session: AsyncSession) -> int:
    if (await session.execute(select(CatalogModel.id).limit(1))).first() is not None:
        return 0
    return await upsert_models(session, bundled_models())


async def get_model(session: AsyncSession, model_id: str) -> CatalogModel | None:
    return await session.get(CatalogModel, model_id)


async def list_models(session: AsyncSession) -> list[CatalogModel]:
    return list((await session.execute(select(CatalogModel).order_by(CatalogModel.id))).scalars())
