"""Health check and the read-only JSON endpoints (incident with findings, open gaps).

The full auditor API, with authentication, comes later; until then these endpoints
answer only when ``api.enabled`` is set (the demo sets it) and never write anything.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from .extensions import db
from .models import Finding, Incident
from .rules.model import FAIL, GAP, KINDS, PENDING, SEVERITIES
from .state import gapbridge

bp = Blueprint("api", __name__)
log = logging.getLogger("gapbridge.api")
MAX_ID = 2**31 - 1  # the integer primary keys
RETRY_AFTER_SECONDS = 30


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Any:
    return jsonify({"error": exc.name, "message": exc.description}), exc.code


@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
def _unknown_route(exc: HTTPException) -> Any:
    """Unknown paths and methods under /api/ answer JSON like every other API error; elsewhere Flask's own page."""
    if not request.path.startswith("/api/"):
        return exc
    body: dict[str, Any] = {"error": exc.name, "message": exc.description}
    headers = {}
    if exc.code == 405 and isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        body["allowed"] = sorted(exc.valid_methods)
        headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return jsonify(body), exc.code, headers


@bp.errorhandler(ValidationError)
def _validation_error(exc: ValidationError) -> Any:
    return jsonify({"error": "Bad Request", "message": "invalid query parameters", "fields": exc.messages}), 400


@bp.errorhandler(sa.exc.OperationalError)
@bp.errorhandler(sa.exc.InterfaceError)
@bp.errorhandler(sa.exc.TimeoutError)
def _database_unavailable(exc: Exception) -> Any:
    # the database is down or unreachable: not the caller's fault, and worth retrying
    log.warning("database unavailable for %s %s: %s", request.method, request.path, type(exc).__name__)
    body = jsonify({"error": "Service Unavailable", "message": "the database is unavailable; try again shortly"})
    return body, 503, {"Retry-After": str(RETRY_AFTER_SECONDS)}


@bp.before_request
def _no_nul_bytes() -> None:
    """A NUL byte cannot be stored or compared in PostgreSQL text: refuse it by name, before any query."""
    bad = sorted({k for k, v in request.args.items(multi=True) if "\x00" in k or "\x00" in v})
    if bad or "\x00" in request.path:
        fields_ = {k.replace("\x00", "\\0"): ["contains a NUL byte"] for k in bad} or {"path": ["contains a NUL byte"]}
        raise ValidationError(fields_)


@bp.before_request
def _api_switch() -> None:
    if request.endpoint and request.endpoint != "api.health" and not gapbridge().config["api"]["enabled"]:
        abort(404, description="the read-only API is switched off (set api.enabled in the configuration)")


@bp.get("/healthz")
def health() -> Any:
    state = gapbridge()
    try:
        db.session.execute(sa.text("SELECT 1"))
        database = "ok"
    except sa.exc.SQLAlchemyError:
        database = "unavailable"
    body = {"status": "ok" if database == "ok" else "degraded", "database": database, "ruleset": state.ruleset.hash,
            "checks": len(state.ruleset.checks)}
    return jsonify(body), 200 if database == "ok" else 503


class GapQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    control = fields.String(validate=validate.Length(min=1, max=32))
    subprocess = fields.String(validate=validate.Length(min=1, max=32))
    severity = fields.String(validate=validate.OneOf(SEVERITIES))
    source = fields.String(validate=validate.Length(min=1, max=64))
    check = fields.String(validate=validate.Length(min=1, max=64))
    # gaps by default; improvements are listed apart and never count as open gaps
    kind = fields.String(load_default=GAP, validate=validate.OneOf(KINDS))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    after = fields.Integer(load_default=0, validate=validate.Range(min=0, max=MAX_ID))


class DeadlineQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    source = fields.String(validate=validate.Length(min=1, max=64))
    check = fields.String(validate=validate.Length(min=1, max=64))
    due_before = fields.AwareDateTime()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class FindingSchema(Schema):
    check_id = fields.String()
    status = fields.String()
    severity = fields.String()
    subprocess = fields.String()
    relation = fields.String()
    kind = fields.String()
    controls_2022 = fields.List(fields.String())
    controls_2013 = fields.List(fields.String())
    details = fields.List(fields.String())
    ruleset_hash = fields.String()
    evaluated_at = fields.AwareDateTime()
    first_failed_at = fields.AwareDateTime(allow_none=True)
    due_at = fields.AwareDateTime(allow_none=True)


class IncidentSchema(Schema):
    id = fields.Integer()
    source = fields.String()
    external_id = fields.String()
    number = fields.String()
    url = fields.String()
    title = fields.String()
    category = fields.String()
    is_security = fields.Boolean(allow_none=True)
    severity = fields.String(allow_none=True)
    state = fields.String(allow_none=True)
    assignment_group = fields.String(allow_none=True)
    opened_at = fields.AwareDateTime(allow_none=True)
    updated_at = fields.AwareDateTime(allow_none=True)
    assessed_ruleset = fields.String(allow_none=True)
    enrichment_fingerprint = fields.String(allow_none=True)


