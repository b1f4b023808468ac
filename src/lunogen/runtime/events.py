"""Live events of a streamed turn (`delta`, `tool`, `done`, `error`), keyed by inbound message.

The follower subscribes before its message is enqueued, so it cannot miss the first event. In
memory within one process; through Redis pub/sub when servers and workers are separate
processes. Events are a courtesy on top of the database: a follower that misses some (Redis
hiccup) still finds the reply by polling, as a non-streaming request does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.config import Settings
from lunogen.worker.resources import Resource, provide

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TurnEvent:
    event: str  # delta | tool | done | error
    data: dict[str, Any]


class Subscription:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[TurnEvent] = asyncio.Queue()

    async def next(self, wait_seconds: float) -> TurnEvent | None:
        try:
            return await asyncio.wait_for(self.queue.get(), timeout=wait_seconds)
        except TimeoutError:
            return None


class TurnEvents:
    """In-process fan-out; `RedisTurnEvents` spans processes."""

    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = defaultdict(set)

    def _deliver(self, message_id: str, event: TurnEvent) -> None:
        for subscription in self._subscriptions.get(message_id, ()):
            subscription.queue.put_nowait(event)

    async def publish(self, message_id: str, event: str, data: dict[str, Any]) -> None:
        self._deliver(message_id, TurnEvent(event, data))

    @contextlib.asynccontextmanager
    async def follow(self, message_id: str) -> AsyncIterator[Subscription]:
        subscription = Subscription()
        self._subscriptions[message_id].add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions[message_id].discard(subscription)
            if not self._subscriptions[message_id]:
                self._subscriptions.pop(message_id, None)

    async def aclose(self) -> None:
        return None


class RedisTurnEvents(TurnEvents):
    PREFIX = "lunogen:turn:"

    def __init__(self, redis_url: str) -> None:
        super().__init__()
        from redis.asyncio import Redis

        self._redis = Redis.from_url(redis_url)

    async def publish(self, message_id: str, event: str, data: dict[str, Any]) -> None:
        payload = json.dumps({"event": event, "data": data}, separators=(",", ":"))
        try:
            await self._redis.publish(self.PREFIX + message_id, payload)
        except Exception as exc:  # the follower falls back to polling the database
            log.warning("turn_event_publish_failed", error=str(exc))

    @contextlib.asynccontextmanager
    async def follow(self, message_id: str) -> AsyncIterator[Subscription]:
        subscription = Subscription()
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.PREFIX + message_id)

        async def pump() -> None:
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message and message.get("type") == "message":
                    body = json.loads(message["data"])
                    subscription.queue.put_nowait(TurnEvent(body["event"], body["data"]))

        reader = asyncio.create_task(pump())
        try:
            yield subscription
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            with contextlib.suppress(Exception):
                await pubsub.unsubscribe()
                await pubsub.aclose()

    async def aclose(self) -> None:
        await self._redis.aclose()


def create_turn_events(redis_url: str | None) -> TurnEvents:
    return RedisTurnEvents(redis_url) if redis_url else TurnEvents()


TURN_EVENTS: Resource[TurnEvents] = Resource("turn_events")


async def _open_turn_events(
    settings: Settings, _sessionmaker: async_sessionmaker[AsyncSession]
) -> TurnEvents:
    return create_turn_events(settings.redis_url)


async def _close_turn_events(events: TurnEvents) -> None:
    await events.aclose()


provide(TURN_EVENTS, open=_open_turn_events, close=_close_turn_events)
