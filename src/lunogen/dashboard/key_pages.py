"""The API keys page: the active keys (prefix, scopes, created, last used), a form to create one
with scopes (the key is shown once, on the answer to that form, and never again), and revoke
with a confirmation. The forms call `auth.apikeys`, as `/api/v1/keys` does."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from lunogen.account.plans import limits_for
from lunogen.auth import apikeys
from lunogen.auth.dependencies import FullAccess
from lunogen.auth.models import ApiKey
from lunogen.auth.schemas import ApiKeyCreate
from lunogen.auth.scopes import Scope
from lunogen.dashboard.shell import SignedIn, Viewer, page, page_router
from lunogen.db import DbSession
from lunogen.errors import LunogenError, NotFoundError

router = page_router()

# What each scope lets a key do, in the order the form lists them.
SCOPE_HELP: dict[Scope, str] = {
    Scope.FULL: "Everything your account can do, key management and billing included.",
    Scope.AGENTS_READ: "See agents, their channels, conversations and usage.",
    Scope.AGENTS_WRITE: (
        "Create, change and delete agents, their channels, pairing codes and memory notes."
    ),
    Scope.AGENTS_EXECUTE: "Deploy, start and stop agents, and send them messages.",
    Scope.TOOLS_READ: "See the tools and which agents use them.",
    Scope.TOOLS_WRITE: "Turn tools on and off for agents.",
    Scope.SKILLS_READ: "See skills, their files and versions.",
    Scope.SKILLS_WRITE: "Create, change, upload and delete skills.",
    Scope.LOGS_READ: "Read the runtime logs of agents, live too.",
}

OUTCOMES = {"revoked": "Key revoked: requests with it are refused from now on."}
NO_STORE = {"Cache-Control": "no-store"}


async def _keys_page(
    request: Request,
    viewer: Viewer,
    db: AsyncSession,
    *,
    status_code: int = 200,
    key_error: str | None = None,
    name: str = "",
    chosen: frozenset[str] = frozenset(),
    flash: str | None = None,
) -> Response:
    keys = await apikeys.list_keys(db, user_id=viewer.user.id)
    limits = limits_for(viewer.user.plan)
    return page(
        request,
        viewer,
        "account/keys.html",
        section="keys",
        status_code=status_code,
        keys=keys,
        limit=limits.api_keys,
        plan=limits.label,
        scopes=SCOPE_HELP,
        key_error=key_error,
        name=name,
        chosen=chosen,
        flash=flash,
    )


@router.get("/keys")
async def keys_page(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    outcome = request.query_params.get("outcome", "")
    return await _keys_page(request, viewer, db, flash=OUTCOMES.get(outcome))


def _form_problem(exc: ValidationError) -> str:
    fields = {str(error["loc"][0]) if error["loc"] else "" for error in exc.errors()}
    problems = []
    if "name" in fields:
        problems.append("Give the key a name of 1 to 100 characters.")
    if fields - {"name"}:
        problems.append("Tick at least one scope from the list.")
    return " ".join(problems)


@router.post("/keys")
async def create_key(
    request: Request, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    """Create a key; the answer is the only page that ever shows it (not cached)."""
    form = await request.form()
    raw_name = form.get("name")
    name = raw_name if isinstance(raw_name, str) else ""
    picked = [value for value in form.getlist("scopes") if isinstance(value, str)]
    try:
        data = ApiKeyCreate.model_validate({"name": name, "scopes": picked})
        key, plaintext = await apikeys.create_key(
            db,
            user=principal.user,
            name=data.name,
            scopes=data.scopes,
            client=principal.client,
            actor_key_id=principal.key_id,
        )
    except (ValidationError, LunogenError) as exc:
        if isinstance(exc, ValidationError):
            message, status = _form_problem(exc), 422
        else:
            message, status = exc.message or exc.error, exc.status_code
        response = await _keys_page(
            request,
            viewer,
            db,
            status_code=status,
            key_error=message,
            name=name[:100],
            chosen=frozenset(picked),
        )
        await db.rollback()
        return response
    response = page(
        request,
        viewer,
        "account/key_created.html",
        section="keys",
        status_code=201,
        key=key,
        plaintext=plaintext,
    )
    response.headers.update(NO_STORE)
    return response


async def _own_key(db: AsyncSession, *, user_id: str, key_id: str) -> ApiKey:
    """One of the user's active keys; another person's, a revoked or an unknown id: 404."""
    for key in await apikeys.list_keys(db, user_id=user_id):
        if key.id == key_id:
            return key
    raise NotFoundError(error="API key not found")


@router.get("/keys/{key_id}/revoke")
async def confirm_revoke(
    key_id: str, request: Request, viewer: SignedIn, db: DbSession
) -> Response:
    key = await _own_key(db, user_id=viewer.user.id, key_id=key_id)
    return page(request, viewer, "account/key_revoke.html", section="keys", key=key)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(
    key_id: str, viewer: SignedIn, principal: FullAccess, db: DbSession
) -> Response:
    await apikeys.revoke_key(
        db,
        user_id=principal.user.id,
        key_id=key_id,
        client=principal.client,
        actor_key_id=principal.key_id,
    )
    return RedirectResponse("/keys?outcome=revoked", status_code=303)
