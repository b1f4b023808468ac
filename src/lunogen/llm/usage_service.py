"""Usage reports: what an owner's model calls consumed, summed by the database.

`owned_usage` is the one gate to usage rows: every report filters through it, so one owner's
calls never reach another's figures. Money stays integer nano-USD (1e-9 USD) from the rows to
the response; `format_usd` renders it as an exact decimal string.

Billing (its own issue) turns the same rows into credit debits: it should select through
`owned_usage` too, and charge `outcome == "ok"` rows only, as these figures do.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from lunogen.agent.models import Agent
from lunogen.errors import ValidationFailedError
from lunogen.kit.time import as_utc, utcnow
from lunogen.llm.models import UsageRecord

NANO_PER_USD = 10**9
DEFAULT_RANGE = timedelta(days=30)
MAX_RANGE = timedelta(days=366)

GroupBy = Literal["day", "model", "agent"]


@dataclass(frozen=True)
class Figures:
    """Sums over a set of calls. `unpriced_calls`: successful calls whose cost is unknown (the
    provider reported none and the model was not in the catalog), so `cost_nano_usd` leaves
    them out."""

    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nano_usd: int = 0
    unpriced_calls: int = 0

    def __add__(self, other: Figures) -> Figures:
        return Figures(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    @property
    def cost_usd(self) -> str:
        return format_usd(self.cost_nano_usd)


@dataclass(frozen=True)
class Group:
    key: str
    name: str | None
    figures: Figures


@dataclass(frozen=True)
class UsageReport:
    since: datetime
    until: datetime
    group_by: GroupBy
    agent_id: str | None
    totals: Figures
    groups: list[Group]


def format_usd(nano_usd: int) -> str:
    """Integer nano-USD as a USD decimal string with 9 places, exactly (no float on the way)."""
    sign = "-" if nano_usd < 0 else ""
    whole, fraction = divmod(abs(nano_usd), NANO_PER_USD)
    return f"{sign}{whole}.{fraction:09d}"


def resolve_range(
    *, since: datetime | None, until: datetime | None, now: datetime | None = None
) -> tuple[datetime, datetime]:
    """`[since, until)` in UTC: by default the 30 days up to now; naive times are UTC.

    422 when `until` is not after `since` or the range exceeds `MAX_RANGE`.
    """
    try:
        end = as_utc(until) if until is not None else as_utc(now or utcnow())
        start = as_utc(since) if since is not None else end - DEFAULT_RANGE
    except OverflowError as exc:
        raise ValidationFailedError("date out of range", field="since") from exc
    if end <= start:
        raise ValidationFailedError("until must be later than since", field="until")
    if end - start > MAX_RANGE:
        raise ValidationFailedError(
            f"the range may span at most {MAX_RANGE.days} days", field="since"
        )
    return start, end


def owned_usage(
    *, owner_id: str, since: datetime, until: datetime, agent_id: str | None = None
) -> ColumnElement[bool]:
    """The filter every usage query uses: this owner's calls in `[since, until)`."""
    condition = and_(
        UsageRecord.owner_id == owner_id,
        UsageRecord.created_at >= since,
        UsageRecord.created_at < until,
    )
    if agent_id is not None:
        condition = and_(condition, UsageRecord.agent_id == agent_id)
    return condition


async def usage_by_message(
    session: AsyncSession, *, owner_id: str, agent_id: str, message_ids: list[str]
) -> dict[str, Figures]:
    """Figures of the calls that answered each of these inbound messages (the owner's and the
    agent's calls only); a message without calls is left out."""
    if not message_ids:
        return {}
    query = (
        select(UsageRecord.message_id.label("key"), *_figure_columns())
        .where(
            UsageRecord.owner_id == owner_id,
            UsageRecord.agent_id == agent_id,
            UsageRecord.message_id.in_(message_ids),
        )
        .group_by(UsageRecord.message_id)
    )
    return {str(row.key): _figures(row) for row in await session.execute(query)}


def _figure_columns() -> list[Any]:
    ok = UsageRecord.outcome == "ok"

    def total(expression: Any, name: str) -> Any:
        return func.coalesce(func.sum(expression), 0).label(name)

    return [
        func.count().label("calls"),
        total(case((ok, 0), else_=1), "failed_calls"),
        total(UsageRecord.prompt_tokens, "prompt_tokens"),
        total(UsageRecord.completion_tokens, "completion_tokens"),
        total(UsageRecord.cached_tokens, "cached_tokens"),
        total(UsageRecord.reasoning_tokens, "reasoning_tokens"),
        # A failed call charges nothing, whatever its row holds.
        total(case((ok, UsageRecord.cost_nano_usd), else_=None), "cost_nano_usd"),
        total(case((and_(ok, UsageRecord.cost_nano_usd.is_(None)), 1), else_=0), "unpriced_calls"),
    ]


