"""The Agents pages: the list (with a status filter), create and edit forms, an agent's page
with deploy / start / stop / restart, and delete with a confirmation.

Forms call the services the API calls (`agent.service`, `agent.lifecycle`). Outcomes of the
lifecycle buttons are shown after a redirect by a fixed word in the query (`?outcome=`), never
by text taken from the URL: a failed deploy's reason is read back from the agent's `last_error`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData
from starlette.responses import Response

from lunogen.agent import lifecycle, service
from lunogen.agent.models import Agent
from lunogen.agent.schemas import MAX_INSTRUCTIONS, AgentCreate, AgentStatus, AgentUpdate
from lunogen.auth.dependencies import AgentsExecute, AgentsWrite
from lunogen.auth.principal import Principal
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError, validation_details
from lunogen.kit.effects import Effects
from lunogen.kit.time import utcnow
from lunogen.llm import catalog
from lunogen.skill.service import list_skills
from lunogen.tool.registry import registry

router = page_router()

PAGE_SIZE = 50
_MILLION = Decimal(1_000_000)

# What a lifecycle button did, by the word the redirect carries.
OUTCOMES = {
    "created": "Agent created. Deploy it when it is ready.",
    "saved": "Changes saved as a new version. A deployed agent keeps serving its version "
    "until you deploy the new one (Versions).",
    "deployed": "Deployed: the agent is running.",
    "started": "Started: the agent is running.",
    "restarted": "Restarted: the agent is running.",
    "stopped": "Stopped: the agent answers no messages until it is started again.",
}
ACTIONS = ("deploy", "start", "restart", "stop")
_DONE = {"deploy": "deployed", "start": "started", "restart": "restarted", "stop": "stopped"}


@dataclass(frozen=True)
class ModelChoice:
    id: str
    label: str


def _per_million(price: str) -> str:
    value = (Decimal(price) * _MILLION).quantize(Decimal("0.01"))
    return f"${value}"


def _context(tokens: int) -> str:
    if tokens >= 1_000_000:
        return f"{tokens / 1_000_000:g}M"
    return f"{tokens // 1000}k" if tokens >= 1000 else str(tokens)


async def model_groups(session: AsyncSession) -> list[tuple[str, list[ModelChoice]]]:
    """The catalog by provider, each model labelled with its prices per million input and
    output tokens and its context length."""
    groups: dict[str, list[ModelChoice]] = defaultdict(list)
    for model in await catalog.list_models(session):
        provider = model.id.split("/", 1)[0] if "/" in model.id else "other"
        label = (
            f"{model.name} — {_per_million(model.prompt_price)} in / "
            f"{_per_million(model.completion_price)} out per 1M tokens · "
            f"{_context(model.context_length)} context"
        )
        groups[provider].append(ModelChoice(id=model.id, label=label))
    return sorted(groups.items())


@dataclass
class AgentForm:
    """What the form shows: the person's values (kept when the service refuses them)."""

    name: str = ""
    description: str = ""
    model: str = ""
    instructions: str = ""
    tools: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    fallback_models: tuple[str, ...] = ()

    @classmethod
    def of(cls, agent: Agent) -> AgentForm:
        return cls(
            name=agent.name,
            description=agent.description,
            model=agent.model,
            instructions=agent.instructions,
            tools=tuple(agent.tools),
            skills=tuple(agent.skills),
            fallback_models=tuple(agent.fallback_models),
        )

    @classmethod
    def posted(cls, form: FormData) -> AgentForm:
        def text(name: str) -> str:
            value = form.get(name)
            return value if isinstance(value, str) else ""

        return cls(
            name=text("name"),
            description=text("description"),
            model=text("model"),
            instructions=text("instructions").replace("\r\n", "\n"),
            tools=tuple(v for v in form.getlist("tools") if isinstance(v, str)),
            skills=tuple(v for v in form.getlist("skills") if isinstance(v, str)),
            fallback_models=tuple(
                v for v in form.getlist("fallback_models") if isinstance(v, str) and v
            ),
        )

    def values(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "instructions": self.instructions,
            "tools": list(self.tools),
            "skills": list(self.skills),
            "fallback_models": list(self.fallback_models),
        }


