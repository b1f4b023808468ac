"""API reference at /api/docs, rendered on the server from our own OpenAPI document.

No Swagger UI: it would need third-party JavaScript from a CDN, which our CSP refuses.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from lunogen.dashboard.render import render

router = APIRouter(include_in_schema=False)
METHODS = ("get", "post", "put", "patch", "delete")


def _operations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    operations = []
    for path, item in spec.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            operations.append(
                {
                    "method": method.upper(),
                    "path": path,
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "tag": (op.get("tags") or ["other"])[0],
                    "parameters": op.get("parameters", []),
                    "body": json.dumps(body.get("schema"), indent=1) if body else None,
                    "responses": sorted(op.get("responses", {})),
                }
            )
    return sorted(operations, key=lambda o: (o["tag"], o["path"], o["method"]))


@router.get("/api/docs")
async def api_docs(request: Request) -> Response:
    spec = request.app.openapi()
    return render(request, "apidocs.html", info=spec.get("info", {}), operations=_operations(spec))
