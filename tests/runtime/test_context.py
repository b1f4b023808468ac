"""History trimming at the token budget, and the system prompt's parts."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from lunogen.runtime import context
from lunogen.runtime.context import (
    HistoryItem,
    estimate_tokens,
    history_budget,
    system_prompt,
    trim_history,
)


def _items(*sizes: int) -> list[HistoryItem]:
    return [HistoryItem(role="user", content=str(n) * size) for n, size in enumerate(sizes)]


def test_oldest_messages_go_first_when_over_budget() -> None:
    history = _items(300, 300, 300)  # 104 tokens each
    kept = trim_history(history, budget=210)
    assert kept == history[1:]


def test_everything_fits_under_a_large_budget() -> None:
    history = _items(30, 30, 30)
    assert trim_history(history, budget=10_000) == history


def test_the_newest_message_stays_even_over_budget() -> None:
    history = _items(10, 9000)
    assert trim_history(history, budget=5) == history[1:]


@given(st.lists(st.integers(min_value=0, max_value=500), max_size=30), st.integers(0, 3000))
def test_trimmed_history_is_a_suffix_within_budget(sizes: list[int], budget: int) -> None:
    history = _items(*sizes)
    kept = trim_history(history, budget)
    assert kept == history[len(history) - len(kept) :]
    if len(kept) > 1:
        assert sum(estimate_tokens(h.content) for h in kept) <= budget
    if history:
        assert kept  # never empty


def test_budget_leaves_room_for_the_reply_and_system_prompt() -> None:
    system = "x" * 3000  # 1004 tokens
    budget = history_budget(context_length=10_000, max_output_tokens=1000, system=system)
    assert budget == 9000 - 1000 - 1004


def test_system_prompt_has_instructions_date_and_notes() -> None:
    prompt = system_prompt(
        instructions="Be brief.",
        now=datetime(2026, 11, 27, 9, 30, tzinfo=UTC),
        agent_notes=["The shop opens at 9."],
        contact_notes=["Prefers French."],
    )
    assert prompt.startswith("Be brief.")
    assert "Friday 27 November 2026, 09:30 UTC" in prompt
    assert "- The shop opens at 9." in prompt and "- Prefers French." in prompt


@given(
    system=st.text(max_size=200),
    turns=st.lists(
        st.tuples(st.sampled_from(["user", "assistant"]), st.text(max_size=300)), max_size=12
    ),
)
def test_the_kept_bounds_add_up_to_the_bound_of_the_messages(
    system: str, turns: list[tuple[str, str]]
) -> None:
    """The turn takes its first hold from the items' kept bounds, never from a smaller sum."""
    items = [context.HistoryItem(role, text) for role, text in turns]
    messages = context.build_messages(system, items)
    assert context.prompt_bound_of(system, items) == context.prompt_token_bound(messages)