def _problems(exc: ValidationError) -> tuple[str, dict[str, str]]:
    """The API's messages for a refused form: one line for the alert, and by field."""
    details = validation_details([dict(e) for e in exc.errors()])
    by_field = {d["field"].split(".")[0]: d["message"] for d in details}
    return "; ".join(f"{d['field']}: {d['message']}" for d in details), by_field


def _service_problems(exc: LunogenError) -> tuple[str, dict[str, str]]:
    details = exc.extra.get("details") or []
    by_field = {str(d["field"]).split(".")[0]: str(d["message"]) for d in details}
    return exc.message or exc.error, by_field


async def _form_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    *,
    form: AgentForm,
    agent: Agent | None,
    error: str | None = None,
    field_errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    skills, _total = await list_skills(
        db, owner_id=viewer.user.id, status=None, limit=100, offset=0
    )
    groups = await model_groups(db)
    listed = {choice.id for _provider, choices in groups for choice in choices}
    return page(
        request,
        viewer,
        "agents/form.html",
        section="agents",
        status_code=status_code,
        agent=agent,
        form=form,
        groups=groups,
        # The agent's model, gone from the catalog: kept selectable so the form shows it.
        unlisted=form.model if form.model and form.model not in listed else None,
        tools=registry.all(),
        skills=skills,
        max_instructions=MAX_INSTRUCTIONS,
        error=error,
        field_errors=field_errors or {},
    )


@router.get("/agents")
async def agents_page(
    request: Request, viewer: SignedIn, db: DbSession, status: str = "", offset: str = "0"
) -> Response:
    # Query values come from links and the filter form: anything odd means "from the start".
    chosen = status if status in {s.value for s in AgentStatus} else ""
    start = min(int(offset), 1_000_000) if offset.isdigit() and len(offset) < 8 else 0
    agents, total = await service.list_agents(
        db,
        owner_id=viewer.user.id,
        status=AgentStatus(chosen) if chosen else None,
        limit=PAGE_SIZE,
        offset=start,
    )
    flash = "Agent deleted." if request.query_params.get("outcome") == "deleted" else None
    return page(
        request,
        viewer,
        "agents/list.html",
        section="agents",
        agents=agents,
        total=total,
        statuses=[s.value for s in AgentStatus],
        status=chosen,
        offset=start,
        page_size=PAGE_SIZE,
        flash=flash,
    )


@router.get("/agents/new")
async def new_agent_page(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    return await _form_page(request, viewer, db, form=AgentForm(), agent=None)


@router.post("/agents/new")
async def create_agent(
    request: Request, viewer: SignedIn, principal: AgentsWrite, db: DbSession
) -> Response:
    form = AgentForm.posted(await request.form())
    try:
        data = AgentCreate.model_validate(form.values())
        agent, _revealed = await service.create_agent(
            db, principal=principal, data=data, keyring=request.app.state.keyring
        )
    except ValidationError as exc:
        error, fields = _problems(exc)
        return await _form_page(
            request,
            viewer,
            db,
            form=form,
            agent=None,
            error=error,
            field_errors=fields,
            status_code=422,
        )
    except LunogenError as exc:
        if exc.status_code >= 500 or exc.status_code == 404:
            raise
        error, fields = _service_problems(exc)
        return await _form_page(
            request,
            viewer,
            db,
            form=form,
            agent=None,
            error=error,
            field_errors=fields,
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/agents/{agent.id}?outcome=created", status_code=303)


@router.get("/agents/{agent_id}/edit")
async def edit_agent_page(
    agent_id: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    return await _form_page(request, viewer, db, form=AgentForm.of(agent), agent=agent)


@router.post("/agents/{agent_id}/edit")
async def update_agent(
    agent_id: str, request: Request, viewer: SignedIn, principal: AgentsWrite, db: DbSession
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    form = AgentForm.posted(await request.form())
    try:
        data = AgentUpdate.model_validate(form.values())
        await service.update_agent(
            db,
            principal=principal,
            agent_id=agent.id,
            data=data,
            keyring=request.app.state.keyring,
        )
    except ValidationError as exc:
        error, fields = _problems(exc)
        return await _form_page(
            request,
            viewer,
            db,
            form=form,
            agent=agent,
            error=error,
            field_errors=fields,
            status_code=422,
        )
    except LunogenError as exc:
        if exc.status_code >= 500 or exc.status_code == 404:
            raise
        error, fields = _service_problems(exc)
        return await _form_page(
            request,
            viewer,
            db,
            form=form,
            agent=agent,
            error=error,
            field_errors=fields,
            status_code=exc.status_code,
        )
    return RedirectResponse(f"/agents/{agent.id}?outcome=saved", status_code=303)


async def _agent_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    agent: Agent,
    *,
    flash: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    model = await catalog.get_model(db, agent.model)
    return page(
        request,
        viewer,
        "agents/detail.html",
        section="agents",
        status_code=status_code,
        agent=agent,
        model=model,
        allowed={action: agent.status in lifecycle.ALLOWED_FROM[action] for action in ACTIONS},
        flash=flash,
        error=error,
    )


@router.get("/agents/{agent_id}")
async def agent_page(agent_id: str, request: Request, viewer: SignedIn, db: DbSession) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    outcome = request.query_params.get("outcome", "")
    error = None
    if outcome == "failed" and agent.status == "error":
        error = f"Deploy failed: {agent.last_error or 'see the agent log'}"
    return await _agent_page(request, viewer, db, agent, flash=OUTCOMES.get(outcome), error=error)


async def _run(
    request: Request,
    viewer: Viewer,
    principal: Principal,
    db: AsyncSession,
    agent_id: str,
    action: str,
) -> Response:
    """Deploy, start, restart or stop; a failed deploy is committed in `error` (as the API
    does before its 502) and shown with its reason. A refusal (409, 402) shows the agent's
    page with the service's message; nothing was written."""
    effects = Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)
    problem: str | None = None
    try:
        if action == "stop":
            agent = await lifecycle.stop(
                db, owner_id=principal.user.id, agent_id=agent_id, effects=effects
            )
        else:
            agent, problem = await lifecycle.deploy(
                db, owner_id=principal.user.id, agent_id=agent_id, effects=effects, action=action
            )
    except LunogenError as exc:
        if exc.status_code == 404 or exc.status_code >= 500:
            raise
        agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
        return await _agent_page(
            request,
            viewer,
            db,
            agent,
            error=exc.message or exc.error,
            status_code=exc.status_code,
        )
    if problem is not None:
        await db.commit()  # the error state, its log line and notification stay
        return RedirectResponse(f"/agents/{agent.id}?outcome=failed", status_code=303)
    return RedirectResponse(f"/agents/{agent.id}?outcome={_DONE[action]}", status_code=303)


@router.post("/agents/{agent_id}/deploy")
async def deploy_agent(
    agent_id: str, request: Request, viewer: SignedIn, principal: AgentsExecute, db: DbSession
) -> Response:
    return await _run(request, viewer, principal, db, agent_id, "deploy")


@router.post("/agents/{agent_id}/start")
async def start_agent(
    agent_id: str, request: Request, viewer: SignedIn, principal: AgentsExecute, db: DbSession
) -> Response:
    return await _run(request, viewer, principal, db, agent_id, "start")


@router.post("/agents/{agent_id}/restart")
async def restart_agent(
    agent_id: str, request: Request, viewer: SignedIn, principal: AgentsExecute, db: DbSession
) -> Response:
    return await _run(request, viewer, principal, db, agent_id, "restart")


@router.post("/agents/{agent_id}/stop")
async def stop_agent(
    agent_id: str, request: Request, viewer: SignedIn, principal: AgentsExecute, db: DbSession
) -> Response:
    return await _run(request, viewer, principal, db, agent_id, "stop")


@router.get("/agents/{agent_id}/delete")
async def delete_agent_page(
    agent_id: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    agent = await service.get_agent(db, owner_id=viewer.user.id, agent_id=agent_id)
    days: int = request.app.state.settings.purge_after_days
    purge_on: datetime = utcnow() + timedelta(days=days)
    return page(
        request,
        viewer,
        "agents/delete.html",
        section="agents",
        agent=agent,
        purge_days=days,
        purge_on=purge_on,
    )


@router.post("/agents/{agent_id}/delete")
async def delete_agent(
    agent_id: str, request: Request, viewer: SignedIn, principal: AgentsWrite, db: DbSession
) -> Response:
    await service.delete_agent(
        db,
        principal=principal,
        agent_id=agent_id,
        purge_after_days=request.app.state.settings.purge_after_days,
    )
    return RedirectResponse("/agents?outcome=deleted", status_code=303)
