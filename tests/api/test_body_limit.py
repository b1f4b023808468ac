"""Request bodies are capped before anything reads them: 1 MiB by default, per route otherwise.

The proof that a refused body is not read is what the client had to send: the test bodies are
generators that count the chunks the server pulled.
"""

from __future__ import annotations

import json
import socket
import zipfile
from collections.abc import AsyncIterator
from io import BytesIO

import httpx
import pytest

from lunogen.billing.endpoints import MAX_WEBHOOK_BYTES
from lunogen.channel.webhook import MAX_BODY_BYTES as HOOK_MAX_BYTES
from lunogen.kit import middleware
from lunogen.skill import package
from lunogen.skill.endpoints import MAX_JSON_BYTES, MAX_MULTIPART_BYTES
from tests.agent.support import new_dev
from tests.helpers import Api
from tests.skill.support import skill_md

MiB = 1024 * 1024
DEFAULT_LIMIT = MiB
CHUNK = 64 * 1024
HUGE = 50_000_000


class CountedBody:
    """A streamed request body of `size` bytes that counts how much of it was pulled."""

    def __init__(self, size: int, *, fill: bytes = b"x", head: bytes = b'{"name": "') -> None:
        self.size = size
        self.head = head
        self.fill = fill
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        chunk = self.head + self.fill * (CHUNK // len(self.fill))
        while sent < self.size:
            piece = chunk[: self.size - sent]
            self.pulled += len(piece)
            sent += len(piece)
            yield piece
            chunk = self.fill * (CHUNK // len(self.fill))


def assert_too_large(response: httpx.Response, limit: int) -> None:
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["error"] == "Payload too large", body
    assert str(limit) in body["message"], body
    assert response.headers["x-content-type-options"] == "nosniff"  # answered inside our headers


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("path", ["/api/v1/agents", "/api/v1/auth/login", "/api/v1/auth/register"])
async def test_a_huge_declared_body_is_refused_before_a_byte_is_read(api: Api, path: str) -> None:
    body = CountedBody(HUGE)
    headers = {**JSON, "content-length": str(HUGE)}
    response = await api.new_client().post(path, content=body, headers=headers)
    assert_too_large(response, DEFAULT_LIMIT)
    assert body.pulled == 0


@pytest.mark.parametrize("path", ["/api/v1/agents", "/api/v1/auth/login", "/api/v1/keys"])
@pytest.mark.parametrize(
    "fill", [b"x", b"\\u0000"], ids=["plain", "NUL escapes (not parsed past the cap)"]
)
async def test_a_huge_chunked_body_is_cut_off_at_the_limit(
    api: Api, path: str, fill: bytes
) -> None:
    body = CountedBody(HUGE, fill=fill)
    response = await api.new_client().post(path, content=body, headers=JSON)
    assert "content-length" not in response.request.headers  # sent chunked
    assert_too_large(response, DEFAULT_LIMIT)
    assert body.pulled <= DEFAULT_LIMIT + CHUNK


async def test_a_huge_body_without_a_content_type_is_cut_off_too(api: Api) -> None:
    body = CountedBody(HUGE)
    response = await api.new_client().post("/api/v1/agents", content=body)
    assert_too_large(response, DEFAULT_LIMIT)
    assert body.pulled <= DEFAULT_LIMIT + CHUNK


def _padded_key_body(size: int) -> bytes:
    """A valid key-creation body of exactly `size` bytes (JSON allows any amount of space)."""
    core = b'{"name": "padded", "scopes": ["logs:read"]'
    return core + b" " * (size - len(core) - 1) + b"}"


async def test_the_default_limit_is_exact(api: Api) -> None:
    dev = await new_dev(api)
    at_limit = _padded_key_body(DEFAULT_LIMIT)
    assert len(at_limit) == DEFAULT_LIMIT
    created = await dev.http.post("/api/v1/keys", content=at_limit, headers=JSON)
    assert created.status_code == 201, created.text

    async def streamed(data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]

    chunked = await dev.http.post("/api/v1/keys", content=streamed(at_limit), headers=JSON)
    assert chunked.status_code == 201, chunked.text
    over = _padded_key_body(DEFAULT_LIMIT + 1)
    assert_too_large(await dev.http.post("/api/v1/keys", content=over, headers=JSON), MiB)
    chunked_over = await dev.http.post("/api/v1/keys", content=streamed(over), headers=JSON)
    assert_too_large(chunked_over, DEFAULT_LIMIT)
    names = [k["name"] for k in (await dev.http.get("/api/v1/keys")).json()["data"]]
    assert names.count("padded") == 2


@pytest.mark.parametrize("settings_overrides", [{"max_body_bytes": 64 * 1024}])
async def test_the_limit_is_a_setting(api: Api) -> None:
    dev = await new_dev(api)
    response = await dev.http.post("/api/v1/keys", content=_padded_key_body(100_000), headers=JSON)
    assert_too_large(response, 64 * 1024)
    small = await dev.http.post("/api/v1/keys", content=_padded_key_body(60_000), headers=JSON)
    assert small.status_code == 201, small.text


def _stored_zip(files: dict[str, bytes]) -> bytes:
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("SKILL.md", skill_md(name="big-assets"))
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


async def test_skill_uploads_have_their_own_larger_documented_caps(api: Api) -> None:
    dev = await new_dev(api)
    assets = {f"assets/blob{i}.bin": bytes(700_000) for i in range(2)}  # stored, not deflated
    data = _stored_zip(assets)
    assert DEFAULT_LIMIT < len(data) <= package.MAX_ZIP_BYTES
    created = await dev.http.post(
        "/api/v1/skills", files={"file": ("skill.zip", data, "application/zip")}
    )
    assert created.status_code == 201, created.text
    assert {f["path"] for f in created.json()["files"]} == set(assets)
    # The same route refuses a form body past the zip's cap, and any body past the route's cap,
    # without reading the rest.
    for limit in (MAX_MULTIPART_BYTES, MAX_JSON_BYTES):
        body = CountedBody(HUGE)
        content_type = "multipart/form-data; boundary=x" if limit == MAX_MULTIPART_BYTES else "a/b"
        headers = {"content-type": content_type, "content-length": str(limit + 1)}
        refused = await dev.http.post("/api/v1/skills", content=body, headers=headers)
        assert refused.status_code == 413, refused.text
        assert refused.json()["error"] == "Payload too large"
        assert body.pulled == 0
    chunked = CountedBody(HUGE)
    headers = {"content-type": "multipart/form-data; boundary=x"}
    refused = await dev.http.put("/api/v1/skills/nope", content=chunked, headers=headers)
    assert_too_large(refused, MAX_MULTIPART_BYTES)
    assert chunked.pulled <= MAX_MULTIPART_BYTES + CHUNK


async def test_a_skill_as_json_may_be_larger_than_the_default(api: Api) -> None:
    dev = await new_dev(api)
    files = {f"references/part{i}.md": "word " * 120_000 for i in range(2)}  # 600 KB each
    body = json.dumps({"skill_md": skill_md(name="long-refs"), "files": files}).encode()
    assert len(body) > DEFAULT_LIMIT
    created = await dev.http.post("/api/v1/skills", content=body, headers=JSON)
    assert created.status_code == 201, created.text


async def test_the_webhook_routes_keep_their_smaller_caps(api: Api) -> None:
    client = api.new_client()
    for path, limit in (
        ("/hooks/webhook/no-such-channel", HOOK_MAX_BYTES),
        ("/webhooks/stripe", MAX_WEBHOOK_BYTES),
    ):
        assert limit < DEFAULT_LIMIT
        over = b'{"id": "' + b"x" * limit + b'"}'
        assert_too_large(await client.post(path, content=over, headers=JSON), limit)
        body = CountedBody(HUGE)
        assert_too_large(await client.post(path, content=body, headers=JSON), limit)
        assert body.pulled <= limit + CHUNK


async def test_the_nul_guard_parses_only_bodies_with_a_nul_pattern(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []

    class CountingJson:
        @staticmethod
        def loads(data: bytes) -> object:
            parsed.append(len(data))
            return json.loads(data)

    monkeypatch.setattr(middleware, "json", CountingJson)
    dev = await new_dev(api)
    plain = _padded_key_body(900_000)
    assert (await dev.http.post("/api/v1/keys", content=plain, headers=JSON)).status_code == 201
    assert parsed == []
    escaped = b'{"name": "literal \\\\u0000", "scopes": ["logs:read"]}'
    assert (await dev.http.post("/api/v1/keys", content=escaped, headers=JSON)).status_code == 201
    assert parsed == [len(escaped)]


def test_a_real_server_answers_413_before_the_body_is_sent(live_server: str) -> None:
    host, port = live_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
            + b'{"email": "'
            + b"x" * CHUNK
        )
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = conn.recv(65536)
            if not piece:
                break
            answer += piece
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), head
    assert json.loads(body)["error"] == "Payload too large"
