"""Charts drawn on the server as SVG, the same in a browser and in a WeasyPrint PDF: pure functions of their data.

Each returns markup safe to place in a Jinja template. What they hold to, so that print, screen readers and people
who do not tell colours apart read them as well as anyone:

- every value is printed beside its bar, point or cell; series and relations differ by pattern (hatching, dots)
  as well as colour, and a legend names each;
- ``role="img"`` with a <title> and a <desc> saying what the chart shows; every label is XML-escaped;
- a fixed viewBox (the drawing scales with its box), presentation attributes only: no <style>, no style="",
  no CSS variables, no script, no foreignObject (the dashboard's CSP refuses inline styles, and WeasyPrint draws
  none of these); text is placed by its baseline (WeasyPrint ignores dominant-baseline);
- the same data gives the same bytes: ids come from ``chart_id`` (or the title), numbers are rounded the same way.

Text widths are estimated (no font metrics on the server): labels that would not fit are shortened with "…", and the
full text is kept in a <title> on the element, as a tooltip.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

FONT = "Liberation Sans, DejaVu Sans, Arial, Helvetica, sans-serif"
TEXT = "#1b1f24"
MUTED = "#57606a"
GRID = "#d0d7de"
NO_DATA = "No data for this scope"
# per series: fill colour, and the pattern that tells it apart without colour
SERIES_STYLES = (("#0a5bc4", "solid"), ("#e8590c", "hatch"), ("#116329", "dots"), ("#6639ba", "cross"))
# heatmap shading by share failing: (upper bound, fill, text colour, legend label); 0 exactly is its own level
# (the colours of dashboard.css's heat-0 to heat-4, so the table under a heatmap matches it)
HEAT_LEVELS = ((0.0, "#f6f8fa", TEXT, "0%"), (0.10, "#ffe8cc", TEXT, "up to 10%"), (0.25, "#ffb77a", TEXT, "10–25%"),
               (0.50, "#e8590c", "#ffffff", "25–50%"), (1.0, "#a40e26", "#ffffff", "over 50%"))
RELATION_PATTERNS = {"covered": "solid", "gap": "hatch", "improvement": "dots"}
RELATION_LABELS = {"covered": "covered: ITIL already meets the control", "gap": "gap: ISO asks more than ITIL",
                   "improvement": "improvement: not required, makes the process better"}


def _f(value: float) -> str:
    """A coordinate: one decimal at most, no trailing zeros (deterministic and short)."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def number(value: float | int | None, digits: int = 1) -> str:
    """A value as printed on a chart: thousands separated, floats to ``digits`` decimals, None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, int) or float(value).is_integer() and digits == 0:
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


def percent(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.0f}%"


def text_width(text: str, size: float) -> float:
    """An estimate of the width of sans-serif text: no metrics on the server, so generous."""
    return len(text) * size * 0.56


def fit(text: str, size: float, width: float) -> str:
    """``text`` shortened with an ellipsis to about ``width``."""
    if text_width(text, size) <= width:
        return text
    keep = max(1, int(width / (size * 0.56)) - 1)
    return text[:keep].rstrip() + "…"


def _id(chart_id: str | None, *parts: object) -> str:
    if chart_id:
        return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in chart_id)
    return "chart-" + hashlib.sha1(repr(parts).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Series:
    """One named series of a bar chart: a value per category (None: no data)."""

    name: str
    values: Sequence[float | int | None]


def _pattern(pid: str, kind: str, colour: str) -> str:
    """A 6×6 tile: ``hatch`` diagonal lines, ``dots``, ``cross`` hatching; ``solid`` needs none (the fill is the colour)."""
    if kind == "hatch":
        body = (f'<rect width="6" height="6" fill="#ffffff"/><path d="M0,6 L6,0 M-1.5,1.5 L1.5,-1.5 M4.5,7.5 L7.5,4.5" '
                f'stroke="{colour}" stroke-width="1.6"/>')
    elif kind == "dots":
        body = f'<rect width="6" height="6" fill="#ffffff"/><circle cx="3" cy="3" r="1.4" fill="{colour}"/>'
    elif kind == "cross":
        body = (f'<rect width="6" height="6" fill="#ffffff"/><path d="M0,3 L6,3 M3,0 L3,6" stroke="{colour}" stroke-width="1.2"/>')
    else:
        return ""
    return f'<pattern id="{pid}" patternUnits="userSpaceOnUse" width="6" height="6">{body}</pattern>'


def _fill(pid: str, kind: str, colour: str) -> str:
    return colour if kind == "solid" else f"url(#{pid})"


def _open(cid: str, width: float, height: float, title: str, desc: str) -> list[str]:
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" viewBox="0 0 {_f(width)} {_f(height)}" '
            f'width="{_f(width)}" height="{_f(height)}" aria-labelledby="{cid}-title {cid}-desc" font-family="{FONT}" '
            f'font-size="12" fill="{TEXT}">',
            f'<title id="{cid}-title">{escape(title)}</title>', f'<desc id="{cid}-desc">{escape(desc)}</desc>']


def _done(parts: list[str]) -> Markup:
    parts.append("</svg>")
    return Markup("".join(parts))


def no_data(title: str, message: str = NO_DATA, *, chart_id: str | None = None, width: float = 720, height: float = 90) -> Markup:
    """A chart with nothing to draw: its title and ``message``, so the reader knows it is empty, not broken."""
    cid = _id(chart_id, "no-data", title, message)
    parts = _open(cid, width, height, title, message)
    parts.append(f'<rect x="0.5" y="0.5" width="{_f(width - 1)}" height="{_f(height - 1)}" fill="#ffffff" stroke="{GRID}"/>')
    parts.append(f'<text x="{_f(width / 2)}" y="{_f(height / 2 + 5)}" text-anchor="middle" font-size="14" fill="{MUTED}">'
                 f"{escape(message)}</text>")
    return _done(parts)


def _nice_step(top: float, ticks: int = 4) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving about ``ticks`` gridlines up to ``top``."""
    if top <= 0:
        return 1.0
    raw = top / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * power:
            return float(m * power)
    return float(10 * power)


