"""Risk acceptance: ISMS managers accept a gap (one incident's finding, or a check over a scope), amend and revoke it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import abort

from ...extensions import db
from ...models import Finding, Incident, RiskAcceptance
from ...queries import cursor as cursors
from ...queries.acceptance import covers
from ...queries.incidents import columns
from ...schemas.common import page_of
from ...schemas.risks import AcceptanceListArgs, AcceptanceSchema, AcceptSchema, AmendSchema, RevokeSchema
from ...services import risk
from ...state import gapbridge
from ..auth import READ, RISK_WRITE, actor, require
from . import Blueprint

blp = Blueprint("risks", __name__, description="Accepted risks: a gap counted as accepted, not failing, until it expires")


def _shown(acceptance: RiskAcceptance, *, count: bool = True) -> dict[str, Any]:
    check = gapbridge().ruleset.check(acceptance.check_id)
    body = {**columns(acceptance), "status": risk.status_of(acceptance), "scope": risk.scope_of(acceptance),
            "check_title": check.title if check else None,
            "controls_2022": list(check.controls_2022) if check else [], "controls_2013": list(check.controls_2013) if check else []}
    if count:
        ra = sa.orm.aliased(RiskAcceptance)
        body["covered_gaps"] = db.session.scalar(
            sa.select(sa.func.count()).select_from(Finding).join(Incident, Incident.id == Finding.incident_id)
            .join(ra, covers(ra)).where(ra.id == acceptance.id, Finding.is_open_gap)) or 0
    return body


def _found(acceptance_id: int) -> RiskAcceptance:
    acceptance = risk.get(acceptance_id) if acceptance_id <= cursors.MAX_INT else None
    if acceptance is None:
        abort(404, description=f"no risk acceptance with id {acceptance_id}")
    return acceptance


def _max_days() -> int:
    return int(gapbridge().config["risk"]["max_acceptance_days"])


@blp.route("/risk-acceptances")
@require(READ)
@blp.arguments(AcceptanceListArgs, location="query")
@blp.response(200, page_of(AcceptanceSchema, "AcceptancePage"))
def acceptance_list(args: dict[str, Any]) -> Any:
    """Acceptances by id, with their status now."""
    key = cursors.query_key("risk-acceptances", args)
    after = cursors.decode(args["cursor"], key, (int,))[0] if args.get("cursor") else 0
    rows = risk.list_acceptances(status=args.get("status"), check_id=args.get("check"), incident_id=args.get("incident_id"),
                                 after_id=after, limit=args["limit"])
    return {"items": [_shown(a, count=False) for a in rows],
            "next_cursor": cursors.encode(key, [rows[-1].id]) if len(rows) == args["limit"] else None}


@blp.route("/risk-acceptances", methods=["POST"])
@require(RISK_WRITE)
@blp.arguments(AcceptSchema)
@blp.response(201, AcceptanceSchema)
def acceptance_create(body: dict[str, Any]) -> Any:
    """Accept a gap with justification, approver and expiry (ISMS managers)."""
    acceptance = risk.accept(body["check_id"], incident_id=body.get("incident_id"), scope=body.get("scope"),
                             justification=body["justification"], approver=body["approver"], expires_at=body["expires_at"],
                             actor=actor(), ruleset=gapbridge().ruleset, max_days=_max_days())
    return _shown(acceptance)


@blp.route("/risk-acceptances/<int:acceptance_id>")
@require(READ)
@blp.response(200, AcceptanceSchema)
def acceptance_detail(acceptance_id: int) -> Any:
    return _shown(_found(acceptance_id))


@blp.route("/risk-acceptances/<int:acceptance_id>", methods=["PATCH"])
@require(RISK_WRITE)
@blp.arguments(AmendSchema)
@blp.response(200, AcceptanceSchema)
def acceptance_amend(body: dict[str, Any], acceptance_id: int) -> Any:
    """Change the justification, approver or expiry of an acceptance in force."""
    _found(acceptance_id)
    return _shown(risk.amend(acceptance_id, **body, actor=actor(), max_days=_max_days()))


@blp.route("/risk-acceptances/<int:acceptance_id>/revoke", methods=["POST"])
@require(RISK_WRITE)
@blp.arguments(RevokeSchema)
@blp.response(200, AcceptanceSchema)
def acceptance_revoke(body: dict[str, Any], acceptance_id: int) -> Any:
    """End an acceptance now: its gaps count again (the acceptance is kept, with who revoked it and why)."""
    _found(acceptance_id)
    return _shown(risk.revoke(acceptance_id, reason=body["reason"], actor=actor()))
