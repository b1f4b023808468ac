"""API reference at /api/docs, rendered on the server from our own OpenAPI document.

No Swagger UI: it would need third-party JavaScript from a CDN, which our CSP refuses.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Request
from markupsafe import Markup, escape
from starlette.responses import Response

from lunogen.dashboard.render import render

router = APIRouter(include_in_schema=False)
METHODS = ("get", "post", "put", "patch", "delete")
_MAX_DEPTH = 8
_CODE_SPAN = re.compile(r"`([^`]+)`")


def inline_markdown(text: str) -> Markup:
    """Docstrings use `code` spans: escape everything, then turn the spans into <code>."""
    escaped = str(escape(text))
    return Markup(_CODE_SPAN.sub(r"<code>\1</code>", escaped))  # noqa: S704 (escaped above)


def resolve_refs(value: Any, spec: dict[str, Any], depth: int = 0) -> Any:
    """Inline local `$ref`s so that a schema reads on its own (bounded: schemas may recurse)."""
    if isinstance(value, list):
        return [resolve_refs(item, spec, depth) for item in value]
    if not isinstance(value, dict):
        return value
    ref = value.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        if depth >= _MAX_DEPTH:
            return {"$ref": ref}
        target: Any = spec
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return resolve_refs(target, spec, depth + 1)
    return {key: resolve_refs(item, spec, depth) for key, item in value.items()}


def _json_schema(content: dict[str, Any], spec: dict[str, Any]) -> str | None:
    schema = content.get("application/json", {}).get("schema")
    return json.dumps(resolve_refs(schema, spec), indent=1) if schema else None


def _operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    operations = []
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            responses = op.get("responses", {})
            success = next((c for c in sorted(responses) if c.startswith("2")), None)
            operations.append(
                {
                    "id": op.get("operationId", f"{method}-{path}"),
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "description": inline_markdown(op.get("description", "")),
                    "tag": (op.get("tags") or ["other"])[0],
                    "authenticated": bool(op.get("security")),
                    "parameters": op.get("parameters", []),
                    "body": _json_schema(op.get("requestBody", {}).get("content", {}), spec),
                    "success": success,
                    "result": _json_schema(responses.get(success, {}).get("content", {}), spec)
                    if success
                    else None,
                    "responses": [
                        (code, responses[code].get("description", "")) for code in sorted(responses)
                    ],
                }
            )
    return sorted(operations, key=lambda o: (o["tag"], o["path"], o["method"]))


@router.get("/api/docs")
async def api_docs(request: Request) -> Response:
    spec = request.app.openapi()
    operations = _operations(spec)
    tags = sorted({op["tag"] for op in operations})
    info = spec.get("info", {})
    return render(
        request,
        "apidocs.html",
        info=info,
        description=inline_markdown(info.get("description", "")),
        operations=operations,
        tags=tags,
    )
