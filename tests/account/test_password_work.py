"""argon2 runs off the event loop and with no write transaction open.

A gated hasher stands in for argon2 while a request hashes or checks a password: each call
blocks the thread it runs in until the test opens the gate. Meanwhile the event loop must keep
answering, and another account's write must go through (on SQLite a write transaction held
across the call would be the database's only write lock). Every wait is bounded, so a failure is
an assertion, not a hang: on code that hashes on the event loop, the gated call gives up after
`GATE_SECONDS` and reports it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from lunogen.account.models import User
from lunogen.audit.models import AuditEvent
from lunogen.auth import passwords
from tests.account.support import execute, rows
from tests.conftest import CHEAP_HASHER
from tests.helpers import PASSWORD, Api

GATE_SECONDS = 5.0
WITHIN_SECONDS = 5.0
NEW_PASSWORD = "a brand new secret phrase"

T = TypeVar("T")


class GatedHasher:
    """The cheap test hasher, except that every hash and verify waits for `gate`."""

    def __init__(self, inner: PasswordHasher) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gave_up = False
        self.threads: set[int] = set()

    def _wait(self) -> None:
        self.threads.add(threading.get_ident())
        self.entered.set()
        if not self.gate.wait(GATE_SECONDS):
            self.gave_up = True

    def hash(self, password: str) -> str:
        self._wait()
        return self.inner.hash(password)

    def verify(self, hash: str, password: str) -> bool:
        self._wait()
        return self.inner.verify(hash, password)

    def check_needs_rehash(self, hash: str) -> bool:
        return self.inner.check_needs_rehash(hash)


async def within(awaitable: Awaitable[T], what: str) -> T:
    try:
        return await asyncio.wait_for(awaitable, WITHIN_SECONDS)
    except TimeoutError:
        raise AssertionError(f"{what} did not finish within {WITHIN_SECONDS} s") from None


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Callable[[], GatedHasher]:
    """Call it to put the gate in front of argon2 (after the test's own sign-ups)."""

    def arm() -> GatedHasher:
        hasher = GatedHasher(CHEAP_HASHER)
        monkeypatch.setattr(passwords, "_hasher", hasher)
        return hasher

    return arm


Flow = Callable[[Api], Awaitable[Callable[[], Awaitable[httpx.Response]]]]


async def _sign_in(api: Api) -> Callable[[], Awaitable[httpx.Response]]:
    person = await api.sign_up()
    body = {"email": person.email, "password": PASSWORD}
    return lambda: api.new_client().post("/api/v1/auth/login", json=body)


async def _register(api: Api) -> Callable[[], Awaitable[httpx.Response]]:
    return lambda: api.register(api.new_client(), "newcomer@example.com")


async def _change_password(api: Api) -> Callable[[], Awaitable[httpx.Response]]:
    person = await api.sign_up()
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    return lambda: person.client.post(
        "/api/v1/auth/password/change", json=body, headers=person.headers
    )


async def _reset_password(api: Api) -> Callable[[], Awaitable[httpx.Response]]:
    person = await api.sign_up()
    client = api.new_client()
    forgot = await client.post("/api/v1/auth/password/forgot", json={"email": person.email})
    assert forgot.status_code == 202, forgot.text
    body = {"token": await api.last_token(person.email, "reset"), "password": NEW_PASSWORD}
    return lambda: client.post("/api/v1/auth/password/reset", json=body)


FLOWS: dict[str, tuple[Flow, int]] = {
    "sign_in": (_sign_in, 200),
    "register": (_register, 201),
    "change_password": (_change_password, 200),
    "reset_password": (_reset_password, 200),
}


async def _start_gated(
    api: Api, gated: Callable[[], GatedHasher], send: Callable[[], Awaitable[httpx.Response]]
) -> tuple[GatedHasher, asyncio.Task[httpx.Response]]:
    """Send the request and wait until its password work is blocked at the gate."""
    hasher = gated()
    request = asyncio.ensure_future(send())
    # Bounded past GATE_SECONDS: argon2 on the loop stalls this wait too, then shows as gave_up.
    started = asyncio.to_thread(hasher.entered.wait, GATE_SECONDS + WITHIN_SECONDS)
    assert await asyncio.wait_for(started, GATE_SECONDS + WITHIN_SECONDS + 1), "no argon2 call"
    return hasher, request


@pytest.mark.parametrize("flow", FLOWS)
async def test_password_work_blocks_neither_the_loop_nor_other_writers(
    api: Api, gated: Callable[[], GatedHasher], flow: str
) -> None:
    prepare, expected_status = FLOWS[flow]
    other = await api.sign_up()  # another tenant, signed in before the gate goes up
    send = await prepare(api)
    hasher, request = await _start_gated(api, gated, send)
    try:
        health = await within(api.new_client().get("/healthz"), "GET /healthz")
        assert health.status_code == 200
        key = await within(api.create_key(other), "another account's key creation")
        assert key.startswith("lg_live_")
        assert not hasher.gave_up, "argon2 blocked the event loop"
        assert not request.done(), "the request finished with its password work still blocked"
    finally:
        hasher.gate.set()
    response = await within(request, f"the {flow} request")
    assert response.status_code == expected_status, response.text
    assert not hasher.gave_up
    assert threading.get_ident() not in hasher.threads, "argon2 ran in the event loop's thread"


async def test_a_password_changed_during_sign_in_is_refused(
    api: Api, gated: Callable[[], GatedHasher]
) -> None:
    """The check ran against the hash read before it; a reset that lands meanwhile wins."""
    send = await _sign_in(api)
    (user,) = await rows(api, select(User))
    hasher, request = await _start_gated(api, gated, send)
    try:
        replaced = CHEAP_HASHER.hash(NEW_PASSWORD)
        statement = update(User).where(User.id == user.id).values(password_hash=replaced)
        await within(execute(api, statement), "the password change")
    finally:
        hasher.gate.set()
    response = await within(request, "the sign-in")
    assert response.status_code == 401, response.text
    assert "lg_session" not in response.cookies
    failed = select(AuditEvent).where(AuditEvent.action == "auth.sign_in_failed")
    (event,) = await rows(api, failed)
    assert event.subject_user_id == user.id


async def test_a_password_changed_during_a_change_is_a_conflict(
    api: Api, gated: Callable[[], GatedHasher]
) -> None:
    send = await _change_password(api)
    (user,) = await rows(api, select(User))
    hasher, request = await _start_gated(api, gated, send)
    try:
        replaced = CHEAP_HASHER.hash("someone else's phrase")
        statement = update(User).where(User.id == user.id).values(password_hash=replaced)
        await within(execute(api, statement), "the concurrent change")
    finally:
        hasher.gate.set()
    response = await within(request, "the password change")
    assert response.status_code == 409, response.text
    (after,) = await rows(api, select(User))
    assert after.password_hash == replaced


async def test_sign_in_rehashes_a_hash_of_an_older_profile(api: Api) -> None:
    person = await api.sign_up()
    older = PasswordHasher(time_cost=1, memory_cost=16, parallelism=1).hash(PASSWORD)
    await execute(api, update(User).where(User.id == person.id).values(password_hash=older))
    await api.sign_in(api.new_client(), person.email)
    (user,) = await rows(api, select(User).where(User.id == person.id))
    assert user.password_hash != older
    assert not CHEAP_HASHER.check_needs_rehash(user.password_hash)
    assert CHEAP_HASHER.verify(user.password_hash, PASSWORD)
