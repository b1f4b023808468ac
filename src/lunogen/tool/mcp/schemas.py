"""API shapes of remote MCP servers. Credentials are write-only: responses say whether they
are configured, never what they are."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,29}$"
TOOL_NAME_PATTERN = r"^[A-Za-z0-9_.\-/]{1,128}$"

Auth = Literal["none", "bearer", "oauth"]
MIN_TIMEOUT, MAX_TIMEOUT, DEFAULT_TIMEOUT = 1, 120, 30
MIN_RESULT_CHARS, MAX_RESULT_CHARS, DEFAULT_RESULT_CHARS = 500, 7_000, 6_000
MAX_ALLOWED_TOOLS = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class McpServerCreate(_Strict):
    name: str = Field(
        pattern=NAME_PATTERN,
        description="Short name: lower-case letters, digits and `_`. Tools reach the model as "
        "`mcp_<name>_<tool>`.",
        examples=["orders"],
    )
    url: str = Field(
        max_length=2000,
        description="The server's Streamable HTTP endpoint. https:// only (http:// only on servers "
        "that allow private URLs, for development). Local (stdio) servers are not accepted.",
        examples=["https://example.com/mcp"],
    )
    auth: Auth = Field("none", description="`none`, `bearer` (a static token) or `oauth`.")
    bearer_token: str | None = Field(
        None, min_length=1, max_length=4000, description="Required with `auth: bearer`. Write-only."
    )
    allowed_tools: list[str] = Field(
        default_factory=list,
        max_length=MAX_ALLOWED_TOOLS,
        description="Tool names the agent may call. Empty (the default) allows none.",
    )
    timeout_seconds: int = Field(DEFAULT_TIMEOUT, ge=MIN_TIMEOUT, le=MAX_TIMEOUT)
    max_result_chars: int = Field(DEFAULT_RESULT_CHARS, ge=MIN_RESULT_CHARS, le=MAX_RESULT_CHARS)


class McpServerUpdate(_Strict):
    name: str | None = Field(None, pattern=NAME_PATTERN)
    url: str | None = Field(
        None,
        max_length=2000,
        description="A new URL drops the tool listing and any OAuth connection.",
    )
    auth: Auth | None = None
    bearer_token: str | None = Field(None, min_length=1, max_length=4000)
    allowed_tools: list[str] | None = Field(None, max_length=MAX_ALLOWED_TOOLS)
    timeout_seconds: int | None = Field(None, ge=MIN_TIMEOUT, le=MAX_TIMEOUT)
    max_result_chars: int | None = Field(None, ge=MIN_RESULT_CHARS, le=MAX_RESULT_CHARS)


class AllowedTools(_Strict):
    tools: list[str] = Field(
        max_length=MAX_ALLOWED_TOOLS, description="The whole allowlist (replaces the old one)."
    )


class McpTool(BaseModel):
    name: str
    model_name: str = Field(description="The name the model sees: `mcp_<server>_<tool>`.")
    title: str | None
    description: str
    input_schema: dict[str, Any]
    read_only: bool | None = Field(description="The server's `readOnlyHint` (a hint only).")
    destructive: bool | None = Field(description="The server's `destructiveHint` (a hint only).")
    allowed: bool


class McpServer(BaseModel):
    id: str
    agent_id: str
    name: str
    url: str
    auth: Auth
    credentials_configured: bool = Field(
        description="A bearer token is set, or (OAuth) tokens are stored."
    )
    oauth_connected: bool
    tools: list[McpTool] = Field(description="The server's tools as last listed.")
    allowed_tools: list[str]
    tools_listed_at: datetime | None
    timeout_seconds: int
    max_result_chars: int
    last_error: str | None
    calls_30d: int = Field(description="Tool calls by turns in the last 30 days.")
    created_at: datetime
    updated_at: datetime


class OAuthStart(BaseModel):
    authorization_url: str = Field(
        description="Send the owner's browser here; the authorization server redirects back to "
        "`redirect_uri` with `code` and `state`."
    )
    redirect_uri: str


class OAuthCallback(_Strict):
    code: str = Field(min_length=1, max_length=2000)
    state: str = Field(min_length=1, max_length=200)


class McpServerFileEntry(_Strict):
    """A remote MCP server in the agent file: where it is and what the agent may call.
    Never its credentials: after an import, set a bearer token or connect OAuth again."""

    name: str = Field(pattern=NAME_PATTERN)
    url: str = Field(max_length=2000, description="The server's https:// endpoint.")
    auth: Auth = "none"
    allowed_tools: list[str] = Field(default_factory=list, max_length=MAX_ALLOWED_TOOLS)
    timeout_seconds: int = Field(DEFAULT_TIMEOUT, ge=MIN_TIMEOUT, le=MAX_TIMEOUT)
    max_result_chars: int = Field(DEFAULT_RESULT_CHARS, ge=MIN_RESULT_CHARS, le=MAX_RESULT_CHARS)
