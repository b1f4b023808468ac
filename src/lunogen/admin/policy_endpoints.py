"""Publishing a version of the Terms or the Privacy Policy (admins); reading and accepting
them is `privacy.policy_endpoints`."""

from __future__ import annotations

from fastapi import APIRouter, Request

from lunogen.auth.dependencies import Admin
from lunogen.db import DbSession
from lunogen.errors import error_responses
from lunogen.privacy import documents
from lunogen.privacy.documents import Publication
from lunogen.privacy.policy_endpoints import PolicyPublishIn, PolicyTextOut, policy_version_out

router = APIRouter(prefix="/api/v1/admin/policies", tags=["admin"])


@router.post("", response_model=PolicyTextOut, status_code=201, responses=error_responses(409))
async def publish_policy(
    data: PolicyPublishIn, request: Request, principal: Admin, db: DbSession
) -> PolicyTextOut:
    """Publish a new version of the Terms or the Privacy Policy (admin; audited). A material
    change needs a future effective date and is announced to every active user, in-app and by
    email, by a background job. 409 when the version exists; 422 for an empty text or a past
    date of a material change."""
    version = data.version or data.effective[:10]
    document = await documents.publish(
        db,
        data=Publication(
            kind=data.kind,
            version=version,
            effective=data.effective,
            material=data.material,
            text=data.text,
            summary=data.summary,
        ),
        actor_user_id=principal.user.id,
        client=principal.client,
    )
    return PolicyTextOut(**policy_version_out(document).model_dump(), text=document.text)
