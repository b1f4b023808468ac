"""Link emails (verification resend, password reset) are capped per address."""

from __future__ import annotations

from lunogen.auth.endpoints import EMAILS_PER_ADDRESS_PER_HOUR
from tests.helpers import Api


async def test_reset_requests_beyond_the_cap_send_nothing_but_answer_the_same(api: Api) -> None:
    person = await api.sign_up()
    client = api.new_client()
    for _ in range(EMAILS_PER_ADDRESS_PER_HOUR + 2):
        response = await client.post("/api/v1/auth/password/forgot", json={"email": person.email})
        assert response.status_code == 202
    resets = [row for row, _ in await api.emails(person.email) if "reset" in row.subject.lower()]
    assert len(resets) == EMAILS_PER_ADDRESS_PER_HOUR
    other = await api.sign_up()
    response = await client.post("/api/v1/auth/password/forgot", json={"email": other.email})
    assert response.status_code == 202
    assert any("reset" in row.subject.lower() for row, _ in await api.emails(other.email))


async def test_verification_resend_is_capped(api: Api) -> None:
    client = api.new_client()
    email = api.unique_email("unverified")
    assert (await api.register(client, email)).status_code == 201
    for _ in range(EMAILS_PER_ADDRESS_PER_HOUR + 2):
        response = await client.post("/api/v1/auth/verify/resend", json={"email": email})
        assert response.status_code == 202
    verifications = [row for row, _ in await api.emails(email) if "verify" in row.subject.lower()]
    # One from registration plus the capped resends.
    assert len(verifications) == 1 + EMAILS_PER_ADDRESS_PER_HOUR


async def test_resend_refuses_a_cross_site_text_plain_body(api: Api) -> None:
    client = api.new_client()
    response = await client.post(
        "/api/v1/auth/verify/resend",
        content=b'{"email": "x@example.com"}',
        headers={"content-type": "text/plain"},
    )
    assert response.status_code == 415
