"""Channels and their providers: register on deploy and start, unregister on stop and delete.

Registering is part of a deploy and its answer: `register_channels` calls every channel type
that registers (Telegram's `setWebhook`, WhatsApp's token check) with no transaction open, and
the deploy fails with the provider's reason if one refuses. Unregistering must not hold up a
stop, and a provider may be down: it is a `ChannelUnregistration` row (with what the call needs,
so it outlives a removed channel), done by a job that retries with backoff and ends `done` or
`failed` (the owner is told); the sweeper re-enqueues what is due. A deploy that registers a
channel again first cancels (`superseded`) its unregistrations still queued, and waits for one
already in flight, so a stop followed at once by a start never ends with the webhook removed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.agent.models import Agent, AgentChannel
from lunogen.channel.contract import (
    ChannelView,
    ProviderContext,
    Registration,
    RegistrationFailed,
    channel_type,
)
from lunogen.channel.delivery import backoff_seconds
from lunogen.channel.models import ChannelUnregistration
from lunogen.channel.service import read_secrets, tell_owner, view_of
from lunogen.kit.crypto import KeyRing
from lunogen.kit.effects import Effects
from lunogen.kit.http import FetchError, SafeHttp
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.runlog.logs import log_event
from lunogen.worker.broker import job, runtime
from lunogen.worker.enqueue import enqueue
from lunogen.worker.queues import Queue, register_queue
from lunogen.worker.sweeps import register_sweep

log = structlog.get_logger(__name__)

PROVIDER_TIMEOUT_SECONDS = 15.0
UNREGISTER_BUDGET_SECONDS = 40.0  # every call of one unregistration
CLAIM = timedelta(seconds=UNREGISTER_BUDGET_SECONDS + 20)
MAX_ATTEMPTS = 8
WAIT_FOR_IN_FLIGHT_SECONDS = UNREGISTER_BUDGET_SECONDS + 5


def needs_registration(row: AgentChannel) -> bool:
    kind = channel_type(row.type)
    return kind is not None and kind.registers


def provider_context(effects: Effects) -> ProviderContext:
    http = SafeHttp(
        allow_private=effects.settings.allow_private_urls, timeout=PROVIDER_TIMEOUT_SECONDS
    )
    return ProviderContext(settings=effects.settings, http=http)


@dataclass(frozen=True)
class Registered:
    channel_id: str
    registration: Registration


@dataclass(frozen=True)
class RegistrationProblem:
    channel_id: str
    type: str
    reason: str

    def __str__(self) -> str:
        return f"{self.type}: {self.reason}"


async def register_channels(
    session: AsyncSession,
    effects: Effects,
    views: Sequence[ChannelView],
) -> tuple[list[Registered], RegistrationProblem | None]:
    """Register each channel with its provider, in order, stopping at the first refusal.

    Called with no transaction open (`session` is used for short transactions of its own).
    Returns what was registered and the refusal, if any: the caller unregisters what was
    registered when the deploy fails.
    """
    await _supersede_unregistrations(session, [view.id for view in views])
    ctx = provider_context(effects)
    done: list[Registered] = []
    for view in views:
        kind = channel_type(view.type)
        assert kind is not None
        try:
            registration = await kind.register(ctx, view)
        except RegistrationFailed as exc:
            return done, RegistrationProblem(view.id, view.type, str(exc))
        except FetchError as exc:
            return done, RegistrationProblem(
                view.id, view.type, f"the provider is unreachable: {exc}"
            )
        except Exception as exc:  # a bug in a type: the deploy fails, it does not hang
            log.exception("channel_register_crashed", channel_id=view.id)
            return done, RegistrationProblem(view.id, view.type, f"unexpected error: {exc}")
        done.append(Registered(view.id, registration))
    return done, None


async def _supersede_unregistrations(session: AsyncSession, channel_ids: list[str]) -> None:
    """Cancel the channels' queued unregistrations; wait (a little) for any in flight."""
    if not channel_ids:
        return
    deadline = asyncio.get_running_loop().time() + WAIT_FOR_IN_FLIGHT_SECONDS
    while True:
        now = utcnow()
        await session.execute(
            update(ChannelUnregistration)
            .where(
                ChannelUnregistration.channel_id.in_(channel_ids),
                ChannelUnregistration.status == "queued",
            )
            .values(status="superseded", completed_at=now, next_attempt_at=None)
        )
        in_flight = (
            await session.execute(
                select(ChannelUnregistration.id).where(
                    ChannelUnregistration.channel_id.in_(channel_ids),
                    ChannelUnregistration.status == "sending",
                    ChannelUnregistration.next_attempt_at > now,
                )
            )
        ).first()
        await session.commit()
        if in_flight is None or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.2)


