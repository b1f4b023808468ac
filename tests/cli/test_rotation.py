"""`lunogen secrets rotate`: every stored secret ends up under the new key and stays readable."""

from __future__ import annotations

import json

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import select

from lunogen.agent.models import Agent, AgentChannel
from lunogen.app import create_app
from lunogen.config import Settings
from lunogen.kit.crypto import CryptoError, Key, KeyRing, key_file
from lunogen.kit.time import utcnow
from lunogen.runtime.approval_models import ToolApproval
from lunogen.runtime.models import MemoryNote, Message, Thread
from lunogen.secret_columns import ENCRYPTED_COLUMNS
from lunogen.tool.mcp.models import McpServer
from tests.cli.conftest import Cli
from tests.conftest import BASE_URL
from tests.helpers import Api

Secrets = dict[tuple[str, str], str]
OLD = Key.generate()
NEW = Key.generate()


async def _store_secrets(api: Api) -> list[str]:
    """Queue verification emails and store agent channel secrets; return the emails."""
    emails = []
    for _ in range(3):
        email = api.unique_email("rot")
        assert (await api.register(api.new_client(), email)).status_code == 201
        emails.append(email)
    person = await api.sign_up()
    keyring: KeyRing = api.app.state.keyring
    async with api.app.state.sessionmaker() as session:
        for n in range(2):
            agent = Agent(owner_id=person.id, name=f"bot {n}", model="openai/gpt-4o-mini")
            agent.channels = [
                AgentChannel(
                    type="telegram",
                    position=0,
                    config={"username": f"bot{n}"},
                    secrets=keyring.encrypt(json.dumps({"bot_token": f"123:secret-{n}"})),
                ),
                AgentChannel(type="webchat", position=1, config={}, secrets=None),
            ]
            session.add(agent)
            await session.flush()
            thread = Thread(
                agent_id=agent.id, owner_id=person.id, channel_key="api", contact=f"c{n}"
            )
            session.add(thread)
            await session.flush()
            message = Message(
                thread_id=thread.id,
                agent_id=agent.id,
                seq=1,
                role="user",
                content=keyring.encrypt(f"message secret-{n}"),
            )
            session.add(message)
            await session.flush()
            session.add(
                ToolApproval(
                    agent_id=agent.id,
                    owner_id=person.id,
                    message_id=message.id,
                    thread_id=thread.id,
                    step=0,
                    tool_call_id=f"call-{n}",
                    tool_name="run_code",
                    arguments=keyring.encrypt(f'{{"code": "secret-{n}"}}'),
                    status="executed",
                    expires_at=utcnow(),
                    result=keyring.encrypt(f"output secret-{n}"),
                )
            )
            session.add(
                MemoryNote(
                    agent_id=agent.id,
                    owner_id=person.id,
                    contact=f"c{n}",
                    content=keyring.encrypt(f"note secret-{n}"),
                )
            )
            session.add(
                McpServer(
                    agent_id=agent.id,
                    owner_id=person.id,
                    name=f"mcp{n}",
                    url="https://example.com/mcp",
                    auth="oauth",
                    credentials=keyring.encrypt(json.dumps({"tokens": f"mcp secret-{n}"})),
                    oauth_pending=keyring.encrypt(json.dumps({"verifier": f"pkce secret-{n}"})),
                    tools=[],
                    allowed_tools=[],
                )
            )
        await session.commit()
    return emails


async def _stored(api: Api) -> dict[str, dict[str, str]]:
    """Every ciphertext of every encrypted column, by column and row id."""
    values: dict[str, dict[str, str]] = {}
    async with api.app.state.sessionmaker() as session:
        for column in ENCRYPTED_COLUMNS:
            table = column.class_
            rows = await session.execute(select(table.id, column).where(column.is_not(None)))
            values[f"{table.__tablename__}.{column.key}"] = {r[0]: r[1] for r in rows}
    return values


def _decrypt_all(ring: KeyRing, stored: dict[str, dict[str, str]]) -> Secrets:
    return {
        (name, row_id): ring.decrypt(token)
        for name, column in stored.items()
        for row_id, token in column.items()
    }


def _key_ids(stored: dict[str, dict[str, str]]) -> set[str]:
    return {token.split(".")[1] for column in stored.values() for token in column.values()}


async def _verify_with_fresh_app(settings: Settings, email: str, ring: KeyRing) -> None:
    """A server started after the rotation reads the rotated secrets and serves requests."""
    app = create_app(settings)
    assert app.state.keyring.specs() == ring.specs()
    async with LifespanManager(app):
        fresh = Api(
            app=app,
            new_client=lambda: httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=BASE_URL
            ),
        )
        token = await fresh.last_token(email, "verify")
        async with fresh.new_client() as client:
            verified = await client.post("/api/v1/auth/verify", json={"token": token})
            assert verified.status_code == 200, verified.text
            assert verified.json()["email_verified"] is True


