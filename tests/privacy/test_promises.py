"""The promise suite itself: one `test_promise_<tag>.py` per tagged sentence of the Privacy
Policy and one tag per module, each module quoting its sentence word for word, and the map in
`docs/privacy.md` naming every tag with test files and code paths that exist."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from tests.privacy.promises import POLICY, flat, promise_modules, promises, quotes_its_sentence

ROOT = Path(__file__).parents[2]
MAP = ROOT / "docs" / "privacy.md"


def test_every_tag_has_a_module_and_every_module_a_tag() -> None:
    tags = set(promises())
    assert len(tags) >= 21, sorted(tags)
    modules = promise_modules()
    assert sorted(tags - modules.keys()) == [], "tags of the policy without a test module"
    assert sorted(modules.keys() - tags) == [], "test modules whose tag the policy lost"


@pytest.mark.parametrize("tag", sorted(promise_modules()))
def test_each_module_names_its_tag_and_quotes_its_sentence(tag: str) -> None:
    module = importlib.import_module(f"tests.privacy.{promise_modules()[tag]}")
    assert tag == module.TAG
    assert quotes_its_sentence(module), f"{module.__name__} does not quote [{tag}] as it reads now"
    assert [name for name in dir(module) if name.startswith("test_")], module.__name__


def test_a_removed_or_retagged_sentence_is_noticed() -> None:
    text = POLICY.read_text(encoding="utf-8")
    assert "[cookies]" in text
    without = text.replace("- [cookies] ", "- ")
    assert "cookies" not in promises(without)
    retagged = text.replace("[age]", "[adults]")
    assert "age" not in promises(retagged) and "adults" in promises(retagged)
    with pytest.raises(AssertionError, match="twice"):
        promises(text + "\n- [age] Again.\n")


def test_sentences_span_their_continuation_lines() -> None:
    found = promises()
    assert found["age"].endswith("before your account can be used.")
    assert "  " not in found["processors"] and found["processors"] == flat(found["processors"])


def test_the_map_in_docs_names_every_tag_with_existing_tests_and_code() -> None:
    text = MAP.read_text(encoding="utf-8")
    assert "## The policy, sentence by sentence" in text
    table = text.split("## The policy, sentence by sentence", 1)[1]
    rows = {
        match.group(1): match.group(0)
        for match in re.finditer(r"^\| `?\[?([a-z-]+)\]?`? \|.*$", table, re.MULTILINE)
    }
    assert sorted(set(promises()) - rows.keys()) == []
    for tag, row in rows.items():
        assert f"test_promise_{tag.replace('-', '_')}.py" in row, tag
        paths = re.findall(r"`((?:tests|src)/[^`:\s]+?\.(?:py|md|html))(?:::[^`]*)?`", row)
        assert paths, row
        for path in paths:
            assert (ROOT / path).exists(), f"[{tag}] names {path}, which does not exist"
