"""Coverage: per control or ITIL sub-process, how the incidents in scope fared, and the population behind each number.

An incident counts once per control: failed if any of the control's gap checks fails on it (and no accepted
risk covers that failure), else accepted if an accepted risk covers a failure, else pending if a clock still
runs, else passed. It is not applicable when none of the control's checks applies to it. Improvements are
opportunities, not nonconformities: they never count against a control.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from ..extensions import db
from ..models import Finding, Incident
from ..rules.model import FAIL, GAP, PASS, PENDING, Ruleset
from .acceptance import accepted_term
from .scope import Scope

OUTCOMES = ("failed", "accepted", "pending", "passed", "not_applicable")
# the worst outcome of an incident's findings under a control wins
_RANK = {"passed": 1, "pending": 2, "accepted": 3, "failed": 4}
_BY_RANK = {v: k for k, v in _RANK.items()}


@dataclass(frozen=True)
class Group:
    """A control (by its 2022 id) or a sub-process, and the gap checks that decide it."""

    kind: str  # control | subprocess
    key: str
    title: str
    checks: tuple[str, ...]
    edition: str = "2022"  # of a control's key


@dataclass
class Counts:
    group: Group
    in_scope: int = 0
    passed: int = 0
    failed: int = 0
    accepted: int = 0
    pending: int = 0
    not_applicable: int = 0


def control_groups(ruleset: Ruleset) -> list[Group]:
    by_control: dict[str, list[str]] = {}
    for check in ruleset.checks:
        if check.kind == GAP:
            for cid in check.controls_2022:
                by_control.setdefault(cid, []).append(check.id)
    out = []
    for cid in sorted(by_control, key=_control_order):
        control = ruleset.catalogue.get("2022", cid)
        out.append(Group("control", cid, control.title if control else "", tuple(by_control[cid])))
    return out


def subprocess_groups(ruleset: Ruleset) -> list[Group]:
    out = []
    for sid, sub in ruleset.subprocesses.items():
        checks = tuple(c.id for c in ruleset.checks if c.kind == GAP and c.subprocess == sid)
        out.append(Group("subprocess", sid, sub.name, checks))
    return out


def _control_order(cid: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in cid.removeprefix("A.").split("."))


def outcome_rank(now: datetime) -> sa.ColumnElement[int]:
    """A finding's outcome as a rank (see _RANK); pass, fail and pending are the stored outcomes."""
    return sa.case(
        (sa.and_(Finding.status == FAIL, accepted_term(now)), _RANK["accepted"]),
        (Finding.status == FAIL, _RANK["failed"]),
        (Finding.status == PENDING, _RANK["pending"]),
        else_=_RANK["passed"])


def _mapping(groups: list[Group]) -> sa.CTE:
    """(check, group number) pairs as a common table expression (SQLite takes VALUES there, not as an aliased FROM item).

    Groups go by number: the per-incident step groups hundreds of thousands of rows by it, and integers
    sort and hash far faster than collated text.
    """
    pairs = [(c, n) for n, g in enumerate(groups) for c in g.checks]
    values = sa.values(sa.column("check_id", sa.String), sa.column("grp", sa.Integer), name="grp_checks").data(pairs or [("", -1)])
    return values.cte("grp_checks")


def in_scope_total(scope: Scope) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(Incident).where(*scope.conditions())) or 0


def coverage(groups: list[Group], scope: Scope, now: datetime) -> list[Counts]:
    """One row per group: incidents in scope and how they fared (independent of any cache: always what is stored now)."""
    m = _mapping(groups)
    per_incident = (
        sa.select(m.c.grp, Finding.incident_id, sa.func.max(outcome_rank(now)).label("worst"))
        .select_from(Finding)
        .join(Incident, Incident.id == Finding.incident_id)
        .join(m, m.c.check_id == Finding.check_id)
        .where(Finding.kind == GAP, Finding.status.in_([PASS, FAIL, PENDING]), *scope.conditions())
        .group_by(m.c.grp, Finding.incident_id)
    ).subquery()
    rows = db.session.execute(sa.select(per_incident.c.grp, per_incident.c.worst, sa.func.count())
                              .group_by(per_incident.c.grp, per_incident.c.worst)).all()
    total = in_scope_total(scope)
    counts = [Counts(g) for g in groups]
    for grp, worst, n in rows:
        c = counts[grp]
        setattr(c, _BY_RANK[worst], getattr(c, _BY_RANK[worst]) + n)
        c.in_scope += n
    for c in counts:
        c.not_applicable = total - c.in_scope
    return counts


@dataclass(frozen=True)
class Member:
    """One incident of a population, with its outcome under the group and each applicable check's."""

    incident: Incident
    outcome: str
    checks: dict[str, str]  # check id -> passed | failed | accepted | pending


def population(group: Group, scope: Scope, now: datetime, outcome: str | None, after: int, limit: int) -> list[Member]:
    """The incidents behind a coverage number, by id: those with ``outcome`` (all in scope when None)."""
    rank = outcome_rank(now)
    checks = list(group.checks) or [""]
    if outcome == "not_applicable":
        has_any = sa.exists().where(Finding.incident_id == Incident.id, Finding.check_id.in_(checks),
                                    Finding.status.in_([PASS, FAIL, PENDING]))
        q = (sa.select(Incident.id, sa.literal(0)).where(*scope.conditions(), ~has_any, Incident.id > after)
             .order_by(Incident.id).limit(limit))
    else:
        q = (sa.select(Finding.incident_id, sa.func.max(rank).label("worst"))
             .join(Incident, Incident.id == Finding.incident_id)
             .where(Finding.check_id.in_(checks), Finding.status.in_([PASS, FAIL, PENDING]), *scope.conditions(),
                    Finding.incident_id > after)
             .group_by(Finding.incident_id).order_by(Finding.incident_id).limit(limit))
        if outcome is not None:
            q = q.having(sa.func.max(rank) == _RANK[outcome])
    page = db.session.execute(q).all()
    ids = [r[0] for r in page]
    if not ids:
        return []
    incidents = {i.id: i for i in db.session.execute(sa.select(Incident).where(Incident.id.in_(ids))).scalars()}
    per_check: dict[int, dict[str, str]] = {}
    for incident_id, check_id, r in db.session.execute(
            sa.select(Finding.incident_id, Finding.check_id, rank).join(Incident, Incident.id == Finding.incident_id)
            .where(Finding.incident_id.in_(ids), Finding.check_id.in_(checks), Finding.status.in_([PASS, FAIL, PENDING]))):
        per_check.setdefault(incident_id, {})[check_id] = _BY_RANK[r]
    return [Member(incidents[i], "not_applicable" if w == 0 else _BY_RANK[w], per_check.get(i, {})) for i, w in page]
