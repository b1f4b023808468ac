"""Validators shared by the channel and agent API schemas.

Use them as `Annotated` metadata: `Annotated[str, StringConstraints(...), Storable]` and
`Annotated[SecretStr, secret_rule(max_length=...)]`.
"""

from __future__ import annotations

from pydantic import AfterValidator, SecretStr
from pydantic_core import PydanticCustomError


def invalid(message: str) -> PydanticCustomError:
    """A validation error whose message is shown as is (no "Value error, " prefix)."""
    return PydanticCustomError("invalid", message.replace("{", "{{").replace("}", "}}"))


def storable(value: str) -> str:
    """Refuse what a database cannot store as text, as a 422 rather than a database error.

    PostgreSQL text refuses NUL, and lone surrogates cannot be encoded as UTF-8.
    """
    if "\x00" in value:
        raise invalid("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise invalid("must be valid Unicode text") from exc
    return value


Storable = AfterValidator(storable)


def secret_rule(*, max_length: int) -> AfterValidator:
    """Bounds for a secret input; the messages never echo the value."""

    def check(value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if not raw.strip():
            raise invalid("must not be empty")
        if len(raw) > max_length:
            raise invalid(f"must be at most {max_length} characters")
        storable(raw)
        return value

    return AfterValidator(check)
