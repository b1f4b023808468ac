"""The `lunogen` command line: version, db upgrade, user create, apikey create, mail outbox."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lunogen import __version__
from lunogen.account.models import User
from lunogen.audit.models import AuditEvent
from lunogen.billing.models import CreditEntry
from lunogen.kit.crypto import Key
from lunogen.migrations import alembic_config
from tests.cli.conftest import Cli
from tests.helpers import PASSWORD, Api

KEY_LINE = re.compile(r"^lg_live_[0-9a-f]{64}$", re.MULTILINE)


def test_version() -> None:
    result = Cli().run("version")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == __version__


def test_db_upgrade_creates_the_schema_in_a_fresh_sqlite_file(tmp_path: Path) -> None:
    from alembic.script import ScriptDirectory

    data_dir = tmp_path / "fresh"
    cli = Cli(env={"LUNOGEN_DATA_DIR": str(data_dir), "LUNOGEN_DATABASE_URL": None})
    result = cli.run("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "up to date" in result.output

    database = data_dir / "lunogen.db"
    assert database.exists()
    with sqlite3.connect(database) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        (version,) = conn.execute("select version_num from alembic_version").fetchone()
    assert {"users", "api_keys", "agents", "agent_channels", "audit_events"} <= tables
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert version == head

    again = cli.run("db", "upgrade")
    assert again.exit_code == 0, again.output


async def _consent(api: Api, email: str) -> None:
    person = await api.sign_in(api.new_client(), email)
    response = await person.client.post(
        "/api/v1/auth/consent",
        json={"age_confirmed": True, "accept_terms": True, "accept_privacy": True},
        headers=person.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["setup_complete"] is True


async def test_user_create_is_active_but_needs_consent(api: Api, cli: Cli) -> None:
    result = await cli(
        "user",
        "create",
        "Ada@Example.com",
        "--name",
        "Ada",
        "--admin",
        "--password-stdin",
        input=PASSWORD + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "Created admin ada@example.com" in result.output
    assert PASSWORD not in result.output

    person = await api.sign_in(api.new_client(), "ada@example.com")
    me = (await person.client.get("/api/v1/me")).json()
    assert me["email"] == "ada@example.com" and me["name"] == "Ada"
    assert me["role"] == "admin" and me["email_verified"] is True
    assert me["setup_complete"] is False
    blocked = await person.client.get("/api/v1/tools")
    assert blocked.status_code == 403
    assert blocked.json()["error"] == "Account setup incomplete"

    await _consent(api, "ada@example.com")
    assert (await person.client.get("/api/v1/tools")).status_code == 200
    assert (await person.client.get("/api/v1/admin/users")).status_code == 200

    async with api.app.state.sessionmaker() as session:
        user = (
            await session.execute(select(User).where(User.email == "ada@example.com"))
        ).scalar_one()
        assert user.password_hash and PASSWORD not in user.password_hash
        events = (
            await session.execute(select(AuditEvent).where(AuditEvent.target_id == user.id))
        ).scalars()
        assert "account.created_by_operator" in {e.action for e in events}


async def test_user_create_with_role_and_without_password(api: Api, cli: Cli) -> None:
    result = await cli("user", "create", "sam@example.com", "--role", "support")
    assert result.exit_code == 0, result.output
    assert "No password set" in result.output
    login = await api.new_client().post(
        "/api/v1/auth/login", json={"email": "sam@example.com", "password": PASSWORD}
    )
    assert login.status_code == 401
    async with api.app.state.sessionmaker() as session:
        user = (
            await session.execute(select(User).where(User.email == "sam@example.com"))
        ).scalar_one()
    assert user.role == "support" and user.name == "sam" and user.password_hash is None
    assert user.email_verified_at is not None


async def test_user_create_errors(api: Api, cli: Cli) -> None:
    bad_role = await cli("user", "create", "x@example.com", "--role", "root")
    assert bad_role.exit_code == 2
    assert "role must be one of" in bad_role.output

    first = await cli("user", "create", "dup@example.com", "--password-stdin", input=PASSWORD)
    assert first.exit_code == 0, first.output
    duplicate = await cli("user", "create", "DUP@example.com")
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output

    weak = await cli("user", "create", "weak@example.com", "--password-stdin", input="abc\n")
    assert weak.exit_code == 1
    assert "Password" in weak.output

    async with api.app.state.sessionmaker() as session:
        emails = set((await session.execute(select(User.email))).scalars())
    assert emails == {"dup@example.com"}


@pytest.mark.parametrize("email", ["ops@lunogen.test", "ops@localhost", "not-an-email", ""])
async def test_user_create_refuses_addresses_sign_in_refuses(
    api: Api, cli: Cli, email: str
) -> None:
    result = await cli("user", "create", email, "--password-stdin", input=PASSWORD)
    assert result.exit_code == 1, result.output
    assert "is not an email address sign-in accepts" in result.output
    login = await api.new_client().post(
        "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
    )
    assert login.status_code == 422  # the same rule the API applies
    async with api.app.state.sessionmaker() as session:
        assert list((await session.execute(select(User.email))).scalars()) == []


async def test_user_create_grants_starter_credits_once_per_mailbox(api: Api, cli: Cli) -> None:
    for email in ("grower@example.com", "Grower+2@example.com"):
        result = await cli("user", "create", email, "--password-stdin", input=PASSWORD)
        assert result.exit_code == 0, result.output
    async with api.app.state.sessionmaker() as session:
        grants = await session.execute(
            select(User.email, func.count(CreditEntry.id))
            .outerjoin(
                CreditEntry, (CreditEntry.account_id == User.id) & (CreditEntry.kind == "grant")
            )
            .group_by(User.email)
            .order_by(User.email)
        )
        assert [tuple(row) for row in grants] == [
            ("grower+2@example.com", 0),
            ("grower@example.com", 1),
        ]


async def test_apikey_create_prints_a_working_key(api: Api, cli: Cli) -> None:
    created = await cli("user", "create", "kim@example.com", "--password-stdin", input=PASSWORD)
    assert created.exit_code == 0, created.output
    await _consent(api, "kim@example.com")

    result = await cli(
        "apikey", "create", "kim@example.com", "--scope", "agents:read", "--name", "deploy bot"
    )
    assert result.exit_code == 0, result.output
    (key,) = KEY_LINE.findall(result.stdout)
    assert "shown once" in result.output

    keyed = api.key_client(key)
    me = await keyed.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["email"] == "kim@example.com"
    tools = await keyed.get("/api/v1/tools")
    assert tools.status_code == 403
    assert tools.json()["message"] == "API key missing required scope: tools:read"

    person = await api.sign_in(api.new_client(), "kim@example.com")
    (listed,) = (await person.client.get("/api/v1/keys")).json()["data"]
    assert listed["scopes"] == ["agents:read"] and listed["name"] == "deploy bot"
    assert listed["prefix"] == key[:16]

    # The plan's key limit applies to the CLI as well.
    over = await cli("apikey", "create", "kim@example.com")
    assert over.exit_code == 1
    assert "Free plan allows 1 active API key" in over.output
    assert not KEY_LINE.search(over.stdout)

    await api.set_plan(person, "pro")
    more = await cli(
        "apikey", "create", "kim@example.com", "--scope", "tools:read", "--scope", "logs:read"
    )
    assert more.exit_code == 0, more.output
    (second,) = KEY_LINE.findall(more.stdout)
    assert (await api.key_client(second).get("/api/v1/tools")).status_code == 200


async def test_apikey_create_errors(api: Api, cli: Cli) -> None:
    await cli("user", "create", "lee@example.com", "--password-stdin", input=PASSWORD)
    bad_scope = await cli("apikey", "create", "lee@example.com", "--scope", "agents:destroy")
    assert bad_scope.exit_code == 2
    assert "valid scopes" in bad_scope.output and "agents:read" in bad_scope.output

    for bad_name in ("", "x" * 101):
        bad = await cli("apikey", "create", "lee@example.com", "--name", bad_name)
        assert bad.exit_code == 2, bad.output
        assert "name" in bad.output

    unknown = await cli("apikey", "create", "nobody@example.com")
    assert unknown.exit_code == 1
    assert "No account with email nobody@example.com" in unknown.output

    person = await api.sign_in(api.new_client(), "lee@example.com")
    await _consent(api, "lee@example.com")
    assert (await person.client.get("/api/v1/keys")).json()["data"] == []


async def test_apikey_of_an_unconsented_user_is_refused_until_consent(api: Api, cli: Cli) -> None:
    await cli("user", "create", "new@example.com", "--password-stdin", input=PASSWORD)
    result = await cli("apikey", "create", "new@example.com")
    assert result.exit_code == 0, result.output
    (key,) = KEY_LINE.findall(result.stdout)
    refused = await api.key_client(key).get("/api/v1/tools")
    assert refused.status_code == 403
    assert refused.json()["error"] == "Account setup incomplete"
    await _consent(api, "new@example.com")
    assert (await api.key_client(key).get("/api/v1/tools")).status_code == 200


async def test_mail_outbox_lists_decrypted_mail(api: Api, cli: Cli) -> None:
    email = api.unique_email("mail")
    assert (await api.register(api.new_client(), email)).status_code == 201
    token = await api.last_token(email, "verify")
    result = await cli("mail", "outbox", "--to", email)
    assert result.exit_code == 0, result.output
    assert "Verify your LunoGen email address" in result.output
    assert token in result.output
    empty = await cli("mail", "outbox", "--to", "nobody@example.com")
    assert "The outbox is empty." in empty.output


def test_secrets_generate_key() -> None:
    result = Cli().run("secrets", "generate-key")
    assert result.exit_code == 0, result.output
    key = Key.parse(result.stdout.strip())
    assert len(key.material) == 32
    assert Cli().run("secrets", "generate-key").stdout != result.stdout
