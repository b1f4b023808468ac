"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from fastapi import FastAPI
from limits.aio.storage import RedisStorage

from lunogen import health
from lunogen.auth.ratelimit import RateLimiter
from lunogen.db import create_engine


async def test_healthz_answers_without_touching_anything(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_database_and_rate_limit_storage(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": "ok", "rate_limit_storage": "ok"},
    }


async def test_readyz_is_503_when_the_database_is_unreachable(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    healthy = app.state.engine
    broken = create_engine("sqlite+aiosqlite:////nonexistent-dir/for/lunogen.db")
    app.state.engine = broken
    try:
        response = await client.get("/readyz")
    finally:
        app.state.engine = healthy
        await broken.dispose()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("error: ")
    assert body["checks"]["rate_limit_storage"] == "ok"
    assert "Traceback" not in response.text
    # Liveness does not depend on the database; readiness recovers with it.
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


async def test_readyz_is_503_when_redis_is_unreachable(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    healthy = app.state.rate_limiter
    # Port 9 (discard) on loopback: nothing listens there, the connection is refused at once.
    app.state.rate_limiter = RateLimiter(
        RedisStorage("async+redis://127.0.0.1:9/0", implementation="redispy")
    )
    try:
        response = await client.get("/readyz")
    finally:
        app.state.rate_limiter = healthy
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == "ok"
    assert response.json()["checks"]["rate_limit_storage"].startswith("error")


def _sample(text: str, route: str, status: str, method: str = "GET") -> float | None:
    pattern = (
        r'^lunogen_http_requests_total\{method="'
        + method
        + r'",route="'
        + re.escape(route)
        + r'",status="'
        + status
        + r'"\} ([0-9.e+]+)$'
    )
    match = re.search(pattern, text, flags=re.MULTILINE)
    return float(match.group(1)) if match else None


async def test_metrics_count_requests_by_route_template(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        assert (await client.get("/healthz")).status_code == 200
    assert (await client.delete("/api/v1/keys/some-key-id")).status_code == 401
    assert (await client.get("/no/such/page/abc123")).status_code == 404

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE lunogen_http_requests_total counter" in text
    assert _sample(text, "/healthz", "200") == 3.0
    assert "lunogen_http_request_duration_seconds_bucket" in text
    # Labelled by the route template, never by the raw path (bounded label cardinality).
    assert _sample(text, "/api/v1/keys/{key_id}", "401", method="DELETE") == 1.0
    assert _sample(text, "unmatched", "404") == 1.0
    assert "some-key-id" not in text
    assert "abc123" not in text


async def test_metrics_are_per_app(client: httpx.AsyncClient) -> None:
    # A fresh app starts from zero: the registry is not the process-global default one.
    text = (await client.get("/metrics")).text
    assert _sample(text, "/healthz", "200") is None
    assert "python_gc_objects_collected_total" not in text


class _HangingStorage:
    async def check_ready(self) -> bool:
        await asyncio.sleep(3600)
        return True


async def test_readyz_does_not_hang_on_a_stuck_dependency(
    app: FastAPI, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 0.5)
    healthy = app.state.rate_limiter
    app.state.rate_limiter = _HangingStorage()
    try:
        response = await client.get("/readyz")
    finally:
        app.state.rate_limiter = healthy
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "rate_limit_storage": "error: timeout"}
