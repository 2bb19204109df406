"""The server-drawn SVG charts and the partials that show them with their numbers: well-formed, escaped, readable without
colour, deterministic, and saying so when there is nothing to draw."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from plugin.exports.assessment import AcceptedRisk
from plugin.queries.heatmap import Cell, Column, Heatmap, Row
from plugin.queries.kpis import ClosureQuality, Durations, ProcessKpis, RecurringGroup, UnitCounts
from plugin.queries.maturity import MET, NO_DATA, NOT_MET, UNKNOWN, Criterion, Maturity
from plugin.queries.scope import Scope
from plugin.web.dashboard import charts, figures

SVG = "{http://www.w3.org/2000/svg}"
TEMPLATES = Path(figures.__file__).parent / "templates"
T = datetime(2026, 9, 30, 12, 0, tzinfo=timezone.utc)


def parsed(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert re.fullmatch(r"0 0 [\d.]+ [\d.]+", root.get("viewBox") or "")
    labelled = (root.get("aria-labelledby") or "").split()
    ids = {e.get("id") for e in root.iter() if e.get("id")}
    assert len(labelled) == 2 and set(labelled) <= ids
    assert root.find(f"{SVG}title") is not None and root.find(f"{SVG}desc") is not None
    # what WeasyPrint cannot draw, or the dashboard's CSP refuses
    for banned in (r"<style", r"\sstyle=", r"foreignObject", r"<script", r"var\(", r"dominant-baseline"):
        assert not re.search(banned, svg), banned
    # every pattern a fill names is defined in the same drawing
    used = set(re.findall(r"url\(#([^)]+)\)", svg))
    assert used <= {p.get("id") for p in root.iter(f"{SVG}pattern")}
    return root


def visible(e: ET.Element) -> str:
    """The text drawn: a <title> inside is a tooltip, not drawn."""
    out = e.text or ""
    for child in e:
        if child.tag != f"{SVG}title":
            out += visible(child)
        out += child.tail or ""
    return out


def texts(root: ET.Element) -> list[str]:
    return [visible(t) for t in root.iter(f"{SVG}text")]


def title_texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}title")]


def test_bars_print_every_value_and_tell_series_apart_by_pattern() -> None:
    categories = ["critical", "Access & <identity> management"]
    svg = charts.bar_chart(categories, [charts.Series("mean", [12.4, None]), charts.Series("p90", [40.0, 3.5])],
                           title="Hours to resolve & contain", unit="hours")
    assert isinstance(svg, Markup)
    root = parsed(svg)
    shown = texts(root)
    assert {"12.4", "40.0", "3.5", "no data"} <= set(shown)
    assert "Access & <identity> management" in title_texts(root)  # the full label, unescaped by the parser
    assert "<identity>" not in svg and "&amp;" in svg
    assert root.find(f".//{SVG}pattern") is not None  # the second series is hatched
    legend = {"mean", "p90", "values in hours"}
    assert legend <= set(shown)
    assert (root.find(f"{SVG}title").text or "") == "Hours to resolve & contain"  # type: ignore[union-attr]


def test_the_same_data_gives_the_same_bytes_and_other_data_other_ids() -> None:
    one = charts.bar_chart(["a"], [charts.Series("x", [1])], title="T")
    assert one == charts.bar_chart(["a"], [charts.Series("x", [1])], title="T")
    other = charts.bar_chart(["a"], [charts.Series("x", [2])], title="T")
    ids = lambda svg: {e.get("id") for e in ET.fromstring(svg).iter() if e.get("id")}  # noqa: E731
    assert not ids(one) & ids(other)  # two charts on one page never share an id
    named = charts.bar_chart(["a"], [charts.Series("x", [1])], title="T", chart_id="kpi decide")
    assert 'id="kpi-decide-title"' in named


def test_the_trend_labels_each_week_and_draws_a_missing_one_as_a_dash() -> None:
    points = [("2026-W27", 11), ("2026-W28", None), ("2026-W29", 1234)]
    root = parsed(charts.trend_chart(points, title="Open gaps per week", unit="open gaps"))
    shown = texts(root)
    assert {"11", "1,234", "–", "2026-W27", "2026-W29"} <= set(shown)
    assert len(root.findall(f".//{SVG}rect")) == 2
    line = parsed(charts.trend_chart(points, title="Open gaps per week", style="line"))
    assert line.find(f".//{SVG}polyline") is not None and len(line.findall(f".//{SVG}circle")) == 2
    year = [(f"W{n:02d}", n * 3) for n in range(1, 54)]
    narrow = parsed(charts.trend_chart(year, title="A year"))
    assert sum(1 for t in narrow.iter(f"{SVG}text") if (t.get("transform") or "").startswith("rotate(-90")) == 53  # every value, on its side
    assert {str(n * 3) for n in range(1, 54)} <= set(texts(narrow))


def test_a_stacked_bar_puts_a_value_that_does_not_fit_after_the_total() -> None:
    units = ["Finance & Risk", "IT"]
    root = parsed(charts.stacked_bar_chart(units, [charts.Series("open", [1, 40]), charts.Series("closed", [300, 60])],
                                           title="Open and closed by business unit"))
    shown = texts(root)
    assert "301 (open 1)" in shown and "100" in shown and {"40", "60", "300"} <= set(shown)
    assert "Finance & Risk" in shown
    assert root.find(f".//{SVG}pattern") is not None


def heat_cells() -> dict[tuple[str, str], charts.HeatCell]:
    return {("resolution", "A.5.28"): charts.HeatCell(12 / 35, 12, 35, "gap", tooltip="Resolution & evidence"),
            ("logging", "A.5.25"): charts.HeatCell(0.0, 0, 40, "covered"),
            ("monitoring", "A.8.15"): charts.HeatCell(0.5, 3, 6, "improvement", shaded=False),
            ("logging", "A.5.28"): charts.HeatCell(None, 0, 0, "gap")}


ROWS = [("logging", "Incident Logging & Categorization"), ("resolution", "Incident Resolution"), ("monitoring", "Monitoring")]
COLUMNS = [("A.5.25", "A.5.25"), ("A.5.28", "A.5.28"), ("A.8.15", "A.8.15")]


def test_the_heatmap_prints_share_and_counts_and_marks_the_relation_by_pattern() -> None:
    svg = charts.heatmap_chart(ROWS, COLUMNS, heat_cells(), title="Heat & map")
    root = parsed(svg)
    shown = texts(root)
    assert {"34%", "12 of 35", "0%", "0 of 40", "50%", "3 of 6", "–", "0 of 0"} <= set(shown)
    assert "Incident Logging & Categorization" in shown
    patterns = {p.get("id", "").rsplit("-", 1)[-1] for p in root.iter(f"{SVG}pattern")}
    assert {"gap", "improvement"} <= patterns
    cells = [g for g in root.iter(f"{SVG}g")]
    assert len(cells) == 4  # a pair without a cell draws nothing
    assert "Resolution & evidence" in title_texts(root)
    strips = [r.get("fill") for g in cells for r in g.iter(f"{SVG}rect")][1::2]
    assert sum(1 for f in strips if f and f.endswith("-gap)")) == 2 and sum(1 for f in strips if f and f.endswith("-improvement)")) == 1
    # the shading: the evidence cell is in the 25-50% band, the unshaded improvement cell white
    fills = {g.find(f"{SVG}title").text if g.find(f"{SVG}title") is not None else n: g.find(f"{SVG}rect").get("fill")  # type: ignore[union-attr]
             for n, g in enumerate(cells)}
    assert fills["Resolution & evidence"] == charts.HEAT_LEVELS[3][1]
    assert "#ffffff" in fills.values()
    legend = " ".join(shown)
    assert "Share failing:" in legend and "gap: ISO asks more than ITIL" in legend and "covered: ITIL already meets the control" in legend
    assert root.find(f".//{SVG}a") is None


def test_heatmap_cells_link_to_their_population_on_a_page() -> None:
    svg = charts.heatmap_chart(ROWS, COLUMNS, heat_cells(), title="Heat",
                               href=lambda s, c: f"/dashboard/heatmap/cell?subprocess={s}&control={c}&edition=2022")
    root = parsed(svg)
    links = [a.get("href") for a in root.iter(f"{SVG}a")]
    assert "/dashboard/heatmap/cell?subprocess=resolution&control=A.5.28&edition=2022" in links and len(links) == 4
    assert "&amp;control=" in svg  # escaped in the markup, whole once parsed


@pytest.mark.parametrize(("share", "level"), [(None, 0), (0.0, 0), (0.01, 1), (0.10, 1), (0.11, 2), (0.25, 2), (0.26, 3), (0.5, 3), (0.51, 4), (1.0, 4)])
def test_heat_levels(share: float | None, level: int) -> None:
    assert charts.heat_level(share) == level


@pytest.mark.parametrize("make", [
    lambda: charts.bar_chart([], [], title="Worst controls"),
    lambda: charts.bar_chart(["a"], [charts.Series("x", [None])], title="Worst controls"),
    lambda: charts.trend_chart([], title="Worst controls"),
    lambda: charts.trend_chart([("W1", None)], title="Worst controls"),
    lambda: charts.stacked_bar_chart(["Finance"], [charts.Series("open", [0])], title="Worst controls"),
    lambda: charts.heatmap_chart([], [], {}, title="Worst controls"),
], ids=["bars", "bars-all-none", "trend", "trend-all-none", "stacked-zero", "heatmap"])
def test_nothing_to_draw_says_so(make: Any) -> None:
    root = parsed(make())
    assert any(t.startswith("No ") for t in texts(root))
    assert (root.find(f"{SVG}title").text or "") == "Worst controls"  # type: ignore[union-attr]
    assert root.find(f".//{SVG}rect") is not None and len(root.findall(f".//{SVG}rect")) == 1  # the frame only


def a_heatmap() -> Heatmap:
    rows = [Row("logging", "Incident Logging and Categorization"), Row("resolution", "Incident Resolution")]
    columns = [Column("A.5.25", "Assessment and decision on information security events", ("A.5.25",), ("A.16.1.4",)),
               Column("A.5.28", "Collection of evidence", ("A.5.28",), ("A.16.1.7",))]
    cells = {("logging", "A.5.25"): Cell("logging", "A.5.25", "2022", ("ASSESS-001",), "gap", "covered", "", 40, 10, 2, 1, 27),
             ("resolution", "A.5.28"): Cell("resolution", "A.5.28", "2022", ("EVID-001", "EVID-002"), "gap", "gap", "forensic & custody",
                                            35, 12, 0, 0, 23)}
    return Heatmap("2022", Scope(), T, "abc", rows, columns, cells, 100)


def env() -> Environment:
    e = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined)
    figures.install(e)
    return e


def test_the_heatmap_partial_shows_the_grid_and_its_numbers_with_links_on_a_page() -> None:
    heat = a_heatmap()
    page = env().get_template("partials/heatmap.html").render(
        heatmap=heat, cell_url=lambda s, c: f"/dashboard/heatmap/cell?subprocess={s}&control={c}&edition=2022")
    assert page.count('href="/dashboard/heatmap/cell?subprocess=resolution&amp;control=A.5.28&amp;edition=2022"') == 2  # grid and table
    assert "forensic &amp; custody" in page and "25%" in page and "12 of 35" in page
    assert ">10</a>" in page and ">12</a>" in page
    printed = env().get_template("partials/heatmap.html").render(heatmap=heat)
    assert "href=" not in printed and "<svg" in printed and "100 incidents in scope" in printed


def test_the_chart_partial_puts_the_numbers_in_a_table() -> None:
    figure = figures.trend_figure([("2026-W27", 3), ("2026-W28", 1200)], "Open gaps & more")
    html = env().get_template("partials/chart_with_table.html").render(figure=figure)
    assert "<svg" in html and "Open gaps &amp; more" in html
    assert '<th scope="row">2026-W28</th><td class="num">1,200</td>' in html
    empty = env().get_template("partials/chart_with_table.html").render(figure=figures.trend_figure([], "Nothing"))
    assert "No data for this scope" in empty and "<table" not in empty


def test_the_kpi_maturity_and_risk_partials_render_their_objects() -> None:
    kpis = ProcessKpis(Scope(), T, security_incidents=20,
                       durations={"decide": {"critical": Durations(3, 1.5, 2.25)}, "contain": {}, "resolve": {"high": Durations(5, 30.0, 70.0)}},
                       out_of_order={"decide": 0, "contain": 2, "resolve": 0}, closure=ClosureQuality(10, 7, 5, 4),
                       recurring=[RecurringGroup("mail-gw & relay", "phishing", 3, T, T, False, True)],
                       by_business_unit=[UnitCounts("R&D", 4, 6), UnitCounts("(none)", 1, 0)])
    html = env().get_template("partials/kpis.html").render(kpis=kpis)
    for expected in ("70%", "of 10 closed with a root cause", "1 of 1", "2.2", "70.0", "mail-gw &amp; relay", "R&amp;D", "No data for this scope"):
        assert expected in html, expected
    m = Maturity(Scope(), T, 1, [Criterion(1, "prioritised", MET, 1.0, "100%", "at least 95%"),
                                 Criterion(2, "tracked", NOT_MET, 0.5, "50%", "at least 90%"),
                                 Criterion(2, "playbooks", UNKNOWN, None, "not shown by ticket data", "evidence outside the ITSM tool"),
                                 Criterion(3, "reviews", NO_DATA, None, "no security incidents in the period", "within 90 days")])
    html = env().get_template("partials/maturity.html").render(maturity=m)
    assert "Level 1, Initial" in html and "unknown: not shown by ticket data" in html and "no data in this scope" in html
    assert "What keeps level 2 out of reach: tracked (50%, needs at least 90%)" in html
    risk = AcceptedRisk(1, "EVID-001", "Evidence & custody", ("A.5.28",), None, {"business_unit": "Finance"}, "SOC's tool & vault",
                        "CISO", T, T, "active", None, "isms-manager", None)
    html = env().get_template("partials/risks.html").render(risks=[risk])
    assert "business unit Finance" in html and "SOC&#39;s tool &amp; vault" in html and "recorded by isms-manager" in html
    assert "No risk acceptance" in env().get_template("partials/risks.html").render(risks=[])
