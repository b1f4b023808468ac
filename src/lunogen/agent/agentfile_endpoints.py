"""Export an agent as an agent file, and create an agent from one (docs/agent-file.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from lunogen.agent import agentfile
from lunogen.agent.endpoints import Keys, _render
from lunogen.agent.schemas import Agent as AgentOut
from lunogen.auth.dependencies import AgentsRead, AgentsWrite
from lunogen.db import DbSession
from lunogen.errors import PayloadTooLargeError

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

_FILE_SCHEMA = agentfile.json_schema()


class ChannelSetup(BaseModel):
    path: str = Field(description="Where the channel is in the file, e.g. `channels.1`.")
    channel_id: str
    type: str
    missing_secrets: list[str] = Field(description="The secret fields to add before it works.")


class AgentImported(BaseModel):
    agent: AgentOut = Field(
        description="The new `draft` agent. A webhook channel's new signing secret appears "
        "here only (`channels[].secret.value`): store it now."
    )
    needs_setup: list[ChannelSetup] = Field(
        description="Channels created without the secrets their type needs (the file never "
        "holds secrets). Each is disabled until you add them: `PATCH /api/v1/agents/{id}` with "
        "the channel's `id` and its secret fields."
    )


async def read_body(request: Request) -> bytes:
    """The raw body, refused with 400 as soon as it passes the agent file's size cap."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > agentfile.MAX_FILE_BYTES:
        raise _too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > agentfile.MAX_FILE_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> PayloadTooLargeError:
    return PayloadTooLargeError(f"An agent file must be at most {agentfile.MAX_FILE_BYTES} bytes")


def download(agent_name: str, document: dict[str, Any], fmt: agentfile.Format) -> Response:
    """The file as a download named after the agent."""
    return Response(
        agentfile.serialise(document, fmt),
        media_type=agentfile.MEDIA_TYPES[fmt],
        headers={
            "Content-Disposition": f'attachment; filename="{agentfile.file_name(agent_name, fmt)}"'
        },
    )


@router.get(
    "/{agent_id}/export",
    response_class=Response,
    responses={
        200: {
            "description": "The agent file, as a download",
            "content": {"application/json": {"schema": _FILE_SCHEMA}, "application/yaml": {}},
        },
        404: {"description": "No agent with this id is visible to you"},
    },
)
async def export_agent(
    agent_id: str,
    principal: AgentsRead,
    db: DbSession,
    format: Annotated[agentfile.Format, Query(description="`json` (default) or `yaml`")] = "json",
) -> Response:
    """One of your agents as a versioned agent file. Scope: `agents:read`.

    The file holds the name, description, model, fallbacks, instructions, tools, skills (by
    name and version) and channels (type and public settings). It never holds a secret: each
    channel secret reads `{"configured": true}`. Ids are left out, so exporting an agent
    imported from a file gives that file back. The format is described in `docs/agent-file.md`.
    """
    agent, document = await agentfile.export_agent(
        db, principal=principal, agent_id=agent_id, fmt=format
    )
    return download(agent.name, document, format)


@router.post(
    "/import",
    status_code=201,
    response_model=AgentImported,
    responses={
        400: {"description": "Not JSON (or YAML), or not UTF-8 text"},
        403: {"description": "Missing scope"},
        413: {"description": "The file is larger than 1 MiB"},
        422: {
            "description": "The file cannot be imported: `details` names every problem by its "
            "path (unknown model, tool, skill or version, channel type, plan limits, a wrong "
            "`lunogen_agent_file` version). Nothing was created."
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _FILE_SCHEMA},
                "application/yaml": {"schema": _FILE_SCHEMA},
            },
        }
    },
)
async def import_agent(
    request: Request, principal: AgentsWrite, db: DbSession, keyring: Keys
) -> AgentImported:
    """Create a `draft` agent from an agent file. Scope: `agents:write`.

    Send the file as `application/json`, or as `application/yaml`. The whole file is checked
    before anything is written, and a refusal (422) lists every problem at once. Skills are
    matched by name among your skills and must be at the version the file names. Channels that
    need secrets you hold (tokens, app secrets) are created disabled and listed in
    `needs_setup`; plan limits apply as on create.
    """
    await db.commit()  # the read and the parse hold no transaction (on SQLite, the write lock)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt: agentfile.Format = "yaml" if media in agentfile.YAML_MEDIA_TYPES else "json"
    raw = agentfile.parse_document(await read_body(request), yaml_text=fmt == "yaml")
    imported = await agentfile.import_agent(
        db,
        principal=principal,
        raw=raw,
        keyring=keyring,
        fmt=fmt,
        allow_private_urls=request.app.state.settings.allow_private_urls,
    )
    return AgentImported(
        agent=_render(imported.agent, imported.revealed),
        needs_setup=[
            ChannelSetup(
                path=s.path, channel_id=s.channel_id, type=s.type, missing_secrets=s.missing_secrets
            )
            for s in imported.needs_setup
        ],
    )
