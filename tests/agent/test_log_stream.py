"""The live runtime log over real HTTP (SSE), through the log bus (memory or Redis)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from structlog.testing import capture_logs

from lunogen.runlog.logs import RedisLogBus
from tests.conftest import REDIS_URL as RUN_REDIS_URL

REDIS_URL = RUN_REDIS_URL or "redis://127.0.0.1:6379/8"


async def _events(response: httpx.Response, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            events.append(json.loads(line.removeprefix("data: ")))
            if len(events) == count:
                break
    return events


async def test_stream_follows_status_changes_live(live_server: str, api_for_live: Any) -> None:
    key_client, agent_id = api_for_live
    async with key_client.stream("GET", f"/api/v1/agents/{agent_id}/logs/stream") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        reader = asyncio.create_task(_events(stream, 4))  # 3 status changes, version 1 deployed
        await asyncio.sleep(0.2)
        assert (await key_client.post(f"/api/v1/agents/{agent_id}/deploy")).status_code == 200
        assert (await key_client.post(f"/api/v1/agents/{agent_id}/stop")).status_code == 200
        events = await asyncio.wait_for(reader, timeout=15)
    assert [e["details"]["version"] for e in events if e["event"] == "version.deployed"] == [1]
    statuses = [e for e in events if e["event"] == "status"]
    assert [(e["details"]["from"], e["details"]["to"]) for e in statuses] == [
        ("draft", "deploying"),
        ("deploying", "running"),
        ("running", "stopped"),
    ]


async def test_stream_resumes_after_last_event_id(live_server: str, api_for_live: Any) -> None:
    key_client, agent_id = api_for_live
    await key_client.post(f"/api/v1/agents/{agent_id}/deploy")
    listing = (await key_client.get(f"/api/v1/agents/{agent_id}/logs")).json()["data"]
    first_id = listing[0]["id"]
    async with key_client.stream(
        "GET",
        f"/api/v1/agents/{agent_id}/logs/stream",
        headers={"Last-Event-ID": str(first_id)},
    ) as stream:
        events = await asyncio.wait_for(_events(stream, 1), timeout=15)
    assert events[0]["id"] == listing[1]["id"]


async def test_redis_bus_stops_without_waiting_out_its_poll() -> None:
    """Shutdown must not wait for the listener's `get_message` poll to run out: with a 10 s
    poll, `stop` returns long before it (the bound below is only reached by a hang)."""
    bus = RedisLogBus(REDIS_URL, poll_seconds=10)
    await bus.start()
    follower = bus.follow("agent-stop-test", poll_seconds=60)
    woke = asyncio.ensure_future(anext(follower))
    try:
        while not woke.done():  # the listener is subscribed once a publish comes back to us
            await bus.publish("agent-stop-test")
            await asyncio.wait({woke}, timeout=0.1)
        # The listener is now inside a fresh 10 s poll.
        with capture_logs() as logs:
            await asyncio.wait_for(bus.stop(), timeout=5)
    finally:
        woke.cancel()
        await follower.aclose()
    assert [e for e in logs if e["event"] == "log_bus_listener_did_not_stop"] == []
