"""The period report: what the ISMS manager hands on for a quarter (or a month, a year, an ISO week), as text, CSV or PDF.

Sections, the same in every format: the scope; a summary (incidents in scope, security incidents, the share of
security incidents with no open gap, open gaps, accepted gaps); open gaps by week; the heatmap of sub-processes by
controls (2022 edition unless asked for 2013); each control with failing incidents and its population (incident
numbers, ticket links, the checks that failed); the risk acceptances in force during the period; the process KPIs;
the maturity level, with what ticket data cannot show said plainly; and traceability (GapBridge version, the ruleset's
hash, overlays, the last sync of each source). Every number comes from the queries the API and the dashboard read.

CSV: one file for a spreadsheet. Every row starts with ``section``; the other columns are shared by every section and
each section fills the ones it needs (filter on the first column to get one table; ``CSV_COLUMNS`` lists them all):

=================  ==========================================================================================
section            columns filled
=================  ==========================================================================================
scope              measure, value (period, start, end, by, business_unit, source, severity, record_type, edition,
                   generated_at)
summary            measure, value (incidents_in_scope, security_incidents, security_incidents_without_open_gap,
                   share_security_without_open_gap, open_gaps, accepted_gaps, incidents_with_open_gaps)
trend              week, started_at, open_gaps (open at the week's end, or now), opened, resolved (the dashboard's)
heatmap            subprocess, subprocess_name, control, title, edition, relation, kind, checks, applicable,
                   failing, accepted, pending, passed, share_failing
control            control, title, edition, ids_2022, ids_2013, checks, applicable, failing, accepted, pending,
                   passed, share_failing (every control with a gap check, failing or not)
population         control, incident, url, source, incident_title, severity, business_unit, opened_at, outcome,
                   failed_checks (the failing incidents of each failing control, up to the report's limit;
                   a last row with outcome "more" has in count how many were left out)
risk               check, title, controls, covers, justification, approver, recorded_by, created_at, expires_at,
                   status, revoked_at
kpi_duration       measure (decide, contain, resolve), severity, count, mean_hours, p90_hours
kpi                measure, value (security_incidents, closed, with_root_cause, with_lessons_learned, with_both,
                   recurring_groups, recurring_stopped, out_of_order_<measure>)
kpi_recurring      affected_ci, category, count, first_opened_at, last_opened_at, problem_linked, stopped
kpi_business_unit  business_unit, open, closed
maturity           level, criterion, status (met, not_met, unknown, no_data), shown, target; a first row with
                   measure "supported_level"
traceability       measure, value (gapbridge_version, ruleset_hash, overlays, disabled_checks, overrides)
sync               source, status, started_at, finished_at, fetched, stored, rejected, last_success_at, error
=================  ==========================================================================================

Times are ISO 8601 in UTC; shares are fractions (0.25), not percentages, so a spreadsheet computes with them.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from connectors.redact import redact_urls

from ..extensions import db
from ..models import Finding, Incident
from ..queries import controls as cq
from ..queries import coverage as cov
from ..queries.acceptance import accepted_term
from ..queries.assessment import risks_in_period
from ..queries.export_rows import link
from ..queries.heatmap import Heatmap, heatmap
from ..queries.kpis import MEASURES, ProcessKpis, process_kpis, security_incidents
from ..queries.maturity import Maturity, maturity
from ..queries.overview import Week, known_sources
from ..queries.overview import trend as weekly_trend
from ..queries.scope import Scope
from ..queries.status import sync_status
from ..rules.model import FAIL, GAP, Ruleset

POPULATION_LIMIT = 50  # failing incidents listed per control, enough to sample (a PDF of 200 a control ran to 60 pages); the export has all
FORMATS = ("text", "csv", "pdf")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Summary:
    incidents: int
    security_incidents: int
    security_without_open_gap: int
    open_gaps: int  # failed gap findings no acceptance in force covers
    accepted_gaps: int  # failed gap findings an acceptance in force covers
    incidents_with_open_gaps: int

    @property
    def share_security_without_open_gap(self) -> float | None:
        return self.security_without_open_gap / self.security_incidents if self.security_incidents else None


@dataclass(frozen=True)
class FailingIncident:
    incident_id: int
    number: str | None
    url: str | None
    source: str
    title: str | None
    severity: str | None
    business_unit: str | None
    opened_at: datetime | None
    failed_checks: tuple[str, ...]


@dataclass(frozen=True)
class FailingControl:
    counts: cov.Counts
    ids_2022: tuple[str, ...]
    ids_2013: tuple[str, ...]
    incidents: tuple[FailingIncident, ...]

    @property
    def more(self) -> int:
        """Failing incidents left out of the list."""
        return self.counts.failed - len(self.incidents)


@dataclass(frozen=True)
class SourceSync:
    source: str
    status: str | None  # of the newest run; None: never synced
    started_at: datetime | None
    finished_at: datetime | None
    fetched: int
    stored: int
    rejected: int
    last_success_at: datetime | None
    error: str | None  # credentials taken out of any URL


@dataclass(frozen=True)
class Traceability:
    gapbridge_version: str
    ruleset_hash: str
    overlays: tuple[str, ...]
    disabled_checks: tuple[str, ...]
    overrides: str | None
    sources: tuple[SourceSync, ...]


@dataclass
class PeriodReport:
    scope: Scope
    generated_at: datetime
    edition: str
    summary: Summary
    trend: list[Week]  # the dashboard's: gaps open at the end of each week, opened and resolved in it
    heatmap: Heatmap
    controls: list[cov.Counts]  # every control with a gap check, in the report's edition
    failing_controls: list[FailingControl]
    risks: list[Any]  # plugin.exports.assessment.AcceptedRisk
    kpis: ProcessKpis
    maturity: Maturity
    traceability: Traceability
    population_limit: int = POPULATION_LIMIT
    ruleset_titles: dict[str, str] = field(default_factory=dict)  # check id -> title
    crosswalk: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)  # control -> (2022 ids, 2013 ids)

    @property
    def period(self) -> str:
        return describe_period(self.scope)


def describe_period(scope: Scope) -> str:
    if scope.start is None and scope.end is None:
        return "all time"
    span = f"{scope.start:%Y-%m-%d}" if scope.start else "the start"
    span += f" to {scope.end - timedelta(seconds=1):%Y-%m-%d}" if scope.end else " onwards"
    return f"{scope.label} ({span})" if scope.label else span


def describe_filters(scope: Scope) -> str:
    """The filters beside the period, as a reader meets them: "business unit Finance, severity high"; "" when none."""
    words = [f"{name} {value}" for name, value in (("business unit", scope.business_unit), ("source", scope.source),
                                                   ("severity", scope.severity), ("record type", scope.record_type)) if value]
    return ", ".join(words)


def control_groups(ruleset: Ruleset, edition: str) -> list[cov.Group]:
    """The coverage groups of an edition's controls: 2022 as the API lists them; 2013 as its one-control route counts them."""
    if edition == "2022":
        return cov.control_groups(ruleset)
    groups = []
    annex_a = [c for c in ruleset.catalogue.controls["2013"].values() if c.kind == "annex_a"]
    for control in sorted(annex_a, key=lambda c: cov._control_order(c.id)):
        checks = tuple(c.id for c in cq.checks_of(ruleset, control) if c.kind == GAP)
        if checks:
            groups.append(cov.Group("control", control.id, control.title, checks, "2013"))
    return groups


