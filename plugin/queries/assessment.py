"""An assessment of the incidents in a scope, read from the database into plain data for OSCAL, CSV and JSON exports."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

import sqlalchemy as sa

from ..exports.assessment import AcceptedRisk, Assessment, ControlResult, ObservedFinding, ObservedIncident
from ..extensions import db
from ..models import Finding, Incident, RiskAcceptance
from ..rules.model import FAIL, GAP, PASS, PENDING, Ruleset
from .acceptance import in_force, matches
from .coverage import control_groups
from .export_rows import link
from .scope import Scope

_STATUS = {PASS: "pass", FAIL: "fail", PENDING: "pending"}
_RANK = {"pass": 1, "pending": 2, "accepted": 3, "fail": 4}


def build(ruleset: Ruleset, scope: Scope, *, title: str, now: datetime, version: str) -> Assessment:
    """Every incident in scope with its gap findings (accepted where a risk acceptance covers them), per control."""
    if scope.start is None or scope.end is None:
        raise ValueError("an assessment needs a period")
    acceptances = list(db.session.execute(sa.select(RiskAcceptance).where(in_force(now))).scalars())
    by_check: dict[str, list[RiskAcceptance]] = defaultdict(list)
    for a in acceptances:
        by_check[a.check_id].append(a)
    incidents: dict[int, Incident] = {}
    found: dict[int, list[ObservedFinding]] = defaultdict(list)
    q = (sa.select(Finding.incident_id, Finding.check_id, Finding.status, Finding.details, Incident)
         .join(Incident, Incident.id == Finding.incident_id)
         .where(Finding.kind == GAP, Finding.status.in_(list(_STATUS)), *scope.conditions())
         .order_by(Finding.incident_id, Finding.check_id))
    for incident_id, check_id, status, details, incident in db.session.execute(q.execution_options(yield_per=2000)):
        incidents[incident_id] = incident
        check = ruleset.check(check_id)
        if check is None:  # assessed under mappings that are no longer loaded
            continue
        shown = _STATUS[status]
        covering: tuple[int, ...] = ()
        if status == FAIL:
            covering = tuple(a.id for a in by_check.get(check_id, ()) if matches(a, check_id, incident, now))
            shown = "accepted" if covering else shown
        found[incident_id].append(ObservedFinding(check_id, check.title, shown, tuple(check.controls_2022), tuple(details or ()),
                                                  covering))
    in_scope_ids = [i for (i,) in db.session.execute(sa.select(Incident.id).where(*scope.conditions()).order_by(Incident.id))]
    controls = []
    for group in control_groups(ruleset):
        checks = set(group.checks)
        counts = {"pass": 0, "fail": 0, "accepted": 0, "pending": 0}
        members = []
        for incident_id in in_scope_ids:
            outcomes = [f.status for f in found.get(incident_id, ()) if f.check_id in checks]
            if outcomes:
                counts[max(outcomes, key=_RANK.__getitem__)] += 1
                members.append(incident_id)
        controls.append(ControlResult(
            control_2022=group.key, title=group.title, controls_2013=tuple(ruleset.catalogue.predecessors(group.key)),
            in_scope=len(members), passed=counts["pass"], failed=counts["fail"], accepted=counts["accepted"],
            pending=counts["pending"], not_applicable=len(in_scope_ids) - len(members), incident_ids=tuple(members)))
    observed = []
    for incident_id in in_scope_ids:
        inc = incidents.get(incident_id) or db.session.get(Incident, incident_id)
        assert inc is not None
        observed.append(ObservedIncident(inc.id, inc.source, inc.number, link(inc.url), inc.title, inc.severity, inc.opened_at,
                                         inc.closed_at, tuple(found.get(incident_id, ()))))
    risks = risks_in_period(ruleset, scope.start, scope.end, now)
    return Assessment(title=title, period_start=scope.start, period_end=scope.end, period_by=scope.by, generated_at=now,
                      ruleset_hash=ruleset.hash, overlays=tuple(ruleset.overlays), gapbridge_version=version,
                      controls=tuple(controls), incidents=tuple(observed), risks=tuple(risks))


def risks_in_period(ruleset: Ruleset, start: datetime, end: datetime, now: datetime) -> list[AcceptedRisk]:
    """Every acceptance in force at some moment of [start, end), whatever its status at ``now``."""
    ra = RiskAcceptance
    rows = db.session.execute(sa.select(ra, Incident.number).outerjoin(Incident, Incident.id == ra.incident_id)
                              .where(ra.created_at < end, ra.expires_at > start, sa.or_(ra.revoked_at.is_(None), ra.revoked_at > start))
                              .order_by(ra.id)).all()
    risks = []
    for a, number in rows:
        check = ruleset.check(a.check_id)
        status = "revoked" if a.revoked_at is not None else "expired" if a.expires_at <= now else "active"
        scoped = {k: v for k, v in (("source", a.scope_source), ("business_unit", a.scope_business_unit),
                                    ("category", a.scope_category)) if v is not None}
        risks.append(AcceptedRisk(a.id, a.check_id, check.title if check else a.check_id, tuple(check.controls_2022) if check else (),
                                  a.incident_id, scoped, a.justification, a.approver, a.created_at, a.expires_at, status, a.revoked_at,
                                  a.created_by, number))
    return risks
