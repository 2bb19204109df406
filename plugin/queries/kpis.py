"""KPIs of the security incident process (seeds 001, 002, 003), over the incidents of a scope.

- time to decide (opened → assessed), to contain (opened → contained) and to resolve (opened → resolved), by severity:
  count, mean and 90th percentile (linear, as PostgreSQL's percentile_cont);
- of closed security incidents, the share with a root cause, with lessons learned, with both;
- recurring incidents: the same category on the same item at least ``RECURRENCE_MIN`` times within ``RECURRENCE_WINDOW``
  (as check LEARN-002 counts them), whether they were linked to a problem and whether they stopped;
- open and closed security incidents by business unit.

A duration that runs backwards (a ticket's times out of order) is counted apart, never averaged in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..extensions import db
from ..models import Incident
from ..rules.model import SEVERITIES
from .scope import Scope

CLOSED_STATES = ("resolved", "closed")
ENDED_STATES = (*CLOSED_STATES, "cancelled")
# as LEARN-002 (mappings/checks/across.yaml) groups them
RECURRENCE_WINDOW = timedelta(days=30)
RECURRENCE_MIN = 3
MEASURES = {"decide": Incident.assessed_at, "contain": Incident.contained_at, "resolve": Incident.resolved_at}
NO_SEVERITY = "(none)"
NO_BUSINESS_UNIT = "(none)"


@dataclass(frozen=True)
class Durations:
    """One measure over one severity: how many incidents have it, and the mean and 90th percentile in hours."""

    count: int
    mean_hours: float | None
    p90_hours: float | None


@dataclass(frozen=True)
class ClosureQuality:
    closed: int
    with_root_cause: int
    with_lessons_learned: int
    with_both: int

    def share(self, n: int) -> float | None:
        return None if not self.closed else n / self.closed


@dataclass(frozen=True)
class RecurringGroup:
    affected_ci: str
    category: str
    incidents: int
    first_opened_at: datetime
    last_opened_at: datetime
    problem_linked: bool  # every incident of the group names a problem record
    stopped: bool  # none opened in the last window before the end of the scope


@dataclass(frozen=True)
class UnitCounts:
    business_unit: str
    open: int
    closed: int


@dataclass
class ProcessKpis:
    scope: Scope
    as_of: datetime
    security_incidents: int = 0
    durations: dict[str, dict[str, Durations]] = field(default_factory=dict)  # measure -> severity -> durations
    out_of_order: dict[str, int] = field(default_factory=dict)  # measure -> incidents whose times run backwards
    closure: ClosureQuality = ClosureQuality(0, 0, 0, 0)
    recurring: list[RecurringGroup] = field(default_factory=list)
    by_business_unit: list[UnitCounts] = field(default_factory=list)

    @property
    def recurring_stopped(self) -> int:
        return sum(1 for g in self.recurring if g.stopped)


def security_incidents(scope: Scope) -> list[sa.ColumnElement[bool]]:
    """The population: security incidents (record type incident, flagged security) in the scope."""
    return [*scope.conditions(), Incident.is_security.is_(True), Incident.record_type == "incident"]


def process_kpis(scope: Scope, now: datetime) -> ProcessKpis:
    as_of = min(now, scope.end) if scope.end is not None else now
    where = security_incidents(scope)
    out = ProcessKpis(scope, as_of)
    analytic_session()
    if db.engine.dialect.name == "postgresql":
        out.security_incidents, out.durations, out.out_of_order, out.closure = _by_severity(where)
    else:
        out.security_incidents = db.session.scalar(sa.select(sa.func.count()).select_from(Incident).where(*where)) or 0
        for measure, column in MEASURES.items():
            out.durations[measure], out.out_of_order[measure] = _durations(where, column)
        out.closure = _closure(where)
    out.recurring = _recurring(where, as_of)
    out.by_business_unit = _by_business_unit(where)
    return out


def analytic_session() -> None:
    """As coverage's: room to sort in memory and no JIT compilation, for this transaction (PostgreSQL)."""
    from .coverage import _analytic_memory

    _analytic_memory()