def build(ruleset: Ruleset, scope: Scope, now: datetime, *, edition: str = "2022", sources: Sequence[str] = (),
          version: str = "", overrides: str | None = None, population_limit: int = POPULATION_LIMIT) -> PeriodReport:
    """Read every section for ``scope`` as of ``now`` (which decides the acceptances in force).

    ``sources`` are the configured connector instances (any other that synced is added); ``population_limit`` caps the
    failing incidents listed per control.
    """
    heat = heatmap(ruleset, scope, now, edition)
    kpis = process_kpis(scope, now)
    counts = cov.coverage(control_groups(ruleset, edition), scope, now, ruleset)
    failing = [_failing_control(ruleset, c, scope, now, population_limit) for c in counts if c.failed]
    failing.sort(key=lambda f: (-f.counts.failed, cov._control_order(f.counts.group.key)))
    start = scope.start or _EPOCH
    end = scope.end or now + timedelta(microseconds=1)
    return PeriodReport(
        scope=scope, generated_at=now, edition=edition, summary=_summary(scope, now, heat.incidents_in_scope, kpis),
        trend=weekly_trend(scope, now), heatmap=heat, controls=counts, failing_controls=failing,
        risks=risks_in_period(ruleset, start, end, now), kpis=kpis, maturity=maturity(scope, now, ruleset, kpis=kpis),
        traceability=_traceability(ruleset, sources, version, overrides), population_limit=population_limit,
        ruleset_titles={c.id: c.title for c in ruleset.checks}, crosswalk={c.group.key: _crosswalk(ruleset, c.group) for c in counts})


