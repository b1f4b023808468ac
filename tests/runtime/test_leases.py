"""Claiming and releasing a thread's lease together with the look for its next pending message,
the history of a thread in one query, and waiting without a first database read."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from lunogen.agent.models import Agent
from lunogen.kit.ids import new_id
from lunogen.kit.time import utcnow
from lunogen.runtime import service, waiting
from lunogen.runtime.events import TurnEvents
from lunogen.runtime.models import Message, Thread
from tests.agent.support import create_agent, new_dev
from tests.helpers import Api

LEASE = timedelta(minutes=2)


async def _thread_with_pending(api: Api, *texts: str) -> tuple[str, list[str]]:
    """A running agent's thread with `texts` accepted as pending messages, in order."""
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    ids: list[str] = []
    thread_id = ""
    async with api.app.state.sessionmaker() as session:
        row = await session.get(Agent, agent["id"])
        assert row is not None
        for text in texts:
            accepted = await service.accept_inbound(
                session,
                agent=row,
                channel_key="api",
                contact="someone",
                text=text,
                keyring=api.app.state.keyring,
            )
            ids.append(accepted.message.id)
            thread_id = accepted.thread.id
        await session.commit()
    return thread_id, ids


def _sessions(api: Api) -> async_sessionmaker[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = api.app.state.sessionmaker
    return sessionmaker


async def _lease_owner(api: Api, thread_id: str) -> str | None:
    async with _sessions(api)() as session:
        thread = await session.get(Thread, thread_id)
        assert thread is not None
        return thread.lease_owner


async def _mark(api: Api, message_id: str, **values: object) -> None:
    async with _sessions(api)() as session:
        await session.execute(update(Message).where(Message.id == message_id).values(**values))
        await session.commit()


async def test_accepted_messages_are_numbered_in_arrival_order(api: Api) -> None:
    thread_id, ids = await _thread_with_pending(api, "one", "two", "three")
    async with _sessions(api)() as session:
        seqs = [(await session.get(Message, i)).seq for i in ids]  # type: ignore[union-attr]
        thread = await session.get(Thread, thread_id)
    assert seqs == [1, 2, 3]
    assert thread is not None and thread.next_seq == 4


async def test_a_claim_finds_the_oldest_pending_message_and_excludes_others(api: Api) -> None:
    thread_id, ids = await _thread_with_pending(api, "first", "second")
    async with _sessions(api)() as session:
        claim = await service.claim_next(session, thread_id=thread_id, worker_id="w1", lease=LEASE)
    assert claim.held and claim.pending is not None and claim.pending.id == ids[0]
    assert await _lease_owner(api, thread_id) == "w1"
    async with _sessions(api)() as session:
        other = await service.claim_next(session, thread_id=thread_id, worker_id="w2", lease=LEASE)
    assert other == service.Claim(held=False, pending=None)
    assert await _lease_owner(api, thread_id) == "w1"


async def test_a_claim_with_nothing_due_leaves_the_lease_free(api: Api) -> None:
    thread_id, ids = await _thread_with_pending(api, "later")
    await _mark(api, ids[0], next_attempt_at=utcnow() + timedelta(minutes=5))
    # Even over a dead worker's expired lease: taken and given back in one transaction.
    async with _sessions(api)() as session:
        await session.execute(
            update(Thread)
            .where(Thread.id == thread_id)
            .values(lease_owner="dead:1", lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    async with _sessions(api)() as session:
        claim = await service.claim_next(session, thread_id=thread_id, worker_id="w1", lease=LEASE)
    assert not claim.held
    assert claim.pending is not None and claim.pending.id == ids[0] and not claim.pending.due
    assert await _lease_owner(api, thread_id) is None


async def test_release_takes_the_lease_back_when_another_message_is_due(api: Api) -> None:
    thread_id, ids = await _thread_with_pending(api, "first", "second")
    async with _sessions(api)() as session:
        await service.claim_next(session, thread_id=thread_id, worker_id="w1", lease=LEASE)
    await _mark(api, ids[0], status="done")
    async with _sessions(api)() as session:
        claim = await service.release_and_next(
            session, thread_id=thread_id, worker_id="w1", lease=LEASE
        )
    assert claim.held and claim.pending is not None and claim.pending.id == ids[1]
    assert await _lease_owner(api, thread_id) == "w1"

    await _mark(api, ids[1], status="done")
    async with _sessions(api)() as session:
        claim = await service.release_and_next(
            session, thread_id=thread_id, worker_id="w1", lease=LEASE
        )
    assert claim == service.Claim(held=False, pending=None)
    assert await _lease_owner(api, thread_id) is None


async def test_release_without_reclaim_reports_the_due_message_and_frees_the_lease(
    api: Api,
) -> None:
    thread_id, ids = await _thread_with_pending(api, "first", "second")
    async with _sessions(api)() as session:
        await service.claim_next(session, thread_id=thread_id, worker_id="w1", lease=LEASE)
    await _mark(api, ids[0], status="done")
    async with _sessions(api)() as session:
        claim = await service.release_and_next(
            session, thread_id=thread_id, worker_id="w1", lease=LEASE, reclaim=False
        )
    assert not claim.held and claim.pending is not None and claim.pending.id == ids[1]
    assert await _lease_owner(api, thread_id) is None


async def test_release_never_takes_a_live_lease_from_another_worker(api: Api) -> None:
    thread_id, ids = await _thread_with_pending(api, "first")
    async with _sessions(api)() as session:
        await service.claim_next(session, thread_id=thread_id, worker_id="w1", lease=LEASE)
    # w1 stalled past its lease and w2 took the thread over.
    async with _sessions(api)() as session:
        await session.execute(
            update(Thread)
            .where(Thread.id == thread_id)
            .values(lease_owner="w2", lease_expires_at=utcnow() + LEASE)
        )
        await session.commit()
    async with _sessions(api)() as session:
        claim = await service.release_and_next(
            session, thread_id=thread_id, worker_id="w1", lease=LEASE
        )
    assert not claim.held and claim.pending is not None and claim.pending.id == ids[0]
    assert await _lease_owner(api, thread_id) == "w2"


async def test_history_pairs_each_answered_message_with_its_reply(api: Api) -> None:
    thread_id, ids = await _thread_with_pending(api, "q1", "q2", "q3", "q4")
    keyring = api.app.state.keyring
    async with _sessions(api)() as session:
        thread = await session.get(Thread, thread_id)
        assert thread is not None
        agent_id = (await session.get(Message, ids[0])).agent_id  # type: ignore[union-attr]
        # q1 answered; q2 answered by a reply numbered after q3 and q4 arrived; q3 failed.
        for question, answer in ((ids[0], "a1"), (ids[1], "a2")):
            session.add(
                Message(
                    id=new_id(),
                    thread_id=thread_id,
                    agent_id=agent_id,
                    seq=await service.next_seq(session, thread),
                    role="assistant",
                    content=keyring.encrypt(answer),
                    status="done",
                    reply_to_id=question,
                )
            )
        await session.execute(update(Message).where(Message.id.in_(ids[:2])).values(status="done"))
        await session.execute(update(Message).where(Message.id == ids[2]).values(status="failed"))
        await session.commit()
    async with _sessions(api)() as session:
        pairs = await service.history(session, thread_id=thread_id, before_seq=4)
        earlier = await service.history(session, thread_id=thread_id, before_seq=2)
        later = await service.history(session, thread_id=thread_id, before_seq=4, after_seq=1)
    texts = [
        (keyring.decrypt(q.content), None if a is None else keyring.decrypt(a.content))
        for _, q, a in pairs
    ]
    assert texts == [("q1", "a1"), ("q2", "a2")]
    assert [keyring.decrypt(q.content) for _, q, _ in earlier] == ["q1"]
    assert [keyring.decrypt(q.content) for _, q, _ in later] == ["q2"]  # only what is newer


async def test_waiting_without_a_first_read_still_returns_the_message(api: Api) -> None:
    _thread_id, ids = await _thread_with_pending(api, "anyone?")
    events = TurnEvents()
    async with events.follow(ids[0]) as subscription:
        inbound, reply = await waiting.wait_for_reply(
            _sessions(api), subscription, ids[0], 0, check_first=False
        )
    assert (inbound.id, inbound.status, reply) == (ids[0], "pending", None)

    await _mark(api, ids[0], status="failed", last_error="no")
    async with events.follow(ids[0]) as subscription:
        inbound, reply = await waiting.wait_for_reply(
            _sessions(api), subscription, ids[0], 0, check_first=False
        )
    assert (inbound.status, reply) == ("failed", None)