def _day_key(dialect: str) -> Any:
    """The UTC calendar day of a call as 'YYYY-MM-DD'.

    Constants are literal SQL, not bound parameters, so PostgreSQL sees the same expression in
    SELECT and GROUP BY. SQLite stores naive UTC text, whose `date()` is already the UTC day.
    """
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), UsageRecord.created_at)
        return func.to_char(utc, literal_column("'YYYY-MM-DD'"))
    return func.date(UsageRecord.created_at)


def _group_key(group_by: GroupBy, dialect: str) -> Any:
    if group_by == "day":
        return _day_key(dialect)
    if group_by == "model":
        return func.coalesce(UsageRecord.answered_model, UsageRecord.requested_model)
    return UsageRecord.agent_id


def _figures(row: Any) -> Figures:
    # PostgreSQL sums bigints as numeric (Decimal): back to int, exactly.
    return Figures(**{f.name: int(getattr(row, f.name)) for f in fields(Figures)})


async def _agent_names(session: AsyncSession, *, owner_id: str, ids: list[str]) -> dict[str, str]:
    if not ids:
        return {}
    query = select(Agent.id, Agent.name).where(Agent.owner_id == owner_id, Agent.id.in_(ids))
    return {row.id: row.name for row in await session.execute(query)}


def _sort_key(group_by: GroupBy) -> Any:
    if group_by == "day":
        return lambda g: g.key
    return lambda g: (-g.figures.cost_nano_usd, -g.figures.calls, g.key)


async def usage_report(
    session: AsyncSession,
    *,
    owner_id: str,
    since: datetime,
    until: datetime,
    group_by: GroupBy,
    agent_id: str | None = None,
) -> UsageReport:
    """Figures of the owner's calls in `[since, until)`, grouped, with totals.

    Days are UTC and only days with calls appear, oldest first; models (the answering model,
    else the requested one) and agents come most expensive first. An agent group keeps its
    figures after the agent is deleted; its name is None once the agent row is purged.
    """
    dialect = session.get_bind().dialect.name
    key = _group_key(group_by, dialect).label("key")
    query: Select[Any] = (
        select(key, *_figure_columns())
        .where(owned_usage(owner_id=owner_id, since=since, until=until, agent_id=agent_id))
        .group_by(key)
    )
    rows = list(await session.execute(query))
    names: dict[str, str] = {}
    if group_by == "agent":
        names = await _agent_names(session, owner_id=owner_id, ids=[str(r.key) for r in rows])
    groups = sorted(
        (Group(key=str(r.key), name=names.get(str(r.key)), figures=_figures(r)) for r in rows),
        key=_sort_key(group_by),
    )
    totals = sum((g.figures for g in groups), Figures())
    return UsageReport(
        since=since,
        until=until,
        group_by=group_by,
        agent_id=agent_id,
        totals=totals,
        groups=groups,
    )


CSV_COLUMNS = (
    "group_by",
    "key",
    "name",
    "calls",
    "failed_calls",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "cost_usd",
    "unpriced_calls",
)
_CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(text: str | None) -> str:
    """Text a spreadsheet would run as a formula (an agent's name) gets a leading '."""
    if text and text.startswith(_CSV_FORMULA_START):
        return "'" + text
    return text or ""


def usage_csv(report: UsageReport) -> str:
    """The report's groups as CSV: a header row, one row per group, then the totals (a row whose
    `group_by` is `total` and whose key is empty). The figures are the API's, exactly: cost in
    USD with 9 decimal places."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    rows: list[tuple[str, str, str | None, Figures]] = [
        (report.group_by, g.key, g.name, g.figures) for g in report.groups
    ]
    rows.append(("total", "", None, report.totals))
    for group_by, key, name, figures in rows:
        writer.writerow(
            [
                group_by,
                _csv_cell(key),
                _csv_cell(name),
                figures.calls,
                figures.failed_calls,
                figures.prompt_tokens,
                figures.completion_tokens,
                figures.cached_tokens,
                figures.reasoning_tokens,
                figures.cost_usd,
                figures.unpriced_calls,
            ]
        )
    return out.getvalue()
