"""The period report: its numbers against the queries, the API and a count here; text, CSV and PDF; the CLI."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from pypdf import PdfReader

from plugin.cli import main
from plugin.extensions import db
from plugin.models import Finding, Incident, RiskAcceptance
from plugin.queries import coverage as cov
from plugin.queries import overview
from plugin.queries.acceptance import matches
from plugin.queries.heatmap import heatmap
from plugin.queries.kpis import process_kpis
from plugin.queries.scope import Scope
from plugin.schemas.common import parse_period
from plugin.services import period_report as pr
from plugin.services import risk
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .apiclient import ApiClient
from .conftest import NOW
from .fakes import FakeConnector
from .test_heatmap import varied

D = timedelta(days=1)
Q3 = parse_period("2026-Q3")
HEADINGS = ("Summary", "Heatmap", "Controls with failing incidents", "Accepted risks", "Process KPIs", "Maturity", "Traceability")


@pytest.fixture
def report_app(app_factory: Any) -> Any:
    app = app_factory(mappings={"regulatory": ["gdpr"]})
    with app.app_context():
        ruleset = gapbridge().ruleset
        tool = varied(240, seed=5)
        for n, t in enumerate(tool.tickets.values()):  # ticket titles with markup and ampersands, which must come out as text
            t["canonical"]["title"] = f"Phishing & <script>x</script> R&D #{n}"
        sync_source(FakeConnector(tool), ruleset=ruleset)
        backdate_gaps()
        risk.accept("EVID-001", scope={"business_unit": "Finance"}, justification="Evidence kept by the SOC's own case tool & vault",
                    approver="Chief Information Security Officer", expires_at=NOW + 60 * D, actor="isms-manager", ruleset=ruleset,
                    max_days=365, now=NOW - 100 * D)
        db.session.remove()
    return app


def backdate_gaps() -> None:
    """As if each incident had been assessed as it was worked: its gaps failed a day after it opened, and one passing gap
    in five had failed before it came to pass ten days later (the sync itself ran today)."""
    rows = db.session.execute(sa.select(Finding, Incident.opened_at).join(Incident, Incident.id == Finding.incident_id)
                              .where(Finding.kind == "gap", Finding.status.in_(["fail", "pass"]))).all()
    for n, (f, opened) in enumerate(rows):
        if f.status == "fail":
            f.first_failed_at = opened + D
        elif n % 5 == 0:
            f.first_failed_at, f.resolved_at = opened + D, opened + 11 * D
    db.session.commit()


def scope_q3(**filters: Any) -> Scope:
    return Scope(start=Q3.start, end=Q3.end, label=Q3.label, **filters)


def built(edition: str = "2022", **filters: Any) -> pr.PeriodReport:
    return pr.build(gapbridge().ruleset, scope_q3(**filters), NOW, edition=edition, sources=["fake", "never-synced"], version="9.9.9")


def open_gaps_counted(scope: Scope) -> tuple[int, int, set[int]]:
    """(open gaps, accepted gaps, incidents with an open gap), counted here."""
    acceptances = db.session.execute(sa.select(RiskAcceptance)).scalars().all()
    open_, accepted, incidents = 0, 0, set()
    rows = db.session.execute(sa.select(Finding, Incident).join(Incident, Incident.id == Finding.incident_id)
                              .where(Finding.status == "fail", Finding.kind == "gap", *scope.conditions())).all()
    for f, i in rows:
        if any(matches(a, f.check_id, i, NOW) for a in acceptances):
            accepted += 1
        else:
            open_ += 1
            incidents.add(i.id)
    return open_, accepted, incidents


def test_the_numbers_are_those_of_the_queries_the_api_and_a_count_here(report_app: Any) -> None:
    with report_app.app_context():
        r = built()
        scope = scope_q3()
        s = r.summary
        assert s.incidents == cov.in_scope_total(scope) > 30
        open_, accepted, with_gaps = open_gaps_counted(scope)
        assert (s.open_gaps, s.accepted_gaps, s.incidents_with_open_gaps) == (open_, accepted, len(with_gaps))
        assert accepted > 0 and open_ > 0
        security = db.session.execute(sa.select(Incident.id).where(*scope.conditions(), Incident.is_security.is_(True),
                                                                   Incident.record_type == "incident")).scalars().all()
        assert s.security_incidents == len(security) == process_kpis(scope, NOW).security_incidents
        assert s.security_without_open_gap == len(set(security) - with_gaps)
        assert [w.label for w in r.trend][:2] == ["2026-W27", "2026-W28"] and r.trend[-1].label == "2026-W40"  # 29 Jun to 4 Oct
        # the dashboard overview's weekly series (its own tests count it), for the same scope
        assert r.trend == overview.trend(scope, NOW)
        assert all(w.open_at_end for w in r.trend) and any(w.resolved for w in r.trend)
        same = heatmap(gapbridge().ruleset, scope, NOW)
        assert {k: (c.failing, c.applicable) for k, c in r.heatmap.cells.items()} == {k: (c.failing, c.applicable) for k, c in same.cells.items()}
        api = ApiClient(report_app)
        by_control = {row["key"]: row for row in api.pages("/api/v1/coverage/controls?period=2026-Q3")}
        assert {c.group.key: (c.in_scope, c.failed, c.accepted) for c in r.controls} == {
            k: (v["in_scope"], v["failed"], v["accepted"]) for k, v in by_control.items()}
        assert r.failing_controls and all(f.counts.failed for f in r.failing_controls)
        for f in r.failing_controls:
            listed = api.json(f"/api/v1/coverage/controls/{f.counts.group.key}/population?period=2026-Q3&outcome=failed"
                              f"&limit={r.population_limit}")["items"]
            assert len(f.incidents) == min(f.counts.failed, r.population_limit)
            assert [i.number for i in f.incidents] == [m["incident"]["number"] for m in listed]
            assert all(i.failed_checks and set(i.failed_checks) <= set(f.counts.group.checks) for i in f.incidents)
        (acceptance,) = r.risks
        assert acceptance.check_id == "EVID-001" and acceptance.created_by == "isms-manager" and acceptance.status == "active"
        assert {s.source: s.status for s in r.traceability.sources} == {"fake": "succeeded", "never-synced": None}
        assert r.traceability.overlays == ("gdpr",) and r.traceability.ruleset_hash == gapbridge().ruleset.hash
        assert any(c.status == "unknown" for c in r.maturity.criteria)


def test_filters_and_the_2013_edition(report_app: Any) -> None:
    with report_app.app_context():
        r = built("2013", business_unit="Sales", severity="high")
        scope = scope_q3(business_unit="Sales", severity="high")
        assert r.summary.incidents == cov.in_scope_total(scope)
        assert r.summary.open_gaps == open_gaps_counted(scope)[0]
        assert r.heatmap.edition == "2013" and {c.group.edition for c in r.controls} == {"2013"}
        api = ApiClient(report_app)
        for c in r.controls:
            one = api.json(f"/api/v1/coverage/controls/{c.group.key}?period=2026-Q3&business_unit=Sales&severity=high")
            assert (c.in_scope, c.failed, c.accepted) == (one["in_scope"], one["failed"], one["accepted"]), c.group.key
        assert "A.16.1.7" in {c.group.key for c in r.controls}
        assert "Incidents opened" not in pr.format_text(r)  # the text says the filters instead
        assert "business unit Sales, severity high" in pr.format_text(r)


def test_a_population_beyond_the_limit_says_how_many_more(report_app: Any) -> None:
    with report_app.app_context():
        r = pr.build(gapbridge().ruleset, scope_q3(), NOW, population_limit=2)
        f = r.failing_controls[0]
        assert len(f.incidents) == 2 and f.more == f.counts.failed - 2 > 0
        assert f"... and {f.more} more" in pr.format_text(r)
        rows = [row for row in csv.DictReader(io.StringIO(pr.format_csv(r))) if row["section"] == "population"]
        assert {"control": f.counts.group.key, "outcome": "more", "count": str(f.more)}.items() <= next(
            row for row in rows if row["outcome"] == "more" and row["control"] == f.counts.group.key).items()


def test_the_text_report_has_every_section_and_its_numbers(report_app: Any) -> None:
    with report_app.app_context():
        r = built()
        text = pr.format_text(r)
        for heading in ("Summary", "Open gaps week by week", "Heatmap:", "Controls with failing incidents",
                        "Risk acceptances in force", "Process KPIs", "Maturity:", "Traceability"):
            assert heading in text
        assert re.search(rf"open gaps\s+{r.summary.open_gaps}\s+on {r.summary.incidents_with_open_gaps} incidents", text)
        first = r.failing_controls[0]
        assert f"{first.counts.group.key} {first.counts.group.title}" in text and (first.incidents[0].number or "") in text
        assert "unknown (not shown by ticket data)" in text and "never-synced: never synced" in text
        assert "Chief Information Security Officer" in text


def test_the_csv_is_one_table_whose_rows_carry_their_section(report_app: Any) -> None:
    with report_app.app_context():
        r = built()
        rows = list(csv.DictReader(io.StringIO(pr.format_csv(r))))
    assert list(rows[0]) == list(pr.CSV_COLUMNS)
    sections = {row["section"] for row in rows}
    assert sections >= {"scope", "summary", "trend", "heatmap", "control", "population", "risk", "kpi_duration", "kpi",
                        "kpi_business_unit", "maturity", "traceability", "sync"}
    summary = {row["measure"]: row["value"] for row in rows if row["section"] == "summary"}
    assert int(summary["open_gaps"]) == r.summary.open_gaps and int(summary["incidents_in_scope"]) == r.summary.incidents
    assert float(summary["share_security_without_open_gap"]) == pytest.approx(r.summary.share_security_without_open_gap, abs=1e-4)
    cells = [row for row in rows if row["section"] == "heatmap"]
    assert len(cells) == len(r.heatmap.cells)
    for row in cells:
        cell = r.heatmap.cells[(row["subprocess"], row["control"])]
        assert (int(row["applicable"]), int(row["failing"]), row["relation"]) == (cell.applicable, cell.failing, cell.relation)
    population = [row for row in rows if row["section"] == "population"]
    assert len(population) == sum(len(f.incidents) for f in r.failing_controls)
    assert all(row["url"].startswith("https://") and row["failed_checks"] for row in population)
    (risk_row,) = [row for row in rows if row["section"] == "risk"]
    assert risk_row["justification"] == "Evidence kept by the SOC's own case tool & vault" and risk_row["covers"] == "business_unit Finance"
    durations = [row for row in rows if row["section"] == "kpi_duration"]
    assert {(row["measure"], row["severity"]) for row in durations} == {
        (m, sev) for m, by in r.kpis.durations.items() for sev in by}
    assert {row["measure"]: row["value"] for row in rows if row["section"] == "traceability"}["ruleset_hash"] == r.traceability.ruleset_hash


def pdf_text(data: bytes) -> str:
    assert data.startswith(b"%PDF-")
    return "\n".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(data)).pages)


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_the_pdf_has_every_section_and_the_numbers_of_the_queries(report_app: Any, tmp_path: Path) -> None:
    with report_app.app_context():
        r = built()
        html = pr.render_html(r)
        data = pr.render_pdf(r)
    reader = PdfReader(io.BytesIO(data))
    assert len(reader.pages) >= 7  # a page per section at least
    text = squash(pdf_text(data))
    for heading in HEADINGS:
        assert heading in text, heading
    s = r.summary
    # a card's figure and its label are two blocks: whether the text layer puts a space between them depends on
    # the font subsetting (HarfBuzz), not on the report
    def card(value: Any, label: str) -> bool:
        return re.search(rf"{re.escape(str(value))} ?{re.escape(label)}", text) is not None

    assert card(s.incidents, "incidents in scope") and card(s.security_incidents, "security incidents")
    assert card(s.open_gaps, f"open gaps, on {s.incidents_with_open_gaps} incidents")
    assert card(s.accepted_gaps, "accepted gaps") and card(f"{s.share_security_without_open_gap:.0%}", "of security incidents with no open gap")
    for w in r.trend:  # the table under the weekly chart
        assert f"{w.label} {w.open_at_end} {w.opened} {w.resolved}" in text
    assert f"Page 1 of {len(reader.pages)}" in text
    first = r.failing_controls[0]
    assert f"{first.counts.group.key} {first.counts.group.title}" in text
    assert f"{first.counts.failed} of {first.counts.in_scope} applicable incidents failing" in text
    assert all(i.number in text for i in first.incidents[:5] if i.number)
    assert r.traceability.ruleset_hash in text and "Chief Information Security Officer" in text
    assert "not shown by ticket data" in text
    # a ticket's markup stays text: the title is printed, never parsed
    assert "<script>" not in html and "&lt;script&gt;" in html and "Phishing & <script>x</script> R&D" in text
    # the ticket links are links in the PDF
    annotations = [a.get_object() for page in reader.pages for a in (page.get("/Annots") or [])]
    uris = {a["/A"]["/URI"] for a in annotations if "/A" in a and "/URI" in a["/A"]}
    assert first.incidents[0].url in uris


def test_the_pdf_fetches_nothing_outside_the_dashboard_package() -> None:
    fetcher = pr.package_fetcher()
    css = (pr.DASHBOARD / "static" / "report.css").as_uri()
    assert b"@page" in fetcher(css).read()
    for url in ("https://example.com/x.css", "http://127.0.0.1:1/", (pr.DASHBOARD.parent / "__init__.py").as_uri(),
                (pr.DASHBOARD / "static" / ".." / ".." / "__init__.py").as_uri(), "file:///etc/passwd", "data:text/css,body{}"):
        with pytest.raises(ValueError):
            fetcher(url)


@pytest.fixture
def cli(report_app: Any, tmp_path: Path) -> Any:
    cfg = gapbridge(report_app).config
    cfg_file = tmp_path / "gapbridge.yaml"
    cfg_file.write_text(json.dumps({"database_url": cfg["database_url"], "instance_path": str(tmp_path / "inst"),
                                    "mappings": {"regulatory": ["gdpr"]}}))
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(main, ["--config", str(cfg_file), "report", *args])
    return invoke


def test_the_cli_writes_each_format(cli: Any, report_app: Any, tmp_path: Path) -> None:
    with report_app.app_context():
        expected = built()
    r = cli("--period", "2026-Q3", "--format", "csv")
    assert r.exit_code == 0, r.output
    summary = {row["measure"]: row["value"] for row in csv.DictReader(io.StringIO(r.stdout)) if row["section"] == "summary"}
    assert int(summary["open_gaps"]) == expected.summary.open_gaps
    r = cli("--period", "2026-Q3")
    assert r.exit_code == 0 and r.stdout.startswith("GapBridge period report: 2026-Q3 (2026-07-01 to 2026-09-30)")
    out = tmp_path / "q3.pdf"
    r = cli("--period", "2026-Q3", "--format", "pdf", "--out", str(out), "--edition", "2013", "--source", "fake")
    assert r.exit_code == 0, r.output
    assert r.stderr.strip() == f"wrote {out} (pdf, 2026-Q3 (2026-07-01 to 2026-09-30))"
    text = squash(pdf_text(out.read_bytes()))
    assert "ITIL sub-processes by ISO/IEC 27001:2013 controls" in text and "A.16.1.7" in text
    assert list(tmp_path.glob(".q3.pdf.*")) == []  # no temporary file left beside it
    month = tmp_path / "m.txt"
    r = cli("--period", "2026-08", "--out", str(month), "--record-type", "incident")
    assert r.exit_code == 0 and month.read_text().startswith("GapBridge period report: 2026-08 (2026-08-01 to 2026-08-31), record type incident")
    week = cli("--period", "2026-W30", "--format", "text")
    assert week.exit_code == 0 and "2026-W30 (2026-07-20 to 2026-07-26)" in week.stdout


def test_the_cli_without_options_prints_todays_summary(cli: Any) -> None:
    r = cli()
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("Incidents stored: 240 (") and "Open gaps by Annex A control (2022 | 2013):" in r.stdout


@pytest.mark.parametrize(("args", "line"), [
    (["--period", "2026-Q5"], "gapbridge: --period '2026-Q5': expected a year (2026), a quarter (2026-Q3), a month (2026-09) or an ISO week (2026-W05)"),
    (["--period", "2027-W53"], "gapbridge: --period '2027-W53': 2027 has no ISO week 53"),
    (["--format", "xlsx"], "gapbridge: --format 'xlsx': expected one of text, csv, pdf"),
    (["--format", "pdf"], "gapbridge: --out: a PDF is written to a file: give --out FILE (e.g. --out report-2026-Q3.pdf)"),
    (["--edition", "2005"], "gapbridge: --edition '2005': expected 2022 or 2013"),
    (["--severity", "extreme"], "gapbridge: --severity 'extreme': expected one of critical, high, medium, low"),
    (["--record-type", "ticket"], "gapbridge: --record-type 'ticket': expected one of event, incident, weakness, request"),
    (["--business-unit", ""], "gapbridge: --business-unit: expected 1 to 255 characters"),
    (["--out", "/nonexistent-folder/r.csv", "--format", "csv"], "gapbridge: --out /nonexistent-folder/r.csv: no folder /nonexistent-folder"),
], ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_bad_input_is_one_line_naming_the_option_exit_2(cli: Any, args: list[str], line: str, tmp_path: Path) -> None:
    r = cli(*args)
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == line and "Traceback" not in r.output


def test_a_failed_pdf_leaves_the_file_before_it_untouched(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report.pdf"
    out.write_bytes(b"%PDF-1.7 the last good report")

    def breaks(chunks: Any) -> Any:
        yield b"%PDF-1.7 half"
        raise OSError(28, "No space left on device")

    real = pr.write_atomically
    monkeypatch.setattr(pr, "write_atomically", lambda path, chunks: real(path, breaks(chunks)))
    r = cli("--period", "2026-Q3", "--format", "pdf", "--out", str(out))
    assert r.exit_code == 1 and r.stderr.strip() == "gapbridge: No space left on device"
    assert out.read_bytes() == b"%PDF-1.7 the last good report"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == []
