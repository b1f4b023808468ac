"""Spend caps in the dashboard: an agent's caps and over-cap reply with today's and this month's
spend (`/agents/{id}/caps`), and beside usage the account's monthly cap with every agent's caps
and spend (`/usage/caps`). Saves through the same service as `PUT /api/v1/agents/{id}/caps`
and `PUT /api/v1/billing/cap`. Outcomes after a redirect are fixed words in the query."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from lunogen.agent.service import get_agent, list_agents
from lunogen.auth.dependencies import AgentsWrite, FullAccess
from lunogen.billing import caps_service
from lunogen.billing.caps import DEFAULT_REPLY, MAX_REPLY_CHARS
from lunogen.billing.caps_schemas import AccountCapIn, AgentCapsIn
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.kit.forms import form_fields

router = page_router()

MAX_AGENTS_SHOWN = 100
LABELS = {
    "daily_credits": "Daily cap",
    "monthly_credits": "Monthly cap",
    "turn_credits": "Per-turn cap in credits",
    "turn_tokens": "Per-turn cap in tokens",
    "reply_text": "Over-cap reply",
}
AGENT_FIELDS = tuple(LABELS)
SAVED = "Saved. The caps apply from the next message on."


def _values(form: dict[str, str], fields: tuple[str, ...]) -> dict[str, str | None]:
    """The form's fields, an empty one meaning no cap (or the default reply)."""
    values: dict[str, str | None] = {}
    for name in fields:
        text = form.get(name, "").strip()
        values[name] = text or None
    return values


def _problems(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        label = LABELS.get(name, name)
        out.append(f"{label}: {error['msg'].removeprefix('Value error, ')}")
    return out


def _validated(model: type[BaseModel], values: dict[str, Any]) -> tuple[Any, list[str]]:
    try:
        return model.model_validate(values), []
    except ValidationError as exc:
        return None, _problems(exc)


@router.get("/agents/{agent_id}/caps")
async def agent_caps_page(
    agent_id: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    agent = await get_agent(db, owner_id=viewer.user.id, agent_id=agent_id, with_channels=False)
    caps = await caps_service.agent_caps(db, owner_id=viewer.user.id, agent_id=agent.id)
    return _agent_page(request, viewer, agent, caps, saved=request.query_params.get("saved"))


def _agent_page(
    request: Request,
    viewer: Viewer,
    agent: Any,
    caps: Any,
    *,
    saved: str | None = None,
    problems: list[str] | None = None,
    entered: Mapping[str, str | None] | None = None,
) -> Response:
    shown = entered or {
        "daily_credits": caps.daily_credits,
        "monthly_credits": caps.monthly_credits,
        "turn_credits": caps.turn_credits,
        "turn_tokens": None if caps.turn_tokens is None else str(caps.turn_tokens),
        "reply_text": caps.reply_text,
    }
    return page(
        request,
        viewer,
        "agents/caps.html",
        section="agents",
        status_code=422 if problems else 200,
        agent=agent,
        caps=caps,
        shown=shown,
        problems=problems or [],
        flash=SAVED if saved == "1" else None,
        max_reply=MAX_REPLY_CHARS,
        default_reply=DEFAULT_REPLY,
    )


@router.post("/agents/{agent_id}/caps")
async def save_agent_caps(
    agent_id: str, request: Request, viewer: SignedIn, principal: AgentsWrite, db: DbSession
) -> Response:
    form = await form_fields(request)
    agent = await get_agent(db, owner_id=principal.user.id, agent_id=agent_id, with_channels=False)
    entered = _values(form, AGENT_FIELDS)
    data, problems = _validated(AgentCapsIn, dict(entered))
    if problems:
        caps = await caps_service.agent_caps(db, owner_id=principal.user.id, agent_id=agent.id)
        shown = {k: (v or "")[: MAX_REPLY_CHARS + 10] for k, v in entered.items()}
        return _agent_page(request, viewer, agent, caps, problems=problems, entered=shown)
    await caps_service.set_agent_caps(db, principal, agent_id=agent.id, data=data)
    return RedirectResponse(f"/agents/{agent.id}/caps?saved=1", status_code=303)


@router.get("/usage/caps")
async def account_caps_page(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    return await _account_page(request, viewer, db, saved=request.query_params.get("saved"))


async def _account_page(
    request: Request,
    viewer: Viewer,
    db: DbSession,
    *,
    saved: str | None = None,
    problems: list[str] | None = None,
    entered: str | None = None,
) -> Response:
    owner_id = viewer.user.id
    account = await caps_service.account_cap(db, owner_id=owner_id)
    agents, total = await list_agents(
        db, owner_id=owner_id, status=None, limit=MAX_AGENTS_SHOWN, offset=0
    )
    rows = [
        (agent, await caps_service.agent_caps(db, owner_id=owner_id, agent_id=agent.id))
        for agent in agents
    ]
    return page(
        request,
        viewer,
        "usage/caps.html",
        section="usage",
        status_code=422 if problems else 200,
        account=account,
        rows=rows,
        total=total,
        shown=account.monthly_credits if entered is None else entered,
        problems=problems or [],
        flash=SAVED if saved == "1" else None,
    )


@router.post("/usage/caps")
async def save_account_cap(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    form = await form_fields(request)
    entered = _values(form, ("monthly_credits",))
    data, problems = _validated(AccountCapIn, dict(entered))
    if problems:
        text = (entered["monthly_credits"] or "")[:40]
        return await _account_page(request, viewer, db, problems=problems, entered=text)
    await caps_service.set_account_cap(db, principal, data=data)
    return RedirectResponse("/usage/caps?saved=1", status_code=303)
