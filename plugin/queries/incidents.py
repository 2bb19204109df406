"""One incident as an auditor reads it: canonical fields, findings, accepted risks, what was written back."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..extensions import db
from ..models import Finding, Incident, OutboxItem, RiskAcceptance
from ..rules.model import FAIL, PENDING, Ruleset
from . import cursor as cursors
from .acceptance import in_force, matches
from .scope import Scope

MAX_ID = cursors.MAX_INT


def columns(row: Any) -> dict[str, Any]:
    """A model row as a dict of its columns, for a schema to dump along with fields the query adds."""
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}


def get(incident_id: int) -> Incident | None:
    # beyond the id column's range no incident can exist; asking the database would be an error there
    return db.session.get(Incident, incident_id) if 0 < incident_id <= MAX_ID else None


def by_number(number: str) -> Incident | None:
    return db.session.execute(sa.select(Incident).where(Incident.number == number).order_by(Incident.id).limit(1)).scalar()


def detail(incident: Incident, ruleset: Ruleset, now: datetime) -> dict[str, Any]:
    findings = sorted(incident.findings, key=lambda f: (f.status != FAIL, f.check_id))
    acceptances = list(db.session.execute(sa.select(RiskAcceptance).where(in_force(now), RiskAcceptance.check_id.in_(
        [f.check_id for f in findings if f.is_open_gap] or [""]))).scalars())
    accepted = {f.check_id for f in findings if f.is_open_gap and any(matches(a, f.check_id, incident, now) for a in acceptances)}
    body: dict[str, Any] = {**columns(incident), "findings": findings}
    body["open_gaps"] = sum(1 for f in findings if f.is_open_gap and f.check_id not in accepted)
    body["accepted"] = len(accepted)
    body["accepted_checks"] = sorted(accepted)  # for the dashboard's incident page (the API's schema leaves it out)
    body["improvements"] = sum(1 for f in findings if f.status == FAIL and not f.is_open_gap)
    body["pending"] = sum(1 for f in findings if f.status == PENDING)
    # not applicable is stored as the absence of a finding under the ruleset the incident was assessed with
    if incident.assessed_ruleset == ruleset.hash:
        have = {f.check_id for f in findings}
        body["not_applicable"] = sorted(c.id for c in ruleset.checks if c.id not in have)
    else:
        body["not_applicable"] = None
    body["write_backs"] = [{
        "fingerprint": o.fingerprint, "status": o.status, "attempts": o.attempts, "created_at": o.created_at, "sent_at": o.sent_at,
        "last_error": o.last_error, "note": (o.payload or {}).get("note"), "fields": (o.payload or {}).get("fields"),
        "labels": (o.payload or {}).get("labels"),
    } for o in db.session.execute(sa.select(OutboxItem).where(OutboxItem.incident_id == incident.id).order_by(OutboxItem.id)).scalars()]
    return body


def listing(args: Mapping[str, Any]) -> tuple[list[Incident], str | None]:
    key = cursors.query_key("incidents", args)
    q = sa.select(Incident).where(*Scope.from_args(args).conditions())
    if "number" in args:
        q = q.where(Incident.number == args["number"])
    if args.get("cursor"):
        (after,) = cursors.decode(args["cursor"], key, (int,))
        q = q.where(Incident.id > after)
    rows = list(db.session.execute(q.order_by(Incident.id).limit(args["limit"])).scalars())
    return rows, cursors.encode(key, [rows[-1].id]) if len(rows) == args["limit"] else None


def deadlines(args: Mapping[str, Any]) -> tuple[list[tuple[Finding, Incident]], str | None]:
    """Clocks still running (pending findings), the soonest due first: what the desk must do next."""
    key = cursors.query_key("deadlines", args)
    q = sa.select(Finding, Incident).join(Incident, Incident.id == Finding.incident_id).where(Finding.status == PENDING)
    if "due_before" in args:
        q = q.where(Finding.due_at < args["due_before"])
    if "check" in args:
        q = q.where(Finding.check_id == args["check"])
    if "source" in args:
        q = q.where(Incident.source == args["source"])
    if args.get("cursor"):
        due_at, incident_id, check_id = cursors.decode(args["cursor"], key, (datetime, int, str))
        q = q.where(sa.tuple_(Finding.due_at, Finding.incident_id, Finding.check_id) > sa.tuple_(
            sa.literal(due_at, type_=Finding.__table__.c.due_at.type), sa.literal(incident_id), sa.literal(check_id)))
    rows = [(f, i) for f, i in db.session.execute(q.order_by(Finding.due_at, Finding.incident_id, Finding.check_id)
                                                  .limit(args["limit"])).all()]
    nxt = None
    if len(rows) == args["limit"]:
        f = rows[-1][0]
        nxt = cursors.encode(key, [f.due_at.isoformat() if f.due_at else "", f.incident_id, f.check_id])
    return rows, nxt