def store_registrations(
    rows: Sequence[AgentChannel], registered: Sequence[Registered], effects: Effects
) -> list[Registered]:
    """Keep each registration on its channel row (in the caller's transaction); returns those
    whose channel is gone (the caller unregisters them)."""
    by_id = {row.id: row for row in rows}
    orphans: list[Registered] = []
    now = utcnow()
    for item in registered:
        row = by_id.get(item.channel_id)
        if row is None:
            orphans.append(item)
            continue
        if item.registration.secrets:
            merged = {**read_secrets(row, effects.keyring), **item.registration.secrets}
            row.secrets = effects.keyring.encrypt(json.dumps(merged))
        row.registered_at = now
        row.registration = dict(item.registration.details)
    return orphans


def queue_unregistration(
    session: AsyncSession, *, agent: Agent, row: AgentChannel, why: str
) -> None:
    """Unregister `row` from its provider after commit (if the provider knows it)."""
    if row.registered_at is None or not needs_registration(row):
        return
    task = ChannelUnregistration(
        id=new_id(),
        channel_id=row.id,
        agent_id=agent.id,
        agent_name=agent.name,
        type=row.type,
        config=dict(row.config),
        secrets=row.secrets,
        registration=dict(row.registration or {}),
        status="queued",
        next_attempt_at=utcnow(),
    )
    session.add(task)
    row.registered_at = None
    log_event(
        session,
        agent_id=agent.id,
        event="channel.unregistering",
        message=f"Removing {row.type} channel {row.id} from its provider ({why})",
        details={"channel_id": row.id},
    )
    enqueue(session, unregister, task.id)


def queue_unregistration_of(
    session: AsyncSession,
    *,
    agent: Agent,
    view: ChannelView,
    registration: Registration,
    keyring: KeyRing,
    why: str,
) -> None:
    """Unregister a channel registered during a deploy that did not keep it."""
    secrets = {**view.secrets, **registration.secrets}
    task = ChannelUnregistration(
        id=new_id(),
        channel_id=view.id,
        agent_id=agent.id,
        agent_name=agent.name,
        type=view.type,
        config=dict(view.config),
        secrets=keyring.encrypt(json.dumps(secrets)),
        registration=dict(registration.details),
        status="queued",
        next_attempt_at=utcnow(),
    )
    session.add(task)
    log_event(
        session,
        agent_id=agent.id,
        event="channel.unregistering",
        message=f"Removing {view.type} channel {view.id} from its provider ({why})",
        details={"channel_id": view.id},
    )
    enqueue(session, unregister, task.id)


# The job ----------------------------------------------------------------------------------


async def _claim(session: AsyncSession, task_id: str) -> bool:
    now = utcnow()
    result = await session.execute(
        update(ChannelUnregistration)
        .where(
            ChannelUnregistration.id == task_id,
            ChannelUnregistration.status.in_(("queued", "sending")),
            ChannelUnregistration.next_attempt_at <= now,  # a `sending` one whose worker died
        )
        .values(
            status="sending",
            next_attempt_at=now + CLAIM,
            attempts=ChannelUnregistration.attempts + 1,
        )
    )
    await session.commit()
    return bool(getattr(result, "rowcount", 0))


