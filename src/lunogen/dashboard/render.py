from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from lunogen.auth.sessions import CSRF_COOKIE, set_csrf_cookie
from lunogen.kit.ids import random_token

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> Response:
    """Render a page with a CSRF token for its forms (issuing the double-submit cookie)."""
    csrf = request.cookies.get(CSRF_COOKIE) or random_token(24)
    response = templates.TemplateResponse(
        request, template, {"csrf_token": csrf, **context}, status_code=status_code
    )
    if request.cookies.get(CSRF_COOKIE) != csrf:
        set_csrf_cookie(response, csrf_token=csrf, settings=request.app.state.settings)
    return response
