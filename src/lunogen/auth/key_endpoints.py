from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from lunogen.auth import apikeys
from lunogen.auth.dependencies import FullAccess
from lunogen.auth.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyOut
from lunogen.db import DbSession

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])


@router.get("", response_model=ApiKeyList)
async def list_keys(principal: FullAccess, db: DbSession) -> ApiKeyList:
    """Your active developer keys (never the keys themselves, only their prefixes)."""
    keys = await apikeys.list_keys(db, user_id=principal.user.id)
    return ApiKeyList(data=[ApiKeyOut.model_validate(k) for k in keys])


@router.post("", status_code=201, response_model=ApiKeyCreated)
async def create_key(data: ApiKeyCreate, principal: FullAccess, db: DbSession) -> ApiKeyCreated:
    """Create a key with the given scopes. The `key` field is shown once: store it now."""
    key, plaintext = await apikeys.create_key(
        db,
        user=principal.user,
        name=data.name,
        scopes=data.scopes,
        client=principal.client,
        actor_key_id=principal.key_id,
    )
    return ApiKeyCreated(**ApiKeyOut.model_validate(key).model_dump(), key=plaintext)


@router.delete("/{key_id}", status_code=204)
async def revoke_key(key_id: str, principal: FullAccess, db: DbSession) -> Response:
    """Revoke a key at once; requests with it answer 401 from now on."""
    await apikeys.revoke_key(
        db,
        user_id=principal.user.id,
        key_id=key_id,
        client=principal.client,
        actor_key_id=principal.key_id,
    )
    return Response(status_code=204)
