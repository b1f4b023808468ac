from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request


@dataclass(frozen=True)
class ClientInfo:
    """Where a request came from, for audit rows and consent records."""

    ip: str | None
    user_agent: str | None

    @classmethod
    def from_request(cls, request: Request) -> ClientInfo:
        ip = request.client.host if request.client else None
        ua = request.headers.get("user-agent")
        return cls(ip=ip, user_agent=ua[:500] if ua else None)


def wants_html(request: Request) -> bool:
    """A browser form post (answer with a page or redirect) rather than an API call."""
    content_type = request.headers.get("content-type", "")
    return content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data"))


def media_type(content_type: str) -> str:
    """`Application/JSON; charset=utf-8` → `application/json`."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_media_type(content_type: str) -> bool:
    """What FastAPI parses as JSON: `application/json` and every `application/<x>+json`."""
    main, _, sub = media_type(content_type).partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))
