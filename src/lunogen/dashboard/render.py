from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from starlette.responses import Response

from lunogen.auth.sessions import CSRF_COOKIE, set_csrf_cookie
from lunogen.kit.ids import random_token

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).parent / "templates"


@cache
def templates() -> Jinja2Templates:
    """Made at the first page, or once the server answers (Jinja2 is not needed to start)."""
    from fastapi.templating import Jinja2Templates

    return Jinja2Templates(directory=str(TEMPLATES_DIR))


def render(request: Request, template: str, *, status_code: int = 200, **context: Any) -> Response:
    """Render a page with a CSRF token for its forms (issuing the double-submit cookie)."""
    csrf = request.cookies.get(CSRF_COOKIE) or random_token(24)
    response = templates().TemplateResponse(
        request, template, {"csrf_token": csrf, **context}, status_code=status_code
    )
    if request.cookies.get(CSRF_COOKIE) != csrf:
        set_csrf_cookie(response, csrf_token=csrf, settings=request.app.state.settings)
    return response
