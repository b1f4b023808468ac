"""Errors of the OpenAI-compatible routes, in OpenAI's shape: `{"error": {message, type, param,
code}}` with the HTTP status OpenAI clients expect.

Every failure on these routes becomes an `OpenAIError` inside the route (`OpenAIRoute`), so it
leaves through the request's dependencies as an exception (the request's transaction rolls
back) and the app's one `LunogenError` handler renders `OpenAIError.body()`. Answers that are
sent before a route runs keep the app's own shape: 413 (body over the route's limit) and 422
(NUL characters), both refused by middleware.

Failures after a message was accepted carry `x-should-retry: false`: the openai SDKs retry
409, 429 and 5xx answers by default, and a retry would send the agent the message again.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from lunogen.errors import LunogenError, log_unexpected, validation_details

INVALID_REQUEST = "invalid_request_error"
SERVER_ERROR = "server_error"
NO_RETRY = {"x-should-retry": "false"}
KEY_REQUIRED = (
    "A valid LunoGen API key is required: send 'Authorization: Bearer lg_live_…' with a key "
    "that has the agents:execute scope."
)


class OpenAIError(LunogenError):
    """An error rendered in OpenAI's shape. `type` and `code` are OpenAI's words where OpenAI
    has one (`invalid_api_key`, `model_not_found`, `insufficient_quota`), ours otherwise."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        type: str = INVALID_REQUEST,  # OpenAI's field name
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, headers=headers)
        self.type = type
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, *, param: str | None, code: str | None = "invalid_value") -> OpenAIError:
    """A 400 naming the parameter at fault."""
    return OpenAIError(message, param=param, code=code)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        f"The model '{model}' does not exist or you do not have access to it. Models are "
        "named 'agent/<agent id>' or 'agent/<agent slug>'; GET /v1/models lists yours.",
        status_code=404,
        param="model",
        code="model_not_found",
    )


def _from_lunogen(exc: LunogenError) -> OpenAIError:
    message = exc.message or exc.error
    status = exc.status_code
    if status == 401:
        return OpenAIError(KEY_REQUIRED, status_code=401, code="invalid_api_key")
    if status == 403:
        code = "account_setup_incomplete" if exc.error == "Account setup incomplete" else None
        if message.startswith("API key missing required scope"):
            code = "insufficient_scope"
        return OpenAIError(message, status_code=403, type="permission_error", code=code)
    if status == 402:  # OpenAI answers an exhausted balance with 429 insufficient_quota
        return OpenAIError(
            message,
            status_code=429,
            type="insufficient_quota",
            code="insufficient_quota",
            headers=NO_RETRY,
        )
    if status == 429:
        return OpenAIError(
            message,
            status_code=429,
            type="requests",
            code="rate_limit_exceeded",
            headers=exc.headers,
        )
    if status == 404:
        return OpenAIError(message, status_code=404, code="not_found")
    if status == 409:
        code = "agent_not_running" if "status" in exc.extra else "conflict"
        return OpenAIError(message, status_code=409, code=code, headers=NO_RETRY)
    if status == 422:  # a rule of a service, checked below the request schema
        return OpenAIError(message, status_code=400, code="invalid_value")
    if status >= 500:
        return OpenAIError(message, status_code=status, type=SERVER_ERROR, headers=NO_RETRY)
    return OpenAIError(message, status_code=status, headers=exc.headers)


def _from_validation(exc: RequestValidationError) -> OpenAIError:
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return invalid(
            "We could not parse the JSON body of your request: send a JSON object with "
            "'Content-Type: application/json'.",
            param=None,
            code=None,
        )
    first = errors[0] if errors else {"loc": (), "msg": "invalid", "type": "invalid"}
    param = _param(tuple(first.get("loc", ())))
    if first.get("type") == "missing":
        return invalid(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    [detail] = validation_details([dict(first)])
    where = f"'{param}'" if param else "the request body"
    return invalid(f"Invalid value for {where}: {detail['message']}", param=param)


def _param(loc: tuple[Any, ...]) -> str | None:
    """A validation error's place as OpenAI names it: `messages[2].content`."""
    param = ""
    for part in loc[1:] if loc[:1] == ("body",) else loc:
        if isinstance(part, int):
            param += f"[{part}]"
        else:
            param += f".{part}" if param else str(part)
    return param or None


def as_openai_error(exc: Exception) -> OpenAIError:
    """`exc`, raised while answering a request of these routes, as what the client is told."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, LunogenError):
        return _from_lunogen(exc)
    if isinstance(exc, RequestValidationError):
        return _from_validation(exc)
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 400:  # FastAPI could not read the body
            return invalid("We could not parse the body of your request.", param=None, code=None)
        kind = SERVER_ERROR if exc.status_code >= 500 else INVALID_REQUEST
        return OpenAIError(str(exc.detail), status_code=exc.status_code, type=kind)
    log_unexpected("openai_compat_unhandled_error", exc)
    return OpenAIError(
        "Something went wrong on our side.",
        status_code=500,
        type=SERVER_ERROR,
        code="internal_error",
        headers=NO_RETRY,
    )


class OpenAIRoute(APIRoute):
    """A route whose every failure (authentication, validation, the endpoint) is an
    `OpenAIError`. It is raised, not returned, so the request's dependencies see it: the
    request's transaction rolls back as for any other error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except OpenAIError:
                raise
            except Exception as exc:
                raise as_openai_error(exc) from exc

        return handle
