"""Without LUNOGEN_SMTP_URL emails stay in the development outbox, listed by the CLI."""

from __future__ import annotations

import asyncio

from sqlalchemy import select
from typer.testing import CliRunner

from lunogen.cli import app as cli
from lunogen.config import Settings
from lunogen.notification.models import OutboundEmail
from tests.account.support import deliver_all, rows
from tests.helpers import Api


async def test_email_stays_in_the_outbox_encrypted(api: Api) -> None:
    client = api.new_client()
    assert (await api.register(client, "outbox@example.com")).status_code == 201
    await deliver_all()
    (row,) = await rows(
        api, select(OutboundEmail).where(OutboundEmail.to_address == "outbox@example.com")
    )
    assert row.status == "outbox"
    assert row.sent_at is None
    token = await api.last_token("outbox@example.com", "verify")
    assert token not in row.body_encrypted  # the link is encrypted at rest


async def test_mail_outbox_cli_lists_the_email(api: Api, settings: Settings) -> None:
    client = api.new_client()
    assert (await api.register(client, "cli@example.com")).status_code == 201
    await deliver_all()
    token = await api.last_token("cli@example.com", "verify")
    env = {
        "LUNOGEN_DATABASE_URL": settings.effective_database_url,
        "LUNOGEN_DATA_DIR": str(settings.data_dir),
        "LUNOGEN_SECRET_KEYS": settings.secret_keys,  # None: unset, use the data dir's key
        "COLUMNS": "200",  # no wrapping of the link
    }
    runner = CliRunner()
    # The CLI runs its own event loop: give it a thread.
    result = await asyncio.to_thread(runner.invoke, cli, ["mail", "outbox"], env=env)
    assert result.exit_code == 0, result.output
    assert "cli@example.com" in result.output
    assert "Verify your LunoGen email address" in result.output
    assert "outbox" in result.output
    assert f"/verify?token={token}" in result.output

    filtered = await asyncio.to_thread(
        runner.invoke, cli, ["mail", "outbox", "--to", "someone-else@example.com"], env=env
    )
    assert filtered.exit_code == 0
    assert "cli@example.com" not in filtered.output
    assert "The outbox is empty." in filtered.output
