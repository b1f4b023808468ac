"""A re-run reuses the recorded calls even when the tools answer otherwise the second time.

Tools run again on a re-run, and many answer differently each time: `remember` names a new note
id, `current_time` reads the clock. What a tool answered is not part of a call's fingerprint
(`runtime.recorded`), so a step recorded after a tool step is reused, not called and charged
again. Found by `bench/crash.py` and tests/runtime/test_crash_kill.py: with the tool results in
the fingerprint, 3 of 20 messages were charged twice for a step after one kill.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from lunogen.billing.models import CreditEntry
from lunogen.billing.verify import verify_all
from lunogen.llm.models import UsageRecord
from lunogen.runtime import recorded
from lunogen.runtime.models import MemoryNote, Message, RecordedCall
from lunogen.runtime.tasks import sweep_once
from lunogen.runtime.turn import loop, run_turn
from lunogen.worker import enqueue
from lunogen.worker.broker import wait_idle
from tests.fakes.openrouter import FakeOpenRouter, openrouter_settings
from tests.helpers import Api
from tests.runtime.support import DEAD_WORKER, pending_under_a_lease, set_lease, turn_deps


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:
    """The test sweeps by hand: no background sweeper racing it."""
    return openrouter_settings(openrouter, sweep_interval_seconds=0)


class _Killed(BaseException):
    """The worker dies (a BaseException, like the CancelledError of a killed task)."""


def _fingerprint() -> recorded.Fingerprint:
    return recorded.Fingerprint(
        chain=["openai/gpt-4o-mini"], max_output_tokens=512, instructions="Be kind.", tools=[]
    )


ASKED = {
    "role": "assistant",
    "content": None,
    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "remember"}}],
}


def test_a_tool_result_counts_by_its_call_id_only() -> None:
    first, second = _fingerprint(), _fingerprint()
    for fingerprint, note_id in ((first, "01A"), (second, "01B")):
        fingerprint.feed(ASKED)
        fingerprint.feed(
            {"role": "tool", "tool_call_id": "call_1", "content": f"Remembered as note {note_id}."}
        )
    assert first.of_step(tools_offered=True) == second.of_step(tools_offered=True)


def test_what_the_model_asked_still_makes_another_question() -> None:
    first, second = _fingerprint(), _fingerprint()
    first.feed(ASKED)
    second.feed({**ASKED, "tool_calls": [{**ASKED["tool_calls"][0], "id": "call_2"}]})
    assert first.of_step(tools_offered=True) != second.of_step(tools_offered=True)
    third = _fingerprint()
    third.feed(ASKED)
    third.feed({"role": "tool", "tool_call_id": "call_2", "content": "Remembered."})
    first.feed({"role": "tool", "tool_call_id": "call_1", "content": "Remembered."})
    assert first.of_step(tools_offered=True) != third.of_step(tools_offered=True)


async def _die_in_the_second_tool(message_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker that holds the lease runs the turn: the first tool runs, the worker dies in
    the second, after its second model call was recorded and charged."""
    real_run_tool = loop.run_tool
    runs = 0

    async def second_run_kills(*args: Any) -> str:
        nonlocal runs
        runs += 1
        if runs == 2:
            raise _Killed
        return await real_run_tool(*args)

    monkeypatch.setattr(loop, "run_tool", second_run_kills)
    with pytest.raises(_Killed):
        await run_turn(turn_deps(), inbound_id=message_id, lease_token=DEAD_WORKER)
    monkeypatch.undo()


async def test_a_step_after_a_tool_that_answers_otherwise_on_the_rerun_is_reused(
    api: Api, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, thread_id, message_id = await pending_under_a_lease(
        api, text="Remember that I like tea", left=timedelta(minutes=5), tools=["remember"]
    )
    openrouter.call_tool("remember", {"note": "likes tea"})
    openrouter.call_tool("remember", {"note": "likes green tea best"})
    await _die_in_the_second_tool(message_id, monkeypatch)
    assert len(openrouter.chat_requests) == 2
    sessionmaker = api.app.state.sessionmaker
    async with sessionmaker() as session:
        records = await session.execute(select(func.count()).select_from(RecordedCall))
        assert records.scalar_one() == 2

    # The dead worker's lease runs out; the sweeper hands the thread to a live worker, whose
    # `remember` answers with another note id than the dead worker's did.
    openrouter.reply("Noted both.")
    async with sessionmaker() as session:
        await set_lease(session, thread_id, timedelta(seconds=-1))
    assert await sweep_once(sessionmaker) == 1
    await enqueue.drain()
    await wait_idle()

    assert len(openrouter.chat_requests) == 3  # steps 0 and 1 came from their records
    third = openrouter.chat_requests[2].messages
    assert [m["role"] for m in third][-4:] == ["assistant", "tool", "assistant", "tool"]
    async with sessionmaker() as session:
        inbound = await session.get(Message, message_id)
        assert inbound is not None and inbound.status == "done"
        charges = await session.execute(
            select(CreditEntry.idempotency_key).where(CreditEntry.kind == "usage")
        )
        steps = sorted(key.split(":")[2] for key in charges.scalars())
        usage = (await session.execute(select(func.count()).select_from(UsageRecord))).scalar_one()
        notes = (await session.execute(select(func.count()).select_from(MemoryNote))).scalar_one()
        left = (await session.execute(select(func.count()).select_from(RecordedCall))).scalar_one()
        assert await verify_all(session) == []
    assert steps == ["0", "1", "2"]  # one charge per step
    assert usage == 3
    assert notes == 2  # both tools ran again; their writes were applied once, with the reply
    assert left == 0
