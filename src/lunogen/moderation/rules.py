"""The installation's rules, compiled once per process and checked on every turn's text.

A term matches case-insensitively as a whole word (`(?<!\\w)term(?!\\w)`, so `c++` works too).
One-word terms (most) are a set: the text's words are looked up in it, so their number does not
change the cost; the others (phrases, `c++`) are one alternation. A pattern
is a Python regular expression, checked as written (add `(?i)` for case-insensitive).

Patterns are bounded when they are created (`pattern_problem`), since the turn's hot path runs
them on every message: at most 200 characters, no back-references, no quantifier inside a
repeated group (the shapes that backtrack exponentially, like `(a+)+`), at most four unbounded
quantifiers. The standard `re` engine has no time limit, so the shape is what is checked.

The compiled set is cached in this process and rebuilt at once when this process changes a rule
(`invalidate`); other processes rebuild theirs within `LUNOGEN_MODERATION_RULES_REFRESH_SECONDS`.
"""

from __future__ import annotations

import re
import re._constants as sre_constants
import re._parser as sre_parse
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.config import Settings
from lunogen.moderation.models import ModerationRule
from lunogen.runtime.screening import Direction, Hit, Screened

MAX_PATTERN = 200
MAX_UNBOUNDED = 4
LARGE_REPEAT = 1000  # a bounded quantifier above this counts as unbounded
_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)


def _walk(items: Any, *, inside_repeat: bool, unbounded: list[int]) -> str | None:
    for op, av in items:
        if op in (sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS):
            return "back-references are not allowed"
        if op in _REPEATS:
            _low, high, sub = av
            if inside_repeat and high > 1:
                return "a quantifier inside a repeated group can take exponential time"
            if high is sre_constants.MAXREPEAT or high > LARGE_REPEAT:
                unbounded.append(1)
            problem = _walk(sub, inside_repeat=high > 1, unbounded=unbounded)
        elif op == sre_constants.SUBPATTERN:
            problem = _walk(av[-1], inside_repeat=inside_repeat, unbounded=unbounded)
        elif op == sre_constants.BRANCH:
            problem = None
            for branch in av[1]:
                problem = problem or _walk(branch, inside_repeat=inside_repeat, unbounded=unbounded)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            problem = _walk(av[1], inside_repeat=inside_repeat, unbounded=unbounded)
        elif op == sre_constants.ATOMIC_GROUP:
            problem = _walk(av, inside_repeat=inside_repeat, unbounded=unbounded)
        else:
            problem = None
        if problem:
            return problem
    return None


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` cannot be a rule (in words for the admin), or None."""
    if len(pattern) > MAX_PATTERN:
        return f"a pattern has at most {MAX_PATTERN} characters"
    try:
        parsed = sre_parse.parse(pattern)
        re.compile(pattern)
    except re.error as exc:
        return f"not a valid regular expression: {exc}"
    unbounded: list[int] = []
    problem = _walk(parsed, inside_repeat=False, unbounded=unbounded)
    if problem:
        return problem
    if len(unbounded) > MAX_UNBOUNDED:
        return f"at most {MAX_UNBOUNDED} unbounded quantifiers (*, +, {{n,}}) per pattern"
    if re.compile(pattern).search("") is not None:
        return "the pattern matches an empty text, so it would match every message"
    return None


@dataclass(frozen=True)
class _Compiled:
    rule: str
    action: str
    label: str
    regex: re.Pattern[str]


_WORD = re.compile(r"\w+")


@dataclass
class _DirectionRules:
    words: frozenset[str] = frozenset()  # one-word terms, casefolded: a set lookup per word
    terms: re.Pattern[str] | None = None  # the other terms (phrases, `c++`), one alternation
    by_term: dict[str, tuple[str, str]] = field(default_factory=dict)  # term → (rule, action)
    patterns: list[_Compiled] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.words and self.terms is None and not self.patterns

    def _term_hit(self, found: dict[str, Hit], term: str) -> None:
        rule, action = self.by_term.get(term, ("", "flag"))
        found.setdefault(rule, Hit(rule, action, term))

    def hits(self, text: str) -> list[Hit]:
        found: dict[str, Hit] = {}
        if self.words:
            for word in set(_WORD.findall(text.casefold())) & self.words:
                self._term_hit(found, word)
        if self.terms is not None:
            for match in self.terms.finditer(text):
                self._term_hit(found, match.group(0).casefold())
        for compiled in self.patterns:
            if compiled.rule not in found and compiled.regex.search(text):
                found[compiled.rule] = Hit(compiled.rule, compiled.action, compiled.label)
        return list(found.values())


class RuleSet:
    """Every rule, compiled per direction. `check` is pure CPU: no I/O, no lock."""

    def __init__(self, rules: Iterable[ModerationRule]) -> None:
        self.count = 0
        self._by_direction: dict[str, _DirectionRules] = {
            "inbound": _DirectionRules(),
            "outbound": _DirectionRules(),
        }
        terms: dict[str, list[str]] = {"inbound": [], "outbound": []}
        words: dict[str, set[str]] = {"inbound": set(), "outbound": set()}
        for rule in rules:
            self.count += 1
            directions = ("inbound", "outbound") if rule.direction == "both" else (rule.direction,)
            for direction in directions:
                target = self._by_direction[direction]
                if rule.kind == "term":
                    key = rule.value.casefold()
                    previous = target.by_term.get(key)
                    if previous is None or (previous[1] != "block" and rule.action == "block"):
                        target.by_term[key] = (rule.id, rule.action)
                    if _WORD.fullmatch(key):
                        words[direction].add(key)
                    else:
                        terms[direction].append(rule.value)
                else:
                    target.patterns.append(
                        _Compiled(rule.id, rule.action, rule.value, re.compile(rule.value))
                    )
        for direction, found in words.items():
            self._by_direction[direction].words = frozenset(found)
        for direction, values in terms.items():
            if values:  # longest first, so that a longer term wins at the same place
                ordered = sorted(set(values), key=len, reverse=True)
                joined = "|".join(re.escape(v) for v in ordered)
                self._by_direction[direction].terms = re.compile(
                    rf"(?<!\w)(?:{joined})(?!\w)", re.IGNORECASE
                )

    def check(self, direction: Direction, text: str) -> Screened:
        rules = self._by_direction[direction]
        if not text or rules.empty:
            return Screened(direction, text)
        return Screened(direction, text, tuple(rules.hits(text)))


@dataclass
class _Cache:
    rules: RuleSet | None = None
    loaded_at: float = 0.0


_cache = _Cache()


def invalidate() -> None:
    """Forget this process's compiled rules: the next turn loads them again."""
    _cache.rules = None


async def current(session: AsyncSession, settings: Settings) -> RuleSet:
    """The compiled rules, loaded with `session` when this process's copy is missing or older
    than the refresh interval."""
    now = time.monotonic()
    cached = _cache.rules
    if cached is not None and now - _cache.loaded_at < settings.moderation_rules_refresh_seconds:
        return cached
    rows = await session.execute(select(ModerationRule).order_by(ModerationRule.created_at))
    fresh = RuleSet(rows.scalars())
    _cache.rules, _cache.loaded_at = fresh, now
    return fresh
