from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from lunogen import __version__, composition  # noqa: F401  (registers the job parts)
from lunogen.account.endpoints import router as account_router
from lunogen.admin.credits_endpoints import router as admin_credits_router
from lunogen.admin.moderation_endpoints import appeal_router as moderation_appeal_router
from lunogen.admin.moderation_endpoints import router as moderation_router
from lunogen.admin.policy_endpoints import router as admin_policy_router
from lunogen.admin.skills_endpoints import router as admin_skills_router
from lunogen.admin.support_endpoints import router as support_console_router
from lunogen.admin.suspension_endpoints import router as suspension_router
from lunogen.admin.ticket_endpoints import router as ticket_router
from lunogen.admin.users_endpoints import router as admin_users_router
from lunogen.agent.agentfile_endpoints import router as agent_file_router
from lunogen.agent.caps_endpoints import account_cap_router, agent_caps_router
from lunogen.agent.endpoints import router as agent_router
from lunogen.agent.lifecycle_endpoints import router as lifecycle_router
from lunogen.agent.version_endpoints import router as agent_versions_router
from lunogen.agent.workspace import edge_for
from lunogen.audit.endpoints import router as audit_router
from lunogen.auth.endpoints import router as auth_router
from lunogen.auth.google import STATE_COOKIE, create_oauth
from lunogen.auth.google import router as google_router
from lunogen.auth.key_endpoints import router as key_router
from lunogen.auth.ratelimit import RateLimiter, create_storage
from lunogen.billing import endpoints as billing_endpoints
from lunogen.billing.endpoints import billing_router, stripe_webhook_router
from lunogen.channel import routes as channel_routes
from lunogen.config import Settings
from lunogen.dashboard import site as dashboard
from lunogen.dashboard.pages import STATIC_DIR
from lunogen.dashboard.render import templates
from lunogen.errors import install_error_handlers
from lunogen.health import router as health_router
from lunogen.kit.crypto import load_keyring
from lunogen.kit.logging import configure_logging
from lunogen.kit.middleware import (
    BodyLimitMiddleware,
    Metrics,
    MetricsMiddleware,
    RejectNulMiddleware,
    RouteBodyLimit,
    SecurityHeadersMiddleware,
)
from lunogen.llm.endpoints import router as model_router
from lunogen.llm.usage_endpoints import router as usage_router
from lunogen.notification.endpoints import router as notification_router
from lunogen.privacy.endpoints import router as privacy_router
from lunogen.privacy.export_endpoints import router as export_router
from lunogen.privacy.policy_endpoints import router as policy_router
from lunogen.privacy.requests_endpoints import router as privacy_requests_router
from lunogen.runtime.approval_endpoints import router as approval_router
from lunogen.runtime.endpoints import router as conversation_router
from lunogen.runtime.events import TURN_EVENTS
from lunogen.runtime.memory_endpoints import router as memory_router
from lunogen.schedule.endpoints import router as schedule_router
from lunogen.skill import endpoints as skill_endpoints
from lunogen.skill.endpoints import router as skill_router
from lunogen.tool.agent_tools import router as agent_tools_router
from lunogen.tool.endpoints import router as tool_router
from lunogen.tool.mcp.endpoints import router as mcp_router
from lunogen.worker.process import JobProcess

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_SECONDS = 3.0

# Routes whose bodies are not held to `max_body_bytes`: skill uploads need more, the webhook
# routes take less (each cap is enforced while the body streams in, before the route runs).
ROUTE_BODY_LIMITS = (
    RouteBodyLimit("POST", "/api/v1/skills", skill_endpoints.MAX_BODY_BYTES),
    RouteBodyLimit("PUT", "/api/v1/skills/{skill_id}", skill_endpoints.MAX_BODY_BYTES),
    *channel_routes.body_limits(),
    RouteBodyLimit("POST", "/webhooks/stripe", billing_endpoints.MAX_WEBHOOK_BYTES),
)

API_DESCRIPTION = """The LunoGen developer API.

Authenticate with `Authorization: Bearer lg_live_…` (create keys at `POST /api/v1/keys`) or a
signed-in browser session. Every endpoint names the scope it needs; sessions act with `full`.
"""


