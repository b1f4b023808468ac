"""The production password hashing profile, pinned.

Every other test hashes with a cheap argon2id profile (tests/conftest.py); this one runs with
the profile that production uses, so weakening it fails here.
"""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from lunogen.account.models import User
from tests.account.support import rows
from tests.conftest import CHEAP_HASHER
from tests.helpers import PASSWORD, Api

# argon2id, 64 MiB, 3 passes, 4 lanes: RFC 9106's second recommended (low-memory) option.
PRODUCTION_PREFIX = "$argon2id$v=19$m=65536,t=3,p=4$"


@pytest.mark.production_hashing
async def test_passwords_are_hashed_with_the_production_profile(api: Api) -> None:
    person = await api.sign_up()
    (user,) = await rows(api, select(User).where(User.id == person.id))
    assert user.password_hash.startswith(PRODUCTION_PREFIX), user.password_hash
    assert PasswordHasher().verify(user.password_hash, PASSWORD)


async def test_other_tests_hash_cheaply(api: Api) -> None:
    person = await api.sign_up()
    (user,) = await rows(api, select(User).where(User.id == person.id))
    assert user.password_hash.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert CHEAP_HASHER.verify(user.password_hash, PASSWORD)
    # Sign-in still works with the cheap hash (the helper above signed in with it).
    assert person.user["email"] == person.email
