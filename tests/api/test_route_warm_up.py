"""The server resolves every route once it answers (`lunogen.app._resolve_routes`); a test's app
skips that warm-up unless marked `route_warm_up` (tests/conftest.py `lazy_route_resolution`),
and its routes answer the same, resolved as requests reach them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from starlette.routing import BaseRoute

import lunogen.app
from tests.helpers import Api


@pytest.fixture
def warm_ups(monkeypatch: pytest.MonkeyPatch) -> list[Sequence[BaseRoute]]:
    """The route lists the start-up warm-up walked (set before the app starts)."""
    walked: list[Sequence[BaseRoute]] = []
    real = lunogen.app.iter_route_contexts

    def walking(routes: Sequence[BaseRoute]) -> Iterator[object]:
        walked.append(routes)
        return real(routes)

    monkeypatch.setattr(lunogen.app, "iter_route_contexts", walking)
    return walked


async def _routes_answer(api: Api) -> None:
    client = api.new_client()
    assert (await client.get("/healthz")).status_code == 200  # the first router
    assert (await client.get("/login")).status_code == 200  # a dashboard page, the last ones
    missing = await client.get("/api/v1/no-such-thing")
    assert missing.status_code == 404
    assert missing.json()["error"] == "Not found"
    person = await api.sign_up()
    assert (await person.client.get("/api/v1/keys")).status_code == 200


@pytest.mark.route_warm_up
async def test_a_started_server_has_walked_every_route(
    warm_ups: list[Sequence[BaseRoute]], api: Api
) -> None:
    await api.app.state.started
    assert warm_ups == [api.app.routes]
    await _routes_answer(api)


async def test_a_test_app_resolves_routes_as_requests_reach_them(
    warm_ups: list[Sequence[BaseRoute]], api: Api
) -> None:
    await api.app.state.started
    assert warm_ups == []
    await _routes_answer(api)