def _summary(scope: Scope, now: datetime, incidents: int, kpis: ProcessKpis) -> Summary:
    accepted = accepted_term(now)
    failed = sa.and_(Finding.status == FAIL, Finding.kind == GAP)
    row = db.session.execute(
        sa.select(sa.func.count(sa.case((~accepted, 1))), sa.func.count(sa.case((accepted, 1))),
                  sa.func.count(sa.distinct(sa.case((~accepted, Finding.incident_id)))))
        .select_from(Finding).join(Incident, Incident.id == Finding.incident_id).where(failed, *scope.conditions())).one()
    open_gap = sa.exists().where(Finding.incident_id == Incident.id, failed, ~accepted)
    clean = db.session.scalar(sa.select(sa.func.count()).select_from(Incident).where(*security_incidents(scope), ~open_gap)) or 0
    return Summary(incidents, kpis.security_incidents, clean, int(row[0]), int(row[1]), int(row[2]))


def _crosswalk(ruleset: Ruleset, group: cov.Group) -> tuple[tuple[str, ...], tuple[str, ...]]:
    control = ruleset.catalogue.get(group.edition, group.key)
    ids22, ids13 = cq.crosswalk(ruleset, control) if control is not None else ([group.key], [])
    return tuple(ids22), tuple(ids13)


def _failing_control(ruleset: Ruleset, counts: cov.Counts, scope: Scope, now: datetime, limit: int) -> FailingControl:
    group = counts.group
    ids22, ids13 = _crosswalk(ruleset, group)
    members = cov.population(group, scope, now, "failed", 0, limit) if limit > 0 else []
    incidents = tuple(FailingIncident(m.incident.id, m.incident.number, link(m.incident.url), m.incident.source, m.incident.title,
                                      m.incident.severity, m.incident.business_unit, m.incident.opened_at,
                                      tuple(c for c, outcome in m.checks.items() if outcome == "failed")) for m in members)
    return FailingControl(counts, ids22, ids13, incidents)


def _traceability(ruleset: Ruleset, sources: Sequence[str], version: str, overrides: str | None) -> Traceability:
    synced = []
    for s in sync_status(known_sources(sources)):  # the syncs only: the outbox and gap counts per source are not the report's
        run = s.last_run
        synced.append(SourceSync(s.source, run.status if run else None, run.started_at if run else None, run.finished_at if run else None,
                                 run.fetched if run else 0, run.stored if run else 0, run.rejected if run else 0, s.last_success_at,
                                 redact_urls(run.error) if run and run.error else None))
    return Traceability(version, ruleset.hash, tuple(ruleset.overlays), tuple(ruleset.disabled), overrides, tuple(synced))


# --- text


