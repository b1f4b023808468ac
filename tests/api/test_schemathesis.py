"""Schemathesis over our own /api/openapi.json: generated requests, valid and invalid.

Every operation is fuzzed anonymously and with a signed-up person's `full` key (Pro plan, so the
30/min Free limit does not turn the run into 429s), and with an admin's key for the admin
endpoints. No request may get a 5xx, every response must match what the document says (status
codes, content types, bodies, headers), and every error must have the `{"error", "message"}`
shape without a stack trace.

Runs are deterministic (the same inputs for the same code), so CI does not flake. To explore
further, `LUNOGEN_FUZZ_RANDOM=1 LUNOGEN_FUZZ_EXAMPLES=200 make test PYTEST_ARGS=tests/api`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, CheckContext, GenerationMode, Response, checks

from tests.agent.support import create_agent, new_dev
from tests.api.bridge import LoopBridge
from tests.conftest import BASE_URL
from tests.helpers import Api

MAX_EXAMPLES = int(os.environ.get("LUNOGEN_FUZZ_EXAMPLES", "12"))
DERANDOMIZE = os.environ.get("LUNOGEN_FUZZ_RANDOM") != "1"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
SECURITY_HEADERS = ("content-security-policy", "x-frame-options", "x-content-type-options")


def error_contract(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Our own rules on every answer: security headers; errors as JSON, never a traceback."""
    missing = [name for name in SECURITY_HEADERS if name not in response.headers]
    assert not missing, f"security headers missing: {missing}"
    assert "Traceback" not in response.text, "a stack trace leaked into the response"
    content_type = response.headers.get("content-type", [""])[0]
    if content_type.startswith("text/html"):
        sent = response.request.headers.get("content-type", "")
        assert sent.startswith(FORM_TYPES), "HTML answered to a request that was not a form post"
    elif response.status_code >= 400:
        body = json.loads(response.text)
        assert isinstance(body, dict), body
        assert isinstance(body.get("error"), str) and body["error"], body
        assert "detail" not in body, body  # FastAPI's default shape must never leak through
        if response.status_code == 422:
            assert isinstance(body.get("details"), list), body
    return None


CHECKS: list[Callable[..., Any]] = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    error_contract,
]


