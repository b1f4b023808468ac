from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    """Every setting, read from `LUNOGEN_*` environment variables or `lunogen.toml`.

    Documented one by one in docs/configuration.md.
    """

    model_config = SettingsConfigDict(
        env_prefix="LUNOGEN_", toml_file="lunogen.toml", extra="ignore", frozen=True
    )

    data_dir: Path = Path("data")
    database_url: str | None = None
    redis_url: str | None = None
    secret_keys: str | None = None
    public_url: str = "http://127.0.0.1:8000"
    smtp_url: str | None = None
    mail_from: str = "LunoGen <no-reply@lunogen.local>"
    google_client_id: str | None = None
    google_client_secret: str | None = None
    google_discovery_url: str = "https://accounts.google.com/.well-known/openid-configuration"
    session_days: int = Field(default=14, ge=1, le=365)
    email_token_hours: int = Field(default=24, ge=1)
    reset_token_minutes: int = Field(default=60, ge=5)
    login_failures_per_window: int = Field(default=5, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=10)
    log_level: str = "INFO"
    log_json: bool = True
    allow_private_urls: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return value.rstrip("/")

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'lunogen.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def google_enabled(self) -> bool:
        return bool(self.google_client_id and self.google_client_secret)


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
