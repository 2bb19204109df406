"""The dashboard's read pages: overview, heatmap (and the population behind a cell), control, incident, KPIs, maturity.

Every page reads its filters from the URL (``filters.parse``) and the same queries the API answers from, so a page
and the API agree for the same scope. Risk acceptance (the one page that writes) is in ``risks.py``.
"""

from __future__ import annotations

from typing import Any

from flask import abort, render_template, request
from marshmallow import ValidationError

from ...models import Incident, utcnow
from ...queries import controls as cq
from ...queries import coverage as cov
from ...queries import heatmap as hm
from ...queries import incidents as iq
from ...queries.kpis import process_kpis
from ...queries.maturity import maturity
from ...queries.overview import choices, known_sources, overview, trend
from ...rules.model import GAP
from ...services import risk
from ...state import gapbridge
from . import bp, figures
from .filters import BadFilter, Filters, edition, parse
from .signin import signed_in

POPULATION_PAGE = 50


def _context(f: Filters, **more: Any) -> dict[str, Any]:
    """What every page's template gets: the filters, their choices, and the page's own values."""
    return {"filters": f, "choices": choices(), **more}


def _trend_figure(weeks: list[Any], caption: str, figure_id: str = "trend") -> figures.Figure:
    return figures.trend_figure([(w.label, w.open_at_end) for w in weeks], caption, figure_id=figure_id,
                                headers=("Week", "Open at its end", "Opened", "Resolved"),
                                rows=[(w.label, w.open_at_end, w.opened, w.resolved) for w in weeks])


@bp.get("/")
@signed_in()
def index() -> Any:
    f = parse()
    state = gapbridge()
    now = utcnow()
    o = overview(state.ruleset, f.scope, now, known_sources(state.config["connectors"]))
    return render_template("overview.html", **_context(
        f, o=o, trend_figure=_trend_figure(o.trend, f"Open gaps at the end of each week ({f.describe})")))


@bp.get("/heatmap")
@signed_in()
def heatmap() -> Any:
    f = parse()
    ed = edition()
    heat = hm.heatmap(gapbridge().ruleset, f.scope, utcnow(), ed)

    def cell_url(subprocess: str, control: str) -> str:
        return f.href("/dashboard/heatmap/cell", subprocess=subprocess, control=control, edition=ed)

    return render_template("heatmap.html", **_context(f, heat=heat, edition=ed, cell_url=cell_url))


@bp.get("/heatmap/cell")
@signed_in()
def heatmap_cell() -> Any:
    f = parse()
    ed = edition()
    subprocess, control = request.args.get("subprocess", ""), request.args.get("control", "")
    outcome = request.args.get("outcome") or None
    after = _int_arg("after")
    ruleset = gapbridge().ruleset
    now = utcnow()
    try:
        cell = hm.find_cell(ruleset, subprocess, control, ed)
        members = hm.cell_population(ruleset, subprocess, control, f.scope, now, edition=ed, outcome=outcome, after=after,
                                     limit=POPULATION_PAGE)
    except ValidationError as exc:
        name, problem = _first_problem(exc)
        raise BadFilter(name, problem) from None
    # counted as the heatmap counts its cells (improvement cells too, which coverage, about gaps, leaves out)
    counted = hm.heatmap(ruleset, f.scope, now, ed).cell(cell.subprocess, cell.control) or cell
    checks = [c for c in ruleset.checks if c.id in cell.checks]
    names = {sid: sp.name for sid, sp in ruleset.subprocesses.items()}
    nxt = members[-1].incident.id if len(members) == POPULATION_PAGE else None
    return render_template("heatmap_cell.html", **_context(
        f, cell=counted, checks=checks, members=members, outcome=outcome, edition=ed, next_after=nxt,
        subprocess_name=names.get(cell.subprocess, cell.subprocess), outcomes=cov.OUTCOMES))


@bp.get("/controls/<string:control_id>")
@signed_in()
def control(control_id: str) -> Any:
    f = parse()
    ruleset = gapbridge().ruleset
    now = utcnow()
    try:
        found = cq.resolve_one(ruleset, control_id)
    except ValidationError:
        abort(404, description=f"no control {control_id!r} in either edition of Annex A")
    ids_2022, ids_2013 = cq.crosswalk(ruleset, found)
    checks = cq.checks_of(ruleset, found)
    gap_checks = tuple(c.id for c in checks if c.kind == GAP)
    group = cov.Group("control", found.id, found.title, gap_checks, found.edition)
    (counts,) = cov.coverage([group], f.scope, now, ruleset)
    after = _int_arg("after")
    failing = cov.population(group, f.scope, now, "failed", after, POPULATION_PAGE)
    acceptances = [a for c in gap_checks for a in risk.list_acceptances(status=risk.ACTIVE, check_id=c, now=now, limit=500)]
    acceptances.sort(key=lambda a: a.expires_at)
    weeks = trend(f.scope, now, gap_checks)
    relations = cq.detail(ruleset, found)["relations"]
    return render_template("control.html", **_context(
        f, control=found, ids_2022=ids_2022, ids_2013=ids_2013, checks=checks, counts=counts, failing=failing,
        next_after=failing[-1].incident.id if len(failing) == POPULATION_PAGE else None, acceptances=acceptances,
        relations=relations, trend_figure=_trend_figure(weeks, f"Open gaps of {found.id} at the end of each week", "control-trend")))


@bp.get("/incidents/<int:incident_id>")
@signed_in()
def incident(incident_id: int) -> Any:
    found = iq.get(incident_id)
    if found is None:
        abort(404, description=f"no incident with id {incident_id}")
    return _incident_page(found)


@bp.get("/incidents/by-number/<string:number>")
@signed_in()
def incident_by_number(number: str) -> Any:
    found = iq.by_number(number[:64])
    if found is None:
        abort(404, description=f"no incident numbered {number[:64]!r}")
    return _incident_page(found)


def _incident_page(found: Incident) -> Any:
    ruleset = gapbridge().ruleset
    now = utcnow()
    body = iq.detail(found, ruleset, now)
    checks = {c.id: c for c in ruleset.checks}
    return render_template("incident.html", filters=parse({}), incident=found, body=body, checks=checks, accepted_checks=set(body["accepted_checks"]),
                           now=now)


@bp.get("/kpis")
@signed_in()
def kpis() -> Any:
    f = parse()
    return render_template("kpis.html", **_context(f, kpis=process_kpis(f.scope, utcnow())))


@bp.get("/maturity")
@signed_in()
def maturity_page() -> Any:
    f = parse()
    now = utcnow()
    return render_template("maturity.html", **_context(f, maturity=maturity(f.scope, now, gapbridge().ruleset)))


def _int_arg(name: str) -> int:
    raw = request.args.get(name) or "0"
    if not raw.isdigit() or len(raw) > 12:
        raise BadFilter(name, "expected a whole number")
    return int(raw)


def _first_problem(exc: ValidationError) -> tuple[str, str]:
    messages = exc.messages
    if isinstance(messages, dict) and messages:
        name, problem = next(iter(messages.items()))
        return str(name), "; ".join(problem) if isinstance(problem, list) else str(problem)
    return "request", str(messages)