async def _after_start(app: FastAPI, settings: Settings) -> None:
    """What need not delay the first answer: the sandbox probe, the page templates, and the
    routes of the included routers, which FastAPI resolves at the first request that scans them
    (~60 ms). The job process warms up the SDKs (`worker.process.warm_up`)."""
    await asyncio.gather(
        asyncio.to_thread(_resolve_routes, app),
        asyncio.to_thread(templates),
        _probe_sandbox_and_announce(settings),
        return_exceptions=True,
    )


def _resolve_routes(app: FastAPI) -> None:
    """Walk every route once: FastAPI caches what it resolves, so requests find it ready."""
    deque(iter_route_contexts(app.routes), maxlen=0)


async def _probe_sandbox_and_announce(settings: Settings) -> None:
    """Probe the sandbox (a real sandboxed run, and an image mount where the kernel quota may
    work: tens of ms, about a second with gVisor) once the server answers, then log
    `lunogen_started` with the verdict. A deploy or turn that needs the sandbox meanwhile waits
    for this probe's verdict (`edge_for`)."""
    try:
        sandbox, sandbox_problem = await asyncio.to_thread(edge_for, settings)
    except Exception:
        log.exception("sandbox_probe_failed")  # not cached: the next edge_for() tries again
        sandbox, sandbox_problem = None, "the probe failed (see sandbox_probe_failed)"
    log.info(
        "lunogen_started",
        version=__version__,
        public_url=settings.public_url,
        jobs="redis" if settings.uses_redis_jobs else "in-process",
        embedded_worker=settings.embedded_worker,
        sandbox=sandbox.backend_name if sandbox else f"unavailable: {sandbox_problem}",
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level, json=settings.log_json)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    keyring = load_keyring(settings.secret_keys, settings.data_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        jobs = JobProcess(
            settings,
            keyring,
            consume=settings.embedded_worker,
            grace_seconds=SHUTDOWN_GRACE_SECONDS,
        )
        async with jobs.running() as runtime:
            app.state.engine = runtime.engine
            app.state.sessionmaker = runtime.sessionmaker
            app.state.turn_events = runtime.get(TURN_EVENTS)
            after_start = asyncio.create_task(_after_start(app, settings))
            app.state.started = after_start  # done once `lunogen_started` is logged
            try:
                yield
            finally:
                await asyncio.wait({after_start})

    app = FastAPI(
        title="LunoGen API",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.keyring = keyring
    app.state.rate_limiter = RateLimiter(create_storage(settings.redis_url))
    app.state.oauth = create_oauth(settings)
    app.state.metrics = Metrics()

    install_error_handlers(app)
    for router in (
        health_router,
        auth_router,
        google_router,
        account_router,
        admin_users_router,
        privacy_router,
        policy_router,
        admin_policy_router,
        export_router,
        key_router,
        agent_router,
        agent_file_router,
        lifecycle_router,
        agent_versions_router,
        *channel_routes.routers(),
        conversation_router,
        notification_router,
        tool_router,
        agent_tools_router,
        mcp_router,
        agent_caps_router,
        memory_router,
        approval_router,
        schedule_router,
        skill_router,
        admin_skills_router,
        model_router,
        usage_router,
        account_cap_router,
        billing_router,
        admin_credits_router,
        stripe_webhook_router,
        audit_router,
        ticket_router,
        privacy_requests_router,
        support_console_router,
        suspension_router,
        moderation_router,
        moderation_appeal_router,
        *dashboard.routers(),
    ):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    oauth_secret = hashlib.sha256(b"lunogen-oauth-state" + keyring.keys[0].material).hexdigest()
    app.add_middleware(
        SessionMiddleware,
        secret_key=oauth_secret,
        session_cookie=STATE_COOKIE,
        max_age=600,
        path="/auth/google",
        same_site="lax",
        https_only=settings.secure_cookies,
    )
    # Added innermost first: a request meets Metrics, SecurityHeaders, BodyLimit, RejectNul,
    # then the session cookie and the routes. The body limit comes before anything that reads.
    app.add_middleware(RejectNulMiddleware)
    app.add_middleware(
        BodyLimitMiddleware, default=settings.max_body_bytes, routes=ROUTE_BODY_LIMITS
    )
    app.add_middleware(SecurityHeadersMiddleware, https=settings.secure_cookies)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
