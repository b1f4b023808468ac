from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"


def parse_credit_packs(value: str) -> dict[str, int]:
    """`"starter:500,standard:2000"` → {"starter": 500, "standard": 2000}."""
    packs: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, credits = item.partition(":")
        if not name.strip().isidentifier() or not credits.strip().isdigit() or int(credits) <= 0:
            raise ValueError(f"credit_packs: {item!r} is not name:credits (a positive integer)")
        packs[name.strip()] = int(credits)
    return packs


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
    # `lunogen serve` speaks HTTPS itself (TLS 1.3 only) when both are set: PEM files, the
    # certificate chain and its private key (`--tls-cert` / `--tls-key` override them).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    smtp_url: str | None = None
    mail_from: str = "LunoGen <no-reply@lunogen.local>"
    privacy_contact: str | None = None  # shown on /privacy; unset: the address of mail_from
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    google_client_id: str | None = None
    google_client_secret: str | None = None
    google_discovery_url: str = "https://accounts.google.com/.well-known/openid-configuration"
    session_days: int = Field(default=14, ge=1, le=365)
    email_token_hours: int = Field(default=24, ge=1)
    reset_token_minutes: int = Field(default=60, ge=5)
    login_failures_per_window: int = Field(default=5, ge=1)
    login_failure_window_seconds: int = Field(default=900, ge=10)
    registrations_per_ip_per_hour: int = Field(default=5, ge=1)
    log_level: str = "INFO"
    log_json: bool = True
    # Request bodies above this are refused with 413 before they are read (skill uploads and
    # the webhook routes have caps of their own).
    max_body_bytes: int = Field(default=1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    allow_private_urls: bool = False
    sweep_interval_seconds: float = Field(default=5.0, ge=0, le=3600)
    # Jobs: "auto" is Redis Streams when redis_url is set, else in-process.
    job_broker: Literal["auto", "memory", "redis"] = "auto"
    job_queue: str = Field(default="lunogen:jobs", min_length=1, max_length=200)
    worker_concurrency: int = Field(default=20, ge=1, le=1000)
    # `lunogen serve --no-worker` sets this to false: the server sends jobs and runs none.
    embedded_worker: bool = True
    # How long `lunogen worker` lets running jobs finish after SIGTERM before cancelling them.
    shutdown_grace_seconds: float = Field(default=20, ge=0, le=600)
    turn_lease_seconds: float = Field(default=120, ge=1, le=3600)
    log_retention_days: int = Field(default=30, ge=1, le=3650)
    # Days between deleting an agent or an account and purging its data (the privacy policy
    # promises 30 at most); until then the owner can cancel an account's deletion.
    purge_after_days: int = Field(default=30, ge=1, le=30)
    catalog_refresh_hours: float = Field(default=24.0, ge=0, le=24 * 30)
    openrouter_api_key: SecretStr | None = None
    llm_base_url: str = OPENROUTER_BASE_URL
    llm_api_key: SecretStr | None = None
    llm_api_style: Literal["auto", "openrouter", "openai"] = "auto"
    llm_timeout_seconds: float = Field(default=60, gt=0, le=600)
    llm_max_retries: int = Field(default=3, ge=0, le=10)
    llm_app_name: str = "LunoGen"
    # Credits and billing (amounts in credits unless the name says otherwise).
    usd_per_credit: Decimal = Field(default=Decimal("0.01"), gt=0, le=100)
    markup_percent: int = Field(default=0, ge=0, le=1000)
    starter_credits: int = Field(default=100, ge=0, le=1_000_000)
    low_credit_threshold: int = Field(default=10, ge=0, le=1_000_000)
    credit_hold_seconds: int = Field(default=600, ge=30, le=86_400)
    credit_packs: str = "starter:500,standard:2000,large:10000"
    topup_min_credits: int = Field(default=500, ge=1)
    topup_max_credits: int = Field(default=100_000, ge=1)
    billing_currency: str = Field(default="usd", pattern=r"^[a-z]{3}$")
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    stripe_pro_price_id: str | None = None
    # The API version Stripe renders webhook events in: create the endpoint with it (the
    # version of the pinned `stripe` SDK). Events in another version are logged, still applied.
    stripe_webhook_api_version: str = Field(
        default="2026-10-28.endive", pattern=r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$"
    )
    # Acceptable-use moderation (docs/operations.md "Moderation"): an OpenAI-compatible
    # `POST {moderation_url}/moderations` classifier, called after each turn; unset: rules only.
    moderation_url: str | None = None
    moderation_api_key: SecretStr | None = None
    moderation_model: str | None = None
    moderation_timeout_seconds: float = Field(default=15, gt=0, le=120)
    # Open or upheld flags of one agent within the window that suspend it (0: never).
    moderation_suspend_after: int = Field(default=5, ge=0, le=10_000)
    moderation_window_hours: float = Field(default=24, gt=0, le=24 * 30)
    # How stale another process's copy of the rules may be (this process's is renewed at once).
    moderation_rules_refresh_seconds: float = Field(default=10, ge=0, le=3600)
    # Messaging providers' API roots (tests and operators may point them elsewhere; loopback
    # is reachable only with allow_private_urls). Telegram: <base>/bot<token>/<method>;
    # WhatsApp: <base>/<api_version>/<path>.
    telegram_api_base: str = "https://api.telegram.org"
    whatsapp_api_base: str = "https://graph.facebook.com"
    # LunoEdge: "auto" is bwrap, else gVisor, whichever works here first; `process` (no
    # isolation) is used only when named here.
    sandbox: Literal["auto", "bwrap", "gvisor", "process"] = "auto"
    # Workspace quota: "kernel" (an ext4 image per workspace, loop-mounted: needs root and loop
    # devices), "watcher" (polled size and file count), or "auto" (kernel where it works).
    sandbox_quota: Literal["auto", "kernel", "watcher"] = "auto"
    # Agent workspaces; default: <data_dir>/workspaces.
    sandbox_dir: Path | None = None

    @property
    def workspaces_dir(self) -> Path:
        return self.sandbox_dir or self.data_dir / "workspaces"

    @property
    def uses_redis_jobs(self) -> bool:
        return self.job_broker == "redis" or (self.job_broker == "auto" and bool(self.redis_url))

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

    @field_validator("llm_base_url")
    @classmethod
    def _check_llm_base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or not urlsplit(value).hostname:
            raise ValueError("llm_base_url must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("moderation_url")
    @classmethod
    def _check_moderation_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")) or not urlsplit(value).hostname:
            raise ValueError("moderation_url must be an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("credit_packs")
    @classmethod
    def _check_credit_packs(cls, value: str) -> str:
        parse_credit_packs(value)
        return value

    @property
    def credit_pack_map(self) -> dict[str, int]:
        """Top-up packs offered at checkout: name → credits."""
        return parse_credit_packs(self.credit_packs)

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'lunogen.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def serves_tls(self) -> bool:
        """Whether `lunogen serve` terminates TLS itself (both files set)."""
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def secure_cookies(self) -> bool:
        """Whether browsers reach this server over https only: it serves TLS itself, or its
        public URL (a TLS-terminating proxy in front) is https. Then cookies are `Secure` and
        every answer carries HSTS."""
        return self.serves_tls or self.public_url.startswith("https://")

    @property
    def google_enabled(self) -> bool:
        return bool(self.google_client_id and self.google_client_secret)

    @property
    def llm_base_is_openrouter(self) -> bool:
        host = urlsplit(self.llm_base_url).hostname or ""
        return host == "openrouter.ai" or host.endswith(".openrouter.ai")

    @property
    def llm_uses_openrouter(self) -> bool:
        """Whether to send OpenRouter's extensions (routing, usage, attribution headers)."""
        if self.llm_api_style == "auto":
            return self.llm_base_is_openrouter
        return self.llm_api_style == "openrouter"

    @property
    def llm_key(self) -> str | None:
        """The bearer key for the model endpoint: `llm_api_key`, else `openrouter_api_key`."""
        for secret in (self.llm_api_key, self.openrouter_api_key):
            if secret is not None and secret.get_secret_value():
                return secret.get_secret_value()
        return None

    @property
    def llm_provider_problem(self) -> str | None:
        """Why no model can be called, naming the setting to set; None when configured.

        OpenRouter needs a key; any other base URL (a local Ollama or vLLM) counts as configured
        without one.
        """
        if self.llm_key is None and self.llm_base_is_openrouter:
            return (
                "No model provider configured: set LUNOGEN_OPENROUTER_API_KEY (or "
                "LUNOGEN_LLM_BASE_URL for a local OpenAI-compatible server)"
            )
        return None

    @property
    def llm_configured(self) -> bool:
        return self.llm_provider_problem is None


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
