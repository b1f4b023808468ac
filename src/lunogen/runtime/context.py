"""What the model sees in a turn: instructions, the date, memory notes and recent history.

Token estimate: ``ceil(len(text) / 3) + 4`` per message. Three characters per token is below
the ~4 of English BPE tokenizers, so the estimate errs on the generous side for most text
(code and non-Latin scripts run closer to 2-3), and the 4 covers each message's role framing.
The history budget is the model's context length minus the reply's `max_output_tokens`, the
system prompt and a 10 % safety margin; the oldest messages go first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

SAFETY_MARGIN = 0.10
PER_MESSAGE_OVERHEAD = 4
CHARS_PER_TOKEN = 3


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) + PER_MESSAGE_OVERHEAD


@dataclass(frozen=True)
class HistoryItem:
    role: str
    content: str


def system_prompt(
    *,
    instructions: str,
    now: datetime,
    agent_notes: Sequence[str],
    contact_notes: Sequence[str],
    skills: Sequence[tuple[str, str]] = (),
) -> str:
    """The system message. Skills appear by name and description only (progressive
    disclosure): the model loads a skill's body with `load_skill` when it needs it."""
    parts = [instructions.strip() or "You are a helpful assistant."]
    parts.append(f"Current date and time: {now:%A %d %B %Y, %H:%M} UTC.")
    if skills:
        parts.append(
            "Skills (call load_skill with a skill's name to read its full instructions "
            "before using it):\n" + "\n".join(f"- {name}: {about}" for name, about in skills)
        )
    if agent_notes:
        parts.append("Things you remember:\n" + "\n".join(f"- {n}" for n in agent_notes))
    if contact_notes:
        parts.append(
            "Things you remember about this person:\n" + "\n".join(f"- {n}" for n in contact_notes)
        )
    return "\n\n".join(parts)


def history_budget(*, context_length: int, max_output_tokens: int, system: str) -> int:
    usable = int(context_length * (1 - SAFETY_MARGIN)) - max_output_tokens
    return max(0, usable - estimate_tokens(system))


def trim_history(history: Sequence[HistoryItem], budget: int) -> list[HistoryItem]:
    """The newest messages that fit in `budget` tokens, oldest first. The newest always stays."""
    kept: list[HistoryItem] = []
    used = 0
    for item in reversed(history):
        cost = estimate_tokens(item.content)
        if kept and used + cost > budget:
            break
        kept.append(item)
        used += cost
    kept.reverse()
    return kept


def build_messages(system: str, history: Sequence[HistoryItem]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}] + [
        {"role": h.role, "content": h.content} for h in history
    ]
