"""[right-withdraw] You can withdraw your consent at any time by closing your account.

Closing the account (with the password) ends every session and key at once, and the account
can no longer be used; the consent notice also offers it (`tests/privacy/test_consent.py`),
the full deletion flow is `tests/privacy/test_deletion.py`.
"""

from __future__ import annotations

from tests.helpers import PASSWORD, Api
from tests.privacy.promises import sentence

TAG = "right-withdraw"
SENTENCE = sentence(TAG)


async def test_closing_the_account_withdraws_at_once(api: Api) -> None:
    person = await api.sign_up()
    key = api.key_client(await api.create_key(person))
    closed = await person.client.post(
        "/api/v1/account/delete", json={"password": PASSWORD}, headers=person.headers
    )
    assert closed.status_code in (200, 202), closed.text
    assert (await person.client.get("/api/v1/me")).status_code == 401
    assert (await key.get("/api/v1/me")).status_code == 401
    again = await api.new_client().post(
        "/api/v1/auth/login", json={"email": person.email, "password": PASSWORD}
    )
    assert again.status_code in (401, 403)
