"""Per-thread context state: the decrypted history a thread's next turn starts from.

A turn needs the exchanges before its message, decrypted, with their token estimates. Read
again every turn, that is O(history) rows, decryptions and estimates per message, so a 500-turn
conversation would cost more per message than a 5-turn one. This process keeps, per thread,
what it has already read (up to the `seq` of the last user message it covers) and reads only
what is newer. The history before a turn's message is final (every user message before it has
ended, and replies are written once), so what is kept never goes stale; a deleted thread is
never asked for again. Each process keeps its own: whichever answers a thread reads from the
database what it has not seen.

Bounded three ways: per thread, only the newest items a context could still hold are kept;
across threads, the least recently used go first beyond `max_threads` or `max_chars`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from lunogen.runtime.context import HistoryItem

MAX_THREADS = 2048
MAX_CHARS = 32 * 1024 * 1024


@dataclass
class Window:
    """The exchanges of a thread up to the user message `last_seq`, oldest first."""

    last_seq: int = -1
    items: list[HistoryItem] = field(default_factory=list)
    tokens: int = 0  # the estimate of `items`
    chars: int = 0


class Windows:
    """This process's windows, by thread id."""

    def __init__(self, *, max_threads: int = MAX_THREADS, max_chars: int = MAX_CHARS) -> None:
        self._max_threads = max_threads
        self._max_chars = max_chars
        self._windows: OrderedDict[str, Window] = OrderedDict()
        self._chars = 0

    def known(self, thread_id: str, *, before_seq: int) -> Window:
        """What is kept of the thread's history before `before_seq` (an empty window if a
        turn asks for an earlier point than the one kept)."""
        window = self._windows.get(thread_id)
        if window is None or window.last_seq >= before_seq:
            return Window()
        self._windows.move_to_end(thread_id)
        return window

    def extend(
        self,
        thread_id: str,
        window: Window,
        items: Sequence[HistoryItem],
        *,
        last_seq: int,
        keep_tokens: int,
    ) -> list[HistoryItem]:
        """Add the newer `items` (up to the user message `last_seq`) to the thread's window and
        keep it; returns the window's items. Items older than `keep_tokens` allows are dropped:
        no context of this agent could hold them."""
        kept = list(window.items)
        kept.extend(items)
        tokens = window.tokens + sum(item.tokens for item in items)
        chars = window.chars + sum(len(item.content) for item in items)
        drop = 0
        while tokens > keep_tokens and drop < len(kept) - 1:
            tokens -= kept[drop].tokens
            chars -= len(kept[drop].content)
            drop += 1
        del kept[:drop]
        updated = Window(last_seq=last_seq, items=kept, tokens=tokens, chars=chars)
        self._store(thread_id, updated)
        return kept

    def forget(self, thread_id: str) -> None:
        dropped = self._windows.pop(thread_id, None)
        if dropped is not None:
            self._chars -= dropped.chars

    def __len__(self) -> int:
        return len(self._windows)

    @property
    def chars(self) -> int:
        return self._chars

    def _store(self, thread_id: str, window: Window) -> None:
        self.forget(thread_id)
        if window.chars > self._max_chars:
            return
        self._windows[thread_id] = window
        self._chars += window.chars
        while len(self._windows) > self._max_threads or self._chars > self._max_chars:
            _, oldest = self._windows.popitem(last=False)
            self._chars -= oldest.chars


windows = Windows()
