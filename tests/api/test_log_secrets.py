"""No log line carries a secret, a password or its hash, a token, or the text of a message.

The worst cases run against one app while everything it logs is captured as production renders
it (structlog's JSON lines, and stdlib logging): database errors whose statements hold a password
hash and an email, a failed sign-in, a turn through the model, webhooks with a bad signature, a
password reset. Then the captured text is searched for every secret the cases used.

One documented exception: without SMTP the development outbox logs each email, links included
(docs/configuration.md, `smtp_url`). Tokens and addresses may appear in those `email_outbox`
lines and nowhere else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from io import StringIO
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI, Request
from sqlalchemy import event, text

from lunogen.db import DbSession
from tests.agent.support import create_agent, new_dev
from tests.channel.support import Hook
from tests.conftest import BASE_URL
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)
from tests.helpers import PASSWORD, Api

DB_FAILURE_PASSWORD = "db failure passphrase 42"
WRONG_PASSWORD = "wrong horse battery staple"
NEW_PASSWORD = "a brand new passphrase 77"
MESSAGE_TEXT = "my very private message 7731"
REPLY_TEXT = "an equally private reply 8842"
HOOK_TEXT = "webhook private text 5521"
MARKER = "$argon2id$v=19$m=65536,t=3,p=4$marker-in-a-failing-statement"


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    return openrouter_settings(openrouter, log_json=True, log_level="DEBUG")


@pytest.fixture
def rendered_log(app: FastAPI) -> Iterator[StringIO]:
    """What the app's structlog writes, as rendered for production (JSON lines)."""
    buffer = StringIO()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(buffer))
    yield buffer


def _fail_inserts_into_users(app: FastAPI) -> Any:
    """Make the database refuse the next INSERT into users, as a constraint would."""
    engine = app.state.engine.sync_engine

    def refuse(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO USERS"):
            raise engine.dialect.loaded_dbapi.IntegrityError("simulated constraint violation")

    event.listen(engine, "before_cursor_execute", refuse)
    return lambda: event.remove(engine, "before_cursor_execute", refuse)


def _add_failing_routes(app: FastAPI) -> None:
    async def failing_statement(request: Request, db: DbSession) -> None:
        query = text("SELECT secret FROM no_such_table WHERE value = :value")
        await db.execute(query, {"value": MARKER})

    async def wrapped_failing_statement(request: Request, db: DbSession) -> None:
        try:
            await failing_statement(request, db)
        except Exception as exc:
            raise RuntimeError("could not read the table") from exc

    app.add_api_route("/test-only/statement", failing_statement, methods=["GET"])
    app.add_api_route("/test-only/wrapped-statement", wrapped_failing_statement, methods=["GET"])


async def test_the_worst_cases_log_no_secret(
    api: Api,
    openrouter: FakeOpenRouter,  # noqa: F811
    rendered_log: StringIO,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = api.app
    raw = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url=BASE_URL
    )
    secrets: dict[str, str] = {
        "password": PASSWORD,
        "password of the failed register": DB_FAILURE_PASSWORD,
        "wrong password": WRONG_PASSWORD,
        "new password": NEW_PASSWORD,
        "password hash": "$argon2",
        "marker parameter": MARKER,
        "API key": "lg_live_",
        "webhook secret": "whsec_",
        "message text": MESSAGE_TEXT,
        "reply text": REPLY_TEXT,
        "webhook text": HOOK_TEXT,
    }
    outbox_only: dict[str, str] = {}

    # Sign-up, a key, a browser session.
    dev = await new_dev(api)
    secrets["API key"] = dev.http.headers["Authorization"].removeprefix("Bearer ")
    secrets["session token"] = dev.person.client.cookies["lg_session"]
    outbox_only["email of the developer"] = dev.person.email.split("@")[0]

    # A database error while registering: the INSERT holds the email and the password hash.
    restore = _fail_inserts_into_users(app)
    try:
        failed = await api.register(
            raw, "db.failure.person@example.com", password=DB_FAILURE_PASSWORD
        )
    finally:
        restore()
    assert failed.status_code == 500, failed.text
    outbox_only["email of the failed register"] = "db.failure.person"

    # Failing statements with a secret parameter, raised as they are and wrapped.
    _add_failing_routes(app)
    assert (await raw.get("/test-only/statement")).status_code == 500
    assert (await raw.get("/test-only/wrapped-statement")).status_code == 500

    # A failed sign-in, then a password reset.
    anonymous = api.new_client()
    wrong = await anonymous.post(
        "/api/v1/auth/login", json={"email": dev.person.email, "password": WRONG_PASSWORD}
    )
    assert wrong.status_code == 401
    forgot = await anonymous.post("/api/v1/auth/password/forgot", json={"email": dev.person.email})
    assert forgot.status_code == 202
    reset_token = await api.last_token(dev.person.email, "reset")
    outbox_only["reset token"] = reset_token
    reset = await anonymous.post(
        "/api/v1/auth/password/reset", json={"token": reset_token, "password": NEW_PASSWORD}
    )
    assert reset.status_code == 200, reset.text
    verify_token = await api.last_token(dev.person.email, "verify")
    outbox_only["verification token"] = verify_token

    # A turn through the model, and webhooks: one signed, one with a bad signature.
    agent = await create_agent(dev, channels=[{"type": "webhook"}])
    deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
    assert deployed.status_code == 200, deployed.text
    openrouter.reply(REPLY_TEXT)
    said = await dev.http.post(
        f"/api/v1/agents/{agent['id']}/messages", json={"text": MESSAGE_TEXT}
    )
    assert said.json()["reply"]["text"] == REPLY_TEXT
    hook = Hook(api, dev, agent, agent["channels"][0])
    secrets["webhook secret"] = hook.secret
    payload = {"id": "m1", "from": "caller", "text": HOOK_TEXT}
    forged = await hook.post(payload, secret="whsec_" + "A" * 43 + "=")
    assert forged.status_code == 401
    openrouter.reply(REPLY_TEXT)
    signed = await hook.post(payload)
    assert signed.status_code == 200, signed.text

    rendered = rendered_log.getvalue()
    lines = [*rendered.splitlines(), *caplog.text.splitlines()]

    leaks = [
        f"{what} in: {line[:300]}"
        for what, value in secrets.items()
        for line in lines
        if value in line
    ]
    leaks += [
        f"{what} outside the outbox: {line[:300]}"
        for what, value in outbox_only.items()
        for line in lines
        if value in line and '"event": "email_outbox"' not in line
    ]
    assert not leaks, "\n".join(leaks)
    # The cases ran and were logged, usefully: the failing SQL is named, its data is not.
    events = [json.loads(line) for line in rendered.splitlines()]
    names = [e["event"] for e in events]
    assert names.count("unhandled_error") == 3, names
    assert any("no_such_table" in e.get("statement", "") for e in events)
    assert "email_outbox" in names and "agent_log" in names


async def test_the_engine_hides_parameters(app: FastAPI) -> None:
    assert app.state.engine.sync_engine.hide_parameters is True
