from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError


class DateOutOfRangeError(OverflowError):
    """A time that falls outside the years 1-9999 once converted to UTC."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """`value` in UTC; a naive value is taken as UTC already.

    Raises DateOutOfRangeError when the offset carries it past 9999-12-31 or before 0001-01-01
    (`9999-12-31T23:59:59-23:59` is a valid ISO 8601 time that `datetime` cannot hold in UTC).
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:
        raise DateOutOfRangeError(
            f"{value.isoformat()} is outside the years 1 to 9999 in UTC"
        ) from exc


def _validated_utc(value: datetime) -> datetime:
    try:
        return as_utc(value)
    except DateOutOfRangeError as exc:
        raise PydanticCustomError("date_out_of_range", str(exc)) from exc


# An input time (query parameter or body field), converted to UTC: naive means UTC, and a time
# that cannot be held in UTC is a 422 naming the field.
UtcDateTimeIn = Annotated[datetime, AfterValidator(_validated_utc)]
