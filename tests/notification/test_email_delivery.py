"""Email over SMTP when the server fails, hangs and recovers: the send runs outside any
transaction, a failed attempt is retried by the sweeper after its backoff, an email is sent
exactly once, and one that keeps failing ends `failed` after MAX_ATTEMPTS with a log line."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text, update
from structlog.testing import capture_logs

from lunogen.account.models import User
from lunogen.config import Settings
from lunogen.db import create_engine
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.migrations import upgrade
from lunogen.notification import email as mail
from lunogen.notification.models import OutboundEmail
from lunogen.worker.sweeps import sweep_registered
from tests.account.support import deliver_all
from tests.fakes.smtp import FakeSmtp, Hang
from tests.helpers import Api

TO = "person@example.com"


@pytest.fixture
def settings_overrides(smtp: FakeSmtp) -> dict[str, object]:
    return {
        "smtp_url": smtp.url,
        "mail_from": "LunoGen Test <noreply@lunogen.test>",
        "smtp_timeout_seconds": 20,  # a hang below is released by the test, not timed out
        "sweep_interval_seconds": 0,  # the tests sweep by hand
    }


async def _queue(api: Api) -> str:
    """An email queued the way the services queue one: its job goes out after the commit."""
    async with api.app.state.sessionmaker() as session:
        row = mail.queue_email(
            session, api.app.state.keyring, to=TO, subject="Hello", body="Your link: x"
        )
        await session.commit()
    return row.id


async def _row(api: Api, email_id: str) -> OutboundEmail:
    async with api.app.state.sessionmaker() as session:
        row = await session.get(OutboundEmail, email_id)
    assert row is not None
    return row


async def _time_passes(api: Api, email_id: str) -> None:
    """The backoff of the last failure has run out."""
    async with api.app.state.sessionmaker() as session:
        await session.execute(
            update(OutboundEmail)
            .where(OutboundEmail.id == email_id, OutboundEmail.next_attempt_at.is_not(None))
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


async def _sweep(api: Api) -> int:
    swept = await sweep_registered(api.app.state.sessionmaker)
    await deliver_all()
    return swept["email"]


async def _until(started: Hang) -> None:
    assert await asyncio.to_thread(started.started.wait, 60), "no client reached the hang"


async def test_refusals_are_retried_after_backoff_and_the_email_is_sent_once(
    api: Api, smtp: FakeSmtp
) -> None:
    smtp.fail(451, "4.3.2 Try again later")
    smtp.fail(554, "5.7.1 Relay temporarily refused")
    email_id = await _queue(api)
    await deliver_all()

    first = await _row(api, email_id)
    assert (first.status, first.attempts) == ("queued", 1)
    assert first.last_error is not None and "451" in first.last_error
    assert first.next_attempt_at is not None and first.next_attempt_at > utcnow()
    assert await _sweep(api) == 0  # not due before its backoff has passed

    await _time_passes(api, email_id)
    assert await _sweep(api) == 1
    second = await _row(api, email_id)
    assert (second.status, second.attempts) == ("queued", 2)
    assert second.last_error is not None and "554" in second.last_error

    await _time_passes(api, email_id)
    assert await _sweep(api) == 1
    sent = await _row(api, email_id)
    assert (sent.status, sent.attempts, sent.last_error) == ("sent", 3, None)
    assert sent.sent_at is not None and sent.next_attempt_at is None
    (received,) = smtp.messages
    assert received.rcpt_tos == [TO] and received.message["Message-ID"] == f"<{email_id}@lunogen>"

    await _time_passes(api, email_id)
    assert await _sweep(api) == 0
    assert smtp.attempts == 3 and len(smtp.messages) == 1


async def test_an_email_that_keeps_failing_ends_failed_with_a_log_line(
    api: Api, smtp: FakeSmtp
) -> None:
    smtp.fail(451, times=mail.MAX_ATTEMPTS + 1)
    with capture_logs() as logs:
        email_id = await _queue(api)
        await deliver_all()
        for _ in range(mail.MAX_ATTEMPTS - 1):
            await _time_passes(api, email_id)
            assert await _sweep(api) == 1
    row = await _row(api, email_id)
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", mail.MAX_ATTEMPTS, None)
    assert row.last_error is not None and "451" in row.last_error
    (gave_up,) = [e for e in logs if e["event"] == "email_gave_up"]
    assert gave_up["email_id"] == email_id and gave_up["attempts"] == mail.MAX_ATTEMPTS
    assert TO not in repr(logs)  # the address stays on the row, out of the log
    assert await _sweep(api) == 0
    assert smtp.attempts == mail.MAX_ATTEMPTS and smtp.messages == []


async def test_a_hanging_server_holds_no_database_lock(api: Api, smtp: FakeSmtp) -> None:
    """While the SMTP conversation hangs, another writer commits: the attempt holds no
    transaction open (on SQLite the one write lock). Then the server recovers."""
    hang = smtp.hang()
    email_id = await _queue(api)
    await _until(hang)

    async with api.app.state.sessionmaker() as session:
        session.add(User(email="someone-else@example.com", name="Another tenant"))
        await session.commit()
    # The write finished while the attempt was still hanging: nothing recorded its end yet.
    assert not hang.ended.is_set()
    claimed = await _row(api, email_id)
    assert (claimed.status, claimed.attempts, claimed.last_error) == ("queued", 1, None)

    hang.release()  # the server answers 451 at last
    await deliver_all()
    assert (await _row(api, email_id)).status == "queued"
    await _time_passes(api, email_id)
    assert await _sweep(api) == 1
    assert (await _row(api, email_id)).status == "sent"
    assert len(smtp.messages) == 1


async def test_a_server_that_never_answers_times_out_and_is_retried(
    api: Api, smtp: FakeSmtp, settings: Settings
) -> None:
    async with api.app.state.sessionmaker() as session:  # due, but no job sent for it
        session.add(
            OutboundEmail(
                id=(email_id := new_id()),
                to_address=TO,
                subject="Hello",
                body_encrypted=api.app.state.keyring.encrypt("Your link: x"),
                status="queued",
                next_attempt_at=utcnow(),
            )
        )
        await session.commit()
    hang = smtp.hang()
    impatient = settings.model_copy(update={"smtp_timeout_seconds": 1.0})
    state = api.app.state
    status = await mail.attempt_email(state.sessionmaker, state.keyring, impatient, email_id)
    assert status == "queued"
    assert hang.started.is_set()
    row = await _row(api, email_id)
    assert row.last_error == "the SMTP server did not answer within 1 s"
    hang.release()

    await _time_passes(api, email_id)
    assert await _sweep(api) == 1
    assert (await _row(api, email_id)).status == "sent"
    assert len(smtp.messages) == 1


def test_emails_left_queued_by_older_code_are_due_after_the_upgrade(tmp_path: Path) -> None:
    """Before 0009 a failed send went back to `queued` and nothing sent it again."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0008")

    async def insert() -> None:
        engine = create_engine(url)
        async with engine.begin() as conn:
            for email_id, status in (("stuck", "queued"), ("done", "sent")):
                await conn.execute(
                    text(
                        "INSERT INTO outbound_emails (id, to_address, subject, body_encrypted, "
                        "status, attempts, created_at) VALUES (:id, :to, 'Hi', '-', :status, 1, "
                        "'2026-12-01 10:00:00')"
                    ),
                    {"id": email_id, "to": TO, "status": status},
                )
        await engine.dispose()

    async def due() -> dict[str, object]:
        engine = create_engine(url)
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT id, next_attempt_at FROM outbound_emails"))
            found = {row.id: row.next_attempt_at for row in rows}
        await engine.dispose()
        return found

    asyncio.run(insert())
    upgrade(url)
    # The stuck email is due since it was created; the sent one is never due.
    assert asyncio.run(due()) == {"stuck": "2026-12-01 10:00:00", "done": None}
