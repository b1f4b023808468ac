"""Which provider is configured, and the reason given when none is."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from lunogen.config import Settings
from lunogen.llm.provider import ModelClient, ProviderNotConfiguredError

REASON = (
    "No model provider configured: set LUNOGEN_OPENROUTER_API_KEY (or LUNOGEN_LLM_BASE_URL for "
    "a local OpenAI-compatible server)"
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    for name in ("OPENROUTER_API_KEY", "LLM_API_KEY", "LLM_BASE_URL", "LLM_API_STYLE"):
        monkeypatch.delenv(f"LUNOGEN_{name}", raising=False)
    monkeypatch.chdir(str(tmp_path))  # no lunogen.toml


def test_openrouter_without_a_key_is_not_configured() -> None:
    settings = Settings()
    assert settings.llm_configured is False
    assert settings.llm_provider_problem == REASON
    with pytest.raises(ProviderNotConfiguredError) as caught:
        ModelClient.from_settings(settings)
    assert caught.value.message == REASON


def test_a_key_from_the_environment_configures_openrouter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LUNOGEN_OPENROUTER_API_KEY", "sk-or-v1-abc")
    settings = Settings()
    assert settings.llm_configured and settings.llm_provider_problem is None
    assert settings.llm_key == "sk-or-v1-abc"
    assert settings.llm_uses_openrouter
    assert "sk-or-v1-abc" not in repr(settings)


def test_a_local_server_counts_as_configured_without_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LUNOGEN_LLM_BASE_URL", "http://127.0.0.1:11434/v1/")
    settings = Settings()
    assert settings.llm_configured
    assert settings.llm_base_url == "http://127.0.0.1:11434/v1"
    assert settings.llm_key is None
    assert settings.llm_uses_openrouter is False  # auto: only openrouter.ai gets the extensions


def test_llm_api_key_takes_precedence_and_style_can_be_forced() -> None:
    settings = Settings(
        openrouter_api_key=SecretStr("sk-or"),
        llm_api_key=SecretStr("sk-local"),
        llm_base_url="https://llm.internal.example/v1",
        llm_api_style="openrouter",
    )
    assert settings.llm_key == "sk-local"
    assert settings.llm_uses_openrouter
    assert Settings(openrouter_api_key=SecretStr("")).llm_configured is False


@pytest.mark.parametrize("url", ["ftp://x/v1", "openrouter.ai/api/v1", "http://"])
def test_a_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ValidationError, match="llm_base_url"):
        Settings(llm_base_url=url)


def test_timeouts_and_retries_are_bounded() -> None:
    with pytest.raises(ValidationError):
        Settings(llm_timeout_seconds=0)
    with pytest.raises(ValidationError):
        Settings(llm_max_retries=-1)
    assert Settings(llm_max_retries=0).llm_max_retries == 0
