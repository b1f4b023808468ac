"""`GET /settings/picture`: the signed-in person's own profile picture, from our origin.

Only ever the viewer's own picture (there is no id in the path to guess); none stored → the 404
page; signed out → the sign-in redirect, as every page. The bytes were checked to be PNG, JPEG,
WebP or GIF when they were downloaded (`account.picture`), and go out with that type, `nosniff`
and a private cache that revalidates by ETag, so a new picture shows at once.
"""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response

from lunogen.account import picture as pictures
from lunogen.dashboard.shell import SignedIn, page_router
from lunogen.db import DbSession

router = page_router()


@router.get("/settings/picture")
async def own_picture(request: Request, viewer: SignedIn, db: DbSession) -> Response:
    row = await pictures.own_picture(db, user_id=viewer.user.id)
    etag = f'"{row.sha256}"'
    headers = {
        "Cache-Control": "private, no-cache",
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": "inline",
    }
    if etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(row.data, media_type=row.content_type, headers=headers)


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}
