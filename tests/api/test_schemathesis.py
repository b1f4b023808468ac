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
import json
import os
from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, CheckContext, GenerationMode, Response, checks

from tests.api.bridge import LoopBridge
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
                    # Nothing to make invalid: the only input is the fixed Authorization header.
                    assert mode is GenerationMode.NEGATIVE and headers, operation.label
                except (Exception, BaseExceptionGroup) as exc:
                    failures.append(f"{operation.label} [{mode.value}]: {exc}")
        return count, failures

    return await asyncio.to_thread(run_all)


BOTH = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


async def test_anonymous_requests(api: Api) -> None:
    count, failures = await _fuzz(api, headers=None, modes=BOTH)
    assert count >= 15
    assert not failures, "\n\n".join(failures)


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
