"""The optional classifier: an OpenAI-compatible moderation endpoint (`LUNOGEN_MODERATION_URL`).

`POST {url}/moderations` with `{"input": text, "model": ...}` (the model only when
`LUNOGEN_MODERATION_MODEL` is set) and `Authorization: Bearer` when a key is set; the answer is
`{"results": [{"flagged", "categories": {name: bool}, "category_scores": {name: float}}]}`.
The call goes through `SafeHttp` (each address checked; a loopback or private endpoint needs
`LUNOGEN_ALLOW_PRIVATE_URLS`), with no transaction open (`moderation.tasks`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lunogen.config import Settings
from lunogen.kit.http import FetchError, SafeHttp

MAX_INPUT_CHARS = 32_000  # longer texts are sent cut to this (the endpoints limit their input)
MAX_ANSWER_BYTES = 256_000


class ClassifierError(Exception):
    """The endpoint could not give a verdict; the text says why (kept on the check's row)."""


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    categories: list[str] = field(default_factory=list)  # the flagged ones
    scores: dict[str, float] = field(default_factory=dict)


def _verdict(body: Any) -> Verdict:
    try:
        result = body["results"][0]
        flagged = result["flagged"]
        categories = result.get("categories") or {}
        scores = result.get("category_scores") or {}
        if not isinstance(flagged, bool) or not isinstance(categories, dict):
            raise TypeError("flagged must be a boolean and categories an object")
        named = sorted(name for name, on in categories.items() if on is True)
        numbers = {
            str(name): float(value)
            for name, value in scores.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise ClassifierError(
            f"the moderation endpoint answered an unexpected body: {exc}"
        ) from exc
    return Verdict(flagged=flagged, categories=named, scores=numbers)


async def classify(settings: Settings, text: str) -> Verdict:
    """The endpoint's verdict on `text`; `ClassifierError` when there is none."""
    if not settings.moderation_url:
        raise ClassifierError("LUNOGEN_MODERATION_URL is not set")
    payload: dict[str, Any] = {"input": text[:MAX_INPUT_CHARS]}
    if settings.moderation_model:
        payload["model"] = settings.moderation_model
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = settings.moderation_api_key
    if key is not None and key.get_secret_value():
        headers["Authorization"] = f"Bearer {key.get_secret_value()}"
    http = SafeHttp(
        allow_private=settings.allow_private_urls, timeout=settings.moderation_timeout_seconds
    )
    try:
        answer = await http.send(
            "POST",
            f"{settings.moderation_url}/moderations",
            headers=headers,
            content=json.dumps(payload).encode(),
            max_bytes=MAX_ANSWER_BYTES,
        )
    except FetchError as exc:
        raise ClassifierError(str(exc)) from exc
    if answer.status_code != 200:
        raise ClassifierError(f"the moderation endpoint answered HTTP {answer.status_code}")
    try:
        body = json.loads(answer.content)
    except ValueError as exc:
        raise ClassifierError("the moderation endpoint answered no JSON") from exc
    return _verdict(body)
