from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import BASE_URL

FromIp = Callable[[str], httpx.AsyncClient]


@pytest.fixture
async def from_ip(app: FastAPI) -> AsyncIterator[FromIp]:
    """Clients whose requests come from a chosen IP (the ASGI scope's client address)."""
    clients: list[httpx.AsyncClient] = []

    def new_client(ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(ip, 40000))
        clients.append(httpx.AsyncClient(transport=transport, base_url=BASE_URL))
        return clients[-1]

    yield new_client
    for client in clients:
        await client.aclose()
