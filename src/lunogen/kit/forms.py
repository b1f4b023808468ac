"""Endpoints that take both JSON (API clients) and HTML form posts (plain browser pages)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from lunogen.errors import BadRequestError

M = TypeVar("M", bound=BaseModel)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith(FORM_TYPES)


async def form_fields(request: Request) -> dict[str, str]:
    """A browser form's text fields (uploaded files left out)."""
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting a body accepted as JSON or as a form."""
    schema = model.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": schema},
                "application/x-www-form-urlencoded": {"schema": schema},
            },
        }
    }


async def parse_body(request: Request, model: type[M]) -> M:
    if is_form(request):
        form = await request.form()
        data: dict[str, Any] = {
            key: value
            for key, value in form.items()
            if key != "csrf_token" and isinstance(value, str)
        }
        for name, field in model.model_fields.items():
            if field.annotation is bool and name not in data:
                data[name] = False  # an unticked checkbox is absent from the form
    else:
        raw = await request.body()
        try:
            data = json.loads(raw) if raw else {}
        except (ValueError, RecursionError) as exc:
            raise BadRequestError("Malformed JSON body", error="Invalid JSON") from exc
        if not isinstance(data, dict):
            raise RequestValidationError(
                [{"loc": ("body",), "msg": "expected a JSON object", "type": "dict_type"}]
            )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from exc
