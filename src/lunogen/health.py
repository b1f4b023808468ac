"""Liveness, readiness and metrics. Not part of the API document; keep them off the internet."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.responses import Response

router = APIRouter(include_in_schema=False)
CHECK_TIMEOUT_SECONDS = 5.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check(probe: Callable[[], Awaitable[bool]]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return "ok" if await probe() else "error"
    except TimeoutError:
        return "error: timeout"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """503 unless the database and the rate-limit storage answer within a few seconds."""

    async def database() -> bool:
        async with request.app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True

    async def rate_limit_storage() -> bool:
        return bool(await request.app.state.rate_limiter.check_ready())

    checks = {
        "database": await _check(database),
        "rate_limit_storage": await _check(rate_limit_storage),
    }
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST
    )