def _by_severity(where: list[sa.ColumnElement[bool]]) -> tuple[int, dict[str, dict[str, Durations]], dict[str, int], ClosureQuality]:
    """PostgreSQL: the population, every measure's durations and times run backwards, and the closure quality, in one
    pass grouped by severity (ix_incidents_security holds every column read), instead of eight passes."""
    # each duration computed once per incident: OFFSET keeps the planner from folding it into every aggregate
    # that reads it (twelve evaluations a row, a third of the time); NULL when either time is missing
    rows = sa.select(sa.func.coalesce(Incident.severity, NO_SEVERITY).label("severity"), Incident.state.in_(CLOSED_STATES).label("closed"),
                     Incident.has_root_cause, Incident.has_lessons_learned,
                     *(_seconds(Incident.opened_at, column).label(measure) for measure, column in MEASURES.items())
                     ).where(*where).offset(0).subquery()
    closed = rows.c.closed
    columns: list[Any] = [rows.c.severity, sa.func.count(), sa.func.count().filter(closed), sa.func.count().filter(closed, rows.c.has_root_cause),
                          sa.func.count().filter(closed, rows.c.has_lessons_learned),
                          sa.func.count().filter(closed, rows.c.has_root_cause, rows.c.has_lessons_learned)]
    for measure in MEASURES:
        seconds = rows.c[measure]
        columns += [sa.func.count().filter(seconds >= 0), sa.func.avg(seconds).filter(seconds >= 0),
                    sa.func.percentile_cont(0.9).within_group(seconds).filter(seconds >= 0), sa.func.count().filter(seconds < 0)]
    total, closure = 0, [0, 0, 0, 0]
    durations: dict[str, dict[str, Durations]] = {m: {} for m in MEASURES}
    backwards = dict.fromkeys(MEASURES, 0)
    for row in db.session.execute(sa.select(*columns).group_by(rows.c.severity)):
        sev, n = row[0], row[1]
        total += n
        closure = [a + int(b) for a, b in zip(closure, row[2:6], strict=True)]
        for m, measure in enumerate(MEASURES):
            count, mean, p90, back = row[6 + 4 * m:10 + 4 * m]
            if count:
                durations[measure][sev] = Durations(count, _hours(mean), _hours(p90))
            backwards[measure] += back
    order = {s: i for i, s in enumerate(SEVERITIES)}
    by_order = {m: dict(sorted(d.items(), key=lambda kv: order.get(kv[0], len(order)))) for m, d in durations.items()}
    return total, by_order, backwards, ClosureQuality(*closure)


def _seconds(start: Any, end: Any) -> sa.ColumnElement[Any]:
    if db.engine.dialect.name == "postgresql":
        return sa.extract("epoch", end - start)
    return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0  # SQLite keeps UTC times as ISO text


def _durations(where: list[sa.ColumnElement[bool]], column: Any) -> tuple[dict[str, Durations], int]:
    seconds = _seconds(Incident.opened_at, column)
    severity = sa.func.coalesce(Incident.severity, NO_SEVERITY)
    measured = [*where, Incident.opened_at.is_not(None), column.is_not(None)]
    backwards = db.session.scalar(sa.select(sa.func.count()).select_from(Incident).where(*measured, seconds < 0)) or 0
    measured.append(seconds >= 0)
    by_severity: dict[str, Durations] = {}
    if db.engine.dialect.name == "postgresql":
        rows = db.session.execute(sa.select(severity, sa.func.count(), sa.func.avg(seconds),
                                            sa.func.percentile_cont(0.9).within_group(seconds))
                                  .where(*measured).group_by(severity)).all()
        for sev, count, mean, p90 in rows:
            by_severity[sev] = Durations(count, _hours(mean), _hours(p90))
    else:  # SQLite has no percentile: the embedded default's few thousand values are sorted here
        values: dict[str, list[float]] = defaultdict(list)
        for sev, s in db.session.execute(sa.select(severity, seconds).where(*measured).order_by(severity, seconds)):
            values[sev].append(float(s))
        for sev, vs in values.items():
            by_severity[sev] = Durations(len(vs), _hours(sum(vs) / len(vs)), _hours(percentile(vs, 0.9)))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return dict(sorted(by_severity.items(), key=lambda kv: order.get(kv[0], len(order)))), backwards


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks, as percentile_cont."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def _hours(seconds: Any) -> float | None:
    return None if seconds is None else round(float(seconds) / 3600.0, 2)