@bp.get("/api/v1/incidents/<int:incident_id>")
def incident_detail(incident_id: int) -> Any:
    # beyond the id column's range no incident can exist; asking the database would be an error there
    incident = (db.session.get(Incident, incident_id) if incident_id <= MAX_ID else None) or abort(
        404, description=f"no incident with id {incident_id}")
    return _incident_body(incident)


@bp.get("/api/v1/incidents/by-number/<string:number>")
def incident_by_number(number: str) -> Any:
    incident = db.session.execute(sa.select(Incident).where(Incident.number == number).limit(1)).scalar()
    if incident is None:
        abort(404, description=f"no incident numbered {number!r}")
    return _incident_body(incident)


def _incident_body(incident: Incident) -> Any:
    findings = sorted(incident.findings, key=lambda f: (f.status != FAIL, f.check_id))
    body = IncidentSchema().dump(incident)
    body["findings"] = FindingSchema(many=True).dump(findings)
    body["open_gaps"] = sum(1 for f in findings if f.is_open_gap)
    body["improvements"] = sum(1 for f in findings if f.status == FAIL and not f.is_open_gap)
    body["pending"] = sum(1 for f in findings if f.status == PENDING)
    # not applicable is stored as the absence of a finding under the ruleset the incident was assessed with
    ruleset = gapbridge().ruleset
    if incident.assessed_ruleset == ruleset.hash:
        have = {f.check_id for f in findings}
        body["not_applicable"] = sorted(c.id for c in ruleset.checks if c.id not in have)
    else:
        body["not_applicable"] = None  # not assessed under the loaded mappings yet
    return jsonify(body)


@bp.get("/api/v1/gaps")
def open_gaps() -> Any:
    args = GapQuerySchema().load(request.args)
    ruleset = gapbridge().ruleset
    q = (sa.select(Finding, Incident.number, Incident.source, Incident.title)
         .join(Incident, Incident.id == Finding.incident_id)
         .where(Finding.status == FAIL, Finding.kind == args["kind"], Finding.id > args["after"])
         .order_by(Finding.id).limit(args["limit"]))
    if "control" in args:
        controls = ruleset.catalogue.resolve(args["control"])
        if not controls:
            raise ValidationError({"control": [f"unknown control {args['control']!r} in either edition"]})
        ids22 = {c.id for c in controls if c.edition == "2022"} | {s for c in controls if c.edition == "2013" for s in ruleset.catalogue.successors.get(c.id, [])}
        checks = [c.id for c in ruleset.checks if ids22 & set(c.controls_2022)]
        q = q.where(Finding.check_id.in_(checks))
    if "subprocess" in args:
        if args["subprocess"] not in ruleset.subprocesses:
            raise ValidationError({"subprocess": [f"unknown sub-process; expected one of {', '.join(ruleset.subprocesses)}"]})
        q = q.where(Finding.subprocess == args["subprocess"])
    for key, column in (("severity", Finding.severity), ("check", Finding.check_id), ("source", Incident.source)):
        if key in args:
            q = q.where(column == args[key])
    rows = db.session.execute(q).all()
    items = [_listed(finding, number=number, source=source, title=title) for finding, number, source, title in rows]
    return jsonify({"items": items, "next_after": rows[-1][0].id if len(rows) == args["limit"] else None})


def _listed(finding: Finding, **incident: Any) -> dict[str, Any]:
    """A finding in a list, with what identifies its incident."""
    return {**FindingSchema().dump(finding), "incident_id": finding.incident_id, **incident}


@bp.get("/api/v1/deadlines")
def deadlines() -> Any:
    """Clocks still running (pending findings), the soonest due first: what the desk must do next."""
    args = DeadlineQuerySchema().load(request.args)
    q = (sa.select(Finding, Incident.number, Incident.source, Incident.title, Incident.url)
         .join(Incident, Incident.id == Finding.incident_id)
         .where(Finding.status == PENDING).order_by(Finding.due_at, Finding.id).limit(args["limit"]))
    if "due_before" in args:
        q = q.where(Finding.due_at < args["due_before"])
    for key, column in (("check", Finding.check_id), ("source", Incident.source)):
        if key in args:
            q = q.where(column == args[key])
    ruleset = gapbridge().ruleset
    items = []
    for finding, number, source, title, url in db.session.execute(q).all():
        check = ruleset.check(finding.check_id)
        items.append(_listed(finding, number=number, source=source, title=title, url=url,
                             what=check.clock.what if check is not None and check.clock is not None else None))
    return jsonify({"items": items})
