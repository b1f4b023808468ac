from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from lunogen.account import service as accounts
from lunogen.account.schemas import MeOut, ProfileIn, RoleChangeIn, UserOut
from lunogen.auth.dependencies import Admin, FullAccess, SetupUser
from lunogen.db import DbSession
from lunogen.kit.pagination import Page, PageParams, page_params

router = APIRouter(prefix="/api/v1", tags=["account"])


@router.get("/me", response_model=MeOut)
async def get_me(principal: SetupUser) -> MeOut:
    """Your profile, role, plan and plan limits; `setup_complete` says whether consent is due."""
    return accounts.me_out(principal.user)


@router.patch("/me", response_model=MeOut)
async def update_me(data: ProfileIn, principal: FullAccess, db: DbSession) -> MeOut:
    """Change your name (1-200 characters). Scope: full access; audited."""
    user = await accounts.rename(
        db, user=principal.user, name=data.name, client=principal.client, key_id=principal.key_id
    )
    return accounts.me_out(user)


@router.get("/admin/users", response_model=Page[UserOut], tags=["admin"])
async def list_users(
    principal: Admin,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    email: Annotated[str | None, Query(max_length=320)] = None,
) -> Page[UserOut]:
    """Every account (admin only), optionally filtered by part of the email address."""
    users, total = await accounts.list_users(db, limit=page.limit, offset=page.offset, email=email)
    return Page(data=[accounts.user_out(u) for u in users], total=total, **page.model_dump())


@router.patch("/admin/users/{user_id}", response_model=UserOut, tags=["admin"])
async def change_user(user_id: str, data: RoleChangeIn, principal: Admin, db: DbSession) -> UserOut:
    """Change an account's role (`user`, `support`, `admin`) or plan; audited."""
    user = await accounts.change_role_or_plan(
        db,
        actor_id=principal.user.id,
        actor_key_id=principal.key_id,
        user_id=user_id,
        role=data.role,
        plan=data.plan,
        client=principal.client,
    )
    return accounts.user_out(user)