def _closure(where: list[sa.ColumnElement[bool]]) -> ClosureQuality:
    root, lessons = Incident.has_root_cause.is_(True), Incident.has_lessons_learned.is_(True)  # kept by the database

    def count_if(term: sa.ColumnElement[bool]) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((term, 1), else_=0)), 0)
    row = db.session.execute(sa.select(sa.func.count(), count_if(root), count_if(lessons), count_if(sa.and_(root, lessons)))
                             .where(*where, Incident.state.in_(CLOSED_STATES))).one()
    return ClosureQuality(*(int(v) for v in row))


def _recurring(where: list[sa.ColumnElement[bool]], as_of: datetime) -> list[RecurringGroup]:
    terms = [*where, Incident.affected_ci.is_not(None), Incident.affected_ci != "", Incident.category.is_not(None),
             Incident.opened_at.is_not(None)]
    if db.engine.dialect.name == "postgresql":
        return _recurring_groups(terms, as_of)
    rows = db.session.execute(
        sa.select(Incident.affected_ci, Incident.category, Incident.opened_at, Incident.problem_ref)
        .where(*terms).order_by(Incident.affected_ci, Incident.category, Incident.opened_at)).all()
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for r in rows:
        groups[(r.affected_ci, r.category)].append(r)
    out = []
    for (ci, category), members in groups.items():
        if not _recurs(m.opened_at for m in members):
            continue
        last = members[-1].opened_at
        out.append(RecurringGroup(ci, category, len(members), members[0].opened_at, last,
                                  problem_linked=all(bool((m.problem_ref or "").strip()) for m in members),
                                  stopped=last <= as_of - RECURRENCE_WINDOW))
    return sorted(out, key=lambda g: (g.stopped, -g.incidents, g.affected_ci, g.category))


def _recurring_groups(terms: list[sa.ColumnElement[bool]], as_of: datetime) -> list[RecurringGroup]:
    """PostgreSQL: the recurring groups found by the database (``_recurs`` as a window: an opening no more than the
    window after the one RECURRENCE_MIN - 1 before it), so that only those groups come back, not every incident."""
    earlier = sa.func.lag(Incident.opened_at, RECURRENCE_MIN - 1).over(
        partition_by=(Incident.affected_ci, Incident.category), order_by=Incident.opened_at)
    w = sa.select(Incident.affected_ci, Incident.category, Incident.opened_at, Incident.problem_ref,
                  earlier.label("earlier")).where(*terms).subquery()
    rows = db.session.execute(
        sa.select(w.c.affected_ci, w.c.category, sa.func.count(), sa.func.min(w.c.opened_at), sa.func.max(w.c.opened_at),
                  sa.func.array_agg(sa.distinct(w.c.problem_ref)))
        .group_by(w.c.affected_ci, w.c.category)
        .having(sa.func.bool_or(w.c.opened_at - w.c.earlier <= sa.literal(RECURRENCE_WINDOW, sa.Interval())))).all()
    out = [RecurringGroup(ci, category, n, first, last, problem_linked=all(bool((p or "").strip()) for p in problems),
                          stopped=last <= as_of - RECURRENCE_WINDOW) for ci, category, n, first, last, problems in rows]
    return sorted(out, key=lambda g: (g.stopped, -g.incidents, g.affected_ci, g.category))


def _recurs(opened: Iterable[datetime]) -> bool:
    """At least RECURRENCE_MIN openings within one window (the times come sorted)."""
    times = list(opened)
    return any(times[i + RECURRENCE_MIN - 1] - times[i] <= RECURRENCE_WINDOW for i in range(len(times) - RECURRENCE_MIN + 1))


def _by_business_unit(where: list[sa.ColumnElement[bool]]) -> list[UnitCounts]:
    unit = sa.func.coalesce(sa.func.nullif(Incident.business_unit, ""), NO_BUSINESS_UNIT)
    ended = Incident.state.in_(ENDED_STATES)
    rows = db.session.execute(
        sa.select(unit, sa.func.sum(sa.case((ended, 0), else_=1)),
                  sa.func.sum(sa.case((Incident.state.in_(CLOSED_STATES), 1), else_=0)))
        .where(*where).group_by(unit).order_by(unit)).all()
    return [UnitCounts(u, int(o or 0), int(c or 0)) for u, o, c in rows]
