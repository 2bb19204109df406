"""Risk acceptance in the dashboard: the acceptances (in force, expiring soon first), accepting a gap with its
justification, approver and expiry over an incident or a scope, and revoking one.

Only ISMS managers (and admins) write; an auditor sees the list and no form. The rules are the API's
(``services.risk``): the same checks, limits and audit events, with the signed-in user as the actor.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from flask import flash, redirect, render_template, request
from marshmallow import ValidationError

from ...extensions import db
from ...models import Incident, RiskAcceptance, utcnow
from ...rules.model import GAP
from ...services import risk
from ...state import gapbridge
from . import bp
from .signin import RISK_WRITE, current_user, signed_in

LISTED = 500
SHOWN_STATUSES = (risk.ACTIVE, risk.EXPIRED, risk.REVOKED, "all")
FORM_FIELDS = ("check_id", "incident", "source", "business_unit", "category", "justification", "approver", "expires_on")


def _acceptances(status: str, now: datetime) -> list[RiskAcceptance]:
    q = sa.select(RiskAcceptance)
    if status != "all":
        q = q.where(risk.status_clause(status, now))
    # in force: the soonest to expire first, since those need a decision; ended ones: the latest first
    order = RiskAcceptance.expires_at.asc() if status == risk.ACTIVE else RiskAcceptance.updated_at.desc()
    return list(db.session.scalars(q.order_by(order, RiskAcceptance.id).limit(LISTED)))


def _page(form: dict[str, str], errors: dict[str, str], status: int = 200) -> Any:
    now = utcnow()
    shown = request.args.get("status") or risk.ACTIVE
    if shown not in SHOWN_STATUSES:
        shown = risk.ACTIVE
    ruleset = gapbridge().ruleset
    numbers = {i.id: i.number for i in db.session.execute(sa.select(Incident.id, Incident.number).where(
        Incident.id.in_([a.incident_id for a in _acceptances(shown, now) if a.incident_id] or [0])))}
    max_days = gapbridge().config["risk"]["max_acceptance_days"]
    return render_template("risks.html", acceptances=_acceptances(shown, now), shown=shown, statuses=SHOWN_STATUSES, now=now,
                           soon=now + timedelta(days=14), numbers=numbers, form=form, errors=errors,
                           gap_checks=[c for c in ruleset.checks if c.kind == GAP], max_days=max_days,
                           latest_expiry=(now + timedelta(days=max_days)).date(), status_of=risk.status_of), status


@bp.get("/risks")
@signed_in()
def risks() -> Any:
    # a link from an incident or a control page may fill in the check and the incident
    form = {k: (request.args.get(k) or "")[:200] for k in ("check_id", "incident")}
    return _page(form, {})


@bp.post("/risks")
@signed_in(RISK_WRITE)
def accept() -> Any:
    form = {k: (request.form.get(k) or "").strip() for k in FORM_FIELDS}
    errors: dict[str, str] = {}
    incident_id = None
    if form["incident"]:
        found = db.session.scalar(sa.select(Incident.id).where(Incident.number == form["incident"][:64]))
        if found is None and form["incident"].isdigit() and len(form["incident"]) < 12:
            found = db.session.scalar(sa.select(Incident.id).where(Incident.id == int(form["incident"])))
        if found is None:
            errors["incident"] = f"No incident numbered {form['incident'][:64]!r} is stored."
        incident_id = found
    scope = {k: form[k] for k in ("source", "business_unit", "category") if form[k]}
    expires_at = _end_of_day(form["expires_on"], errors)
    if form["incident"] and scope:
        errors["scope"] = "Give one incident, or a scope (source, business unit, category), not both."
    if errors or expires_at is None:
        return _page(form, errors, 400)
    user = current_user()
    assert user is not None  # signed_in
    try:
        acceptance = risk.accept(form["check_id"], incident_id=incident_id, scope=None if incident_id else scope,
                                 justification=form["justification"], approver=form["approver"], expires_at=expires_at,
                                 actor=user.actor, ruleset=gapbridge().ruleset, max_days=gapbridge().config["risk"]["max_acceptance_days"])
    except ValidationError as exc:
        return _page(form, _flat(exc.messages), 400)
    flash(f"Risk accepted: {acceptance.check_id} until {acceptance.expires_at:%Y-%m-%d %H:%M} UTC (acceptance {acceptance.id}).", "ok")
    return redirect("/dashboard/risks", code=303)


@bp.post("/risks/<int:acceptance_id>/revoke")
@signed_in(RISK_WRITE)
def revoke(acceptance_id: int) -> Any:
    user = current_user()
    assert user is not None
    try:
        risk.revoke(acceptance_id, reason=(request.form.get("reason") or ""), actor=user.actor)
    except risk.AcceptanceNotFound as exc:
        flash(str(exc), "error")
        return redirect("/dashboard/risks", code=303)
    except ValidationError as exc:
        flash("Not revoked: " + "; ".join(_flat(exc.messages).values()), "error")
        return redirect("/dashboard/risks", code=303)
    flash(f"Acceptance {acceptance_id} revoked: its gaps count again from now.", "ok")
    return redirect("/dashboard/risks", code=303)


def _end_of_day(value: str, errors: dict[str, str]) -> datetime | None:
    """An expiry date as the end of that day, UTC (an acceptance runs through the day it names)."""
    if not value:
        errors["expires_on"] = "Give the date the acceptance ends (it is reviewed again by then)."
        return None
    try:
        day = datetime.strptime(value[:10], "%Y-%m-%d").date()
    except ValueError:
        errors["expires_on"] = f"Not a date: {value[:20]!r} (expected YYYY-MM-DD)."
        return None
    return datetime.combine(day, time(23, 59, 59), tzinfo=timezone.utc)


def _flat(messages: Any, prefix: str = "") -> dict[str, str]:
    """marshmallow's nested messages as field -> one line (scope.source -> "source")."""
    out: dict[str, str] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = "expires_on" if key == "expires_at" else ("incident" if key == "incident_id" else str(key))
            if isinstance(value, dict):
                out.update(_flat(value, prefix))
            else:
                out[name if name != "_schema" else "form"] = "; ".join(map(str, value)) if isinstance(value, list) else str(value)
    else:
        out["form"] = "; ".join(map(str, messages)) if isinstance(messages, list) else str(messages)
    return out
