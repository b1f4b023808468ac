"""Admin API: every account, searched by email, and changing an account's role or plan.

Admin only (anyone else: 403). Changes are audited by `account.service`; every listing of the
accounts is audited as `admin.viewed`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from lunogen.account import service as accounts
from lunogen.account.schemas import RoleChangeIn, UserOut
from lunogen.admin.suspension import record_view
from lunogen.auth.dependencies import Admin
from lunogen.db import DbSession
from lunogen.kit.pagination import Page, PageParams, page_params

# Tagged `account` and `admin`, as when these routes lived in `account.endpoints`.
router = APIRouter(prefix="/api/v1/admin/users", tags=["account", "admin"])


@router.get("", response_model=Page[UserOut])
async def list_users(
    principal: Admin,
    db: DbSession,
    page: Annotated[PageParams, Depends(page_params)],
    email: Annotated[str | None, Query(max_length=320)] = None,
) -> Page[UserOut]:
    """Every account (admin only), optionally filtered by part of the email address. The read
    is audited (`admin.viewed`, with the search and the page)."""
    users, total = await accounts.list_users(db, limit=page.limit, offset=page.offset, email=email)
    record_view(
        db,
        actor=principal.user,
        client=principal.client,
        actor_key_id=principal.key_id,
        target_type="users",
        target_id=None,
        subject_user_id=None,
        details={"email": email, "offset": page.offset, "shown": len(users)},
    )
    return Page(data=[accounts.user_out(u) for u in users], total=total, **page.model_dump())


@router.patch("/{user_id}", response_model=UserOut)
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