def _legend(parts: list[str], cid: str, entries: Sequence[tuple[str, str, str]], x: float, y: float, width: float) -> float:
    """Swatches (fill, pattern kind, label) from (x, y), wrapping within ``width``; returns the y below the legend."""
    cx, cy = x, y
    for n, (colour, kind, label) in enumerate(entries):
        w = (0 if kind == "text" else 22) + text_width(label, 11) + 18
        if cx > x and cx + w > x + width:
            cx, cy = x, cy + 18
        if kind == "text":  # a note beside the swatches, such as the unit
            parts.append(f'<text x="{_f(cx)}" y="{_f(cy + 9.5)}" font-size="11" fill="{MUTED}">{escape(label)}</text>')
            cx += w
            continue
        pid = f"{cid}-l{n}"
        if kind != "solid":
            parts.append(f"<defs>{_pattern(pid, kind, colour)}</defs>")
        parts.append(f'<rect x="{_f(cx)}" y="{_f(cy)}" width="16" height="11" fill="{_fill(pid, kind, colour)}" stroke="{colour}"/>')
        parts.append(f'<text x="{_f(cx + 22)}" y="{_f(cy + 9.5)}" font-size="11">{escape(label)}</text>')
        cx += w
    return cy + 18


def trend_chart(points: Sequence[tuple[str, float | int | None]], *, title: str, desc: str = "", unit: str = "",
                style: str = "bars", chart_id: str | None = None, width: float = 720, height: float = 260) -> Markup:
    """A value per period (open gaps per week): bars, or a line with its points, each labelled with its value.

    ``points`` are (label, value) in time order; a None value is a period without data, drawn as a gap.
    """
    values = [v for _, v in points if v is not None]
    if not points or not values:
        return no_data(title, chart_id=chart_id, width=width)
    cid = _id(chart_id, "trend", title, tuple(points), style)
    summary = desc or f"{title}: " + ", ".join(f"{label} {number(v)}" for label, v in points) + (f" {unit}" if unit else "")
    parts = _open(cid, width, height, title, summary)
    left, right, top, bottom = 52.0, 16.0, 24.0, 44.0
    plot_w, plot_h = width - left - right, height - top - bottom
    step = _nice_step(max(max(values), 0) or 1)
    ceiling = step * max(1, math.ceil(max(max(values), 0) / step))
    y_of = lambda v: top + plot_h - (max(v, 0) / ceiling) * plot_h  # noqa: E731
    # the horizontal gridlines and their values
    tick = 0.0
    while tick <= ceiling + 1e-9:
        y = y_of(tick)
        parts.append(f'<line x1="{_f(left)}" y1="{_f(y)}" x2="{_f(left + plot_w)}" y2="{_f(y)}" stroke="{GRID}" stroke-width="1"/>')
        parts.append(f'<text x="{_f(left - 6)}" y="{_f(y + 4)}" text-anchor="end" font-size="10" fill="{MUTED}">{number(tick, 0)}</text>')
        tick += step
    if unit:
        parts.append(f'<text x="{_f(left)}" y="{_f(top - 10)}" font-size="10" fill="{MUTED}">{escape(unit)}</text>')
    slot = plot_w / len(points)
    every = max(1, math.ceil(len(points) / max(1, int(plot_w // 44))))  # x labels that fit, evenly spaced
    upright = slot < 24  # value labels turn on their side when the bars are narrow
    colour = SERIES_STYLES[0][0]
    line: list[tuple[float, float]] = []
    for n, (label, value) in enumerate(points):
        cx = left + slot * (n + 0.5)
        if n % every == 0:
            parts.append(f'<text x="{_f(cx)}" y="{_f(top + plot_h + 16)}" text-anchor="middle" font-size="10">'
                         f"<title>{escape(label)}</title>{escape(fit(label, 10, slot * every - 4))}</text>")
        if value is None:
            parts.append(f'<text x="{_f(cx)}" y="{_f(top + plot_h - 4)}" text-anchor="middle" font-size="10" fill="{MUTED}">–</text>')
            continue
        y = y_of(value)
        if style == "line":
            line.append((cx, y))
        else:
            bw = max(2.0, slot * 0.7)
            parts.append(f'<rect x="{_f(cx - bw / 2)}" y="{_f(y)}" width="{_f(bw)}" height="{_f(top + plot_h - y)}" fill="{colour}">'
                         f"<title>{escape(label)}: {number(value)}</title></rect>")
        shown = number(value)
        if upright:
            parts.append(f'<text x="{_f(cx + 3.5)}" y="{_f(y - 4)}" font-size="10" transform="rotate(-90 {_f(cx + 3.5)} {_f(y - 4)})">'
                         f"{shown}</text>")
        else:
            parts.append(f'<text x="{_f(cx)}" y="{_f(y - 5)}" text-anchor="middle" font-size="10">{shown}</text>')
    if line:
        parts.append(f'<polyline points="{" ".join(f"{_f(x)},{_f(y)}" for x, y in line)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [f'<circle cx="{_f(x)}" cy="{_f(y)}" r="3" fill="{colour}"/>' for x, y in line]
    parts.append(f'<line x1="{_f(left)}" y1="{_f(top + plot_h)}" x2="{_f(left + plot_w)}" y2="{_f(top + plot_h)}" stroke="{TEXT}"/>')
    return _done(parts)


def bar_chart(categories: Sequence[str], series: Sequence[Series], *, title: str, desc: str = "", unit: str = "",
              digits: int = 1, chart_id: str | None = None, width: float = 720) -> Markup:
    """Horizontal bars, grouped by category when there are several series (mean and p90 hours per severity, say)."""
    if not categories or not series or all(v is None for s in series for v in s.values):
        return no_data(title, chart_id=chart_id, width=width)
    cid = _id(chart_id, "bars", title, tuple(categories), tuple((s.name, tuple(s.values)) for s in series), unit)
    summary = desc or f"{title}: " + "; ".join(
        f"{cat}: " + ", ".join(f"{s.name} {number(s.values[i], digits)}" for s in series) for i, cat in enumerate(categories))
    bar_h, gap, label_w = 14.0, 12.0, min(width * 0.42, max(text_width(c, 11) for c in categories) + 12)
    legend_h = 22.0 if len(series) > 1 or unit else 0.0
    group_h = bar_h * len(series) + gap
    height = 8 + legend_h + group_h * len(categories) + 8
    parts = _open(cid, width, height, title, summary)
    top = 8 + legend_h
    if legend_h:
        entries = [(SERIES_STYLES[n % 4][0], SERIES_STYLES[n % 4][1], s.name) for n, s in enumerate(series)]
        if unit:
            entries.append((MUTED, "text", f"values in {unit}"))
        _legend(parts, cid, entries if len(series) > 1 else entries[-1:], label_w, 6, width - label_w)
    left, value_w = label_w, 64.0
    plot_w = width - left - value_w
    top_value = max((v for s in series for v in s.values if v is not None), default=0) or 1
    defs = [_pattern(f"{cid}-s{n}", SERIES_STYLES[n % 4][1], SERIES_STYLES[n % 4][0]) for n in range(len(series))]
    parts.append(f"<defs>{''.join(defs)}</defs>")
    for i, category in enumerate(categories):
        gy = top + i * group_h
        parts.append(f'<text x="{_f(left - 8)}" y="{_f(gy + bar_h * len(series) / 2 + 4)}" text-anchor="end" font-size="11">'
                     f"<title>{escape(category)}</title>{escape(fit(category, 11, label_w - 12))}</text>")
        for n, s in enumerate(series):
            colour, kind = SERIES_STYLES[n % 4]
            y = gy + n * bar_h
            value = s.values[i] if i < len(s.values) else None
            if value is None:
                parts.append(f'<text x="{_f(left + 4)}" y="{_f(y + bar_h - 3)}" font-size="10" fill="{MUTED}">no data</text>')
                continue
            w = max(1.0, plot_w * max(value, 0) / top_value)
            parts.append(f'<rect x="{_f(left)}" y="{_f(y + 1)}" width="{_f(w)}" height="{_f(bar_h - 2)}" '
                         f'fill="{_fill(f"{cid}-s{n}", kind, colour)}" stroke="{colour}" stroke-width="1">'
                         f"<title>{escape(category)}, {escape(s.name)}: {number(value, digits)}</title></rect>")
            parts.append(f'<text x="{_f(left + w + 4)}" y="{_f(y + bar_h - 3)}" font-size="10">{number(value, digits)}</text>')
    parts.append(f'<line x1="{_f(left)}" y1="{_f(top - 2)}" x2="{_f(left)}" y2="{_f(height - 8)}" stroke="{TEXT}"/>')
    return _done(parts)


def stacked_bar_chart(categories: Sequence[str], series: Sequence[Series], *, title: str, desc: str = "",
                      chart_id: str | None = None, width: float = 720) -> Markup:
    """Horizontal bars whose segments add up (open and closed incidents per business unit), with each segment's value
    inside it where it fits, else after the total."""
    totals = [sum(v or 0 for v in (s.values[i] if i < len(s.values) else None for s in series)) for i in range(len(categories))]
    if not categories or not series or not any(totals):
        return no_data(title, chart_id=chart_id, width=width)
    cid = _id(chart_id, "stacked", title, tuple(categories), tuple((s.name, tuple(s.values)) for s in series))
    summary = desc or f"{title}: " + "; ".join(
        f"{cat}: " + ", ".join(f"{s.name} {number(s.values[i], 0)}" for s in series) + f" (total {number(totals[i], 0)})"
        for i, cat in enumerate(categories))
    bar_h, gap, label_w = 20.0, 10.0, min(220.0, max(text_width(c, 11) for c in categories) + 12)
    top = 30.0
    height = top + (bar_h + gap) * len(categories) + 4
    parts = _open(cid, width, height, title, summary)
    _legend(parts, cid, [(SERIES_STYLES[n % 4][0], SERIES_STYLES[n % 4][1], s.name) for n, s in enumerate(series)], label_w, 6,
            width - label_w)
    end_w = 150.0  # room after the longest bar for its total and the values that did not fit inside
    plot_w = width - label_w - end_w
    widest = max(totals) or 1
    parts.append(f"<defs>{''.join(_pattern(f'{cid}-s{n}', SERIES_STYLES[n % 4][1], SERIES_STYLES[n % 4][0]) for n in range(len(series)))}</defs>")
    for i, category in enumerate(categories):
        y = top + i * (bar_h + gap)
        parts.append(f'<text x="{_f(label_w - 8)}" y="{_f(y + bar_h / 2 + 4)}" text-anchor="end" font-size="11">'
                     f"<title>{escape(category)}</title>{escape(fit(category, 11, label_w - 12))}</text>")
        x = label_w
        outside: list[str] = []
        for n, s in enumerate(series):
            value = s.values[i] if i < len(s.values) else None
            if not value:
                continue
            colour, kind = SERIES_STYLES[n % 4]
            w = plot_w * value / widest
            parts.append(f'<rect x="{_f(x)}" y="{_f(y)}" width="{_f(w)}" height="{_f(bar_h)}" fill="{_fill(f"{cid}-s{n}", kind, colour)}" '
                         f'stroke="{colour}" stroke-width="1"><title>{escape(category)}, {escape(s.name)}: {number(value, 0)}</title></rect>')
            shown = number(value, 0)
            if text_width(shown, 11) + 8 <= w:
                # on a pattern the number sits on a white box; on a solid fill it is white
                if kind == "solid":
                    parts.append(f'<text x="{_f(x + w / 2)}" y="{_f(y + bar_h / 2 + 4)}" text-anchor="middle" font-size="11" '
                                 f'fill="#ffffff" font-weight="bold">{shown}</text>')
                else:
                    tw = text_width(shown, 11) + 4
                    parts.append(f'<rect x="{_f(x + w / 2 - tw / 2)}" y="{_f(y + 4)}" width="{_f(tw)}" height="{_f(bar_h - 8)}" fill="#ffffff"/>')
                    parts.append(f'<text x="{_f(x + w / 2)}" y="{_f(y + bar_h / 2 + 4)}" text-anchor="middle" font-size="11" '
                                 f'font-weight="bold">{shown}</text>')
            else:
                outside.append(f"{s.name} {shown}")
            x += w
        end = f"{number(totals[i], 0)}" + (f" ({', '.join(outside)})" if outside else "")
        parts.append(f'<text x="{_f(x + 6)}" y="{_f(y + bar_h / 2 + 4)}" font-size="11">{escape(fit(end, 11, end_w + plot_w - (x - label_w) - 8))}</text>')
    return _done(parts)


@dataclass(frozen=True)
class HeatCell:
    """One cell of a heatmap grid: the share it is shaded by and what it prints."""

    share: float | None  # None: nothing applicable in scope
    count: int  # the numerator (failing incidents)
    total: int  # the denominator (applicable incidents)
    relation: str = "covered"  # covered | gap | improvement: drawn as a pattern strip
    shaded: bool = True  # False: opportunities (improvements), never gaps: left unshaded
    tooltip: str = ""


def heat_level(share: float | None) -> int:
    """The shading level of a share: 0 for none failing, then up to 10%, 25%, 50%, and over."""
    if share is None or share <= 0:
        return 0
    return next(n for n, (bound, *_rest) in enumerate(HEAT_LEVELS) if n > 0 and share <= bound)


def heatmap_chart(rows: Sequence[tuple[str, str]], columns: Sequence[tuple[str, str]], cells: Mapping[tuple[str, str], HeatCell], *,
                  title: str, desc: str = "", href: Callable[[str, str], str] | None = None,
                  chart_id: str | None = None) -> Markup:
    """A grid of rows (id, label) by columns (id, label), a cell per (row id, column id) that has one.

    Each cell is shaded by its share, prints the share and "count of total", and carries a strip at its top whose
    pattern says the relation; a pair without a cell stays blank. With ``href``, each cell links to
    ``href(row id, column id)`` (a page; a PDF passes none: WeasyPrint draws no links in SVG).
    """
    if not rows or not columns or not cells:
        return no_data(title, "No check tests these controls in this scope", chart_id=chart_id)
    cid = _id(chart_id, "heat", title, tuple(rows), tuple(columns), tuple(sorted((k, v) for k, v in cells.items())))
    cw, ch, strip = 66.0, 46.0, 7.0
    label_w = min(230.0, max(text_width(label, 11) for _, label in rows) + 14)
    head_h = 62.0
    grid_w, grid_h = cw * len(columns), ch * len(rows)
    width = max(label_w + grid_w + 40, 600.0)
    parts = ["<defs>" + "".join(_pattern(f"{cid}-{rel}", kind, TEXT) for rel, kind in RELATION_PATTERNS.items()) + "</defs>"]
    for j, (_, label) in enumerate(columns):
        x = label_w + cw * (j + 0.5)
        parts.append(f'<text x="{_f(x - 4)}" y="{_f(head_h - 8)}" font-size="11" font-weight="bold" '
                     f'transform="rotate(-35 {_f(x - 4)} {_f(head_h - 8)})">{escape(fit(label, 11, 80))}</text>')
    described = []
    for i, (row_id, label) in enumerate(rows):
        y = head_h + ch * i
        parts.append(f'<text x="{_f(label_w - 8)}" y="{_f(y + ch / 2 + 4)}" text-anchor="end" font-size="11">'
                     f"<title>{escape(label)}</title>{escape(fit(label, 11, label_w - 14))}</text>")
        parts.append(f'<line x1="{_f(label_w)}" y1="{_f(y)}" x2="{_f(label_w + grid_w)}" y2="{_f(y)}" stroke="{GRID}"/>')
        for j, (col_id, col_label) in enumerate(columns):
            cell = cells.get((row_id, col_id))
            if cell is None:
                continue
            described.append(f"{label} × {col_label}: {cell.count} of {cell.total} ({percent(cell.share)}), {cell.relation}")
            x = label_w + cw * j
            level = heat_level(cell.share) if cell.shaded and cell.share is not None else None
            fill, ink = (HEAT_LEVELS[level][1], HEAT_LEVELS[level][2]) if level is not None else ("#ffffff", TEXT)
            strip_fill = MUTED if RELATION_PATTERNS.get(cell.relation, "solid") == "solid" else f"url(#{cid}-{cell.relation})"
            italic = "" if cell.shaded else ' font-style="italic"'
            body = [f'<rect x="{_f(x + 1)}" y="{_f(y + 1)}" width="{_f(cw - 2)}" height="{_f(ch - 2)}" fill="{fill}" stroke="{MUTED}" '
                    'stroke-width="0.8"/>',
                    f'<rect x="{_f(x + 1)}" y="{_f(y + 1)}" width="{_f(cw - 2)}" height="{_f(strip)}" fill="{strip_fill}" '
                    f'stroke="{MUTED}" stroke-width="0.8"/>',
                    f'<text x="{_f(x + cw / 2)}" y="{_f(y + strip + 18)}" text-anchor="middle" font-size="13" font-weight="bold" '
                    f'fill="{ink}"{italic}>{percent(cell.share)}</text>',
                    f'<text x="{_f(x + cw / 2)}" y="{_f(y + strip + 32)}" text-anchor="middle" font-size="10" fill="{ink}"{italic}>'
                    f"{number(cell.count, 0)} of {number(cell.total, 0)}</text>"]
            tip = f"<title>{escape(cell.tooltip)}</title>" if cell.tooltip else ""
            if href is not None:
                parts.append(f'<a href="{escape(href(row_id, col_id))}">{tip}{"".join(body)}</a>')
            else:
                parts.append(f"<g>{tip}{''.join(body)}</g>")
    parts.append(f'<line x1="{_f(label_w)}" y1="{_f(head_h + grid_h)}" x2="{_f(label_w + grid_w)}" y2="{_f(head_h + grid_h)}" '
                 f'stroke="{GRID}"/>')
    # the legend: shading by share, then the relation strips and what a blank or white cell means
    y = head_h + grid_h + 16
    x = 8.0
    parts.append(f'<text x="{_f(x)}" y="{_f(y + 9.5)}" font-size="11" font-weight="bold">Share failing:</text>')
    x += 92
    for _, fill, _ink, label in HEAT_LEVELS:
        parts.append(f'<rect x="{_f(x)}" y="{_f(y)}" width="16" height="11" fill="{fill}" stroke="{MUTED}" stroke-width="0.8"/>')
        parts.append(f'<text x="{_f(x + 20)}" y="{_f(y + 9.5)}" font-size="11">{escape(label)}</text>')
        x += 26 + text_width(label, 11) + 8
    parts.append(f'<text x="8" y="{_f(y + 27)}" font-size="11" fill="{MUTED}">– nothing applicable in scope; a blank square: '
                 "no check tests the pair.</text>")
    y += 40
    parts.append(f'<text x="8" y="{_f(y + 9.5)}" font-size="11" font-weight="bold">Relation (top strip):</text>')
    x = indent = 136.0
    for relation, kind in RELATION_PATTERNS.items():
        label = RELATION_LABELS[relation]
        if x > indent and x + 22 + text_width(label, 11) > width:
            x, y = indent, y + 18
        fill = MUTED if kind == "solid" else f"url(#{cid}-{relation})"
        parts.append(f'<rect x="{_f(x)}" y="{_f(y + 2)}" width="16" height="8" fill="{fill}" stroke="{MUTED}" stroke-width="0.8"/>')
        parts.append(f'<text x="{_f(x + 20)}" y="{_f(y + 9.5)}" font-size="11">{escape(label)}</text>')
        x += 34 + text_width(label, 11)
    y += 22
    parts.append(f'<text x="8" y="{_f(y + 9.5)}" font-size="11" fill="{MUTED}">A white cell in italics holds improvement checks '
                 "only: its share counts opportunities, never gaps.</text>")
    height = y + 20
    head = _open(cid, width, height, title, desc or f"{title}. " + "; ".join(described))
    parts = head + parts
    return _done(parts)
