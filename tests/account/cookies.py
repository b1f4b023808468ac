"""Reading `Set-Cookie` headers as a browser would see them."""

from __future__ import annotations

import httpx


def set_cookie(response: httpx.Response, name: str) -> dict[str, str | bool]:
    """The attributes of the `name` cookie set by `response` (lower-case keys)."""
    for header in response.headers.get_list("set-cookie"):
        first, *attributes = [part.strip() for part in header.split(";")]
        cookie_name, _, value = first.partition("=")
        if cookie_name != name:
            continue
        parsed: dict[str, str | bool] = {"value": value}
        for attribute in attributes:
            key, sep, attr_value = attribute.partition("=")
            parsed[key.lower()] = attr_value if sep else True
        return parsed
    raise AssertionError(f"no Set-Cookie for {name}: {response.headers.get_list('set-cookie')}")
