"""What the model sees in a turn: instructions, the date, memory notes and recent history.

Two token figures, for two purposes:

- The history budget uses an estimate, ``ceil(len(text) / 3) + 4`` per message. Three characters
  per token is below the ~4 of English BPE tokenizers, so it errs on the generous side for most
  text (code and non-Latin scripts run closer to 1-3), and the 4 covers each message's role
  framing. The budget is the model's context length minus the reply's `max_output_tokens`, the
  system prompt and a 10 % safety margin; the oldest messages go first.
- A credit hold uses a bound that cannot be too small (`message_token_bound`, `tools_token_bound`):
  the UTF-8 bytes of what is sent. Byte-level BPE tokenizers (GPT, Claude, Llama 3, Qwen, ...)
  never make more tokens than the text has bytes, and SentencePiece with byte fallback at most
  one more (its leading space); the constants below cover the chat template's own tokens.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SAFETY_MARGIN = 0.10
PER_MESSAGE_OVERHEAD = 4
CHARS_PER_TOKEN = 3
# For the bound: a template's start/end-of-turn tokens and role line per message (4-6 in ChatML,
# Llama 3, Gemma, Mistral), the request's own (begin-of-text, the assistant's opening), and the
# instructions a provider adds when tools are offered (Anthropic documents 313-346 tokens).
TEMPLATE_TOKENS_PER_MESSAGE = 16
TEMPLATE_TOKENS_PER_REQUEST = 16
TOOL_INSTRUCTION_TOKENS = 512


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) + PER_MESSAGE_OVERHEAD


def utf8_length(text: str) -> int:
    """Bytes of `text` in UTF-8 (`isascii` is O(1): most text is not encoded at all)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def message_token_bound(message: Mapping[str, Any]) -> int:
    """At most how many prompt tokens `message` becomes.

    A plain `{role, content}` message counts its strings; any other shape (tool calls, tool
    results) counts its whole JSON text, which holds every string the template can render and
    more.
    """
    role, content = message.get("role"), message.get("content")
    if len(message) == 2 and isinstance(role, str) and isinstance(content, str):
        size = utf8_length(role) + utf8_length(content)
    else:
        size = utf8_length(json.dumps(message, ensure_ascii=False))
    return size + TEMPLATE_TOKENS_PER_MESSAGE


def prompt_token_bound(messages: Iterable[Mapping[str, Any]]) -> int:
    """At most how many prompt tokens a request with `messages` (and no tools) has."""
    return TEMPLATE_TOKENS_PER_REQUEST + sum(message_token_bound(m) for m in messages)


def tools_token_bound(tools: Sequence[Mapping[str, Any]] | None) -> int:
    """What offering `tools` adds to the prompt at most: their JSON schemas and the provider's
    instructions for using them."""
    if not tools:
        return 0
    return utf8_length(json.dumps(list(tools), ensure_ascii=False)) + TOOL_INSTRUCTION_TOKENS


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One exchange's message, with its two estimates worked out once. Slotted: thread windows
    keep many of these (about 150 bytes less each than with a `__dict__`)."""

    role: str
    content: str
    tokens: int = field(init=False, compare=False, repr=False)  # the history budget's estimate
    bound: int = field(init=False, compare=False, repr=False)  # `message_token_bound` of it

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", estimate_tokens(self.content))
        bound = message_token_bound({"role": self.role, "content": self.content})
        object.__setattr__(self, "bound", bound)


SCHEDULED = "schedule"  # `messages.source` of an owner's scheduled task in a contact's thread


def as_said(text: str, *, source: str | None, contact: str | None) -> str:
    """An inbound message's text as the model reads it: the contact's words as they are; an
    owner's scheduled task (`source == "schedule"`) labelled as an instruction, so the model
    neither takes it for the contact's words nor answers it as if the contact had asked."""
    if source != SCHEDULED:
        return text
    who = contact or "the contact"
    return (
        f"[Scheduled task from the agent's owner — not a message from {who}. "
        f"Your reply is sent to {who}.]\n{text}"
    )


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
        cost = item.tokens
        if kept and used + cost > budget:
            break
        kept.append(item)
        used += cost
    kept.reverse()
    return kept


def prompt_bound_of(system: str, history: Sequence[HistoryItem]) -> int:
    """`prompt_token_bound` of `build_messages(system, history)`, from the items' kept bounds."""
    system_bound = message_token_bound({"role": "system", "content": system})
    return TEMPLATE_TOKENS_PER_REQUEST + system_bound + sum(item.bound for item in history)


def build_messages(system: str, history: Sequence[HistoryItem]) -> list[dict[str, Any]]:
    return [{"role": "system", "content": system}] + [
        {"role": h.role, "content": h.content} for h in history
    ]
