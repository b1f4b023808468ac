"""Agent files in the dashboard: download an agent's file, and import one (an upload or pasted
text) with every problem shown on the page.

The pages call `agent.agentfile`, as the API does; the file is read and parsed with no
transaction open, as in `POST /api/v1/agents/import`.
"""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.responses import Response

from lunogen.agent import agentfile
from lunogen.agent.agentfile_endpoints import download
from lunogen.auth.dependencies import AgentsRead, AgentsWrite
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError

router = page_router()


def _import_page(
    request: Request,
    viewer: Viewer,
    *,
    text: str = "",
    error: str | None = None,
    problems: list[dict[str, str]] | None = None,
    status_code: int = 200,
) -> Response:
    return page(
        request,
        viewer,
        "agents/import.html",
        section="agents",
        status_code=status_code,
        text=text,
        refusal=error,
        problems=problems or [],
        max_bytes=agentfile.MAX_FILE_BYTES,
        imported=None,
    )


@router.get("/agents/import")
async def import_page(request: Request, viewer: SignedIn) -> Response:
    return _import_page(request, viewer)


async def _posted(request: Request) -> tuple[bytes, bool, str]:
    """The file's bytes, whether it is YAML, and the text to show again after a refusal."""
    form = await request.form()
    upload = form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        data = await upload.read(agentfile.MAX_FILE_BYTES + 1)
        media = (upload.content_type or "").split(";")[0].strip().lower()
        is_yaml = media in agentfile.YAML_MEDIA_TYPES or agentfile.looks_like_yaml(
            data, upload.filename
        )
        return data, is_yaml, ""
    pasted = form.get("text")
    text = pasted.replace("\r\n", "\n") if isinstance(pasted, str) else ""
    data = text.encode("utf-8", "surrogatepass")
    return data, agentfile.looks_like_yaml(data), text


@router.post("/agents/import")
async def import_agent(
    request: Request, viewer: SignedIn, principal: AgentsWrite, db: DbSession
) -> Response:
    await db.commit()  # the parse holds no transaction (on SQLite, the write lock)
    data, is_yaml, text = await _posted(request)
    shown = text if len(text) <= agentfile.MAX_FILE_BYTES else ""
    if not data.strip():
        return _import_page(
            request,
            viewer,
            error="Choose an agent file to upload, or paste its text.",
            status_code=400,
        )
    fmt: agentfile.Format = "yaml" if is_yaml else "json"
    try:
        raw = agentfile.parse_document(data, yaml_text=is_yaml)
        imported = await agentfile.import_agent(
            db,
            principal=principal,
            raw=raw,
            keyring=request.app.state.keyring,
            fmt=fmt,
            allow_private_urls=request.app.state.settings.allow_private_urls,
        )
    except LunogenError as exc:
        if exc.status_code >= 500 or exc.status_code == 404:
            raise
        details = exc.extra.get("details") or []
        count = f"{len(details)} problem{'s' if len(details) != 1 else ''}"
        headline = f"The agent file has {count}; nothing was created:" if details else None
        return _import_page(
            request,
            viewer,
            text=shown,
            error=headline or exc.message or exc.error,
            problems=[{"field": str(d["field"]), "message": str(d["message"])} for d in details],
            status_code=exc.status_code,
        )
    return page(
        request,
        viewer,
        "agents/import.html",
        section="agents",
        imported=imported.agent,
        revealed=imported.revealed,
        needs_setup=imported.needs_setup,
        flash="Agent imported as a draft.",
    )


@router.get("/agents/{agent_id}/export")
async def export_agent(
    agent_id: str, viewer: SignedIn, principal: AgentsRead, db: DbSession, format: str = "json"
) -> Response:
    fmt: agentfile.Format = "yaml" if format == "yaml" else "json"
    agent, document = await agentfile.export_agent(
        db, principal=principal, agent_id=agent_id, fmt=fmt
    )
    return download(agent.name, document, fmt)
