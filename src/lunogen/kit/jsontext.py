"""JSON from outside (request bodies, provider answers), refused as one kind of error.

`json.loads` fails in several ways besides `JSONDecodeError`: undecodable bytes
(`UnicodeDecodeError`), a number too long to convert (`ValueError`), nesting deeper than the
interpreter's recursion limit (`RecursionError`, a few kilobytes of `[`). Callers catch
`ValueError` once."""

from __future__ import annotations

import json
from typing import Any


def loads(data: bytes | str) -> Any:
    """Parse JSON; any failure is a `ValueError` naming it."""
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