async def test_rotate_with_the_key_file(api: Api, cli: Cli, settings: Settings) -> None:
    emails = await _store_secrets(api)
    before = await _stored(api)
    assert all(before.values()), f"every encrypted column needs rows to test: {before}"
    old_ring: KeyRing = api.app.state.keyring
    # The running server's ring follows the key file once it meets the new key (a background
    # job may do that at any time after the rotation): keep what it was before.
    old_primary, old_keys = old_ring.primary_id, list(old_ring.keys)
    assert _key_ids(before) == {old_primary}
    plaintexts = _decrypt_all(old_ring, before)
    assert any("123:secret-0" in p for p in plaintexts.values())

    result = await cli("secrets", "rotate")
    assert result.exit_code == 0, result.output
    count = sum(len(c) for c in before.values())
    assert f"Re-encrypted {count} secret(s)" in result.output

    ring = KeyRing.parse(key_file(settings.data_dir).read_text())
    assert [k.id for k in ring.keys][1:] == [old_primary]
    assert ring.primary_id != old_primary
    after = await _stored(api)
    assert {n: set(c) for n, c in after.items()} == {n: set(c) for n, c in before.items()}
    assert _key_ids(after) == {ring.primary_id}
    assert _decrypt_all(ring, after) == plaintexts
    assert _decrypt_all(KeyRing([ring.keys[0]]), after) == plaintexts
    with pytest.raises(CryptoError, match="no key"):
        _decrypt_all(KeyRing(old_keys), after)  # the old key alone, not the file
    # The running server's ring follows the key file and reads the rotated secrets.
    assert _decrypt_all(old_ring, after) == plaintexts
    for column in after.values():
        for token in column.values():
            assert "secret-" not in token and "token=" not in token

    # The running server keeps working (what it writes uses the old key until its ring has
    # followed the file, the new one after; both are in the file).
    late = api.unique_email("late")
    assert (await api.register(api.new_client(), late)).status_code == 201
    person = await api.sign_up()
    assert (await api.key_client(await api.create_key(person)).get("/api/v1/me")).status_code == 200
    latest = await _stored(api)
    assert ring.primary_id in _key_ids(latest) <= {ring.primary_id, old_primary}
    assert len(_decrypt_all(ring, latest)) == sum(len(c) for c in latest.values())

    await _verify_with_fresh_app(settings, emails[0], ring)
    await _verify_with_fresh_app(settings, late, ring)


async def test_rotate_again_and_prune(api: Api, cli: Cli, settings: Settings) -> None:
    await _store_secrets(api)
    plaintexts = _decrypt_all(api.app.state.keyring, await _stored(api))

    first = await cli("secrets", "rotate")
    assert first.exit_code == 0, first.output
    assert "remove them once every server restarted" in first.output
    pruned = await cli("secrets", "rotate", "--prune")
    assert pruned.exit_code == 0, pruned.output
    assert "Old keys removed" in pruned.output

    ring = KeyRing.parse(key_file(settings.data_dir).read_text())
    assert len(ring.keys) == 1
    stored = await _stored(api)
    assert _key_ids(stored) == {ring.primary_id}
    assert _decrypt_all(ring, stored) == plaintexts

    again = await cli("secrets", "rotate", "--prune")
    assert again.exit_code == 0, again.output
    assert KeyRing.parse(key_file(settings.data_dir).read_text()).primary_id != ring.primary_id


@pytest.mark.parametrize("settings_overrides", [{"secret_keys": OLD.spec()}])
async def test_rotate_with_secret_keys_setting(api: Api, cli: Cli, settings: Settings) -> None:
    emails = await _store_secrets(api)
    assert api.app.state.keyring.primary_id == OLD.id
    assert not key_file(settings.data_dir).exists()
    before = await _stored(api)
    plaintexts = _decrypt_all(KeyRing([OLD]), before)
    assert _key_ids(before) == {OLD.id}

    # Without a new key first there is nothing to do.
    same = await cli("secrets", "rotate")
    assert same.exit_code == 0, same.output
    assert "Re-encrypted 0 secret(s)" in same.output
    assert await _stored(api) == before

    ring_env = f"{NEW.spec()},{OLD.spec()}"
    result = await cli("secrets", "rotate", LUNOGEN_SECRET_KEYS=ring_env)
    assert result.exit_code == 0, result.output
    assert f"under key {NEW.id}" in result.output
    assert "remove them once every server restarted" in result.output
    assert not key_file(settings.data_dir).exists()  # the setting is the only key store

    after = await _stored(api)
    assert _key_ids(after) == {NEW.id}
    assert _decrypt_all(KeyRing([NEW]), after) == plaintexts

    new_settings = settings.model_copy(update={"secret_keys": NEW.spec()})
    await _verify_with_fresh_app(new_settings, emails[1], KeyRing([NEW]))


@pytest.mark.parametrize("settings_overrides", [{"secret_keys": OLD.spec()}])
async def test_rotate_without_the_old_key_fails_cleanly(api: Api, cli: Cli) -> None:
    await _store_secrets(api)
    before = await _stored(api)
    result = await cli("secrets", "rotate", LUNOGEN_SECRET_KEYS=NEW.spec())
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "LUNOGEN_SECRET_KEYS" in result.output
    assert await _stored(api) == before


async def test_secrets_are_not_plaintext_in_the_database_file(api: Api, settings: Settings) -> None:
    emails = await _store_secrets(api)
    token = await api.last_token(emails[0], "verify")
    if not settings.is_sqlite:
        pytest.skip("reads the SQLite database file")
    raw = b"".join(p.read_bytes() for p in settings.data_dir.glob("lunogen.db*"))
    assert emails[0].encode() in raw  # the scan does see the rows
    for secret in (token, "123:secret-0", "123:secret-1"):
        assert secret.encode() not in raw
