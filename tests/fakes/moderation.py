"""A fake OpenAI-compatible moderation endpoint served over real HTTP on 127.0.0.1.

`POST /v1/moderations` with `{"input": str | [str], "model"?: str}` and `Authorization: Bearer
<key>` answers like OpenAI's: `{"id": "modr-…", "model": …, "results": [{"flagged",
"categories": {name: bool}, "category_scores": {name: float},
"category_applied_input_types": {name: ["text"]}}]}` (one result per input), 401 with an error
object for a wrong key, 400 for a body without `input`. A text is flagged when it contains one
of `flag_words` (word → category). Tests can make it fail: `fail(500, times=n)` answers the next
n requests with that status (`times=None`: every request until `reset`). Every request is
recorded.

Use the `moderation_fake` fixture (import it, and `moderation_server`, into a conftest) and
`moderation_settings(fake)` for the Settings that point LunoGen at it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.server import loopback_socket, serve_in_thread

API_KEY = "sk-mod-fake-0123456789"
MODEL = "omni-moderation-latest"
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


@dataclass
class FakeModeration:
    root_url: str = ""
    api_key: str = API_KEY
    flag_words: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    _failures: list[int] = field(default_factory=list)
    _always_fail: int | None = None

    @property
    def base_url(self) -> str:
        """What LUNOGEN_MODERATION_URL is set to."""
        return f"{self.root_url}/v1"

    def reset(self) -> None:
        self.api_key = API_KEY
        self.flag_words = {"smuggle": "illicit", "hurt": "violence"}
        self.requests.clear()
        self._failures.clear()
        self._always_fail = None

    def fail(self, status: int, *, times: int | None = 1) -> None:
        if times is None:
            self._always_fail = status
        else:
            self._failures.extend([status] * times)

    def _result(self, text: str) -> dict[str, Any]:
        lowered = text.lower()
        hit = {category for word, category in self.flag_words.items() if word in lowered}
        return {
            "flagged": bool(hit),
            "categories": {name: name in hit for name in CATEGORIES},
            "category_scores": {name: (0.97 if name in hit else 0.0004) for name in CATEGORIES},
            "category_applied_input_types": {name: ["text"] for name in CATEGORIES},
        }

    async def moderations(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.requests.append({"headers": dict(request.headers), "body": body})
        if self._always_fail is not None or self._failures:
            status = self._always_fail or self._failures.pop(0)
            error = {"message": "The server had an error", "type": "server_error"}
            return JSONResponse({"error": error}, status_code=status)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            error = {"message": "Incorrect API key provided", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=401)
        if not isinstance(body, dict) or not isinstance(body.get("input"), str | list):
            error = {"message": "'input' is a required property", "type": "invalid_request_error"}
            return JSONResponse({"error": error}, status_code=400)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return JSONResponse(
            {
                "id": f"modr-{secrets.token_hex(12)}",
                "model": body.get("model") or MODEL,
                "results": [self._result(str(text)) for text in inputs],
            }
        )

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[FakeModeration]:
        fake = cls()
        fake.reset()
        app = Starlette(routes=[Route("/v1/moderations", fake.moderations, methods=["POST"])])
        sock, port = loopback_socket()
        fake.root_url = f"http://127.0.0.1:{port}"
        with serve_in_thread(app, sock, name="the fake moderation endpoint"):
            yield fake


def moderation_settings(fake: FakeModeration, **overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "moderation_url": fake.base_url,
        "moderation_api_key": fake.api_key,
        "moderation_model": MODEL,
        "moderation_timeout_seconds": 5,
        "allow_private_urls": True,  # the fake listens on loopback
    }
    values.update(overrides)
    return values


@pytest.fixture(scope="session")
def moderation_server() -> Iterator[FakeModeration]:
    with FakeModeration.running() as fake:
        yield fake


@pytest.fixture
def moderation_fake(moderation_server: FakeModeration) -> Iterator[FakeModeration]:
    moderation_server.reset()
    yield moderation_server
    moderation_server.reset()
