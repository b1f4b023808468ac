"""Test helpers that act as an API client would: register, verify, sign in, create keys."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from lunogen.notification.models import OutboundEmail
from lunogen.worker import enqueue

PASSWORD = "correct horse battery"
_TOKEN = re.compile(r"token=([A-Za-z0-9_\-]+)")


@dataclass
class Signed:
    """A signed-in person: their browser client, CSRF token and profile."""

    client: httpx.AsyncClient
    email: str
    password: str
    user: dict[str, Any]
    csrf: str
    keys: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.user["id"])

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf}


@dataclass
class Api:
    app: FastAPI
    new_client: Callable[[], httpx.AsyncClient]
    _count: int = 0

    async def emails(self, to: str | None = None) -> list[tuple[OutboundEmail, str]]:
        """Emails in the outbox (oldest first) with their decrypted bodies."""
        await enqueue.drain()
        keyring = self.app.state.keyring
        async with self.app.state.sessionmaker() as session:
            query = select(OutboundEmail).order_by(OutboundEmail.created_at)
            if to:
                query = query.where(OutboundEmail.to_address == to)
            rows = list((await session.execute(query)).scalars())
        return [(row, keyring.decrypt(row.body_encrypted)) for row in rows]

    async def last_token(self, to: str, subject_word: str) -> str:
        for row, body in reversed(await self.emails(to)):
            if subject_word.lower() in row.subject.lower():
                match = _TOKEN.search(body)
                assert match, body
                return match.group(1)
        raise AssertionError(f"no {subject_word!r} email to {to}")

    def unique_email(self, stem: str = "user") -> str:
        self._count += 1
        return f"{stem}{self._count}@example.com"

    async def register(self, client: httpx.AsyncClient, email: str, **extra: Any) -> httpx.Response:
        body = {
            "name": extra.pop("name", "Test Person"),
            "email": email,
            "password": extra.pop("password", PASSWORD),
            "age_confirmed": True,
            "accept_terms": True,
            "accept_privacy": True,
            **extra,
        }
        return await client.post("/api/v1/auth/register", json=body)

    async def sign_up(self, email: str | None = None, *, password: str = PASSWORD) -> Signed:
        """Register, verify by the emailed link, and sign in."""
        client = self.new_client()
        email = email or self.unique_email()
        response = await self.register(client, email, password=password)
        assert response.status_code == 201, response.text
        token = await self.last_token(email, "verify")
        verified = await client.post("/api/v1/auth/verify", json={"token": token})
        assert verified.status_code == 200, verified.text
        return await self.sign_in(client, email, password)

    async def sign_in(
        self, client: httpx.AsyncClient, email: str, password: str = PASSWORD
    ) -> Signed:
        response = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": password}
        )
        assert response.status_code == 200, response.text
        return Signed(
            client=client,
            email=email,
            password=password,
            user=response.json(),
            csrf=client.cookies["lg_csrf"],
        )

    async def create_key(self, person: Signed, scopes: list[str] | None = None) -> str:
        response = await person.client.post(
            "/api/v1/keys",
            json={"name": "test", "scopes": scopes or ["full"]},
            headers=person.headers,
        )
        assert response.status_code == 201, response.text
        key = str(response.json()["key"])
        person.keys.append(key)
        return key

    def key_client(self, key: str) -> httpx.AsyncClient:
        client = self.new_client()
        client.headers["Authorization"] = f"Bearer {key}"
        return client

    async def make_admin(self, person: Signed) -> None:
        from lunogen.account.models import User

        async with self.app.state.sessionmaker() as session:
            user = await session.get(User, person.id)
            assert user is not None
            user.role = "admin"
            await session.commit()

    async def set_plan(self, person: Signed, plan: str) -> None:
        from lunogen.account.models import User

        async with self.app.state.sessionmaker() as session:
            user = await session.get(User, person.id)
            assert user is not None
            user.plan = plan
            await session.commit()


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, parsed data) of each server-sent event in `body`; comments are skipped."""
    events: list[tuple[str, dict[str, Any]]] = []
    for block in body.split("\n\n"):
        lines = [line for line in block.splitlines() if line and not line.startswith(":")]
        if lines:
            name = next(line[7:] for line in lines if line.startswith("event: "))
            data = json.loads(next(line[6:] for line in lines if line.startswith("data: ")))
            events.append((name, data))
    return events
