"""Risk acceptance: an ISMS manager accepts a gap, on one incident or for one check over a scope, until an expiry.

An accepted gap stays what it is in ``findings`` (a failed gap); the read side (``plugin.queries.acceptance``),
the reports and the ticket's note count it as accepted while the acceptance is in force. Nothing here deletes
anything: an acceptance is amended, revoked or runs out, and each of those is an audit event with who did it
and the justification.

Every function validates all of its input before it writes, and raises one ``marshmallow.ValidationError``
whose ``messages`` name every faulty field at once (``{"expires_at": ["..."], "scope": {"category": ["..."]}}``);
an unknown acceptance id raises ``AcceptanceNotFound``. The writers commit.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from marshmallow import ValidationError

from ..errors import GapBridgeError
from ..extensions import db
from ..models import Finding, Incident, RiskAcceptance, utcnow
from ..queries.acceptance import in_force
from ..rules.clocks import format_utc
from ..rules.model import FAIL, GAP, PENDING, Ruleset
from . import audit

ACTIVE, EXPIRED, REVOKED = "active", "expired", "revoked"
STATUSES = (ACTIVE, EXPIRED, REVOKED)
# scope key (as the API and the audit log name it) -> column
SCOPE_FIELDS = {"source": "scope_source", "business_unit": "scope_business_unit", "category": "scope_category"}
SCOPE_LENGTHS = {"source": 64, "business_unit": 255, "category": 128}  # the columns' (and the incident's) lengths
MIN_JUSTIFICATION = 20  # characters: an auditor reads a reason, not "ok"
SUBJECT = "risk_acceptance"


class AcceptanceNotFound(GapBridgeError, LookupError):
    """No risk acceptance has this id (the API answers 404)."""

    def __init__(self, acceptance_id: Any) -> None:
        super().__init__(f"no risk acceptance with id {acceptance_id!r}")
        self.acceptance_id = acceptance_id


# --- reading --------------------------------------------------------------------------------


def status_of(acceptance: RiskAcceptance, now: datetime | None = None) -> str:
    """active, expired or revoked at ``now``; derived, never stored, so it cannot go stale."""
    if acceptance.revoked_at is not None:
        return REVOKED
    return EXPIRED if acceptance.expires_at <= (now or utcnow()) else ACTIVE


def status_clause(status: str, now: datetime) -> sa.ColumnElement[bool]:
    """``status_of`` as SQL on ``RiskAcceptance``."""
    ra = RiskAcceptance
    if status == ACTIVE:
        return in_force(now)
    if status == EXPIRED:
        return sa.and_(ra.revoked_at.is_(None), ra.expires_at <= now)
    if status == REVOKED:
        return ra.revoked_at.is_not(None)
    raise ValueError(f"unknown status {status!r} (one of {', '.join(STATUSES)})")


def scope_of(acceptance: RiskAcceptance) -> dict[str, str] | None:
    """The scope's fields that are set; None for an acceptance of one incident's finding."""
    if acceptance.incident_id is not None:
        return None
    return {key: value for key, column in SCOPE_FIELDS.items() if (value := getattr(acceptance, column)) is not None}


def get(acceptance_id: int) -> RiskAcceptance | None:
    return db.session.get(RiskAcceptance, acceptance_id)


def list_acceptances(*, status: str | None = None, check_id: str | None = None, incident_id: int | None = None,
                     now: datetime | None = None, after_id: int = 0, limit: int = 100) -> list[RiskAcceptance]:
    """Acceptances by id, paged by ``after_id``; ``incident_id`` selects those given on that incident only."""
    q = sa.select(RiskAcceptance).where(RiskAcceptance.id > after_id).order_by(RiskAcceptance.id).limit(limit)
    if status is not None:
        q = q.where(status_clause(status, now or utcnow()))
    if check_id is not None:
        q = q.where(RiskAcceptance.check_id == check_id)
    if incident_id is not None:
        q = q.where(RiskAcceptance.incident_id == incident_id)
    return list(db.session.scalars(q))


# --- validation -----------------------------------------------------------------------------


class _Problems:
    """Field-level messages collected over the whole input, raised together."""

    def __init__(self) -> None:
        self.messages: dict[str, Any] = {}

    def add(self, name: str, message: str, sub: str | None = None) -> None:
        if sub is None:
            self.messages.setdefault(name, []).append(message)
        else:
            self.messages.setdefault(name, {}).setdefault(sub, []).append(message)

    def raise_any(self) -> None:
        if self.messages:
            raise ValidationError(self.messages)


def _text_problem(value: Any, *, max_len: int, min_len: int = 1, what: str = "") -> tuple[str, str | None]:
    """The stripped text and what is wrong with it, if anything."""
    if not isinstance(value, str):
        return "", "Not a valid string." if value is not None else "Missing data for required field."
    text = value.strip()
    if not text:
        return text, f"Must not be empty{what}."
    if len(text) < min_len:
        return text, f"Too short: at least {min_len} characters{what}."
    if len(text) > max_len:
        return text, f"Longer than {max_len} characters."
    return text, None


def _text(problems: _Problems, name: str, value: Any, *, max_len: int, min_len: int = 1, what: str = "") -> str:
    text, problem = _text_problem(value, max_len=max_len, min_len=min_len, what=what)
    if problem:
        problems.add(name, problem)
    return text


def _expiry(problems: _Problems, value: Any, now: datetime, max_days: int) -> datetime | None:
    """A UTC time after ``now`` and at most ``max_days`` after it (a naive time is read as UTC, as stored times are)."""
    if not isinstance(value, datetime):
        problems.add("expires_at", "Not a valid datetime." if value is not None else
                     "Missing data for required field: an acceptance always runs out and is then reviewed.")
        return None
    at = (value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value).astimezone(timezone.utc)
    latest = now + timedelta(days=max_days)
    if at <= now:
        problems.add("expires_at", f"Must be in the future (now is {format_utc(now)}).")
    elif at > latest:
        problems.add("expires_at", f"Must be at most {max_days} days ahead (risk.max_acceptance_days), "
                                   f"that is by {format_utc(latest)}.")
    return at


def _check(problems: _Problems, ruleset: Ruleset, check_id: Any) -> str:
    if not isinstance(check_id, str) or not check_id.strip():
        problems.add("check_id", "Missing data for required field.")
        return ""
    check = ruleset.check(check_id)
    if check is None:
        gaps = sorted(c.id for c in ruleset.checks if c.kind == GAP)
        close = difflib.get_close_matches(check_id.upper(), gaps, n=3)
        hint = f"did you mean {' or '.join(close)}?" if close else f"the gap checks are {', '.join(gaps)}"
        problems.add("check_id", f"Unknown check {check_id!r} in the loaded mappings: {hint}")
    elif check.kind != GAP:
        problems.add("check_id", f"{check_id} is an improvement, not a gap: only a nonconformity is accepted as a risk, "
                                 "and an improvement never counts as an open gap.")
    return check_id


def _scope(problems: _Problems, scope: Mapping[str, Any]) -> dict[str, str]:
    """The scope's set fields. At least one is required: a check accepted everywhere is a check switched off,
    which belongs in the override file (reviewed with the mappings, part of the ruleset hash), not here."""
    if not isinstance(scope, Mapping):
        problems.add("scope", "Not a valid mapping of source, business_unit and category.")
        return {}
    out: dict[str, str] = {}
    for key, value in scope.items():
        if key not in SCOPE_FIELDS:
            problems.add("scope", f"Unknown scope field: a scope has {', '.join(SCOPE_FIELDS)}.", sub=str(key))
        elif value is not None:
            _, problem = _text_problem(value, max_len=SCOPE_LENGTHS[key])
            if problem:
                problems.add("scope", problem, sub=key)
            else:
                out[key] = value  # as given, not stripped: the incident's value must equal it
    if not out and not problems.messages.get("scope"):
        problems.add("scope", "Set at least one of source, business_unit, category: accepting a check on every incident "
                              "is switching it off, which belongs in the mappings' override file.")
    if "source" in out:
        stored = db.session.scalar(sa.select(sa.literal(1)).where(Incident.source == out["source"]).limit(1))
        if stored is None:  # a typo here would cover nothing and say nothing
            problems.add("scope", f"No incident from source {out['source']!r} is stored.", sub="source")
    return out


def _incident(problems: _Problems, incident_id: Any, check_id: str) -> Incident | None:
    if isinstance(incident_id, bool) or not isinstance(incident_id, int):
        problems.add("incident_id", "Not a valid integer.")
        return None
    incident = db.session.get(Incident, incident_id)
    if incident is None:
        problems.add("incident_id", f"No incident with id {incident_id}.")
        return None
    if check_id and not problems.messages.get("check_id"):
        status = db.session.scalar(sa.select(Finding.status).where(Finding.incident_id == incident_id, Finding.check_id == check_id))
        if status not in (FAIL, PENDING):  # accepting a pass or a check that does not apply is a wrong ticket or check
            problems.add("check_id", f"{incident.number or incident_id} has no failed or pending finding of {check_id} "
                                     f"({'it passes' if status else 'the check does not apply to it'}): nothing to accept.")
    return incident


# --- writing --------------------------------------------------------------------------------


def _described(acceptance: RiskAcceptance) -> dict[str, Any]:
    """What an audit event says about the acceptance (JSON-ready)."""
    return {"check_id": acceptance.check_id, "incident_id": acceptance.incident_id, "scope": scope_of(acceptance),
            "approver": acceptance.approver, "justification": acceptance.justification,
            "expires_at": acceptance.expires_at.isoformat()}


def accept(check_id: str, *, incident_id: int | None = None, scope: Mapping[str, Any] | None = None, justification: str,
           approver: str, expires_at: datetime, actor: str, ruleset: Ruleset, max_days: int,
           now: datetime | None = None) -> RiskAcceptance:
    """Accept the gap of ``check_id`` on one incident, or on every incident ``scope`` matches, until ``expires_at``.

    ``actor`` is who records it (the token's name), ``approver`` who owns the risk; ``max_days`` is
    ``risk.max_acceptance_days``.
    """
    now = now or utcnow()
    problems = _Problems()
    check_id = _check(problems, ruleset, check_id)
    incident, scoped = None, {}
    if incident_id is not None and scope is not None:
        problems.add("scope", "Give incident_id or scope, not both: one incident's finding, or the check over a scope.")
    elif incident_id is not None:
        incident = _incident(problems, incident_id, check_id)
    else:
        scoped = _scope(problems, scope if scope is not None else {})
    justification = _text(problems, "justification", justification, max_len=10_000, min_len=MIN_JUSTIFICATION,
                          what=": say why the risk is accepted and what mitigates it")
    approver = _text(problems, "approver", approver, max_len=255, what=": the risk owner who approved it")
    actor = _text(problems, "actor", actor, max_len=128)
    at = _expiry(problems, expires_at, now, max_days)
    problems.raise_any()
    assert at is not None
    acceptance = RiskAcceptance(
        check_id=check_id, incident_id=incident.id if incident else None,
        **{SCOPE_FIELDS[k]: v for k, v in scoped.items()},
        justification=justification, approver=approver, created_by=actor, created_at=now, updated_at=now, expires_at=at)
    db.session.add(acceptance)
    db.session.flush()
    audit.record("risk.accepted", SUBJECT, acceptance.id, actor=actor, **_described(acceptance),
                 incident_number=incident.number if incident else None)
    db.session.commit()
    return acceptance


def _in_force(acceptance_id: int, problems: _Problems, now: datetime, doing: str) -> RiskAcceptance:
    acceptance = get(acceptance_id)
    if acceptance is None:
        raise AcceptanceNotFound(acceptance_id)
    status = status_of(acceptance, now)
    if status != ACTIVE:
        ended = acceptance.revoked_at if status == REVOKED else acceptance.expires_at
        assert ended is not None
        problems.add("status", f"Acceptance {acceptance.id} is {status} (since {format_utc(ended)}): it cannot be {doing}; "
                               "accept the gap anew instead.")
    return acceptance


def amend(acceptance_id: int, *, justification: str | None = None, approver: str | None = None,
          expires_at: datetime | None = None, actor: str, max_days: int, now: datetime | None = None) -> RiskAcceptance:
    """Change the justification, approver or expiry of an acceptance in force (None leaves a field as it is).

    A new expiry is at most ``max_days`` from now: extending an acceptance is a renewal, reviewed again.
    """
    now = now or utcnow()
    problems = _Problems()
    acceptance = _in_force(acceptance_id, problems, now, "amended")
    wanted: dict[str, Any] = {}
    if justification is not None:
        wanted["justification"] = _text(problems, "justification", justification, max_len=10_000, min_len=MIN_JUSTIFICATION)
    if approver is not None:
        wanted["approver"] = _text(problems, "approver", approver, max_len=255)
    if expires_at is not None:
        wanted["expires_at"] = _expiry(problems, expires_at, now, max_days)
    actor = _text(problems, "actor", actor, max_len=128)
    if not wanted:
        problems.add("_schema", "Nothing to change: give justification, approver or expires_at.")
    problems.raise_any()
    before = {k: getattr(acceptance, k) for k in wanted}
    changed = {k: v for k, v in wanted.items() if before[k] != v}
    for key, value in changed.items():
        setattr(acceptance, key, value)
    if changed:
        acceptance.updated_at = now

        def shown(values: Mapping[str, Any]) -> dict[str, Any]:
            return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items() if k in changed}
        audit.record("risk.changed", SUBJECT, acceptance.id, actor=actor, check_id=acceptance.check_id,
                     before=shown(before), after=shown(changed), justification=acceptance.justification)
    db.session.commit()
    return acceptance


def revoke(acceptance_id: int, *, reason: str, actor: str, now: datetime | None = None) -> RiskAcceptance:
    """End an acceptance in force now: its gaps count again from this moment (the row stays, with who and why)."""
    now = now or utcnow()
    problems = _Problems()
    acceptance = _in_force(acceptance_id, problems, now, "revoked")
    reason = _text(problems, "reason", reason, max_len=10_000, what=": say why the risk is no longer accepted")
    actor = _text(problems, "actor", actor, max_len=128)
    problems.raise_any()
    acceptance.revoked_at, acceptance.revoked_by, acceptance.revoke_reason = now, actor, reason
    acceptance.updated_at = now
    audit.record("risk.revoked", SUBJECT, acceptance.id, actor=actor, reason=reason, **_described(acceptance))
    db.session.commit()
    return acceptance


def expire_due(now: datetime | None = None) -> list[RiskAcceptance]:
    """Record every acceptance that ran out by ``now`` and was not recorded yet, once each (``risk.expired``).

    The update that marks them is the claim: two passes at once (or one run twice) record each once, and the
    marks commit with their audit events. The tickets concerned are told by the next outbox plan, which sees
    the acceptance no longer in force.
    """
    now = now or utcnow()
    ra = RiskAcceptance
    claimed = db.session.scalars(
        sa.update(ra).where(ra.revoked_at.is_(None), ra.expires_at <= now, ra.expiry_recorded_at.is_(None))
        .values(expiry_recorded_at=now).returning(ra.id).execution_options(synchronize_session=False)).all()
    expired = []
    for acceptance_id in sorted(claimed):
        acceptance = db.session.get(ra, acceptance_id, populate_existing=True)
        assert acceptance is not None
        audit.record("risk.expired", SUBJECT, acceptance.id, **_described(acceptance))
        expired.append(acceptance)
    db.session.commit()
    return expired
