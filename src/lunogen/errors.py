from __future__ import annotations

import json
import traceback
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lunogen.kit.time import DateOutOfRangeError

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


class PayloadTooLargeError(LunogenError):
    status_code = 413
    error = "Payload too large"


def body_too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body must be at most {limit} bytes ({_size(limit)})")


def _size(count: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{count} bytes"


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


ERROR_DESCRIPTIONS = {
    400: "Malformed request, for example a body that is not valid JSON",
    401: "Missing, unknown or revoked credentials",
    403: "Not allowed: missing scope, account setup incomplete, CSRF token missing, or plan limit",
    404: "Not found, or not visible to you",
    409: "Conflicts with the current state",
    413: "The request body is larger than this endpoint accepts",
    422: "Invalid input; `details` names each field at fault",
    429: "Too many requests; retry after `Retry-After` seconds",
}
_ERROR_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "title": "Error",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "FieldError": {
        "type": "object",
        "title": "FieldError",
        "required": ["field", "message"],
        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
    },
    "ValidationFailed": {
        "type": "object",
        "title": "ValidationFailed",
        "required": ["error", "message", "details"],
        "properties": {
            "error": {"type": "string", "const": "Validation failed"},
            "message": {"type": "string"},
            "details": {"type": "array", "items": {"$ref": "#/components/schemas/FieldError"}},
        },
    },
}
_RATE_LIMIT_HEADERS = {
    name: {"description": description, "schema": {"type": "integer"}}
    for name, description in (
        ("Retry-After", "Seconds until a request may succeed"),
        ("X-RateLimit-Limit", "Requests allowed per minute for this key"),
        ("X-RateLimit-Remaining", "Requests left in the current window"),
        ("X-RateLimit-Reset", "Unix time when the window frees up"),
    )
}
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route, naming error statuses beyond those every route gets documented.

    Every operation is documented with 422 (if it takes input), 400 and 413 (if it takes a body),
    401/403/429 (if it needs credentials) and 404 (if it has path parameters); add others here.
    """
    return {code: {"description": ERROR_DESCRIPTIONS.get(code, "Error")} for code in codes}


def _error_content(code: int) -> dict[str, Any]:
    name = "ValidationFailed" if code == 422 else "Error"
    return {"schema": {"$ref": f"#/components/schemas/{name}"}}


def _generic_error_codes(operation: dict[str, Any]) -> set[int]:
    params = operation.get("parameters", [])
    body_types = operation.get("requestBody", {}).get("content", {})
    codes: set[int] = set()
    if params or body_types:
        codes.add(422)
    if body_types:
        codes.update((400, 413))
    if any(p.get("in") == "path" for p in params):
        codes.add(404)
    if operation.get("security"):
        codes.update((401, 403, 429))
    if any(t in body_types for t in _FORM_TYPES):
        codes.add(403)  # form posts must carry the CSRF token
    return codes


def _document_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    for code in sorted(_generic_error_codes(operation)):
        responses.setdefault(str(code), {"description": ERROR_DESCRIPTIONS[code]})
    for code_text, response in responses.items():
        if not code_text.isdigit() or int(code_text) < 400:
            continue
        json_content = response.setdefault("content", {}).setdefault("application/json", {})
        if code_text == "422" or "schema" not in json_content:
            json_content.update(_error_content(int(code_text)))
        if code_text == "429":
            response.setdefault("headers", {}).update(_RATE_LIMIT_HEADERS)
    body_types = operation.get("requestBody", {}).get("content", {})
    if any(t in body_types for t in _FORM_TYPES):
        responses.setdefault("303", {"description": "Form posts: go to the next page"})
        for response in responses.values():
            if "content" in response:
                response["content"].setdefault("text/html", {"schema": {"type": "string"}})


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Document the error answers of every operation in `spec` (in place) with our error shapes.

    Replaces FastAPI's default 422 schema (`{"detail": ...}`, which we never send). Operations
    that take an HTML form also answer form posts with HTML pages or a 303 redirect.
    """
    spec.setdefault("components", {}).setdefault("schemas", {}).update(_ERROR_SCHEMAS)
    for item in spec.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                _document_operation(operation)
    text = json.dumps(spec.get("paths", {}))
    for name in _FASTAPI_ERROR_SCHEMAS:
        if f"#/components/schemas/{name}" not in text:
            spec["components"]["schemas"].pop(name, None)
    return spec


def _install_openapi_errors(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    """The one error handler of the app, and the OpenAPI documentation of its error answers."""
    _install_openapi_errors(app)

    @app.exception_handler(LunogenError)
    async def _lunogen_error(request: Request, exc: LunogenError) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content=exc.body(), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(err.get("type") == "json_invalid" for err in errors):
            # Same answer as the endpoints that parse their body themselves (kit.forms).
            return JSONResponse(
                status_code=400, content={"error": "Invalid JSON", "message": "Malformed JSON body"}
            )
        return validation_response(errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        body = {"error": str(exc.detail), "message": str(exc.detail)}
        if exc.status_code == 404:
            body = {"error": "Not found", "message": f"Nothing at {request.url.path}"}
        elif exc.status_code == 405:
            body = {
                "error": "Method not allowed",
                "message": f"{request.method} is not allowed on {request.url.path}",
            }
        elif exc.status_code == 400:
            body = {"error": "Bad request", "message": str(exc.detail)}
            if request.headers.get("content-type", "").startswith("application/json"):
                body = {"error": "Invalid JSON", "message": "Malformed JSON body"}
        return JSONResponse(
            status_code=exc.status_code, content=body, headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(StatementError)
    async def _statement_error(request: Request, exc: StatementError) -> JSONResponse:
        # A time given to a query that cannot be held in UTC fails while SQLAlchemy binds it.
        if isinstance(exc.orig, DateOutOfRangeError):
            message = f"date out of range: {exc.orig}"
            return JSONResponse(
                status_code=422,
                content={"error": "Validation failed", "message": message, "details": []},
            )
        raise exc

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Answered by Starlette's outermost middleware, outside our own: add the headers here.
        from lunogen.kit.middleware import security_headers

        log_unexpected("unhandled_error", exc, path=request.url.path)
        return JSONResponse(
            status_code=500,
            content={"error": "Internal error", "message": "Something went wrong on our side."},
            headers=security_headers(https=request.app.state.settings.secure_cookies),
        )


def _statement_error_in(exc: BaseException) -> StatementError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, StatementError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def log_unexpected(event: str, exc: BaseException, **fields: Any) -> None:
    """Log an unexpected exception with its traceback, but never the data of a database error.

    The text of a database error (and of the driver's exception chained to it) can quote bound
    parameters or the failing row: an email, a password hash. For those only the classes, the
    driver's first message line (PostgreSQL puts row values in DETAIL, not there), the SQL and
    the stack frames are logged.
    """
    statement_error = _statement_error_in(exc)
    if statement_error is None:
        log.error(event, exc_info=exc, **fields)
        return
    orig = statement_error.orig
    first_line = str(orig).splitlines()[0][:300] if str(orig) else ""
    log.error(
        event,
        error=type(exc).__name__,
        db_error=f"{type(orig).__name__}: {first_line}",
        sqlstate=getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None),
        statement=(statement_error.statement or "")[:2000],
        stack="".join(traceback.format_tb(exc.__traceback__)),
        **fields,
    )