def _pct(share: float | None) -> str:
    return "–" if share is None else f"{share:.0%}"


def _when(value: datetime | None) -> str:
    return "–" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def format_text(r: PeriodReport) -> str:
    """The report for a terminal: the sections in order, plain lines."""
    s = r.summary
    filters = describe_filters(r.scope)
    lines = [f"GapBridge period report: {r.period}" + (f", {filters}" if filters else ""),
             f"incidents {'closed' if r.scope.by == 'closed_at' else 'opened'} in the period; ISO/IEC 27001:{r.edition}; "
             f"generated {_when(r.generated_at)}, with the risk acceptances in force then", "",
             "Summary",
             f"  incidents in scope                      {s.incidents:>8}",
             f"  security incidents                      {s.security_incidents:>8}",
             f"  security incidents with no open gap     {s.security_without_open_gap:>8}  ({_pct(s.share_security_without_open_gap)})",
             f"  open gaps                               {s.open_gaps:>8}  on {s.incidents_with_open_gaps} incidents",
             f"  accepted gaps (risk accepted, in force) {s.accepted_gaps:>8}"]
    if r.trend:
        lines += ["", "Open gaps week by week (at the end of each week; opened and resolved in it)"]
        lines += [f"  {w.label} ({w.start:%d %b})  {w.open_at_end:>6} open  {w.opened:>6} opened  {w.resolved:>6} resolved" for w in r.trend]
    heat = r.heatmap
    lines += ["", f"Heatmap: failing of applicable, by ITIL sub-process and control ({r.edition})"]
    for row in heat.rows:
        cells = [c for c in (heat.cell(row.id, col.id) for col in heat.columns) if c is not None]
        if not cells:
            continue
        lines.append(f"  {row.name}")
        for c in cells:
            note = "  improvement checks only (opportunities, not gaps)" if c.kind == "improvement" else (
                f"  +{c.accepted} accepted" if c.accepted else "")
            lines.append(f"    {c.control:<10} {c.relation:<11} {c.failing:>6} of {c.applicable:<6} {_pct(c.share_failing):>5}{note}")
    lines += ["", f"Controls with failing incidents ({r.edition})"]
    if not r.failing_controls:
        lines.append("  none")
    for f in r.failing_controls:
        n = f.counts
        old = f" | {', '.join(f.ids_2013)}" if r.edition == "2022" and f.ids_2013 else (f" | {', '.join(f.ids_2022)}" if r.edition == "2013" else "")
        lines.append(f"  {n.group.key} {n.group.title}{old}: {n.failed} of {n.in_scope} failing"
                     + (f", {n.accepted} accepted" if n.accepted else ""))
        for i in f.incidents:
            lines.append(f"    {i.number or i.incident_id:<14} {', '.join(i.failed_checks):<24} {i.url or ''}".rstrip())
        if f.more:
            period = f" --period {r.scope.label}" if r.scope.label else ""
            lines.append(f"    ... and {f.more} more (all: gapbridge export csv --dataset population --control {n.group.key}{period} --out FILE)")
    lines += ["", "Risk acceptances in force during the period"]
    if not r.risks:
        lines.append("  none")
    for a in r.risks:
        covers = f"incident {a.incident_number or a.incident_id}" if a.incident_id is not None else ", ".join(
            f"{k.replace('_', ' ')} {v}" for k, v in sorted(a.scope.items()))
        lines.append(f"  {a.check_id} on {covers}: approved by {a.approver}, {a.created_at:%Y-%m-%d} to {a.expires_at:%Y-%m-%d} ({a.status})")
        lines.append(f"    {a.justification}")
    k = r.kpis
    lines += ["", f"Process KPIs ({k.security_incidents} security incidents)"]
    for measure in MEASURES:
        for severity, d in k.durations.get(measure, {}).items():
            lines.append(f"  {measure:<8} {severity:<9} {d.count:>6} incidents  mean {_hours(d.mean_hours):>9}  p90 {_hours(d.p90_hours):>9}")
        if k.out_of_order.get(measure):
            lines.append(f"  {measure:<8} {k.out_of_order[measure]} incidents whose times run backwards, left out")
    cq_ = k.closure
    lines.append(f"  closed {cq_.closed}: root cause {cq_.with_root_cause} ({_pct(cq_.share(cq_.with_root_cause))}), lessons learned "
                 f"{cq_.with_lessons_learned} ({_pct(cq_.share(cq_.with_lessons_learned))}), both {cq_.with_both}")
    lines.append(f"  recurring groups {len(k.recurring)}, stopped {k.recurring_stopped}")
    for u in k.by_business_unit:
        lines.append(f"  {u.business_unit:<24} open {u.open:>6}  closed {u.closed:>6}")
    m = r.maturity
    lines += ["", f"Maturity: level {m.level} supported by the ticket data" if m.level else "Maturity: no level supported by the ticket data"]
    for crit in m.criteria:
        status = {"met": "met", "not_met": "NOT MET", "unknown": "unknown (not shown by ticket data)",
                  "no_data": "no data in this scope"}.get(crit.status, crit.status)
        lines.append(f"  L{crit.level} {status:<36} {crit.what}: {crit.shown}" + (f" (needs {crit.target})" if crit.status == "not_met" else ""))
    t = r.traceability
    lines += ["", "Traceability",
              f"  GapBridge {t.gapbridge_version or 'unknown'}, ruleset {t.ruleset_hash}",
              f"  overlays: {', '.join(t.overlays) or 'none'}; disabled checks: {', '.join(t.disabled_checks) or 'none'}"
              + (f"; overrides: {t.overrides}" if t.overrides else "")]
    for src in t.sources:
        if src.status is None:
            lines.append(f"  {src.source}: never synced")
            continue
        lines.append(f"  {src.source}: last sync {src.status}, started {_when(src.started_at)}, finished {_when(src.finished_at)}, "
                     f"{src.fetched} fetched" + (f"; last success {_when(src.last_success_at)}" if src.status != "succeeded" else "")
                     + (f": {src.error}" if src.error else ""))
    if not t.sources:
        lines.append("  no source has synced")
    return "\n".join(lines)


