"""What the dashboard's pages and the period report draw: query results made into charts with their numbers as a table.

The partials under ``templates/partials/`` call these through template globals, so that a page and the PDF show the
same figure for the same data. ``install(env)`` adds them (and the number filters) to a Jinja environment: the
report's own, or the app's (``install(app.jinja_env)``) for the pages.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

from ...queries.coverage import Counts
from ...queries.heatmap import Cell, Heatmap
from ...queries.kpis import MEASURES, ProcessKpis
from . import charts

MEASURE_LABELS = {"decide": "Time to decide (opened → assessed)", "contain": "Time to contain (opened → contained)",
                  "resolve": "Time to resolve (opened → resolved)"}
OUTCOME_LABELS = {"failed": "failing", "accepted": "accepted", "pending": "pending", "passed": "passed", "not_applicable": "not applicable"}


@dataclass(frozen=True)
class Figure:
    """A chart and the numbers behind it: the table has the same values as the drawing, for screen readers and print."""

    figure_id: str
    caption: str
    svg: Markup
    headers: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    numeric: frozenset[int] = frozenset()  # columns aligned right

    @property
    def empty(self) -> bool:
        return not self.rows


def _cell_tooltip(cell: Cell, row_name: str, column_title: str) -> str:
    what = "with a failed improvement (an opportunity, not a gap)" if cell.kind == "improvement" else "failing (open gap)"
    tail = f"; {cell.accepted} accepted, {cell.pending} pending" if cell.kind == "gap" else ""
    why = f": {cell.rationale}" if cell.rationale else ""
    return (f"{row_name} × {cell.control} {column_title}: {cell.failing} of {cell.applicable} applicable incidents {what}"
            f" ({charts.percent(cell.share_failing)}){tail}. Checks {', '.join(cell.checks)}. Relation {cell.relation}{why}")


def heatmap_svg(heat: Heatmap, cell_url: Callable[[str, str], str] | None = None) -> Markup:
    """The heatmap grid of a query result; each cell links to ``cell_url(sub-process id, control id)`` when given."""
    names = {r.id: r.name for r in heat.rows}
    titles = {c.id: c.title for c in heat.columns}
    cells = {key: charts.HeatCell(c.share_failing, c.failing, c.applicable, c.relation, c.kind == "gap",
                                  _cell_tooltip(c, names[c.subprocess], titles.get(c.control, "")))
             for key, c in heat.cells.items()}
    title = f"Share of applicable incidents failing, by ITIL sub-process and ISO/IEC 27001:{heat.edition} Annex A control"
    return charts.heatmap_chart([(r.id, r.name) for r in heat.rows], [(c.id, c.id) for c in heat.columns], cells, title=title,
                                href=cell_url, chart_id=f"heatmap-{heat.edition}")


def duration_figure(kpis: ProcessKpis, measure: str) -> Figure:
    """Mean and 90th percentile hours of one measure, per severity."""
    by_severity = kpis.durations.get(measure, {})
    label = MEASURE_LABELS.get(measure, measure)
    svg = charts.bar_chart(list(by_severity), [charts.Series("mean", [d.mean_hours for d in by_severity.values()]),
                                                charts.Series("90th percentile", [d.p90_hours for d in by_severity.values()])],
                           title=f"{label}, hours by severity", unit="hours", chart_id=f"kpi-{measure}")
    rows = tuple((sev, d.count, charts.number(d.mean_hours), charts.number(d.p90_hours)) for sev, d in by_severity.items())
    backwards = kpis.out_of_order.get(measure, 0)
    caption = f"{label}, in hours, by severity" + (
        f" ({backwards} incident{'s' if backwards != 1 else ''} whose times run backwards left out)" if backwards else "")
    return Figure(f"kpi-{measure}", caption, svg, ("Severity", "Incidents", "Mean (h)", "90th percentile (h)"), rows, frozenset({1, 2, 3}))


def duration_figures(kpis: ProcessKpis) -> list[Figure]:
    return [duration_figure(kpis, m) for m in MEASURES]


def business_unit_figure(kpis: ProcessKpis) -> Figure:
    """Open and closed security incidents per business unit (seed 003's level 2 metric)."""
    units = kpis.by_business_unit
    svg = charts.stacked_bar_chart([u.business_unit for u in units], [charts.Series("open", [u.open for u in units]),
                                                                        charts.Series("closed", [u.closed for u in units])],
                                   title="Open and closed security incidents by business unit", chart_id="kpi-business-units")
    rows = tuple((u.business_unit, u.open, u.closed, u.open + u.closed) for u in units)
    return Figure("kpi-business-units", "Security incidents open and closed, by business unit (cancelled ones are in neither)", svg,
                  ("Business unit", "Open", "Closed", "Total"), rows, frozenset({1, 2, 3}))


def trend_figure(points: Sequence[tuple[str, int | None]], caption: str, *, unit: str = "open gaps", style: str = "bars",
                 figure_id: str = "trend", headers: Sequence[str] | None = None, rows: Sequence[Sequence[Any]] | None = None) -> Figure:
    """A value per week (or any period), in time order; the table is (week, value) unless ``headers`` and ``rows`` say more."""
    svg = charts.trend_chart(points, title=caption, unit=unit, style=style, chart_id=figure_id)
    if headers is None or rows is None:
        headers, rows = ("Week", unit.capitalize()), [(label, v) for label, v in points]
    return Figure(figure_id, caption, svg, tuple(headers), tuple(tuple(r) for r in rows), frozenset(range(1, len(headers))))


def controls_figure(counts: Sequence[Counts], caption: str = "Controls with failing incidents", *, limit: int = 12,
                    figure_id: str = "failing-controls-chart") -> Figure:
    """The controls with the most failing incidents, with those accepted beside them."""
    worst = sorted((c for c in counts if c.failed), key=lambda c: (-c.failed, c.group.key))[:limit]
    labels = [f"{c.group.key} {c.group.title}" for c in worst]
    svg = charts.bar_chart(labels, [charts.Series("failing", [c.failed for c in worst]), charts.Series("accepted", [c.accepted for c in worst])],
                           title=caption, unit="incidents", digits=0, chart_id=figure_id)
    rows = tuple((c.group.key, c.group.title, c.in_scope, c.failed, c.accepted, charts.percent(c.failed / c.in_scope if c.in_scope else None))
                 for c in worst)
    return Figure(figure_id, caption, svg, ("Control", "Title", "Applicable", "Failing", "Accepted", "Share failing"), rows,
                  frozenset({2, 3, 4, 5}))


def when(value: datetime | None, with_time: bool = True) -> str:
    """A time as the reports print it: UTC, to the minute."""
    if value is None:
        return "–"
    return f"{value:%Y-%m-%d %H:%M} UTC" if with_time else f"{value:%Y-%m-%d}"


TEMPLATE_GLOBALS: dict[str, Any] = {
    "heatmap_svg": heatmap_svg, "duration_figures": duration_figures, "business_unit_figure": business_unit_figure,
    "trend_figure": trend_figure, "controls_figure": controls_figure, "heat_level": charts.heat_level,
    "relation_labels": charts.RELATION_LABELS, "outcome_labels": OUTCOME_LABELS,
}
TEMPLATE_FILTERS: dict[str, Callable[..., Any]] = {"pct": charts.percent, "num": charts.number, "when": when}


def install(env: Environment) -> None:
    """Give a Jinja environment what the partials call."""
    env.globals.update(TEMPLATE_GLOBALS)
    env.filters.update(TEMPLATE_FILTERS)
