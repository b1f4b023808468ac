"""The admin console: accounts (find by email, change role or plan, adjust credits) and every
owner's skills (review, block with a reason, unblock), so that an admin never needs a terminal.

Every page starts with `viewer.require_role("admin")` (the `ConsoleViewer` dependency, resolved
before the form's CSRF check): for anyone else each URL, GET or POST, is the 404 page, as if the
console did not exist. Forms call the services the admin API calls
(`account.service`, `billing.service`, `skill.service`), audited there in the same transaction.
A credit adjustment carries a token made when the form was drawn, used as the API's
`Idempotency-Key`: a second submit of the same form applies nothing more. Outcomes shown after
a redirect are fixed words in the query (`?outcome=`), never text taken from the URL.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Query, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.account import service as accounts
from lunogen.account.models import User
from lunogen.account.plans import PLANS, limits_for
from lunogen.account.roles import ROLES
from lunogen.account.schemas import RoleChangeIn
from lunogen.admin import suspension
from lunogen.admin.suspension_schemas import ReasonIn
from lunogen.admin.system_health import system_health
from lunogen.agent.models import Agent
from lunogen.audit.service import list_events
from lunogen.auth.dependencies import FullAccess
from lunogen.auth.principal import Principal
from lunogen.billing import ledger
from lunogen.billing import service as billing
from lunogen.billing.ledger import IdempotencyConflict
from lunogen.billing.schemas import AdminCreditsIn
from lunogen.config import Settings
from lunogen.dashboard.account_pages import (
    EventLine,
    Pages,
    describe_action,
    describe_details,
    page_number,
)
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import BadRequestError, LunogenError, NotFoundError
from lunogen.kit.effects import Effects
from lunogen.kit.forms import form_fields
from lunogen.kit.web import ClientInfo
from lunogen.skill import service as skills
from lunogen.skill.models import Skill
from lunogen.skill.schemas import SkillBlock, SkillStatus

router = page_router()

PAGE_SIZE = 25
RECENT = 10  # ledger entries and security events shown on an account's page
MAX_EMAIL = 320
_FORM_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")
STATUSES = tuple(status.value for status in SkillStatus)
REASON_PROBLEM = (
    "Reason: say why, in 1 to 500 characters (the owner is told; kept in the audit log)."
)

OUTCOMES = {
    "account": "Role and plan saved.",
    "credits": "Credits adjusted: the balance below includes the change.",
    "blocked": "Skill blocked: no agent can deploy with it or load it.",
    "unblocked": "Block lifted: the skill's status follows its scan and approval again.",
    "suspended": "Account suspended: its keys and sessions are refused, its agents stopped.",
    "reinstated": "Suspension lifted: the account works again; its agents stay stopped.",
    "agent-suspended": "Agent suspended: it is stopped and its owner cannot start it.",
    "agent-reinstated": "Suspension lifted: the agent is stopped; its owner may start it.",
}


async def _console_viewer(viewer: SignedIn) -> Viewer:
    """The signed-in admin; anyone else gets the 404 page. A dependency, so that on a form it
    runs before the CSRF check: a non-admin's post is the 404 page with or without the field."""
    viewer.require_role("admin")
    return viewer


ConsoleViewer = Annotated[Viewer, Depends(_console_viewer)]


def _flash(request: Request) -> str | None:
    return OUTCOMES.get(request.query_params.get("outcome", ""))


