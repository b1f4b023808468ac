"""Bar charts as inline SVG, built on the server (no script, nothing the CSP refuses).

Each chart is one series, so colour carries no meaning: every bar is labelled on its axis or
directly, values are written next to the bars (or, on a time axis too dense to print them, in
each bar's `<title>` and in the table the page shows beside the chart). The SVG has
`role="img"`, a `<title>` and a `<desc>` summing it up, and scales with its `viewBox` (the
page's CSS sets `width: 100%`). Every piece is built with `Markup.format`, which escapes the
labels, so a hostile agent name stays text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from markupsafe import Markup

WIDTH = 340  # viewBox units; the page scales the chart to its column
FONT = 13
ROW = 40  # a horizontal bar's row: its label above, the bar below
BAR = 16
PLOT_TOP = 12
PLOT_HEIGHT = 160  # a vertical chart's plot
AXIS_LABEL = 22  # room under a horizontal axis for its tick labels
LEFT = 64  # room left of a vertical chart's plot for the value ticks
MAX_BARS = 12  # horizontal charts: the rest are summed into one bar ("n others")
TICKS = 4
LABEL_EVERY = 80  # a vertical chart's category labels: at most one per this many units

Number = int | Decimal
Formatter = Callable[[Number], str]


@dataclass(frozen=True)
class Bar:
    label: str
    value: Number


def nice_ceiling(value: Number) -> Decimal:
    """The smallest of 1, 2, 2.5 or 5 times a power of ten at or above `value` (> 0): the
    top of the axis, so that its ticks are round numbers."""
    target = Decimal(value)
    step = Decimal(1).scaleb(target.adjusted())
    for factor in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5)):
        if step * factor >= target:
            return (step * factor).normalize()
    return (step * 10).normalize()


def _scale(bars: Sequence[Bar]) -> Decimal:
    top = max((Decimal(b.value) for b in bars), default=Decimal(0))
    return nice_ceiling(top) if top > 0 else Decimal(1)


def _tick(value: Decimal) -> Number:
    """A tick as an int when it is whole (token axes), else the exact decimal."""
    integral = value.to_integral_value()
    return int(integral) if integral == value else value.normalize()


def _text(x: float, y: float, content: str, *, anchor: str = "start", css: str) -> Markup:
    return Markup('<text x="{}" y="{}" text-anchor="{}" class="{}">{}</text>').format(
        f"{x:.1f}", f"{y:.1f}", anchor, css, content
    )


def _line(css: str, x1: float, y1: float, x2: float, y2: float) -> Markup:
    return Markup('<line class="{}" x1="{}" y1="{}" x2="{}" y2="{}"/>').format(
        css, f"{x1:.1f}", f"{y1:.1f}", f"{x2:.1f}", f"{y2:.1f}"
    )


def _rect(x: float, y: float, width: float, height: float, tip: str) -> Markup:
    return Markup(
        '<rect class="bar" x="{}" y="{}" width="{}" height="{}"><title>{}</title></rect>'
    ).format(f"{x:.2f}", f"{y:.2f}", f"{width:.2f}", f"{height:.2f}", tip)


def _svg(kind: str, ident: str, height: float, title: str, description: str) -> Markup:
    return Markup(
        '<svg class="chart chart-{kind}" role="img" viewBox="0 0 {width} {height}" '
        'font-size="{font}" aria-labelledby="{ident}-t {ident}-d" '
        'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        '<title id="{ident}-t">{title}</title><desc id="{ident}-d">{description}</desc>'
    ).format(
        kind=kind,
        width=WIDTH,
        height=f"{height:.0f}",
        font=FONT,
        ident=ident,
        title=title,
        description=description,
    )


def _fold(bars: Sequence[Bar]) -> list[Bar]:
    if len(bars) <= MAX_BARS:
        return list(bars)
    kept, rest = list(bars[: MAX_BARS - 1]), bars[MAX_BARS - 1 :]
    total = sum((Decimal(b.value) for b in rest), Decimal(0))
    return [*kept, Bar(f"{len(rest)} others", total)]


def describe(bars: Sequence[Bar], fmt: Formatter, *, what: str) -> str:
    """What a screen reader says of the chart: the count, the largest bar, the total."""
    if not bars:
        return f"No {what}."
    largest = max(bars, key=lambda b: Decimal(b.value))
    total = sum((Decimal(b.value) for b in bars), Decimal(0))
    return (
        f"{len(bars)} bars. Largest: {largest.label}, {fmt(largest.value)}. "
        f"Total: {fmt(total)}. The table below has every figure."
    )


def horizontal_bars(
    bars: Sequence[Bar],
    *,
    ident: str,
    title: str,
    fmt: Formatter,
    what: str,
    tick_fmt: Formatter | None = None,
) -> Markup:
    """One row per bar in the given order (past `MAX_BARS`, the rest summed into one): its
    label above it and its value at its end, on a value axis with round ticks."""
    shown = _fold(bars)
    scale = _scale(shown)
    ticks = tick_fmt or fmt
    right = WIDTH - 4
    span = right - 1
    axis_y = PLOT_TOP + ROW * len(shown)
    parts = [_svg("h", ident, axis_y + AXIS_LABEL + 4, title, describe(bars, fmt, what=what))]
    for i in range(TICKS + 1):
        x = 1 + span * i / TICKS
        parts.append(_line("grid", x, PLOT_TOP, x, axis_y))
        anchor = "start" if i == 0 else "end" if i == TICKS else "middle"
        parts.append(
            _text(x, axis_y + 16, ticks(_tick(scale * i / TICKS)), anchor=anchor, css="tick")
        )
    for row, bar in enumerate(shown):
        top = PLOT_TOP + ROW * row
        length = float(span * Decimal(bar.value) / scale)
        value = fmt(bar.value)
        parts.append(_text(1, top + 13, bar.label, css="label"))
        parts.append(_rect(1, top + 18, max(length, 1), BAR, f"{bar.label}: {value}"))
        # The value follows the bar, or sits inside its end when the bar is nearly full.
        if length + 8 + len(value) * FONT * 0.6 < span:
            parts.append(_text(length + 6, top + 31, value, css="value"))
        else:
            parts.append(_text(length - 4, top + 31, value, anchor="end", css="value inside"))
    parts.append(_line("axis", 1, PLOT_TOP, 1, axis_y))
    parts.append(_line("axis", 1, axis_y, right, axis_y))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def vertical_bars(
    bars: Sequence[Bar],
    *,
    ident: str,
    title: str,
    fmt: Formatter,
    what: str,
    tick_fmt: Formatter | None = None,
) -> Markup:
    """A time series: one column per bar, oldest on the left, a value axis with round ticks
    and gridlines, and as many category labels under the axis as fit (the first and the last
    always). Each column's exact value is its `<title>`."""
    scale = _scale(bars)
    ticks = tick_fmt or fmt
    bottom = PLOT_TOP + PLOT_HEIGHT
    plot_w = WIDTH - LEFT - 4
    parts = [_svg("v", ident, bottom + AXIS_LABEL + 4, title, describe(bars, fmt, what=what))]
    for i in range(TICKS + 1):
        y = bottom - PLOT_HEIGHT * i / TICKS
        parts.append(_line("grid", LEFT, y, LEFT + plot_w, y))
        parts.append(
            _text(LEFT - 4, y + 4, ticks(_tick(scale * i / TICKS)), anchor="end", css="tick")
        )
    count = max(len(bars), 1)
    slot = plot_w / count
    gap = min(slot * 0.2, 4)
    every = max(1, -(-count * LABEL_EVERY // plot_w))
    for i, bar in enumerate(bars):
        height = float(PLOT_HEIGHT * Decimal(bar.value) / scale)
        x = LEFT + slot * i + gap / 2
        parts.append(
            _rect(
                x, bottom - height, max(slot - gap, 0.5), height, f"{bar.label}: {fmt(bar.value)}"
            )
        )
        last = i == count - 1
        # A label is centred on its column, the last one ends at the plot's edge: the others
        # keep clear of it by a label's width and a half.
        clear = slot * (count - i - 0.5) >= LABEL_EVERY * 1.25
        if last or (i % every == 0 and clear):
            end = last and count > 1
            x_label = LEFT + slot * (i + 1) if end else LEFT + slot * i + slot / 2
            parts.append(
                _text(
                    x_label, bottom + 16, bar.label, anchor="end" if end else "middle", css="tick"
                )
            )
    parts.append(_line("axis", LEFT, PLOT_TOP, LEFT, bottom))
    parts.append(_line("axis", LEFT, bottom, LEFT + plot_w, bottom))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)
