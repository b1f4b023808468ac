from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)


class LunogenError(Exception):
    """An error a user can act on: rendered as `{"error", "message"}` with `status_code`."""

    status_code = 400
    error = "Bad request"

    def __init__(
        self,
        message: str | None = None,
        *,
        error: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or error or self.error)
        self.message = message
        if error is not None:
            self.error = error
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.error}
        if self.message is not None:
            body["message"] = self.message
        body.update(self.extra)
        return body


class BadRequestError(LunogenError):
    status_code = 400
    error = "Bad request"


class UnauthorizedError(LunogenError):
    status_code = 401
    error = "Unauthorized"


class ForbiddenError(LunogenError):
    status_code = 403
    error = "Forbidden"


class NotFoundError(LunogenError):
    status_code = 404
    error = "Not found"


class ConflictError(LunogenError):
    status_code = 409
    error = "Conflict"


class ValidationFailedError(LunogenError):
    """422 naming the fields at fault, in the same shape as request validation errors."""

    status_code = 422
    error = "Validation failed"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        details = [{"field": field, "message": message}] if field else []
        super().__init__(message, extra={"details": details})


class TooManyRequestsError(LunogenError):
    status_code = 429
    error = "Too many requests"


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "cookie")]
    return ".".join(parts) or "body"


def validation_details(errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    details = []
    for err in errors:
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            message = "unknown field"
        details.append({"field": _field_name(tuple(err.get("loc", ()))), "message": message})
    return details


def validation_response(errors: list[dict[str, Any]]) -> JSONResponse:
    details = validation_details(errors)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return JSONResponse(
        status_code=422,
        content={"error": "Validation failed", "message": summary, "details": details},
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(LunogenError)
    async def _lunogen_error(request: Request, exc: LunogenError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content=exc.body(), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        names = {404: "Not found", 405: "Method not allowed", 400: "Bad request"}
        error = names.get(exc.status_code, str(exc.detail))
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": error, "message": str(exc.detail)},
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return JSONResponse(
            status_code=500,
            content={"error": "Internal error", "message": "Something went wrong on our side."},
        )
