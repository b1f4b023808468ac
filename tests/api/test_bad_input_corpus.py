"""Inputs that once answered 500: each now gets a clear 4xx on SQLite and on PostgreSQL.

One row per cause found by the December 2026 review (L3, L4) and its close relatives. Three
need no authentication (the Standard Webhooks and Stripe signature headers). Every row is sent
through the real app; a row's answer must be its status and its `error`, with a message.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from lunogen.kit import middleware
from lunogen.skill import package
from tests.agent.support import create_agent, new_dev
from tests.api.test_errors import NUL_MESSAGE
from tests.conftest import BASE_URL
from tests.fakes.openrouter import (  # noqa: F401 (fixtures)
    FakeOpenRouter,
    openrouter,
    openrouter_server,
    openrouter_settings,
)
from tests.helpers import Api
from tests.skill.support import skill_md

STRIPE_SECRET = "whsec_corpus_secret"
OVERFLOWING_TIME = "9999-12-31T23:59:59-23:59"  # after the year 9999 once in UTC
UNDERFLOWING_TIME = "0001-01-01T00:00:00+23:59"  # before the year 1 once in UTC


@pytest.fixture
def settings_overrides(openrouter: FakeOpenRouter) -> dict[str, object]:  # noqa: F811
    return openrouter_settings(openrouter, stripe_webhook_secret=STRIPE_SECRET)


@dataclass
class Target:
    """What the rows need: a developer's key client, an agent and its webhook channel.

    The clients get a 500 as an answer rather than as the app's exception, so that one run
    lists every row that fails.
    """

    keyed: httpx.AsyncClient
    anonymous: httpx.AsyncClient
    agent_id: str
    channel_id: str


@dataclass(frozen=True)
class Row:
    name: str
    send: Callable[[Target], Any]  # returns the awaitable response
    status: int
    error: str


def _hook_headers(**overrides: str | bytes) -> dict[str, str | bytes]:
    headers: dict[str, str | bytes] = {
        "content-type": "application/json",
        "webhook-id": "msg_1",
        "webhook-timestamp": "1700000000",
        "webhook-signature": "v1,AAAA",
    }
    headers.update(overrides)
    return headers


def _hook(headers: dict[str, str | bytes]) -> Callable[[Target], Any]:
    def send(t: Target) -> Any:
        return t.anonymous.post(f"/hooks/webhook/{t.channel_id}", content=b"{}", headers=headers)

    return send


def _stripe(signature: str | bytes) -> Callable[[Target], Any]:
    def send(t: Target) -> Any:
        headers = {"content-type": "application/json", "stripe-signature": signature}
        return t.anonymous.post("/webhooks/stripe", content=b"{}", headers=headers)

    return send


def _get(path: str) -> Callable[[Target], Any]:
    def send(t: Target) -> Any:
        return t.keyed.get(path.format(agent=t.agent_id))

    return send


def _skill(body: bytes) -> Callable[[Target], Any]:
    def send(t: Target) -> Any:
        headers = {"content-type": "application/json"}
        return t.keyed.post("/api/v1/skills", content=body, headers=headers)

    return send


def _skill_json(**package: Any) -> bytes:
    # json.dumps escapes a lone surrogate such as \ud800 (valid JSON that decodes to it).
    return json.dumps({"skill_md": skill_md(), **package}).encode()


def _nul_key(content_type: str, body: bytes | None = None) -> Callable[[Target], Any]:
    raw = body or b'{"name": "nul\\u0000key", "scopes": ["logs:read"]}'

    def send(t: Target) -> Any:
        return t.keyed.post("/api/v1/keys", content=raw, headers={"content-type": content_type})

    return send


def _nul_register(content_type: str) -> Callable[[Target], Any]:
    body = {
        "name": "nul\x00name",
        "email": "nul.register@example.com",
        "password": "a long passphrase zz 9",
        "age_confirmed": True,
        "accept_terms": True,
        "accept_privacy": True,
    }

    def send(t: Target) -> Any:
        return t.anonymous.post(
            "/api/v1/auth/register",
            content=json.dumps(body).encode(),
            headers={"content-type": content_type},
        )

    return send


DEEP_FLOW = skill_md(extra="z: " + "[" * 5000 + "]" * 5000 + "\n")
DEEP_BLOCK = skill_md(extra="z:\n" + "- " * 3000 + "x\n")
INVALID = "Invalid webhook signature"
STRIPE = "Invalid Stripe signature"
VALIDATION = "Validation failed"

CORPUS = [
    # -- before authentication ------------------------------------------------------------
    Row(
        "webhook-timestamp of 400 digits",
        _hook(_hook_headers(**{"webhook-timestamp": "9" * 400})),
        401,
        INVALID,
    ),
    Row(
        "webhook-timestamp of 5000 digits",
        _hook(_hook_headers(**{"webhook-timestamp": "9" * 5000})),
        401,
        INVALID,
    ),
    Row(
        "webhook-timestamp with a non-ASCII digit",
        _hook(_hook_headers(**{"webhook-timestamp": b"17\xb2"})),
        401,
        INVALID,
    ),
    Row(
        "webhook-timestamp negative and huge",
        _hook(_hook_headers(**{"webhook-timestamp": "-" + "9" * 400})),
        401,
        INVALID,
    ),
    Row(
        "webhook-signature with Latin-1 bytes",
        _hook(_hook_headers(**{"webhook-signature": b"v1,\xff\xfe"})),
        401,
        INVALID,
    ),
    Row("Stripe t= of 5000 digits", _stripe("t=" + "9" * 5000 + ",v1=a"), 400, STRIPE),
    Row("Stripe t= with a non-ASCII digit", _stripe(b"t=\xb2,v1=a"), 400, STRIPE),
    Row("Stripe v1= with a non-ASCII byte", _stripe(b"t=1700000000,v1=\xb2"), 400, STRIPE),
    Row("Stripe t= of 20 digits", _stripe("t=" + "9" * 20 + ",v1=a"), 400, STRIPE),
    Row(
        "NUL via application/merge-patch+json (register)",
        _nul_register("application/merge-patch+json"),
        422,
        VALIDATION,
    ),
    # -- authenticated ----------------------------------------------------------------------
    Row(
        "before_id past 64 bits",
        _get("/api/v1/billing/transactions?before_id=99999999999999999999"),
        422,
        VALIDATION,
    ),
    Row(
        "before_id just past 64 bits",
        _get(f"/api/v1/billing/transactions?before_id={2**63}"),
        422,
        VALIDATION,
    ),
    Row(
        "transactions since past year 9999",
        _get(f"/api/v1/billing/transactions?since={OVERFLOWING_TIME}"),
        422,
        VALIDATION,
    ),
    Row(
        "transactions until before year 1",
        _get(f"/api/v1/billing/transactions?until={UNDERFLOWING_TIME}"),
        422,
        VALIDATION,
    ),
    Row(
        "transactions CSV since past year 9999",
        _get(f"/api/v1/billing/transactions?format=csv&since={OVERFLOWING_TIME}"),
        422,
        VALIDATION,
    ),
    Row(
        "transactions naive since with an aware until",
        _get("/api/v1/billing/transactions?since=2026-01-02T00:00:00&until=2026-01-01T00:00:00Z"),
        422,
        VALIDATION,
    ),
    Row(
        "agent logs since past year 9999",
        _get(f"/api/v1/agents/{{agent}}/logs?since={OVERFLOWING_TIME}"),
        422,
        VALIDATION,
    ),
    Row(
        "agent logs since before year 1",
        _get(f"/api/v1/agents/{{agent}}/logs?since={UNDERFLOWING_TIME}"),
        422,
        VALIDATION,
    ),
    Row(
        "lone surrogate in a skill file",
        _skill(_skill_json(files={"scripts/a.py": "\ud800x"})),
        422,
        VALIDATION,
    ),
    Row(
        "lone surrogate in a skill file path",
        _skill(_skill_json(files={"scripts/\udc80.py": "x"})),
        422,
        VALIDATION,
    ),
    Row(
        "lone surrogate in SKILL.md",
        _skill(json.dumps({"skill_md": skill_md(body="\udfffx")}).encode()),
        422,
        VALIDATION,
    ),
    Row(
        "front matter nested 5000 deep (flow)",
        _skill(json.dumps({"skill_md": DEEP_FLOW}).encode()),
        422,
        VALIDATION,
    ),
    Row(
        "front matter nested 3000 deep (block)",
        _skill(json.dumps({"skill_md": DEEP_BLOCK}).encode()),
        422,
        VALIDATION,
    ),
    Row(
        "NUL via application/merge-patch+json (key)",
        _nul_key("application/merge-patch+json"),
        422,
        VALIDATION,
    ),
    Row(
        "NUL via application/vnd.api+json",
        _nul_key("application/vnd.api+json; charset=utf-8"),
        422,
        VALIDATION,
    ),
    Row("NUL via Application/JSON in capitals", _nul_key("Application/JSON"), 422, VALIDATION),
    Row(
        "NUL in a UTF-16 JSON body",
        _nul_key(
            "application/json",
            '{"name": "nul\\u0000key", "scopes": ["logs:read"]}'.encode("utf-16"),
        ),
        422,
        VALIDATION,
    ),
]


@pytest.fixture
async def target(api: Api) -> AsyncIterator[Target]:
    dev = await new_dev(api)
    agent = await create_agent(dev, channels=[{"type": "webhook"}])
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    auth = {"Authorization": dev.http.headers["Authorization"]}
    async with (
        httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=auth) as keyed,
        httpx.AsyncClient(transport=transport, base_url=BASE_URL) as anonymous,
    ):
        yield Target(
            keyed=keyed,
            anonymous=anonymous,
            agent_id=agent["id"],
            channel_id=agent["channels"][0]["id"],
        )


async def test_every_corpus_input_gets_its_4xx(api: Api, target: Target) -> None:
    wrong: list[str] = []
    for row in CORPUS:
        response: httpx.Response = await row.send(target)
        body = (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        if response.status_code != row.status or body.get("error") != row.error:
            wrong.append(f"{row.name}: {response.status_code} {response.text[:300]}")
        elif not isinstance(body.get("message"), str) or not body["message"]:
            wrong.append(f"{row.name}: no message in {body}")
    assert not wrong, "\n".join(wrong)
    # Nothing got in: no key with a NUL name, no account, no skill.
    keys = (await target.keyed.get("/api/v1/keys")).json()["data"]
    assert all("\x00" not in key["name"] for key in keys)
    assert not await api.emails("nul.register@example.com")
    assert (await target.keyed.get("/api/v1/skills")).json()["data"] == []


async def test_nul_rows_name_the_field(target: Target) -> None:
    response = await _nul_key("application/merge-patch+json")(target)
    assert response.json()["details"] == [{"field": "name", "message": NUL_MESSAGE}]
    response = await _nul_register("application/problem+json")(target)
    assert response.json()["details"] == [{"field": "name", "message": NUL_MESSAGE}]


def test_deep_front_matter_is_refused_before_yaml_reads_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_yaml(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("yaml.load ran on front matter refused by its bracket depth")

    monkeypatch.setattr(package.yaml, "load", no_yaml)
    with pytest.raises(package.PackageError, match="nests deeper than"):
        package.parse_front_matter("name: x\nz: " + "[" * 5000 + "]" * 5000)


def test_front_matter_depth_counts_nodes_of_any_style() -> None:
    fine = "name: deep-ok\ndescription: d\nmetadata:\n  key: value\nallowed-tools: [a, b]\n"
    assert package.parse_front_matter(fine)["metadata"] == {"key": "value"}
    for too_deep in (
        "name: x\nz:\n" + "  " + "- " * 20 + "x\n",
        "name: x\nz: " + "{a: " * 20 + "1" + "}" * 20,
    ):
        with pytest.raises(package.PackageError, match="nests deeper than 8 levels"):
            package.parse_front_matter(too_deep)


@pytest.mark.parametrize(
    "content_type",
    ["Application/X-WWW-Form-Urlencoded", "text/plain", "", "application/merge-patch+json"],
)
def test_the_nul_guard_reads_any_body_as_json_whatever_its_declared_type(content_type: str) -> None:
    # kit.forms reads a body as JSON unless it takes it for a form (a case-sensitive test).
    body = b'{"name": "a\\u0000b"}'
    assert middleware._nul_in_body(body, content_type) == ("body", "name")
    if "form" not in content_type.lower():  # a form with zero bytes is refused as a form
        utf32 = body.decode().encode("utf-32")
        assert middleware._nul_in_body(utf32, content_type) == ("body", "name")
