from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from lunogen.auth.dependencies import AnyUser
from lunogen.db import DbSession
from lunogen.llm import catalog

router = APIRouter(prefix="/api/v1/models", tags=["models"])


class Pricing(BaseModel):
    prompt: str
    completion: str


class ModelOut(BaseModel):
    id: str
    name: str
    context_length: int
    pricing: Pricing
    supported_parameters: list[str]
    updated_at: datetime


class ModelList(BaseModel):
    data: list[ModelOut]


@router.get("", response_model=ModelList)
async def list_models(principal: AnyUser, db: DbSession) -> ModelList:
    """Models an agent can use, with USD prices per token as exact decimal strings."""
    rows = await catalog.list_models(db)
    return ModelList(
        data=[
            ModelOut(
                id=m.id,
                name=m.name,
                context_length=m.context_length,
                pricing=Pricing(prompt=m.prompt_price, completion=m.completion_price),
                supported_parameters=m.supported_parameters,
                updated_at=m.updated_at,
            )
            for m in rows
        ]
    )
