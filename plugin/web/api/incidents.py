"""Incidents: canonical fields, findings, the enrichment history, the raw record, the ticket link; and running clocks."""

from __future__ import annotations

from typing import Any

from flask import abort

from ...models import utcnow
from ...queries import incidents as q
from ...schemas.common import page_of
from ...schemas.findings import DeadlineArgs, DeadlineSchema, IncidentDetailSchema, IncidentListArgs, IncidentSchema
from ...state import gapbridge
from ..auth import READ, require
from . import Blueprint

blp = Blueprint("incidents", __name__, description="Incidents as synced from the ITSM tools, with their findings")


def _detail(incident: Any) -> dict[str, Any]:
    return q.detail(incident, gapbridge().ruleset, utcnow())


@blp.route("/incidents")
@require(READ)
@blp.arguments(IncidentListArgs, location="query")
@blp.response(200, page_of(IncidentSchema, "IncidentPage"))
def incident_list(args: dict[str, Any]) -> Any:
    """Incidents in scope, by id."""
    rows, nxt = q.listing(args)
    return {"items": rows, "next_cursor": nxt}


@blp.route("/incidents/<int:incident_id>")
@require(READ)
@blp.response(200, IncidentDetailSchema)
@blp.alt_response(404, description="no such incident")
def incident_detail(incident_id: int) -> Any:
    """One incident: its canonical fields, findings, what was written back, and the raw record."""
    incident = q.get(incident_id) or abort(404, description=f"no incident with id {incident_id}")
    return _detail(incident)


@blp.route("/incidents/by-number/<string:number>")
@require(READ)
@blp.response(200, IncidentDetailSchema)
def incident_by_number(number: str) -> Any:
    """One incident by its ticket number."""
    incident = q.by_number(number) or abort(404, description=f"no incident numbered {number!r}")
    return _detail(incident)


@blp.route("/deadlines")
@require(READ)
@blp.arguments(DeadlineArgs, location="query")
@blp.response(200, page_of(DeadlineSchema, "DeadlinePage"))
def deadlines(args: dict[str, Any]) -> Any:
    """Clocks still running, the soonest due first."""
    ruleset = gapbridge().ruleset
    rows, nxt = q.deadlines(args)
    items = []
    for finding, incident in rows:
        check = ruleset.check(finding.check_id)
        items.append({**q.columns(finding), "incident": incident,
                      "what": check.clock.what if check is not None and check.clock is not None else None})
    return {"items": items, "next_cursor": nxt}