def _hours(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} h"


# --- CSV

CSV_COLUMNS = (
    "section", "measure", "value", "week", "subprocess", "subprocess_name", "control", "title", "edition", "relation", "kind",
    "checks", "ids_2022", "ids_2013", "applicable", "failing", "accepted", "pending", "passed", "share_failing", "incident", "url",
    "source", "incident_title", "severity", "business_unit", "opened_at", "outcome", "failed_checks", "open_gaps", "opened",
    "resolved", "check", "controls", "covers", "justification", "approver", "recorded_by",
    "created_at", "expires_at", "status", "revoked_at", "count", "mean_hours", "p90_hours", "affected_ci", "category",
    "first_opened_at", "last_opened_at", "problem_linked", "stopped", "open", "closed", "level", "criterion", "shown", "target",
    "started_at", "finished_at", "fetched", "stored", "rejected", "last_success_at", "error",
)


def _csv_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return round(value, 4)
    return "" if value is None else value


def _measures(section: str, pairs: Iterable[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
    for measure, value in pairs:
        yield {"section": section, "measure": measure, "value": value}


def csv_rows(r: PeriodReport) -> Iterator[dict[str, Any]]:
    """Every row of the CSV, as {column: value} (see the module's docstring)."""
    sc = r.scope
    yield from _measures("scope", (("period", sc.label or describe_period(sc)), ("start", sc.start), ("end", sc.end), ("by", sc.by),
                                   ("business_unit", sc.business_unit), ("source", sc.source), ("severity", sc.severity),
                                   ("record_type", sc.record_type), ("edition", r.edition), ("generated_at", r.generated_at)))
    s = r.summary
    yield from _measures("summary", (("incidents_in_scope", s.incidents), ("security_incidents", s.security_incidents),
                                     ("security_incidents_without_open_gap", s.security_without_open_gap),
                                     ("share_security_without_open_gap", s.share_security_without_open_gap), ("open_gaps", s.open_gaps),
                                     ("accepted_gaps", s.accepted_gaps), ("incidents_with_open_gaps", s.incidents_with_open_gaps)))
    for w in r.trend:
        yield {"section": "trend", "week": w.label, "started_at": w.start, "open_gaps": w.open_at_end, "opened": w.opened,
               "resolved": w.resolved}
    heat = r.heatmap
    names = {row.id: row.name for row in heat.rows}
    titles = {col.id: col.title for col in heat.columns}
    for row in heat.rows:
        for col in heat.columns:
            cell = heat.cell(row.id, col.id)
            if cell is not None:
                yield {"section": "heatmap", "subprocess": cell.subprocess, "subprocess_name": names[cell.subprocess],
                       "control": cell.control, "title": titles[cell.control], "edition": cell.edition, "relation": cell.relation,
                       "kind": cell.kind, "checks": cell.checks, "applicable": cell.applicable, "failing": cell.failing,
                       "accepted": cell.accepted, "pending": cell.pending, "passed": cell.passed, "share_failing": cell.share_failing}
    for counts in r.controls:
        g = counts.group
        ids22, ids13 = r.crosswalk.get(g.key, ((), ()))
        yield {"section": "control", "control": g.key, "title": g.title, "edition": g.edition, "ids_2022": ids22, "ids_2013": ids13,
               "checks": g.checks,
               "applicable": counts.in_scope, "failing": counts.failed, "accepted": counts.accepted, "pending": counts.pending,
               "passed": counts.passed, "share_failing": counts.failed / counts.in_scope if counts.in_scope else None}
    for f in r.failing_controls:
        for i in f.incidents:
            yield {"section": "population", "control": f.counts.group.key, "incident": i.number or i.incident_id, "url": i.url,
                   "source": i.source, "incident_title": i.title, "severity": i.severity, "business_unit": i.business_unit,
                   "opened_at": i.opened_at, "outcome": "failed", "failed_checks": i.failed_checks}
        if f.more:
            yield {"section": "population", "control": f.counts.group.key, "outcome": "more", "count": f.more}
    for a in r.risks:
        covers = f"incident {a.incident_number or a.incident_id}" if a.incident_id is not None else ", ".join(
            f"{k} {v}" for k, v in sorted(a.scope.items()))
        yield {"section": "risk", "check": a.check_id, "title": a.check_title, "controls": a.controls_2022, "covers": covers,
               "justification": a.justification, "approver": a.approver, "recorded_by": a.created_by, "created_at": a.created_at,
               "expires_at": a.expires_at, "status": a.status, "revoked_at": a.revoked_at}
    k = r.kpis
    for measure in MEASURES:
        for severity, d in k.durations.get(measure, {}).items():
            yield {"section": "kpi_duration", "measure": measure, "severity": severity, "count": d.count, "mean_hours": d.mean_hours,
                   "p90_hours": d.p90_hours}
    q = k.closure
    yield from _measures("kpi", (("security_incidents", k.security_incidents), ("closed", q.closed), ("with_root_cause", q.with_root_cause),
                                 ("with_lessons_learned", q.with_lessons_learned), ("with_both", q.with_both),
                                 ("recurring_groups", len(k.recurring)), ("recurring_stopped", k.recurring_stopped),
                                 *((f"out_of_order_{m}", k.out_of_order.get(m, 0)) for m in MEASURES)))
    for rec in k.recurring:
        yield {"section": "kpi_recurring", "affected_ci": rec.affected_ci, "category": rec.category, "count": rec.incidents,
               "first_opened_at": rec.first_opened_at, "last_opened_at": rec.last_opened_at, "problem_linked": rec.problem_linked,
               "stopped": rec.stopped}
    for u in k.by_business_unit:
        yield {"section": "kpi_business_unit", "business_unit": u.business_unit, "open": u.open, "closed": u.closed}
    yield {"section": "maturity", "measure": "supported_level", "value": r.maturity.level}
    for cr in r.maturity.criteria:
        yield {"section": "maturity", "level": cr.level, "criterion": cr.what, "status": cr.status, "shown": cr.shown, "target": cr.target}
    t = r.traceability
    yield from _measures("traceability", (("gapbridge_version", t.gapbridge_version), ("ruleset_hash", t.ruleset_hash),
                                          ("overlays", t.overlays), ("disabled_checks", t.disabled_checks), ("overrides", t.overrides)))
    for src in t.sources:
        yield {"section": "sync", "source": src.source, "status": src.status or "never", "started_at": src.started_at,
               "finished_at": src.finished_at, "fetched": src.fetched, "stored": src.stored, "rejected": src.rejected,
               "last_success_at": src.last_success_at, "error": src.error}


def format_csv(r: PeriodReport) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for row in csv_rows(r):
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return out.getvalue()


# --- PDF

DASHBOARD = Path(__file__).resolve().parent.parent / "web" / "dashboard"
TEMPLATE = "report/period_report.html"


def render_html(r: PeriodReport) -> str:
    """The report as the HTML the PDF is made from: the dashboard's partials, outside any request."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from ..web.dashboard import figures

    env = Environment(loader=FileSystemLoader(DASHBOARD / "templates"), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=False, lstrip_blocks=False)
    figures.install(env)
    points = [(f"W{w.label[-2:]}", w.open_at_end) for w in r.trend]  # the year is in the table
    # as the dashboard's overview draws it
    trend = figures.trend_figure(points, "Open gaps at the end of each week", headers=("Week", "Open at its end", "Opened", "Resolved"),
                                 rows=tuple((w.label, w.open_at_end, w.opened, w.resolved) for w in r.trend))
    return env.get_template(TEMPLATE).render(report=r, heatmap=r.heatmap, kpis=r.kpis, maturity=r.maturity, risks=r.risks,
                                             trend=trend, controls_chart=figures.controls_figure(
                                                 r.controls, f"Controls with the most failing incidents ({r.edition})"),
                                             describe_filters=describe_filters, cell_url=None)


def render_pdf(r: PeriodReport) -> bytes:
    """The report as a PDF (WeasyPrint), fetching nothing but the dashboard package's own files."""
    from weasyprint import HTML

    return bytes(HTML(string=render_html(r), base_url=(DASHBOARD / "templates" / "report").as_uri() + "/",
                      url_fetcher=package_fetcher()).write_pdf())


def package_fetcher() -> Any:
    """A WeasyPrint URL fetcher that serves the dashboard package's files and refuses anything else: no network."""
    from urllib.parse import unquote, urlsplit

    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class PackageFetcher(URLFetcher):  # type: ignore[misc]
        def fetch(self, url: str, headers: Any = None) -> Any:
            parts = urlsplit(url)
            path = Path(unquote(parts.path)).resolve() if parts.scheme == "file" else None
            if path is None or not path.is_relative_to(DASHBOARD) or not path.is_file():
                raise ValueError(f"the report fetches only the dashboard's own files, not {url}")
            return URLFetcherResponse(url, body=path.read_bytes(), headers={"Content-Type": _media_type(path)})

    return PackageFetcher()


def _media_type(path: Path) -> str:
    return {".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}.get(path.suffix, "application/octet-stream")


RENDERERS: dict[str, Callable[[PeriodReport], str | bytes]] = {"text": format_text, "csv": format_csv, "pdf": render_pdf}


def write_atomically(path: Path, chunks: Iterable[bytes]) -> None:
    """Write beside ``path`` and rename over it once complete: a failure never leaves half a file."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes the file private: keep the mode of the file replaced, else the usual one
        os.chmod(temp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
