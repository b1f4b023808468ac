"""Replies cut to Telegram's message size: at most 4,096 characters a message.

Lengths are counted in UTF-16 code units (what Telegram counts entity offsets in; never more than
the characters it counts the limit in), so a part is never refused as too long. A cut prefers a
paragraph break, then a line break, then a space, in the second half of the part; a word longer
than a whole part is cut where no character is split from what it combines with (surrogate
pairs, combining marks, zero-width joiners, variation selectors). The same text always gives the
same parts: a delivery resumes after the parts already sent.
"""

from __future__ import annotations

import unicodedata

MAX_MESSAGE = 4096
_JOINERS = frozenset({"\u200d", "\u034f", "\u2060"})


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _fits(text: str, limit: int) -> int:
    """The length of the longest prefix of `text` that is at most `limit` UTF-16 units."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def _clings(char: str) -> bool:
    """Whether `char` belongs with the character before it (a cut must not fall before it)."""
    return (
        unicodedata.combining(char) != 0
        or char in _JOINERS
        or "\ufe00" <= char <= "\ufe0f"  # variation selectors
        or "\U0001f3fb" <= char <= "\U0001f3ff"  # skin tone modifiers
        or "\U000e0020" <= char <= "\U000e007f"  # tag characters (flag sequences)
    )


def _hard_cut(text: str, end: int) -> int:
    cut = end
    while cut > 1 and (_clings(text[cut]) or text[cut - 1] in _JOINERS):
        cut -= 1
    return cut if cut > 0 else end


def _cut(window: str, rest: str) -> tuple[int, int]:
    """Where the part ends in `rest` and where the next one starts (separators dropped)."""
    half = len(window) // 2
    for separator in ("\n\n", "\n"):
        at = window.rfind(separator)
        if at >= max(half, 1):
            start = at
            while start < len(rest) and rest[start] == "\n":
                start += 1
            return at, start
    at = max(window.rfind(" "), window.rfind("\t"))
    if at > 0:
        return at, at + 1
    end = _hard_cut(rest, len(window))
    return end, end


def split_message(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """`text` as the messages to send, in order; none when it has nothing to show."""
    parts: list[str] = []
    rest = text.strip()
    while rest.strip():
        if utf16_len(rest) <= limit:
            parts.append(rest.rstrip())
            break
        window = rest[: _fits(rest, limit)]
        end, start = _cut(window, rest)
        part = rest[:end].rstrip()
        if part:
            parts.append(part)
        rest = rest[start:].lstrip("\n")
    return parts