async def attempt_unregistration(
    sessionmaker: async_sessionmaker[AsyncSession], effects: Effects, task_id: str
) -> float | None:
    """One attempt if due; the seconds until the next one, else None."""
    async with sessionmaker() as session:
        if not await _claim(session, task_id):
            return None
        task = await session.get(ChannelUnregistration, task_id)
        assert task is not None
        kind = channel_type(task.type)
        secrets = json.loads(effects.keyring.decrypt(task.secrets)) if task.secrets else {}
        view = ChannelView(
            id=task.channel_id,
            agent_id=task.agent_id,
            agent_name=task.agent_name,
            type=task.type,
            config=dict(task.config),
            secrets={str(k): str(v) for k, v in secrets.items()},
            registration=dict(task.registration),
        )
    error: str | None = None
    if kind is not None:
        try:
            async with asyncio.timeout(UNREGISTER_BUDGET_SECONDS):
                await kind.unregister(provider_context(effects), view)
        except (RegistrationFailed, FetchError) as exc:
            error = str(exc)
        except TimeoutError:
            error = f"the provider did not answer within {UNREGISTER_BUDGET_SECONDS:g} seconds"
        except Exception as exc:  # a bug in a type: retried, then failed, never stuck
            log.exception("channel_unregister_crashed", task_id=task_id)
            error = f"unexpected error: {exc}"
    async with sessionmaker() as session:
        task = await session.get(ChannelUnregistration, task_id)
        assert task is not None
        if error is not None and task.attempts < MAX_ATTEMPTS:
            delay = backoff_seconds(task.attempts)
            task.status = "queued"
            task.next_attempt_at = utcnow() + timedelta(seconds=delay)
            task.last_error = error[:2000]
            await session.commit()
            return delay
        task.status = "done" if error is None else "failed"
        task.completed_at = utcnow()
        task.next_attempt_at = None
        task.last_error = None if error is None else error[:2000]
        if error is None:
            log_event(
                session,
                agent_id=task.agent_id,
                event="channel.unregistered",
                message=f"{task.type.capitalize()} channel {task.channel_id} removed from its "
                "provider",
                details={"channel_id": task.channel_id},
            )
        else:
            log_event(
                session,
                agent_id=task.agent_id,
                event="channel.unregister_failed",
                level="error",
                message=f"{task.type.capitalize()} channel {task.channel_id} could not be "
                f"removed from its provider after {task.attempts} attempts: {error}",
                details={"channel_id": task.channel_id},
            )
            await tell_owner(
                session,
                effects,
                agent_id=task.agent_id,
                kind="channel.unregister_failed",
                title="A channel of {agent} is still registered with its provider",
                body=f"LunoGen could not remove the {task.type} channel of your agent "
                f"{{agent!r}} from the provider: {error}. Messages sent to it are not answered; "
                "remove the registration in the provider's settings.",
                dedupe_key=f"unregistration:{task.id}:failed",
            )
        await session.commit()
    return None


@job("channel.unregister")
async def unregister(task_id: str) -> None:
    rt = runtime()
    effects = Effects(settings=rt.settings, keyring=rt.keyring)
    for _ in range(MAX_ATTEMPTS):
        delay = await attempt_unregistration(rt.sessionmaker, effects, task_id)
        if delay is None or delay > 30:
            return
        await asyncio.sleep(delay)


register_queue(
    Queue(
        "channel_unregistrations",
        "Channel registrations to remove at the providers",
        ChannelUnregistration,
        ("queued", "sending"),
    )
)


@register_sweep("channel_unregistrations")
async def requeue_due(sessionmaker: async_sessionmaker[AsyncSession], *, limit: int = 100) -> int:
    async with sessionmaker() as session:
        due = list(
            (
                await session.execute(
                    select(ChannelUnregistration.id)
                    .where(
                        ChannelUnregistration.status.in_(("queued", "sending")),
                        ChannelUnregistration.next_attempt_at <= utcnow(),
                    )
                    .limit(limit)
                )
            ).scalars()
        )
    for task_id in due:
        await unregister.kiq(task_id)
    return len(due)


def views_to_register(agent: Agent, effects: Effects) -> list[ChannelView]:
    return [
        view_of(row, agent_name=agent.name, keyring=effects.keyring)
        for row in agent.channels
        if needs_registration(row)
    ]
