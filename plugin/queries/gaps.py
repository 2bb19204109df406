"""Gaps: findings of gap checks (or improvements) by status, filtered and sorted, in keyset pages.

Pages are keyed on the finding's natural key (incident, check) behind the sort value, never on the row id:
re-assessment replaces finding rows, and a page keyed on ids would skip or repeat them while a sync writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError

from ..extensions import db
from ..models import Finding, Incident, RiskAcceptance
from ..rules.model import FAIL, PASS, SEVERITIES, Ruleset
from . import cursor as cursors
from .acceptance import accepted_term, in_force, matches
from .coverage import _control_order
from .scope import Scope

STATUSES = ("open", "accepted", "resolved")
SORTS = ("severity", "age", "control")


def control_checks(ruleset: Ruleset, ref: str) -> tuple[list[str], list[str]]:
    """(2022 ids, check ids) a control reference names in either edition; a 400 naming ``control`` if none."""
    controls = ruleset.catalogue.resolve(ref)
    if not controls:
        raise ValidationError({"control": [f"unknown control {ref!r} in either edition (e.g. A.5.26 or A.16.1.5)"]})
    ids22 = sorted({c.id for c in controls if c.edition == "2022"}
                   | {s for c in controls if c.edition == "2013" for s in ruleset.catalogue.successors.get(c.id, [])})
    return ids22, [c.id for c in ruleset.checks if set(ids22) & set(c.controls_2022)]


def _sort_key(ruleset: Ruleset, sort: str) -> tuple[sa.ColumnElement[Any], type]:
    if sort == "severity":
        return sa.case({s: i for i, s in enumerate(SEVERITIES)}, value=Finding.severity, else_=len(SEVERITIES)), int
    if sort == "control":
        order = sorted({c.id: c.controls_2022[0] if c.controls_2022 else "~" for c in ruleset.checks}.items(),
                       key=lambda kv: (_control_order(kv[1]), kv[0]))
        return sa.case({cid: i for i, (cid, _) in enumerate(order)}, value=Finding.check_id, else_=len(order)), int
    # age: the oldest open gap first; a resolved one (which keeps when it opened, too) by when it was resolved
    return sa.func.coalesce(Finding.resolved_at, Finding.first_failed_at, Finding.evaluated_at), str


@dataclass(frozen=True)
class GapRow:
    finding: Finding
    incident: Incident
    status: str  # open | accepted | resolved (improvements: open | resolved)
    acceptance: RiskAcceptance | None


def gaps(ruleset: Ruleset, args: Mapping[str, Any], now: datetime) -> tuple[list[GapRow], str | None]:
    """A page of gaps for the loaded query arguments, and the cursor of the next page."""
    status, sort, limit = args["status"], args["sort"], args["limit"]
    key_expr, key_type = _sort_key(ruleset, sort)
    accepted = accepted_term(now)
    # the page's keys first, over narrow rows (a top-N sort in memory), then the full rows of those few
    q = (sa.select(Finding.id, key_expr.label("k"), Finding.incident_id, Finding.check_id)
         .join(Incident, Incident.id == Finding.incident_id)
         .where(Finding.kind == args["kind"], *Scope.from_args(args).conditions()))
    if status == "open":
        q = q.where(Finding.status == FAIL, ~accepted)
    elif status == "accepted":
        q = q.where(Finding.status == FAIL, accepted)
    else:
        q = q.where(Finding.status == PASS, Finding.resolved_at.is_not(None))
    if "control" in args:
        q = q.where(Finding.check_id.in_(control_checks(ruleset, args["control"])[1]))
    if "subprocess" in args:
        if args["subprocess"] not in ruleset.subprocesses:
            raise ValidationError({"subprocess": [f"unknown sub-process; expected one of {', '.join(ruleset.subprocesses)}"]})
        q = q.where(Finding.subprocess == args["subprocess"])
    if "check" in args:
        if ruleset.check(args["check"]) is None:
            raise ValidationError({"check": [f"unknown check {args['check']!r} in the loaded mappings"]})
        q = q.where(Finding.check_id == args["check"])
    if "gap_severity" in args:
        q = q.where(Finding.severity == args["gap_severity"])
    if "assignment_group" in args:
        q = q.where(Incident.assignment_group == args["assignment_group"])
    key = cursors.query_key("gaps", args)
    if args.get("cursor"):
        last, incident_id, check_id = cursors.decode(args["cursor"], key, (datetime if key_type is str else int, int, str))
        q = q.where(sa.tuple_(key_expr, Finding.incident_id, Finding.check_id) > sa.tuple_(
            sa.literal(last, type_=Finding.__table__.c.first_failed_at.type) if key_type is str else sa.literal(last),
            sa.literal(incident_id), sa.literal(check_id)))
    keys = db.session.execute(q.order_by(key_expr, Finding.incident_id, Finding.check_id).limit(limit)).all()
    full = {f.id: (f, i) for f, i in db.session.execute(
        sa.select(Finding, Incident).join(Incident, Incident.id == Finding.incident_id).where(Finding.id.in_([k.id for k in keys] or [0])))}
    rows = [(*full[k.id], k.k) for k in keys if k.id in full]
    acceptances = []
    if status == "accepted" and rows:
        acceptances = list(db.session.execute(sa.select(RiskAcceptance).where(in_force(now))).scalars())
    out = []
    for finding, incident, _ in rows:
        acc = next((a for a in acceptances if matches(a, finding.check_id, incident, now)), None)
        out.append(GapRow(finding, incident, status, acc))
    next_cursor = None
    if len(keys) == limit:
        last = keys[-1]
        last_key = last.k.isoformat() if isinstance(last.k, datetime) else (_as_iso(last.k) if key_type is str else last.k)
        next_cursor = cursors.encode(key, [last_key, last.incident_id, last.check_id])
    return out, next_cursor


def _as_iso(value: Any) -> Any:
    """SQLite returns the coalesced time as text: bring it to the ISO form the cursor carries."""
    if isinstance(value, str):
        return datetime.fromisoformat(value).isoformat()
    return value

