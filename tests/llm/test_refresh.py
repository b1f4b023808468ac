"""Catalog refresh from the provider's `GET /models`: the function, the job and the CLI."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from lunogen.config import Settings
from lunogen.llm.catalog import bundled_models
from lunogen.llm.models import CatalogModel
from lunogen.llm.refresh import (
    LOCAL_CONTEXT_LENGTH,
    CatalogRefreshError,
    refresh_catalog,
    refresh_catalog_job,
)
from tests.cli.conftest import Cli, cli_env
from tests.fakes.openrouter import FakeOpenRouter
from tests.helpers import Api


async def _catalog(app: FastAPI) -> dict[str, tuple[str, str, int]]:
    async with app.state.sessionmaker() as session:
        rows = (await session.execute(select(CatalogModel))).scalars()
        return {m.id: (m.prompt_price, m.completion_price, m.context_length) for m in rows}


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/api/v1"


async def test_refresh_updates_prices_and_adds_models(
    app: FastAPI, openrouter: FakeOpenRouter, settings: Settings
) -> None:
    before = await _catalog(app)
    assert before["openai/gpt-4o-mini"][:2] == ("0.00000015", "0.0000006")
    assert "fake/echo-1" not in before
    openrouter.models[0]["pricing"]["prompt"] = "0.00000020"  # gpt-4o-mini got dearer

    async with app.state.sessionmaker() as session:
        result = await refresh_catalog(session, settings)
        await session.commit()

    assert (result.models, result.added) == (3, 1)
    after = await _catalog(app)
    assert after["openai/gpt-4o-mini"] == ("0.0000002", "0.0000006", 128000)
    assert after["fake/echo-1"] == ("0.000001", "0.000002", 32768)
    assert Decimal(after["anthropic/claude-sonnet-4"][1]) == Decimal("0.000015")
    # Models the provider no longer lists stay: agents may reference them.
    assert set(before) <= set(after)
    assert len(after) == len(bundled_models()) + 1
    request = openrouter.requests[-1]
    assert (request.method, request.path) == ("GET", "/api/v1/models")
    assert request.headers["x-title"] == "LunoGen"
    assert request.headers["authorization"] == f"Bearer {openrouter.api_key}"


async def test_refreshed_prices_show_in_the_api(
    api: Api, openrouter: FakeOpenRouter, settings: Settings
) -> None:
    openrouter.models[2]["pricing"]["completion"] = "0.0000025"
    async with api.app.state.sessionmaker() as session:
        await refresh_catalog(session, settings)
        await session.commit()
    person = await api.sign_up()
    response = await person.client.get("/api/v1/models")
    assert response.status_code == 200
    echo = next(m for m in response.json()["data"] if m["id"] == "fake/echo-1")
    assert echo["pricing"] == {"prompt": "0.000001", "completion": "0.0000025"}


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("failing", "answered HTTP 503"),
        ("unpriced", "listed no usable model"),
        ("wrong_path", "answered HTTP 404"),
        ("unreachable", "Could not reach"),
    ],
)
async def test_a_failed_refresh_raises_and_keeps_the_catalog(
    app: FastAPI, openrouter: FakeOpenRouter, settings: Settings, breakage: str, reason: str
) -> None:
    before = await _catalog(app)
    if breakage == "failing":
        openrouter.models_failure = 503
    elif breakage == "unpriced":
        openrouter.models = [{"id": "openai/gpt-4o-mini", "name": "No prices"}]
    elif breakage == "wrong_path":
        settings = settings.model_copy(update={"llm_base_url": f"{openrouter.root_url}/v1"})
    else:
        settings = settings.model_copy(update={"llm_base_url": _closed_port_url()})

    async with app.state.sessionmaker() as session:
        with pytest.raises(CatalogRefreshError) as caught:
            await refresh_catalog(session, settings)
        await session.commit()

    assert reason in caught.value.message
    assert caught.value.status_code == 502
    assert await _catalog(app) == before


async def test_a_non_openrouter_server_lists_free_models(
    app: FastAPI, openrouter: FakeOpenRouter, settings: Settings
) -> None:
    openrouter.models = [
        {"id": "llama3.2:3b", "object": "model", "created": 1, "owned_by": "library"},
        {"id": "Qwen/Qwen2.5-7B-Instruct", "object": "model", "max_model_len": 32768},
        {"object": "model"},  # no id: skipped
    ]
    local = settings.model_copy(update={"llm_api_style": "openai", "openrouter_api_key": None})
    async with app.state.sessionmaker() as session:
        result = await refresh_catalog(session, local)
        await session.commit()

    assert (result.models, result.added) == (2, 2)
    after = await _catalog(app)
    assert after["llama3.2:3b"] == ("0", "0", LOCAL_CONTEXT_LENGTH)
    assert after["Qwen/Qwen2.5-7B-Instruct"] == ("0", "0", 32768)
    request = openrouter.requests[-1]
    assert "authorization" not in request.headers
    assert "x-title" not in request.headers


async def test_the_periodic_job_commits_or_keeps_the_catalog(
    app: FastAPI, openrouter: FakeOpenRouter, settings: Settings
) -> None:
    openrouter.models[0]["pricing"]["completion"] = "0.0000007"
    assert await refresh_catalog_job(app.state.sessionmaker, settings) == 3
    assert (await _catalog(app))["openai/gpt-4o-mini"][1] == "0.0000007"

    before = await _catalog(app)
    openrouter.models_failure = 502
    assert await refresh_catalog_job(app.state.sessionmaker, settings) == 0  # no exception
    assert await _catalog(app) == before


def _cli(settings: Settings, openrouter: FakeOpenRouter) -> Cli:
    return Cli(
        env={
            **cli_env(settings),
            "LUNOGEN_LLM_BASE_URL": openrouter.base_url,
            "LUNOGEN_LLM_API_STYLE": "openrouter",
            "LUNOGEN_OPENROUTER_API_KEY": openrouter.api_key,
            "LUNOGEN_LLM_API_KEY": None,
        }
    )


async def test_cli_models_refresh(
    app: FastAPI, openrouter: FakeOpenRouter, settings: Settings
) -> None:
    openrouter.models[1]["pricing"]["prompt"] = "0.0000031"
    result = await _cli(settings, openrouter)("models", "refresh")

    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # Rich wraps long lines
    assert f"Refreshed 3 models (1 new) from {openrouter.base_url}." in output
    after = await _catalog(app)
    assert after["anthropic/claude-sonnet-4"][0] == "0.0000031"
    assert "fake/echo-1" in after


async def test_cli_models_refresh_failure_exits_1_and_keeps_the_catalog(
    app: FastAPI, openrouter: FakeOpenRouter, settings: Settings
) -> None:
    before = await _catalog(app)
    openrouter.models_failure = 503
    result = await _cli(settings, openrouter)("models", "refresh")

    assert result.exit_code == 1
    output = " ".join(result.output.split())
    assert f"Error: {openrouter.base_url}/models answered HTTP 503" in output
    assert "the catalog is unchanged" in output
    assert await _catalog(app) == before
