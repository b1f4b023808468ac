from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from lunogen.auth.dependencies import ToolsRead
from lunogen.tool.registry import registry

router = APIRouter(prefix="/api/v1/tools", tags=["tools"])


class ToolOut(BaseModel):
    name: str
    description: str
    parameters: dict[str, Any]


class ToolList(BaseModel):
    data: list[ToolOut]


@router.get("", response_model=ToolList)
async def list_tools(principal: ToolsRead) -> ToolList:
    """Every tool an agent can enable by listing its name in the agent's `tools`."""
    return ToolList(
        data=[
            ToolOut(name=t.name, description=t.description, parameters=t.parameters)
            for t in registry.all()
        ]
    )
