"""[security-secrets] Secrets you give us (channel tokens, webhook secrets) and message text are
encrypted at rest.

The raw stored values (read with plain SQL, past the ORM's decryption) of channel secrets, the
webhook signing secret, message text, memory notes and the outgoing email bodies are AES-GCM
ciphertext, and on SQLite none of the plaintexts appears anywhere in the database files.
`tests/agent/test_secrets.py` checks they are never returned or logged; `lunogen secrets
rotate` (`tests/cli/test_rotation.py`) re-encrypts the columns of `secret_columns.py`.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from lunogen.secret_columns import ENCRYPTED_COLUMNS
from tests.agent.support import create_agent, new_dev, telegram, whatsapp
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api
from tests.privacy.promises import sentence

TAG = "security-secrets"
SENTENCE = sentence(TAG)
MARKER = "zebra-tangerine-7731 my passport number"


async def test_secrets_and_message_text_are_ciphertext_in_the_database(
    api: Api, openrouter: FakeOpenRouter, database_url: str
) -> None:
    assert {f"{c.class_.__tablename__}.{c.key}" for c in ENCRYPTED_COLUMNS} >= {
        "agent_channels.secrets",
        "messages.content",
        "memory_notes.content",
        "outbound_emails.body_encrypted",
    }
    dev = await new_dev(api)
    wa, tg = whatsapp(), telegram()
    await create_agent(dev, name="Quiet", channels=[wa, tg])
    talker = await create_agent(dev, channels=[{"type": "webhook"}])
    webhook_secret = talker["channels"][0]["secret"]["value"]
    assert (await dev.http.post(f"/api/v1/agents/{talker['id']}/deploy")).status_code == 200
    openrouter.reply(f"Noted: {MARKER}")
    said = await dev.http.post(f"/api/v1/agents/{talker['id']}/messages", json={"text": MARKER})
    assert said.status_code == 200, said.text
    plaintexts = [MARKER, webhook_secret, wa["access_token"], wa["app_secret"], tg["bot_token"]]

    async with api.app.state.sessionmaker() as session:
        raw_secrets = (await session.execute(text("SELECT secrets FROM agent_channels"))).all()
        raw_messages = (await session.execute(text("SELECT content FROM messages"))).all()
    stored = [str(row[0]) for row in raw_secrets + raw_messages if row[0] is not None]
    assert len(raw_messages) == 2 and len(raw_secrets) == 3
    for value in stored:
        assert not any(p in value for p in plaintexts), value[:80]
        assert "{" not in value and " " not in value, value[:80]  # not JSON, not text

    # What a client reads is the plaintext (the encryption is real, not a loss).
    thread = (await dev.http.get(f"/api/v1/agents/{talker['id']}/threads")).json()["data"][0]
    messages = await dev.http.get(f"/api/v1/agents/{talker['id']}/threads/{thread['id']}/messages")
    assert MARKER in messages.text

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        files = [p for p in Path(url.database).parent.glob(Path(url.database).name + "*")]
        blob = b"".join(p.read_bytes() for p in files)
        assert blob, files
        for plaintext in plaintexts:
            assert plaintext.encode() not in blob, plaintext
