"""Helpers for the webhook channel tests: a signing client, row reads, waiting for callbacks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
from sqlalchemy import func, select

from lunogen.channel import webhook
from lunogen.channel.models import Delivery
from lunogen.worker import enqueue
from tests.agent.support import Dev, create_agent, new_dev
from tests.channel.receiver import Received, Receiver
from tests.helpers import Api


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Hook:
    """A webhook channel of a running agent, and a client that signs like its caller would."""

    def __init__(self, api: Api, dev: Dev, agent: dict[str, Any], channel: dict[str, Any]):
        self.api = api
        self.dev = dev
        self.agent = agent
        self.id: str = channel["id"]
        self.secret: str = channel["secret"]["value"]
        self.http = api.new_client()

    async def post(
        self,
        payload: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
        channel_id: str | None = None,
    ) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        stamp = int(time.time()) if timestamp is None else timestamp
        msg_id = f"msg_{stamp}_{len(body)}"
        signed = {
            "webhook-id": msg_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": sign(secret or self.secret, msg_id, stamp, body),
            "content-type": "application/json",
        }
        if headers is not None:
            signed = headers
        return await self.http.post(
            f"/hooks/webhook/{channel_id or self.id}", content=body, headers=signed
        )


async def new_hook(api: Api, *, deploy: bool = True, **channel: Any) -> Hook:
    dev = await new_dev(api)
    agent = await create_agent(dev, channels=[{"type": "webhook", **channel}])
    if deploy:
        deployed = await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")
        assert deployed.status_code == 200, deployed.text
    [created] = agent["channels"]
    assert created["secret"]["value"].startswith("whsec_")
    return Hook(api, dev, agent, created)


async def all_rows(api: Api, model: Any) -> list[Any]:
    await enqueue.drain()
    async with api.app.state.sessionmaker() as session:
        return list((await session.execute(select(model))).scalars())


async def count_rows(api: Api, model: Any) -> int:
    async with api.app.state.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def until(predicate: Any, what: str, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        await asyncio.sleep(0.02)


async def received(receiver: Receiver, n: int) -> list[Received]:
    async def enough() -> bool:
        return len(receiver.received()) >= n

    await until(enough, f"{n} callback(s)")
    return receiver.received()


async def delivery_in(api: Api, status: str) -> Delivery:
    async def settled() -> bool:
        rows = await all_rows(api, Delivery)
        return bool(rows) and rows[0].status == status

    await until(settled, f"a {status} delivery")
    [row] = await all_rows(api, Delivery)
    return row


def verified(hook: Hook, got: Received) -> dict[str, Any]:
    msg_id = webhook.verify(got.headers, got.body, [hook.secret])
    assert msg_id == got.headers["webhook-id"]
    stamp = int(got.headers["webhook-timestamp"])
    assert got.headers["webhook-signature"] == sign(hook.secret, msg_id, stamp, got.body)
    body: dict[str, Any] = json.loads(got.body)
    return body
