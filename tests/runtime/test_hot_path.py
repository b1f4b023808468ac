"""What a message costs the database: few write transactions, and history read once."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from lunogen.runtime import service
from lunogen.runtime.context import HistoryItem
from lunogen.runtime.window import Window, Windows, windows
from tests.agent.support import create_agent, new_dev
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api


@contextmanager
def _writes_counted(api: Api) -> Iterator[list[str]]:
    """The write transactions begun on the app's engine (BEGIN IMMEDIATE on SQLite, any
    transaction that writes on PostgreSQL) while the block runs."""
    engine = api.app.state.engine.sync_engine
    began: list[str] = []
    writing: set[int] = set()

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("BEGIN IMMEDIATE"):
            began.append(statement)
        elif (
            statement.split(None, 1)[0] in ("INSERT", "UPDATE", "DELETE")
            and id(conn) not in writing
        ):
            writing.add(id(conn))
            if engine.dialect.name != "sqlite":
                began.append(statement)

    def ended(conn: Any) -> None:
        writing.discard(id(conn))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "commit", ended)
    event.listen(engine, "rollback", ended)
    try:
        yield began
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "commit", ended)
        event.remove(engine, "rollback", ended)


async def test_a_message_of_one_call_commits_three_write_transactions(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """Accept (request), start (lease and hold) and finish (reply, charge, lease back)."""
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    openrouter.reply("warm-up")
    await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": "warm-up"})
    openrouter.reply("Hello")
    with _writes_counted(api) as writes:
        answer = await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": "Hi"})
    assert answer.status_code == 200 and answer.json()["reply"]["text"] == "Hello"
    if api.app.state.engine.dialect.name == "sqlite":
        assert len(writes) == 3, writes


async def test_each_turn_reads_only_the_history_it_has_not_seen(
    api: Api, openrouter: FakeOpenRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    read: list[int] = []
    history = service.history

    async def counted(*args: Any, **kwargs: Any) -> Any:
        rows = await history(*args, **kwargs)
        read.append(len(rows))
        return rows

    monkeypatch.setattr(service, "history", counted)
    for n in range(6):
        openrouter.reply(f"answer {n}")
        sent = await dev.http.post(
            f"/api/v1/agents/{agent['id']}/messages", json={"text": f"question {n}"}
        )
        assert sent.status_code == 200, sent.text
    assert read == [0, 1, 1, 1, 1, 1]  # the newest exchange only, never the whole thread
    # The model still sees the whole conversation, in order.
    said = [m["content"] for m in openrouter.last_chat.messages[1:]]
    expected = [t for n in range(5) for t in (f"question {n}", f"answer {n}")]
    assert said == [*expected, "question 5"]


async def test_a_process_without_the_window_reads_the_whole_history(
    api: Api, openrouter: FakeOpenRouter
) -> None:
    """Another process (or this one after the window was dropped) answers the same thread
    from the database: the context is the same."""
    dev = await new_dev(api)
    agent = await create_agent(dev)
    assert (await dev.http.post(f"/api/v1/agents/{agent['id']}/deploy")).status_code == 200
    for n in range(3):
        openrouter.reply(f"answer {n}")
        await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": f"q{n}"})
    with_window = openrouter.last_chat.messages[1:]
    thread_id = (await dev.http.get(f"/api/v1/agents/{agent['id']}/threads")).json()["data"][0][
        "id"
    ]
    windows.forget(thread_id)
    openrouter.reply("answer 3")
    await dev.http.post(f"/api/v1/agents/{agent['id']}/messages", json={"text": "q3"})
    without = openrouter.last_chat.messages[1:]
    assert without[:-1] == [*with_window, {"role": "assistant", "content": "answer 2"}]


def _items(*texts: str) -> list[HistoryItem]:
    return [HistoryItem("user", text) for text in texts]


def test_a_window_keeps_only_what_a_context_could_hold() -> None:
    kept = Windows()
    items = kept.extend(
        "t", Window(), _items("a" * 300, "b" * 300, "c" * 30), last_seq=5, keep_tokens=120
    )
    assert [item.content[0] for item in items] == ["b", "c"]  # 104 + 14 tokens fit, 208 not
    assert kept.known("t", before_seq=6).last_seq == 5
    assert kept.known("t", before_seq=5).items == []  # an earlier point: start over


def test_windows_are_bounded_by_threads_and_by_characters() -> None:
    kept = Windows(max_threads=2, max_chars=1000)
    for thread in ("a", "b", "c"):
        kept.extend(thread, Window(), _items("x" * 10), last_seq=1, keep_tokens=10_000)
    assert len(kept) == 2 and kept.known("a", before_seq=2).items == []
    kept.extend("big", Window(), _items("y" * 900), last_seq=1, keep_tokens=10_000)
    assert kept.chars <= 1000
    kept.extend("huge", Window(), _items("z" * 2000), last_seq=1, keep_tokens=10_000)
    assert kept.known("huge", before_seq=2).items == []  # too big to keep at all
    assert kept.chars <= 1000
