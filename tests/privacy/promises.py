"""The Privacy Policy's promises, read from the text the software ships
(`src/lunogen/privacy/texts/privacy.md`): each is a bullet that starts with its tag in brackets.

Each `test_promise_<tag>.py` module names its `TAG` and quotes the sentence in its docstring;
`sentence(TAG)` fails the module when the sentence or its tag is gone from the policy, and
`tests/privacy/test_promises.py` checks that modules and tags match one to one.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

from lunogen.privacy.documents import TEXTS_DIR

POLICY = TEXTS_DIR / "privacy.md"
_BULLET = re.compile(r"^- \[([a-z0-9-]+)\] (.*)$")
HERE = Path(__file__).parent


def promises(text: str | None = None) -> dict[str, str]:
    """tag -> the sentence (its bullet joined into one line, without the tag)."""
    lines = (text if text is not None else POLICY.read_text(encoding="utf-8")).splitlines()
    found: dict[str, str] = {}
    current: str | None = None
    for line in lines:
        match = _BULLET.match(line)
        if match:
            current = match.group(1)
            assert current not in found, f"the tag [{current}] appears twice in the policy"
            found[current] = match.group(2).strip()
        elif current is not None and line.startswith("  ") and line.strip():
            found[current] += " " + line.strip()
        else:
            current = None
    return found


def sentence(tag: str) -> str:
    """The policy's sentence for `tag`; an AssertionError when the tag is gone."""
    found = promises()
    assert tag in found, f"the Privacy Policy has no [{tag}] sentence any more"
    return found[tag]


def flat(text: str) -> str:
    return " ".join(text.split())


def quotes_its_sentence(module: ModuleType) -> bool:
    """The module's docstring holds its sentence word for word (line breaks aside)."""
    return flat(sentence(module.TAG)) in flat(module.__doc__ or "")


def promise_modules() -> dict[str, str]:
    """tag -> module name, for every `test_promise_<tag>.py` beside this file."""
    return {
        path.stem.removeprefix("test_promise_").replace("_", "-"): path.stem
        for path in sorted(HERE.glob("test_promise_*.py"))
    }