def _effects(request: Request) -> Effects:
    return Effects(settings=request.app.state.settings, keyring=request.app.state.keyring)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pages(number: int, total: int) -> Pages:
    return Pages(number=number, count=max(1, -(-total // PAGE_SIZE)), size=PAGE_SIZE)


def _link(path: str, **query: str | int | None) -> str:
    """`path` with the query's non-empty values (page 1 is the default, so left out)."""
    kept = {key: value for key, value in query.items() if value not in (None, "", 1)}
    return f"{path}?{urlencode(kept)}" if kept else path


@dataclass(frozen=True)
class Pager:
    """The links around one page of a list, with its filters kept."""

    pages: Pages
    newer: str | None
    older: str | None


def _pager(path: str, pages: Pages, **filters: str | None) -> Pager:
    return Pager(
        pages=pages,
        newer=_link(path, **filters, page=pages.newer) if pages.newer else None,
        older=_link(path, **filters, page=pages.older) if pages.older else None,
    )


def user_status(user: User) -> str:
    """How an account stands, in words: suspended, why it cannot use the platform yet, or
    active."""
    if user.suspended_at is not None:
        return "suspended"
    if user.email_verified_at is None:
        return "email not verified"
    if accounts.setup_problem(user) is not None:
        return "consent due"
    return "active"


async def _account(db: AsyncSession, user_id: str) -> User:
    """Any live account by id, as `change_role_or_plan` finds it; unknown or deleted: 404."""
    user = await db.get(User, user_id) if len(user_id) <= 36 else None
    if user is None or user.deleted_at is not None:
        raise NotFoundError(error="User not found")
    return user


# Overview --------------------------------------------------------------------------------------


@router.get("/admin")
async def admin_home(request: Request, viewer: ConsoleViewer, db: DbSession) -> Response:
    _, users = await accounts.list_users(db, limit=1, offset=0)
    counts = {}
    for status in SkillStatus:
        _, counts[status.value] = await skills.list_skills(
            db, owner_id=None, status=status, limit=1, offset=0
        )
    return page(
        request,
        viewer,
        "admin/index.html",
        section="admin",
        users=users,
        skill_counts=counts,
        skills_total=sum(counts.values()),
    )


# Accounts --------------------------------------------------------------------------------------


@router.get("/admin/users")
async def user_list(
    request: Request,
    viewer: ConsoleViewer,
    db: DbSession,
    email: Annotated[str, Query(max_length=MAX_EMAIL)] = "",
) -> Response:
    number = page_number(request.query_params.get("page"))
    search = accounts.normalize_email(email)  # what the service searches for
    users, total = await accounts.list_users(
        db, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE, email=search or None
    )
    suspension.record_view(  # audited as the API's list is
        db,
        actor=viewer.user,
        client=ClientInfo.from_request(request),
        target_type="users",
        target_id=None,
        subject_user_id=None,
        details={"email": search or None, "page": number, "shown": len(users)},
    )
    return page(
        request,
        viewer,
        "admin/users.html",
        section="admin",
        users=users,
        total=total,
        email=search,
        pager=_pager("/admin/users", _pages(number, total), email=search),
        user_status=user_status,
    )


async def _user_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    user: User,
    *,
    status_code: int = 200,
    account_error: str | None = None,
    credits_error: str | None = None,
    chosen: dict[str, str] | None = None,
    credits: str = "",
    reason: str = "",
    form_token: str | None = None,
    suspension_error: str | None = None,
    suspension_reason: str = "",
) -> Response:
    """An account's page: its facts, balance and latest ledger entries, and its forms (with
    the values just submitted when they were refused)."""
    entries = await ledger.entries(db, user.id, limit=RECENT)
    events, _ = await list_events(
        db, user_id=user.id, see_all=False, action=None, limit=RECENT, offset=0
    )
    return page(
        request,
        viewer,
        "admin/user.html",
        section="admin",
        status_code=status_code,
        user=user,
        status=user_status(user),
        plan=limits_for(user.plan),
        billing=await billing.overview(db, _settings(request), user),
        entries=[billing.transaction_out(entry) for entry in entries],
        lines=[
            EventLine(event=e, what=describe_action(e.action), details=describe_details(e.details))
            for e in events
        ],
        roles=ROLES,
        plans=[(name, limits_for(name).label) for name in PLANS],
        chosen=chosen or {"role": user.role, "plan": user.plan},
        account_error=account_error,
        credits_error=credits_error,
        credits=credits,
        reason=reason,
        form_token=form_token or secrets.token_urlsafe(24),
        is_self=user.id == viewer.user.id,
        suspension_error=suspension_error,
        suspension_reason=suspension_reason,
        flash=_flash(request),
    )


def _record_view(
    request: Request, viewer: Viewer, db: AsyncSession, *, kind: str, target: str, owner: str
) -> None:
    """An admin's look at another account's data is audited (`admin.viewed`), as API reads are."""
    if owner != viewer.user.id:
        suspension.record_view(
            db,
            actor=viewer.user,
            client=ClientInfo.from_request(request),
            target_type=kind,
            target_id=target,
            subject_user_id=owner,
            details={"page": request.url.path},
        )


@router.get("/admin/users/{user_id}")
async def user_page(
    user_id: str, request: Request, viewer: ConsoleViewer, db: DbSession
) -> Response:
    user = await _account(db, user_id)
    _record_view(request, viewer, db, kind="user", target=user.id, owner=user.id)
    return await _user_page(request, viewer, db, user)


async def _change_suspension(
    user_id: str,
    change: str,
    request: Request,
    viewer: Viewer,
    principal: Principal,
    db: AsyncSession,
) -> Response:
    user = await _account(db, user_id)
    reason = (await form_fields(request)).get("suspension_reason", "")[:600]
    act = suspension.suspend_user if change == "suspend" else suspension.reinstate_user
    try:
        data = ReasonIn.model_validate({"reason": reason})
        await act(
            db, admin=principal, user_id=user.id, reason=data.reason, effects=_effects(request)
        )
    except (ValidationError, LunogenError) as exc:
        if isinstance(exc, ValidationError):
            message, status = REASON_PROBLEM, 422
        else:
            message, status = exc.message or exc.error, exc.status_code
        response = await _user_page(
            request,
            viewer,
            db,
            user,
            status_code=status,
            suspension_error=message,
            suspension_reason=reason,
        )
        await db.rollback()
        return response
    outcome = "suspended" if change == "suspend" else "reinstated"
    return RedirectResponse(
        f"/admin/users/{user.id}?outcome={outcome}#suspension-h", status_code=303
    )


@router.post("/admin/users/{user_id}/suspend")
async def suspend_user(
    user_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/users/{id}/suspend`: keys and sessions refused, agents stopped,
    audited with the reason, the owner notified."""
    return await _change_suspension(user_id, "suspend", request, viewer, principal, db)


@router.post("/admin/users/{user_id}/reinstate")
async def reinstate_user(
    user_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/users/{id}/reinstate`: audited with the reason, owner notified."""
    return await _change_suspension(user_id, "reinstate", request, viewer, principal, db)


def _account_problem(exc: ValidationError) -> str:
    fields = {str(error["loc"][0]) if error["loc"] else "" for error in exc.errors()}
    problems = []
    if "role" in fields:
        problems.append(f"Role: choose one of {', '.join(ROLES)}.")
    if "plan" in fields:
        problems.append(f"Plan: choose one of {', '.join(PLANS)}.")
    return " ".join(problems) or "Choose a role and a plan from the lists."


@router.post("/admin/users/{user_id}/account")
async def change_account(
    user_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `PATCH /api/v1/admin/users/{id}`: the role and plan chosen (unchanged ones are left
    alone); each change audited."""
    user = await _account(db, user_id)
    form = await form_fields(request)
    chosen = {"role": form.get("role", "")[:20], "plan": form.get("plan", "")[:20]}
    try:
        data = RoleChangeIn.model_validate(chosen)
        await accounts.change_role_or_plan(
            db,
            actor_id=principal.user.id,
            actor_key_id=principal.key_id,
            user_id=user.id,
            role=data.role,
            plan=data.plan,
            client=principal.client,
        )
    except (ValidationError, LunogenError) as exc:
        if isinstance(exc, ValidationError):
            message, status = _account_problem(exc), 422
        else:
            message, status = exc.message or exc.error, exc.status_code
        response = await _user_page(
            request,
            viewer,
            db,
            user,
            status_code=status,
            account_error=message,
            chosen=chosen,
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/admin/users/{user.id}?outcome=account", status_code=303)


def _credits_problem(exc: ValidationError) -> str:
    fields = {str(error["loc"][0]) if error["loc"] else "" for error in exc.errors()}
    problems = []
    if "credits" in fields:
        problems.append(
            "Credits: enter a number other than zero, negative to take credits away, with at "
            "most six decimal places and at most 1,000,000,000 (for example 25 or -10.5)."
        )
    if "reason" in fields:
        problems.append("Reason: say why, in 1 to 400 characters (kept in the audit log).")
    return " ".join(problems)


@router.post("/admin/users/{user_id}/credits")
async def adjust_credits(
    user_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/accounts/{id}/credits`, with the form's token as the idempotency
    key: an `adjustment` ledger entry and its audit row, once per drawn form."""
    user = await _account(db, user_id)
    form = await form_fields(request)
    credits, reason = form.get("credits", "").strip()[:40], form.get("reason", "")[:400]
    token = form.get("form_token", "")
    try:
        if not _FORM_TOKEN.fullmatch(token):
            raise BadRequestError("This form is out of date: reload the page and fill it again.")
        data = AdminCreditsIn.model_validate({"credits": credits, "reason": reason})
        await billing.adjust_credits(
            db,
            _effects(request),
            actor=principal.user,
            actor_key_id=principal.key_id,
            client=principal.client,
            user_id=user.id,
            credits=data.credits,
            reason=data.reason,
            client_key=f"dashboard:{token}",
        )
    except (ValidationError, LunogenError) as exc:
        if isinstance(exc, ValidationError):
            message, status = _credits_problem(exc), 422
        elif isinstance(exc, IdempotencyConflict):
            message, status = (
                "This form was already used for a different adjustment: nothing more was "
                "changed. Reload the page to make another.",
                409,
            )
        else:
            message, status = exc.message or exc.error, exc.status_code
        response = await _user_page(
            request,
            viewer,
            db,
            user,
            status_code=status,
            credits_error=message,
            credits=credits,
            reason=reason,
            form_token=token if _FORM_TOKEN.fullmatch(token) else None,
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/admin/users/{user.id}?outcome=credits#credits-h", status_code=303)


# Skills ----------------------------------------------------------------------------------------


async def _owners(db: AsyncSession, found: list[Skill]) -> dict[str, User]:
    """The owners of the skills on a page, by id (at most one page's worth)."""
    owners: dict[str, User] = {}
    for owner_id in dict.fromkeys(skill.owner_id for skill in found):
        owner = await db.get(User, owner_id)
        if owner is not None:
            owners[owner_id] = owner
    return owners


@router.get("/admin/skills")
async def skill_list(
    request: Request,
    viewer: ConsoleViewer,
    db: DbSession,
    status: Annotated[SkillStatus | None, Query()] = None,
) -> Response:
    number = page_number(request.query_params.get("page"))
    found, total = await skills.list_skills(
        db, owner_id=None, status=status, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE
    )
    chosen = status.value if status else ""
    suspension.record_view(  # audited as the API's list is
        db,
        actor=viewer.user,
        client=ClientInfo.from_request(request),
        target_type="skills",
        target_id=None,
        subject_user_id=None,
        details={"status": chosen or None, "page": number, "shown": len(found)},
    )
    return page(
        request,
        viewer,
        "admin/skills.html",
        section="admin",
        skills=found,
        owners=await _owners(db, found),
        total=total,
        status=chosen,
        statuses=STATUSES,
        pager=_pager("/admin/skills", _pages(number, total), status=chosen),
    )


async def _skill_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    skill: Skill,
    *,
    status_code: int = 200,
    block_error: str | None = None,
    reason: str = "",
) -> Response:
    version = await skills.current_version(db, skill)
    context: dict[str, Any] = {
        "skill": skill,
        "version": version,
        "owner": await db.get(User, skill.owner_id),
        "files": await skills.file_sizes(db, version_id=version.id),
        "versions": await skills.list_versions(db, skill_id=skill.id),
    }
    return page(
        request,
        viewer,
        "admin/skill.html",
        section="admin",
        status_code=status_code,
        block_error=block_error,
        reason=reason,
        flash=_flash(request),
        **context,
    )


@router.get("/admin/skills/{skill_id}")
async def skill_page(
    skill_id: str, request: Request, viewer: ConsoleViewer, db: DbSession
) -> Response:
    skill = await skills.get_any_skill(db, skill_id=skill_id)
    _record_view(request, viewer, db, kind="skill", target=skill.id, owner=skill.owner_id)
    return await _skill_page(request, viewer, db, skill)


@router.post("/admin/skills/{skill_id}/block")
async def block_skill(
    skill_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/skills/{id}/block`: audited with the reason."""
    skill = await skills.get_any_skill(db, skill_id=skill_id)
    reason = (await form_fields(request)).get("reason", "")[:500]
    try:
        data = SkillBlock.model_validate({"reason": reason})
        await skills.block_skill(db, admin=principal, skill_id=skill.id, reason=data.reason)
    except (ValidationError, LunogenError) as exc:
        if isinstance(exc, ValidationError):
            message, status = "Reason: say why, in 1 to 500 characters.", 422
        else:
            message, status = exc.message or exc.error, exc.status_code
        response = await _skill_page(
            request, viewer, db, skill, status_code=status, block_error=message, reason=reason
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/admin/skills/{skill.id}?outcome=blocked", status_code=303)


@router.post("/admin/skills/{skill_id}/unblock")
async def unblock_skill(
    skill_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/skills/{id}/unblock`: audited."""
    skill = await skills.get_any_skill(db, skill_id=skill_id)
    try:
        await skills.unblock_skill(db, admin=principal, skill_id=skill.id)
    except LunogenError as exc:
        response = await _skill_page(
            request,
            viewer,
            db,
            skill,
            status_code=exc.status_code,
            block_error=exc.message or exc.error,
        )
        await db.rollback()
        return response
    return RedirectResponse(f"/admin/skills/{skill.id}?outcome=unblocked", status_code=303)


# Agents across tenants -------------------------------------------------------------------------


@router.get("/admin/agents")
async def agent_list(
    request: Request,
    viewer: ConsoleViewer,
    db: DbSession,
    status: Annotated[str, Query(max_length=20)] = "",
    owner: Annotated[str, Query(max_length=MAX_EMAIL)] = "",
) -> Response:
    """Every owner's agents, newest first; the read is audited as the API's is."""
    number = page_number(request.query_params.get("page"))
    chosen = status if status in suspension.AGENT_STATUSES else ""
    search = owner.strip().lower()
    rows, total = await suspension.list_all_agents(
        db,
        status=chosen or None,
        owner_email=search or None,
        limit=PAGE_SIZE,
        offset=(number - 1) * PAGE_SIZE,
    )
    suspension.record_view(
        db,
        actor=viewer.user,
        client=ClientInfo.from_request(request),
        target_type="agents",
        target_id=None,
        subject_user_id=None,
        details={"status": chosen or None, "owner_email": search or None, "page": number},
    )
    return page(
        request,
        viewer,
        "admin/agents.html",
        section="admin",
        rows=rows,
        total=total,
        status=chosen,
        owner=search,
        statuses=suspension.AGENT_STATUSES,
        pager=_pager("/admin/agents", _pages(number, total), status=chosen, owner=search),
    )


async def _agent_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    agent: Agent,
    *,
    status_code: int = 200,
    suspension_error: str | None = None,
    reason: str = "",
) -> Response:
    return page(
        request,
        viewer,
        "admin/agent.html",
        section="admin",
        status_code=status_code,
        agent=agent,
        owner=await db.get(User, agent.owner_id),
        suspension_error=suspension_error,
        reason=reason,
        flash=_flash(request),
    )


@router.get("/admin/agents/{agent_id}")
async def agent_page(
    agent_id: str, request: Request, viewer: ConsoleViewer, db: DbSession
) -> Response:
    agent = await suspension.any_agent(db, agent_id)
    _record_view(request, viewer, db, kind="agent", target=agent.id, owner=agent.owner_id)
    return await _agent_page(request, viewer, db, agent)


async def _change_agent(
    agent_id: str,
    change: str,
    request: Request,
    viewer: Viewer,
    principal: Principal,
    db: AsyncSession,
) -> Response:
    agent = await suspension.any_agent(db, agent_id)
    reason = (await form_fields(request)).get("reason", "")[:600]
    act = suspension.suspend_agent if change == "suspend" else suspension.reinstate_agent
    try:
        data = ReasonIn.model_validate({"reason": reason})
        await act(
            db, admin=principal, agent_id=agent.id, reason=data.reason, effects=_effects(request)
        )
    except (ValidationError, LunogenError) as exc:
        if isinstance(exc, ValidationError):
            message, status = REASON_PROBLEM, 422
        else:
            message, status = exc.message or exc.error, exc.status_code
        response = await _agent_page(
            request, viewer, db, agent, status_code=status, suspension_error=message, reason=reason
        )
        await db.rollback()
        return response
    outcome = "agent-suspended" if change == "suspend" else "agent-reinstated"
    return RedirectResponse(f"/admin/agents/{agent.id}?outcome={outcome}", status_code=303)


@router.post("/admin/agents/{agent_id}/suspend")
async def suspend_agent(
    agent_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/agents/{id}/suspend`: stopped, its owner cannot start it."""
    return await _change_agent(agent_id, "suspend", request, viewer, principal, db)


@router.post("/admin/agents/{agent_id}/reinstate")
async def reinstate_agent(
    agent_id: str, request: Request, viewer: ConsoleViewer, principal: FullAccess, db: DbSession
) -> Response:
    """As `POST /api/v1/admin/agents/{id}/reinstate`: stopped, its owner may start it again."""
    return await _change_agent(agent_id, "reinstate", request, viewer, principal, db)


# System health ---------------------------------------------------------------------------------


@router.get("/admin/health")
async def health_page(request: Request, viewer: ConsoleViewer, db: DbSession) -> Response:
    """As `GET /api/v1/admin/health`: queues, failures, sandbox, database and Redis."""
    found = await system_health(
        db, settings=_settings(request), rate_limiter=request.app.state.rate_limiter
    )
    return page(request, viewer, "admin/health.html", section="admin", health=found)
