"""Splitting a reply into messages of at most `limit` characters (Telegram's and WhatsApp's
limit is 4,096), for every channel type that sends text in parts.

Lengths are counted in UTF-16 code units, which is never less than Meta's count whichever way
it counts (an emoji outside the BMP is one code point and two units). A part ends at the last
paragraph break in its second half, else the last line break, sentence end or space there, else
at the limit, moved back so that no character sequence that renders as one (a combining mark, an
emoji with its modifiers or ZWJ parts, a flag's two regional indicators) is cut. The same text
always gives the same parts: a retried delivery resumes after the parts already sent.
"""

from __future__ import annotations

import re
import unicodedata

MAX_TEXT = 4096  # Telegram's `sendMessage` and WhatsApp's text body
# A sentence's end (ASCII, ellipsis, CJK full stops), its closing quotes or brackets, a space.
_SENTENCE_END = re.compile("[.!?\u2026\u3002\uff01\uff1f][\"')\\]\u00bb\u201d\u2019]*\\s")
_ZWJ = "\u200d"


def utf16_length(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _prefix_length(text: str, limit: int) -> int:
    """How many code points of `text` fit in `limit` UTF-16 units."""
    used = 0
    for index, char in enumerate(text):
        used += 2 if ord(char) > 0xFFFF else 1
        if used > limit:
            return index
    return len(text)


def _is_regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _extends(char: str) -> bool:
    """`char` attaches to the character before it."""
    code = ord(char)
    return (
        char == _ZWJ
        or unicodedata.category(char) in ("Mn", "Me", "Mc")
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0xE0100 <= code <= 0xE01EF
        or 0x1F3FB <= code <= 0x1F3FF  # skin tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (subdivision flags)
        or 0xDC00 <= code <= 0xDFFF  # a low surrogate left unpaired in a str
    )


def _joined(text: str, cut: int) -> bool:
    """Cutting `text` before index `cut` would split what renders as one character."""
    before, after = text[cut - 1], text[cut]
    if _extends(after) or before == _ZWJ or (before == "\r" and after == "\n"):
        return True
    if _is_regional(before) and _is_regional(after):
        run = 0
        while cut - 1 - run >= 0 and _is_regional(text[cut - 1 - run]):
            run += 1
        return run % 2 == 1  # `before` is the first half of a pair
    return False


def _cut(text: str, fits: int) -> tuple[int, int]:
    """Where the first part ends and the rest starts (the separator between is dropped)."""
    window = text[:fits]
    least = fits // 2
    for separator in ("\n\n", "\n"):
        found = window.rfind(separator, least)
        if found > 0:
            return found, found + len(separator)
    sentences = list(_SENTENCE_END.finditer(window, least))
    if sentences:
        return sentences[-1].end() - 1, sentences[-1].end()
    space = window.rfind(" ", least)
    if space > 0:
        return space, space + 1
    cut = fits
    while cut > 1 and _joined(text, cut):
        cut -= 1
    if cut == 1 and _joined(text, cut):  # one unbreakable run longer than the limit
        cut = fits
    return cut, cut


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """The parts of `text`, each non-empty and at most `limit` UTF-16 units long."""
    parts: list[str] = []
    rest = text.strip()
    while rest.strip():
        if utf16_length(rest) <= limit:
            parts.append(rest.rstrip())
            break
        end, start = _cut(rest, _prefix_length(rest, limit))
        part = rest[:end].rstrip()
        if part:
            parts.append(part)
        rest = rest[start:].lstrip("\n")
    return parts
