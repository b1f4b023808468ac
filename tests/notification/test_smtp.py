"""With LUNOGEN_SMTP_URL the verification email really goes out over SMTP."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from lunogen.notification.models import OutboundEmail
from tests.account.support import deliver_all, rows
from tests.fakes.smtp import FakeSmtp
from tests.helpers import Api


@pytest.fixture
def settings_overrides(smtp: FakeSmtp) -> dict[str, object]:
    return {"smtp_url": smtp.url, "mail_from": "LunoGen Test <noreply@lunogen.test>"}


async def test_verification_email_is_delivered_over_smtp(api: Api, smtp: FakeSmtp) -> None:
    client = api.new_client()
    assert (await api.register(client, "smtp@example.com")).status_code == 201
    await deliver_all()

    (received,) = smtp.messages
    assert received.rcpt_tos == ["smtp@example.com"]
    assert received.mail_from == "noreply@lunogen.test"
    assert received.message["To"] == "smtp@example.com"
    assert "Verify" in received.subject
    assert "http://testserver/verify?token=" in received.body

    (row,) = await rows(
        api, select(OutboundEmail).where(OutboundEmail.to_address == "smtp@example.com")
    )
    assert row.status == "sent"
    assert row.sent_at is not None
    assert row.attempts == 1
    assert row.last_error is None

    # The token delivered by SMTP is the one that verifies the account.
    token = received.body.split("token=", 1)[1].split()[0]
    verified = await client.post("/api/v1/auth/verify", json={"token": token})
    assert verified.status_code == 200


async def test_no_email_for_a_rejected_registration(api: Api, smtp: FakeSmtp) -> None:
    client = api.new_client()
    response = await api.register(client, "nope@example.com", accept_terms=False)
    assert response.status_code == 422
    await deliver_all()
    assert smtp.messages == []
