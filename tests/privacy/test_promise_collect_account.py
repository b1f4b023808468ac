"""[collect-account] For your account we keep your email address, your name, a hash of your
password (never the password itself) and, if you sign in with Google, your Google account id and
profile picture.

After a registration and a Google sign-in that links the account, the `users` row holds exactly
these about the person, next to account state a column list declares; the password is stored
only as an argon2id hash and its text is in no column of any table; the picture is our copy.
`tests/account/test_registration.py::test_password_is_stored_as_argon2id_hash` pins the hash.
"""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select

from lunogen.account.models import User, UserPicture
from tests.account.support import rows
from tests.fakes.google_oidc import FakeGoogle, Identity
from tests.helpers import Api
from tests.privacy.promise_support import (  # noqa: F401 (fixtures)
    google,
    google_server,
    google_settings,
    google_sign_in,
)
from tests.privacy.promises import sentence
from tests.privacy.support import rows_mentioning

TAG = "collect-account"
SENTENCE = sentence(TAG)
SECRET = "Purple elephants 42 dance"

# What the sentence names about the person.
ABOUT_YOU = {"email", "name", "password_hash", "google_sub", "picture_url"}
# The account's own state: what it may do, when it was made, what it accepted, its lifecycle.
ACCOUNT_STATE = {
    "id",
    "created_at",
    "email_verified_at",
    "role",
    "plan",
    "age_attested_at",
    "terms_version",
    "privacy_version",
    "deleted_at",
    "suspended_at",
    "suspended_reason",
}


@pytest.fixture
def settings_overrides(google: FakeGoogle) -> dict[str, object]:  # noqa: F811
    return google_settings(google)


async def _columns(api: Api, table: str) -> set[str]:
    async with api.app.state.sessionmaker() as session:
        connection = await session.connection()
        return await connection.run_sync(
            lambda c: {column["name"] for column in inspect(c).get_columns(table)}
        )


async def test_the_users_table_holds_only_the_named_fields(api: Api) -> None:
    columns = await _columns(api, "users")
    assert columns - ACCOUNT_STATE == ABOUT_YOU, "a users column the policy does not name"
    assert await _columns(api, "user_pictures") == {
        "user_id",
        "content_type",
        "data",
        "size",
        "sha256",
        "source_url",
        "fetched_at",
    }


async def test_after_registration_and_google_sign_in_the_row_holds_what_it_says(
    api: Api,
    google: FakeGoogle,  # noqa: F811
) -> None:
    person = await api.sign_up("ada@example.com", password=SECRET)
    browser = api.new_client()
    linked = await google_sign_in(
        browser,
        google,
        Identity(sub="110248495921238986420", email="ada@example.com", name="Ada at Google"),
    )
    assert linked.status_code == 303 and linked.headers["location"] == "/home", linked.text

    (user,) = await rows(api, select(User).where(User.id == person.id))
    assert user.email == "ada@example.com" and user.name == "Test Person"
    assert user.google_sub == "110248495921238986420"
    assert user.password_hash is not None and user.password_hash.startswith("$argon2id$")
    assert user.picture_url == google.picture_url("default")
    (picture,) = await rows(api, select(UserPicture).where(UserPicture.user_id == person.id))
    assert picture.data.startswith(b"\x89PNG") and picture.source_url == user.picture_url
    assert await rows_mentioning(api, [SECRET, SECRET.lower()]) == []

    me = (await browser.get("/api/v1/me")).json()
    assert me["google_linked"] is True
    assert "password" not in " ".join(me) and "google_sub" not in me
