from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from lunogen.channel.fields import Storable, invalid
from lunogen.channel.schemas import ChannelIn, ChannelOut

MAX_INSTRUCTIONS = 100_000
MAX_CHANNELS = 50  # a request bound; the plan's `channels_per_agent` is usually lower


class AgentStatus(StrEnum):
    DRAFT = "draft"
    DEPLOYING = "deploying"
    RUNNING = "running"
    STOPPED = "stopped"
    ERROR = "error"
    PAUSED = "paused"
    SUSPENDED = "suspended"


Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), Storable
]
Description = Annotated[str, StringConstraints(max_length=2000), Storable]
ModelId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), Storable
]
Instructions = Annotated[str, StringConstraints(max_length=MAX_INSTRUCTIONS), Storable]
Identifier = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), Storable
]

_NAME_DOC = "1 to 100 characters."
_MODEL_DOC = "A model id from `GET /api/v1/models`, e.g. `openai/gpt-4o-mini`."
_INSTRUCTIONS_DOC = f"The system prompt, up to {MAX_INSTRUCTIONS:,} characters."
_CHANNELS_DOC = "Where people reach the agent; each object is typed by `type`."
_SKILLS_DOC = "Ids of skills the agent may load."
_TOOLS_DOC = "Names from `GET /api/v1/tools`."


def _not_nullable(schema: dict[str, Any]) -> None:
    """Document an optional PATCH field as "omit it or send a value" (null is refused)."""
    options = [o for o in schema.pop("anyOf", []) if o.get("type") != "null"]
    if len(options) == 1:
        schema.update(options[0])
    elif options:
        schema["anyOf"] = options
    schema.pop("default", None)


def _optional(**kwargs: Any) -> Any:
    """A PATCH field: leave it out to keep the value; null is refused."""
    return Field(default=None, json_schema_extra=_not_nullable, **kwargs)


def _dedupe(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _fallbacks(model: str, fallbacks: list[str]) -> list[str]:
    """In order, once each, never the main model again (it is tried first already)."""
    return [m for m in _dedupe(fallbacks) if m != model]


MAX_FALLBACKS = 3
_FALLBACKS_DOC = (
    "Models tried in order when `model` fails (an error the provider says to retry, or the "
    "model is unavailable); at most 3. Every call is priced from the model that answered."
)


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description=_NAME_DOC)
    description: Description = ""
    model: ModelId = Field(description=_MODEL_DOC)
    fallback_models: list[ModelId] = Field(
        default_factory=list, max_length=MAX_FALLBACKS, description=_FALLBACKS_DOC
    )
    instructions: Instructions = Field(default="", description=_INSTRUCTIONS_DOC)
    channels: list[ChannelIn] = Field(
        default_factory=list, max_length=MAX_CHANNELS, description=_CHANNELS_DOC
    )
    skills: list[Identifier] = Field(default_factory=list, max_length=100, description=_SKILLS_DOC)
    tools: list[Identifier] = Field(default_factory=list, max_length=100, description=_TOOLS_DOC)

    @model_validator(mode="after")
    def _unique_lists(self) -> AgentCreate:
        self.skills = _dedupe(self.skills)
        self.tools = _dedupe(self.tools)
        self.fallback_models = _fallbacks(self.model, self.fallback_models)
        return self


class AgentUpdate(BaseModel):
    """Only the fields you send change. `channels`, `skills` and `tools` replace the lists."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = _optional(description=_NAME_DOC)
    description: Description | None = _optional()
    model: ModelId | None = _optional(description=_MODEL_DOC)
    fallback_models: list[ModelId] | None = _optional(
        max_length=MAX_FALLBACKS, description=_FALLBACKS_DOC
    )
    instructions: Instructions | None = _optional(description=_INSTRUCTIONS_DOC)
    channels: list[ChannelIn] | None = _optional(
        max_length=MAX_CHANNELS,
        description=_CHANNELS_DOC + " Include a channel's `id` to keep it and its secrets; "
        "channels left out are removed.",
    )
    skills: list[Identifier] | None = _optional(max_length=100, description=_SKILLS_DOC)
    tools: list[Identifier] | None = _optional(max_length=100, description=_TOOLS_DOC)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise invalid("may not be null; leave the field out to keep its value")
        return value

    @model_validator(mode="after")
    def _unique_lists(self) -> AgentUpdate:
        if self.skills is not None:
            self.skills = _dedupe(self.skills)
        if self.tools is not None:
            self.tools = _dedupe(self.tools)
        if self.fallback_models is not None:
            self.fallback_models = _dedupe(self.fallback_models)
        return self


class Agent(BaseModel):
    id: str
    name: str
    description: str
    model: str
    fallback_models: list[str]
    instructions: str
    status: AgentStatus
    status_changed_at: datetime
    channels: list[ChannelOut]
    skills: list[str]
    tools: list[str]
    created_at: datetime
    updated_at: datetime
    latest_version: int = Field(
        description="The newest version: the configuration shown here (`GET .../versions`)."
    )
    deployed_version: int | None = Field(
        description="The version the agent serves while it runs (null until its first deploy)."
    )
    undeployed_changes: bool = Field(
        description="True when the configuration shown is newer than the deployed version: a "
        "running agent keeps answering with the deployed one until you deploy "
        "(`POST .../versions/{n}/deploy`)."
    )
