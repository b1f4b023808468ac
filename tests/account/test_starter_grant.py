"""Starter credits: once per person (per mailbox, aliases folded), and only once verified."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import func, select

from lunogen.account.addresses import mailbox_identity
from lunogen.account.models import User
from lunogen.billing.grants import StarterGrantClaim
from lunogen.billing.models import CreditEntry
from lunogen.migrations import upgrade
from tests.account.support import rows
from tests.helpers import Api


@pytest.mark.parametrize(
    ("address", "identity"),
    [
        ("ada@example.com", "ada@example.com"),
        (" Ada@Example.COM ", "ada@example.com"),
        ("farmer+1@example.com", "farmer@example.com"),
        ("Farmer+a+b@Example.com", "farmer@example.com"),
        ("a.b@example.com", "a.b@example.com"),  # dots matter outside Gmail
        ("F.Armer@gmail.com", "farmer@gmail.com"),
        ("f.armer+x@googlemail.com", "farmer@gmail.com"),
        ("farmer@gmail.co.uk", "farmer@gmail.co.uk"),
    ],
)
def test_mailbox_identity(address: str, identity: str) -> None:
    assert mailbox_identity(address) == identity


async def _granted(api: Api, email: str) -> int:
    """How many starter grants the account of `email` received."""
    query = (
        select(func.count())
        .select_from(CreditEntry)
        .join(User, User.id == CreditEntry.account_id)
        .where(User.email == email, CreditEntry.kind == "grant")
    )
    async with api.app.state.sessionmaker() as session:
        return int((await session.execute(query)).scalar_one())


async def _balance(api: Api, email: str) -> str:
    person = await api.sign_in(api.new_client(), email)
    response = await person.client.get("/api/v1/billing")
    assert response.status_code == 200, response.text
    return str(response.json()["balance"])


async def test_plus_aliases_share_one_grant(api: Api) -> None:
    emails = ["farmer+1@example.com", "farmer+2@example.com", "farmer@example.com"]
    for email in emails:
        await api.sign_up(email)
    assert [await _granted(api, e) for e in emails] == [1, 0, 0]
    assert await _balance(api, "farmer+1@example.com") == "100"
    assert await _balance(api, "farmer+2@example.com") == "0"


async def test_gmail_dots_and_googlemail_share_one_grant_other_domains_do_not(
    api: Api,
) -> None:
    for email in ("f.armer@gmail.com", "farmer@googlemail.com", "fa.rmer+x@gmail.com"):
        await api.sign_up(email)
    for email in ("f.armer@example.com", "farmer@example.com"):
        await api.sign_up(email)
    granted = {
        email: await _granted(api, email)
        for email in (
            "f.armer@gmail.com",
            "farmer@googlemail.com",
            "fa.rmer+x@gmail.com",
            "f.armer@example.com",
            "farmer@example.com",
        )
    }
    assert granted == {
        "f.armer@gmail.com": 1,
        "farmer@googlemail.com": 0,
        "fa.rmer+x@gmail.com": 0,
        "f.armer@example.com": 1,
        "farmer@example.com": 1,
    }


async def test_claims_store_only_a_hash_of_the_mailbox(api: Api) -> None:
    person = await api.sign_up("farmer+7@example.com")
    claims = await rows(api, select(StarterGrantClaim))
    expected = hashlib.sha256(b"email:farmer@example.com").hexdigest()
    assert [(c.identity_hash, c.user_id) for c in claims] == [(expected, person.id)]


async def test_no_grant_before_the_address_is_verified(api: Api) -> None:
    client = api.new_client()
    assert (await api.register(client, "patient@example.com")).status_code == 201
    assert await _granted(api, "patient@example.com") == 0
    assert await rows(api, select(StarterGrantClaim)) == []
    token = await api.last_token("patient@example.com", "verify")
    assert (await client.post("/api/v1/auth/verify", json={"token": token})).is_success
    assert await _granted(api, "patient@example.com") == 1


def _old_hash(email: str) -> str:
    """How claims were keyed before revision 0008: the casefolded address."""
    return hashlib.sha256(f"email:{email.strip().casefold()}".encode()).hexdigest()


def test_migration_0008_claims_the_mailbox_of_every_earlier_claim(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url, "0007")
    users = [
        ("u1", "farmer+1@example.com", "2026-11-01 10:00:00"),
        ("u2", "farmer+2@example.com", "2026-11-02 10:00:00"),
        ("u3", "f.armer@googlemail.com", "2026-11-03 10:00:00"),
        ("u4", "plain@example.com", "2026-11-04 10:00:00"),
        ("u5", "never-verified+x@example.com", None),  # no claim: nothing to add
    ]
    with sqlite3.connect(path) as db:
        for user_id, email, claimed_at in users:
            db.execute(
                "INSERT INTO users (id, email, name, role, plan, created_at) "
                "VALUES (?, ?, 'x', 'user', 'free', '2026-11-01 00:00:00')",
                (user_id, email),
            )
            if claimed_at:
                db.execute(
                    "INSERT INTO starter_grant_claims VALUES (?, ?, ?)",
                    (_old_hash(email), user_id, claimed_at),
                )
    upgrade(url)
    with sqlite3.connect(path) as db:
        claims = {h: (u, at) for h, u, at in db.execute("SELECT * FROM starter_grant_claims")}

    def mailbox(email: str) -> str:
        return hashlib.sha256(f"email:{email}".encode()).hexdigest()

    # The earliest claimant of a mailbox holds it; old rows stay; plain addresses are unchanged.
    assert claims[mailbox("farmer@example.com")][0] == "u1"
    assert claims[mailbox("farmer@gmail.com")][0] == "u3"
    assert claims[mailbox("plain@example.com")][0] == "u4"
    assert mailbox("never-verified@example.com") not in claims
    for _user_id, email, _claimed_at in users[:4]:
        assert _old_hash(email) in claims
    assert len(claims) == 4 + 2
