"""The Usage page: tokens and cost of the owner's model calls by day, model and agent over a
date range, as charts (inline SVG from `dashboard.charts`) and the same figures as tables, and
each grouping as a CSV download.

The range is whole UTC days, both ends included: `since=2026-01-01&until=2026-01-31` is
`[2026-01-01T00:00Z, 2026-02-01T00:00Z)` for `usage_service.resolve_range`, which refuses an
empty or too long range. Figures come from `usage_service.usage_report`, as the API's do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Annotated

from fastapi import Query, Request
from markupsafe import Markup
from starlette.responses import Response

from lunogen.dashboard import charts
from lunogen.dashboard.charts import Bar
from lunogen.dashboard.shell import SignedIn, page, page_router
from lunogen.db import DbSession
from lunogen.errors import ValidationFailedError
from lunogen.kit.time import utcnow
from lunogen.llm import usage_service
from lunogen.llm.usage_service import GroupBy, UsageReport

router = page_router()

DEFAULT_DAYS = 30
GROUPINGS: tuple[GroupBy, ...] = ("day", "model", "agent")
HEADINGS = {"day": "By day", "model": "By model", "agent": "By agent"}
MAX_QUERY = 40  # a date is 10 characters: anything longer is refused before parsing


@dataclass(frozen=True)
class DateRange:
    first: date  # the first day shown
    last: date  # the last day shown (included)

    @property
    def since(self) -> datetime:
        return datetime.combine(self.first, time(), tzinfo=UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), tzinfo=UTC)

    def query(self) -> str:
        return f"since={self.first.isoformat()}&until={self.last.isoformat()}"


def _day(value: str | None, field: str, default: date) -> date:
    if value is None or not value.strip():
        return default
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationFailedError(
            f"{field}: {value[:MAX_QUERY]!r} is not a date (YYYY-MM-DD)", field=field
        ) from None


def parse_range(since: str | None, until: str | None, *, today: date) -> DateRange:
    """The days asked for (by default the last 30, today included), checked by the service's
    own range rule (422: the last day before the first, or more than 366 days)."""
    try:
        last = _day(until, "until", today)
        if since is None or not since.strip():
            first = last - timedelta(days=DEFAULT_DAYS - 1)
        else:
            first = _day(since, "since", last)
        chosen = DateRange(first, last)
        start, end = chosen.since, chosen.until
    except OverflowError:  # the first or last representable day, and a day beyond it
        raise ValidationFailedError("date out of range", field="since") from None
    if end <= start:
        raise ValidationFailedError(
            "until: the last day must be on or after the first day", field="until"
        )
    usage_service.resolve_range(since=start, until=end)
    return chosen


# --- numbers as people read them ---------------------------------------------------------------


def tokens(value: int | Decimal) -> str:
    return f"{int(value):,}"


def compact(value: int | Decimal) -> str:
    """Axis ticks: 2500000 → 2.5M, 750 → 750."""
    number = Decimal(value)
    for size, suffix in ((Decimal(10**9), "G"), (Decimal(10**6), "M"), (Decimal(10**3), "k")):
        if abs(number) >= size:
            return f"{(number / size).normalize():f}{suffix}"
    return f"{number.normalize():f}"


def usd(value: int | Decimal) -> str:
    """Exact USD, at least 2 decimal places and no trailing zeros beyond: 0.0001245, 1.50."""
    text = f"{Decimal(value).normalize():f}"
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


def nano_to_usd(nano: int) -> Decimal:
    return Decimal(nano).scaleb(-9)


# --- the page ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    group_by: GroupBy
    heading: str
    report: UsageReport
    token_chart: Markup
    cost_chart: Markup

    def label(self, key: str, name: str | None) -> str:
        return group_label(self.group_by, key, name)


def group_label(group_by: GroupBy, key: str, name: str | None) -> str:
    """A group as people name it: the agent's name (its id's start once the agent is purged),
    the model id, the day."""
    if group_by == "agent":
        return name or f"Deleted agent {key[:8]}"
    return key


def _days(report: UsageReport, chosen: DateRange) -> list[tuple[str, int, int]]:
    """Every day of the range (days without calls at zero): (day, tokens, cost in nano-USD)."""
    found = {g.key: g.figures for g in report.groups}
    out: list[tuple[str, int, int]] = []
    day = chosen.first
    while day <= chosen.last:
        figures = found.get(day.isoformat())
        if figures is None:
            out.append((day.isoformat(), 0, 0))
        else:
            used = figures.prompt_tokens + figures.completion_tokens
            out.append((day.isoformat(), used, figures.cost_nano_usd))
        day += timedelta(days=1)
    return out


def _section(group_by: GroupBy, report: UsageReport, chosen: DateRange) -> Section:
    heading = HEADINGS[group_by]
    what = {"day": "days", "model": "models", "agent": "agents"}[group_by]
    token_title = f"Tokens {heading.lower()}, {chosen.first} to {chosen.last} (prompt + completion)"
    cost_title = f"Cost in US dollars {heading.lower()}, {chosen.first} to {chosen.last}"
    if group_by == "day":
        days = _days(report, chosen)
        token_bars = [Bar(day, used) for day, used, _ in days]
        cost_bars = [Bar(day, nano_to_usd(cost)) for day, _, cost in days]
        draw = charts.vertical_bars
    else:
        named = [(group_label(group_by, g.key, g.name), g.figures) for g in report.groups]
        token_bars = [Bar(n, f.prompt_tokens + f.completion_tokens) for n, f in named]
        # Most expensive first, as the service orders them.
        cost_bars = [Bar(n, nano_to_usd(f.cost_nano_usd)) for n, f in named]
        token_bars.sort(key=lambda b: -Decimal(b.value))
        draw = charts.horizontal_bars
    return Section(
        group_by=group_by,
        heading=heading,
        report=report,
        token_chart=draw(
            token_bars,
            ident=f"tokens-{group_by}",
            title=token_title,
            fmt=tokens,
            tick_fmt=compact,
            what=f"tokens in these {what}",
        ),
        cost_chart=draw(
            cost_bars,
            ident=f"cost-{group_by}",
            title=cost_title,
            fmt=usd,
            what=f"cost in these {what}",
        ),
    )


# Read as text and checked here, so a bad date is an error on the page, not a JSON 422.
RangeQuery = Annotated[str | None, Query()]


@router.get("/usage")
async def usage_page(
    request: Request,
    viewer: SignedIn,
    db: DbSession,
    since: RangeQuery = None,
    until: RangeQuery = None,
) -> Response:
    today = utcnow().date()
    try:
        chosen = parse_range(since, until, today=today)
    except ValidationFailedError as exc:
        return page(
            request,
            viewer,
            "usage/index.html",
            section="usage",
            status_code=422,
            error=exc.message,
            since=since or "",
            until=until or "",
            chosen=None,
            sections=[],
            totals=None,
        )
    sections: list[Section] = []
    for group_by in GROUPINGS:
        report = await usage_service.usage_report(
            db,
            owner_id=viewer.user.id,
            since=chosen.since,
            until=chosen.until,
            group_by=group_by,
        )
        sections.append(_section(group_by, report, chosen))
    return page(
        request,
        viewer,
        "usage/index.html",
        section="usage",
        since=chosen.first.isoformat(),
        until=chosen.last.isoformat(),
        chosen=chosen,
        sections=sections,
        totals=sections[0].report.totals,
        tokens=tokens,
        usd=usd,
        nano_to_usd=nano_to_usd,
    )


def _grouping(value: str) -> GroupBy:
    for grouping in GROUPINGS:
        if value == grouping:
            return grouping
    raise ValidationFailedError(
        f"group_by: {value[:MAX_QUERY]!r} is not one of day, model, agent", field="group_by"
    )


@router.get("/usage.csv")
async def usage_csv(
    request: Request,
    viewer: SignedIn,
    db: DbSession,
    since: RangeQuery = None,
    until: RangeQuery = None,
    group_by: str = "day",
) -> Response:
    """The figures of one grouping over the same range as the page, as CSV (422 page on a bad
    range, like the page itself)."""
    chosen = parse_range(since, until, today=utcnow().date())
    grouping = _grouping(group_by)
    report = await usage_service.usage_report(
        db, owner_id=viewer.user.id, since=chosen.since, until=chosen.until, group_by=grouping
    )
    name = f"lunogen-usage-{grouping}-{chosen.first.isoformat()}-{chosen.last.isoformat()}.csv"
    return Response(
        usage_service.usage_csv(report),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