async def _fuzz(
    api: Api,
    *,
    headers: dict[str, str] | None,
    modes: tuple[GenerationMode, ...],
    only: Callable[[str], bool] = lambda path: True,
    extra_checks: tuple[Callable[..., Any], ...] = (),
) -> tuple[int, list[str]]:
    """Run every selected operation through schemathesis; return (operations, failure reports)."""
    client = api.new_client()
    spec = (await client.get("/api/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    schema.app = LoopBridge(api.app, asyncio.get_running_loop())
    run_checks = [*CHECKS, *extra_checks]

    def run_all() -> tuple[int, list[str]]:
        failures: list[str] = []
        count = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            if not only(operation.path):
                continue
            count += 1
            for mode in modes:

                @given(case=operation.as_strategy(generation_mode=mode, headers=headers))
                @settings(
                    max_examples=MAX_EXAMPLES,
                    deadline=None,
                    database=None,
                    derandomize=DERANDOMIZE,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: Case) -> None:
                    case.call_and_validate(checks=run_checks)

                try:
                    check()
                except Unsatisfiable:
                    # Nothing to make invalid: the only input is the fixed Authorization header,
                    # or the operation takes no input at all (a public list).
                    takes_input = any(operation.iter_parameters()) or bool(operation.body)
                    assert mode is GenerationMode.NEGATIVE, operation.label
                    assert headers or not takes_input, operation.label
                except (Exception, BaseExceptionGroup) as exc:
                    failures.append(f"{operation.label} [{mode.value}]: {exc}")
        return count, failures

    return await asyncio.to_thread(run_all)


BOTH = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@pytest.mark.schemathesis
async def test_anonymous_requests(api: Api) -> None:
    count, failures = await _fuzz(api, headers=None, modes=BOTH)
    assert count >= 15
    assert not failures, "\n\n".join(failures)


@pytest.mark.schemathesis
async def test_requests_with_a_full_key(api: Api) -> None:
    person = await api.sign_up()
    await api.set_plan(person, "pro")
    key = await api.create_key(person, ["full"])
    count, failures = await _fuzz(
        api,
        headers={"Authorization": f"Bearer {key}"},
        modes=BOTH,
        extra_checks=(checks.ignored_auth,),
    )
    assert count >= 15
    assert not failures, "\n\n".join(failures)
    # The key is still the person's and still works: nothing generated could break the account.
    response = await api.key_client(key).get("/api/v1/me")
    assert response.status_code == 200
    assert response.json()["email"] == person.email


@pytest.mark.schemathesis
async def test_admin_endpoints_with_an_admin_key(api: Api) -> None:
    admin = await api.sign_up()
    await api.make_admin(admin)
    await api.set_plan(admin, "pro")
    key = await api.create_key(admin, ["full"])
    count, failures = await _fuzz(
        api,
        headers={"Authorization": f"Bearer {key}"},
        modes=BOTH,
        only=lambda path: path.startswith("/api/v1/admin/"),
    )
    assert count >= 2
    assert not failures, "\n\n".join(failures)


# -- signature headers of the hook routes -----------------------------------------------------
# Schemathesis sends only printable header values, and the Stripe route is not in the document:
# Hypothesis drives both hook routes with hostile Standard Webhooks and Stripe-Signature headers.

HOOK_STRIPE_SECRET = "whsec_fuzz_secret"
HOOK_EXAMPLES = int(os.environ.get("LUNOGEN_FUZZ_HOOK_EXAMPLES", "120"))
# What a server lets through in a header value: visible ASCII, space, tab, and Latin-1 bytes.
_HEADER_BYTES = bytes([9, 32, *range(0x21, 0x7F), *range(0x80, 0x100)])
_junk = st.binary(max_size=80).map(
    lambda b: bytes(_HEADER_BYTES[x % len(_HEADER_BYTES)] for x in b)
)
_digits = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(lambda n: str(n).encode()),
    st.integers(min_value=1, max_value=6000).map(lambda n: b"9" * n),
    st.integers(min_value=0, max_value=2**64).map(lambda n: f"{n}".encode() + b"\xb2"),
)
_header = st.one_of(_junk, _digits, st.just(b""), st.none())
_body = st.one_of(st.just(b"{}"), st.binary(max_size=200), st.just(b'{"id":"1","from":"a"}'))


def _stripe_signature() -> st.SearchStrategy[bytes | None]:
    entry = st.tuples(
        st.sampled_from([b"t", b"v1", b"v0", b"", b"T", b"v1 "]),
        st.one_of(_digits, _junk, st.just(b"")),
    ).map(lambda kv: kv[0] + b"=" + kv[1])
    return st.one_of(_header, st.lists(entry, max_size=5).map(b",".join))


def _no_5xx(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.status_code} {response.text[:200]}"
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert "Traceback" not in response.text


@pytest.mark.parametrize("settings_overrides", [{"stripe_webhook_secret": HOOK_STRIPE_SECRET}])
async def test_hook_routes_never_fail_on_hostile_signature_headers(api: Api) -> None:
    dev = await new_dev(api)
    agent = await create_agent(dev, channels=[{"type": "webhook"}])
    channel = agent["channels"][0]
    hook_path = f"/hooks/webhook/{channel['id']}"
    loop = asyncio.get_running_loop()
    transport = httpx.ASGITransport(app=api.app, raise_app_exceptions=False)
    client = httpx.AsyncClient(transport=transport, base_url=BASE_URL)

    def post(path: str, headers: dict[str, bytes | None], body: bytes) -> httpx.Response:
        sent = {name: value for name, value in headers.items() if value is not None}
        sent["content-type"] = b"application/json"
        call = client.post(path, content=body, headers=sent)
        return asyncio.run_coroutine_threadsafe(call, loop).result(timeout=60)

    fuzz = settings(
        max_examples=HOOK_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=DERANDOMIZE,
        suppress_health_check=list(HealthCheck),
    )

    @fuzz
    @given(msg_id=_header, stamp=_header, signature=_header, body=_body, signed=st.booleans())
    @example(msg_id=b"x", stamp=b"9" * 400, signature=b"v1,AAAA", body=b"{}", signed=False)
    @example(msg_id=b"x", stamp=b"-" + b"9" * 20, signature=b"v1,AAAA", body=b"{}", signed=True)
    def standard_webhooks(
        msg_id: bytes | None,
        stamp: bytes | None,
        signature: bytes | None,
        body: bytes,
        signed: bool,
    ) -> None:
        if signed and msg_id is not None and stamp is not None:
            # A correct signature over whatever the id and timestamp are: reaches past the check.
            text_id, text_stamp = msg_id.decode("latin-1"), stamp.decode("latin-1")
            key = base64.b64decode(channel["secret"]["value"].removeprefix("whsec_"))
            signed_part = f"{text_id}.{text_stamp}.".encode() + body
            digest = hmac.new(key, signed_part, hashlib.sha256).digest()
            signature = b"v1," + base64.b64encode(digest)
        headers = {"webhook-id": msg_id, "webhook-timestamp": stamp, "webhook-signature": signature}
        _no_5xx(post(hook_path, headers, body))

    @fuzz
    @given(signature=_stripe_signature(), body=_body)
    @example(signature=b"t=" + b"9" * 5000 + b",v1=a", body=b"{}")
    @example(signature=b"t=\xb2,v1=a", body=b"{}")
    @example(signature=b"t=1700000000,v1=\xb2", body=b"{}")
    def stripe_signature(signature: bytes | None, body: bytes) -> None:
        _no_5xx(post("/webhooks/stripe", {"stripe-signature": signature}, body))

    try:
        await asyncio.to_thread(standard_webhooks)
        await asyncio.to_thread(stripe_signature)
    finally:
        await client.aclose()
