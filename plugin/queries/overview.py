"""The ISMS manager's overview: open gaps now and week by week, incidents in scope, the share of security incidents with
no open gap, the worst controls, clocks falling due, and the last sync of each source.

Each number is the one the API gives for the same scope: open gaps as ``open_gap_clause`` counts them (failed gaps no
acceptance in force covers), controls as ``coverage`` counts them (incidents failing, per 2022 control).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..extensions import db
from ..models import Finding, Incident, SyncRun
from ..rules.model import FAIL, GAP, PENDING, Ruleset
from . import coverage as cov
from .acceptance import accepted_term
from .kpis import security_incidents
from .scope import Scope
from .status import SourceStatus, sync_status

WORST = 5
DUE_WITHIN = timedelta(hours=24)
TREND_WEEKS = 12  # with no period: the last twelve weeks
MAX_WEEKS = 60  # a longer period is shown by its last 60 weeks


@dataclass(frozen=True)
class Week:
    """The ISO week starting ``start`` (a Monday, 00:00 UTC): gaps open at its end (or now, for the current week),
    gaps that opened in it and gaps that came to pass in it."""

    start: datetime
    open_at_end: int
    opened: int
    resolved: int

    @property
    def label(self) -> str:
        year, week, _ = self.start.isocalendar()
        return f"{year}-W{week:02d}"


@dataclass(frozen=True)
class DueClock:
    incident_id: int
    number: str | None
    url: str | None
    check_id: str
    check_title: str
    due_at: datetime


@dataclass
class Overview:
    scope: Scope
    now: datetime
    open_gaps: int
    incidents_in_scope: int
    security_incidents: int
    security_without_open_gap: int
    trend: list[Week]
    worst_controls: list[cov.Counts]
    due_soon: list[DueClock]
    due_soon_total: int
    sources: list[SourceStatus] = field(default_factory=list)

    @property
    def share_security_clear(self) -> float | None:
        """Of the security incidents in scope, the share with no open gap (None with none in scope)."""
        return self.security_without_open_gap / self.security_incidents if self.security_incidents else None


def monday(at: datetime) -> datetime:
    day = at.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def weeks_of(scope: Scope, now: datetime) -> list[datetime]:
    """The Mondays of the weeks the trend shows: those of the period up to now, or the last twelve."""
    end = min(scope.end, now) if scope.end is not None else now
    first = monday(scope.start) if scope.start is not None else monday(now) - timedelta(weeks=TREND_WEEKS - 1)
    starts = []
    at = first
    while at < end:
        starts.append(at)
        at += timedelta(weeks=1)
    return starts[-MAX_WEEKS:] or [monday(end)]


def overview(ruleset: Ruleset, scope: Scope, now: datetime, sources: Iterable[str]) -> Overview:
    cov._analytic_memory()
    accepted = accepted_term(now)
    weeks, open_gaps = _gap_history(scope, now, None, accepted)
    # the KPIs' population: security incidents of record type incident (events and weaknesses are not)
    security = sa.and_(*security_incidents(Scope()))  # within the query's scope
    if isinstance(accepted, sa.sql.elements.False_):  # no acceptance in force: one hashed list of the incidents with a failed gap
        with_open_gap: sa.ColumnElement[bool] = Incident.id.in_(sa.select(Finding.incident_id).where(Finding.is_open_gap))
    else:
        with_open_gap = sa.exists().where(Finding.incident_id == Incident.id, Finding.is_open_gap, ~accepted).correlate(Incident)
    # counted in coverage's pass over the incidents
    controls, in_scope, tallied = cov.coverage_and_tallies(cov.control_groups(ruleset), scope, now, ruleset,
                                                          {"security": security, "clear": sa.and_(security, ~with_open_gap)})
    security_count, clear = tallied["security"], tallied["clear"]
    worst = sorted((c for c in controls if c.failed), key=lambda c: (-c.failed, -(c.failed / c.in_scope if c.in_scope else 0),
                                                                       cov._control_order(c.group.key)))[:WORST]
    due, due_total = due_soon(ruleset, scope, now)
    return Overview(scope, now, open_gaps, int(in_scope or 0), int(security_count or 0), int(clear or 0), weeks, worst, due,
                    due_total, sync_status(list(sources)))


def trend(scope: Scope, now: datetime, checks: Sequence[str] | None = None) -> list[Week]:
    """Per week: the gaps open at its end, opened in it and resolved in it, in one pass over the gaps that ever failed
    (of ``checks`` only, when given: a control's).

    A gap keeps when it opened and, once it came to pass, when it did; a gap under a risk acceptance in force now
    is left out of every week, as it is out of the open gaps now. A gap found when GapBridge first saw its incident
    (the first sync of a tool's history) was there before: it counts from the incident's opening, not from the sync.
    """
    cov._analytic_memory()
    return _gap_history(scope, now, checks, accepted_term(now))[0]


def _gap_history(scope: Scope, now: datetime, checks: Sequence[str] | None,
                 accepted: sa.ColumnElement[bool]) -> tuple[list[Week], int]:
    """The weeks of ``trend`` and the open gaps now (as ``open_gap_clause`` counts them), of ``checks`` when given."""
    starts = weeks_of(scope, now)
    ends = [min(start + timedelta(weeks=1), now) for start in starts]
    f = Finding
    of_checks = [f.check_id.in_(list(checks) or [""])] if checks is not None else []
    if db.engine.dialect.name != "postgresql":
        return _weeks_by_filters(scope, now, starts, ends, of_checks, accepted), int(db.session.scalar(
            sa.select(sa.func.count()).select_from(f).join(Incident, Incident.id == f.incident_id)
            .where(f.is_open_gap, ~accepted, *of_checks, *scope.conditions())) or 0)
    # One pass over the gaps that fail or ever failed (ix_findings_gaps), grouped by where their times fall among the
    # week bounds: a few hundred groups, summed here per week, instead of three filtered counts per week over every row.
    # A time x falls after ``at_or_after(x)`` bounds (bound <= x) and strictly after ``after(x)`` of them (bound < x:
    # bound + 1 us <= x, times being whole microseconds): "<" and "<=" as the weeks' terms ask.
    bounds = [*starts, ends[-1]]
    array = postgresql.ARRAY(sa.DateTime(timezone=True))
    at_or_after = sa.bindparam("trend_bounds", bounds, type_=array)
    after = sa.bindparam("trend_bounds_after", [b + timedelta(microseconds=1) for b in bounds], type_=array)
    # when the gap opened (``_opened_at``): LEAST, which passes over a NULL, spelled for PostgreSQL
    opened_at = sa.case((f.first_failed_at <= Incident.first_seen_at, sa.func.least(Incident.opened_at, f.first_failed_at)),
                        else_=f.first_failed_at)
    keys = [f.status == FAIL, sa.and_(f.status == FAIL, accepted), f.first_failed_at.is_not(None),
            sa.func.width_bucket(opened_at, at_or_after), sa.func.width_bucket(opened_at, after),
            sa.func.width_bucket(f.resolved_at, at_or_after), sa.func.width_bucket(f.resolved_at, after)]
    rows: Any = db.session.execute(sa.select(*keys, sa.func.count()).select_from(f).join(Incident, Incident.id == f.incident_id).where(
        f.kind == GAP, sa.or_(f.status == FAIL, f.first_failed_at.is_not(None)), *of_checks, *scope.conditions())
        # by position: with no acceptance in force a key is the constant false, which GROUP BY refuses as an expression
        .group_by(*(sa.literal_column(str(n)) for n in range(1, len(keys) + 1))))
    n = len(starts)
    open_at_end, opened, resolved = [0] * n, [0] * n, [0] * n
    open_now = 0
    for failing, excluded, ever_failed, o_from, o_after, r_from, r_after, count in rows:
        if failing and not excluded:
            open_now += count
        # the trend's gaps: one that failed, opened before the last week's end, not resolved before the first week
        if excluded or not ever_failed or o_from is None or o_from > n or (r_from is not None and r_from < 1):
            continue
        for k, end in enumerate(ends):
            # bounds[k + 1] is the week's end: opened at or before it, and still failing or resolved after it
            if o_after <= k + 1 and (failing or (end < now and r_after is not None and r_after >= k + 2)):
                open_at_end[k] += count
        if 1 <= o_from <= n:
            opened[o_from - 1] += count
        if r_from is not None and 1 <= r_from <= n:
            resolved[r_from - 1] += count
    return [Week(s, open_at_end[k], opened[k], resolved[k]) for k, s in enumerate(starts)], open_now


def _opened_at() -> sa.ColumnElement[datetime]:
    """When a gap opened, for the trend: a gap found at the incident's first sight counts from the incident's opening."""
    f = Finding
    found_at_first_sight = sa.and_(f.first_failed_at <= Incident.first_seen_at, Incident.opened_at.is_not(None),
                                   Incident.opened_at < f.first_failed_at)
    return sa.case((found_at_first_sight, Incident.opened_at), else_=f.first_failed_at)


def _weeks_by_filters(scope: Scope, now: datetime, starts: list[datetime], ends: list[datetime], of_checks: list[Any],
                      accepted: sa.ColumnElement[bool]) -> list[Week]:
    """The weeks as three filtered counts each (SQLite: no width_bucket)."""
    f = Finding
    opened_at, resolved_at = _opened_at(), f.resolved_at
    columns = []
    for start, end in zip(starts, ends, strict=True):
        still_open = sa.or_(f.status == FAIL, resolved_at > end) if end < now else f.status == FAIL
        columns += [sa.func.count().filter(opened_at <= end, still_open),
                    sa.func.count().filter(opened_at >= start, opened_at < end),
                    sa.func.count().filter(resolved_at >= start, resolved_at < end)]
    row = db.session.execute(sa.select(*columns).select_from(f).join(Incident, Incident.id == f.incident_id).where(
        f.kind == GAP, f.first_failed_at.is_not(None), opened_at < ends[-1],
        sa.or_(resolved_at.is_(None), resolved_at >= starts[0]), ~sa.and_(f.status == FAIL, accepted),
        *of_checks, *scope.conditions())).one()
    return [Week(start, int(row[3 * n]), int(row[3 * n + 1]), int(row[3 * n + 2])) for n, start in enumerate(starts)]


def due_soon(ruleset: Ruleset, scope: Scope, now: datetime, limit: int = 20) -> tuple[list[DueClock], int]:
    """Running clocks (pending findings) falling due in the next 24 hours, soonest first, and how many there are."""
    terms = [Finding.status == PENDING, Finding.due_at >= now, Finding.due_at < now + DUE_WITHIN, *scope.conditions()]
    base = sa.select(Finding.incident_id, Incident.number, Incident.url, Finding.check_id, Finding.due_at).join(
        Incident, Incident.id == Finding.incident_id).where(*terms)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0
    titles = {c.id: c.title for c in ruleset.checks}
    rows = db.session.execute(base.order_by(Finding.due_at, Finding.incident_id, Finding.check_id).limit(limit))
    return [DueClock(r.incident_id, r.number, r.url, r.check_id, titles.get(r.check_id, r.check_id), r.due_at) for r in rows], int(total)


def known_sources(configured: Iterable[str]) -> list[str]:
    """The configured connector instances, then any other source that has synced (one since removed from the config)."""
    synced = db.session.scalars(sa.select(SyncRun.source).distinct())
    return list(dict.fromkeys([*configured, *sorted(synced)]))


CHOICES_SECONDS = 60.0
CHOICES_KEY = "gapbridge.filter_choices"  # in the app's extensions: (when read, values)


def choices() -> dict[str, list[str]]:
    """The values the filters offer: those the stored incidents carry. Read at most once a minute (a pass over the
    incidents, a fifth of a page's time); a value new since shows in the form within the minute."""
    from flask import current_app

    cached = current_app.extensions.get(CHOICES_KEY)
    if cached is not None and time.monotonic() - cached[0] < CHOICES_SECONDS:
        return cached[1]
    names = ("business_unit", "source", "severity", "record_type")
    columns = [getattr(Incident, name) for name in names]
    # one pass for the four (on PostgreSQL over ix_incidents_scope alone): the combinations are few
    seen: dict[str, set[str]] = {name: set() for name in names}
    for row in db.session.execute(sa.select(*columns).group_by(*columns)):
        for name, value in zip(names, row, strict=True):
            if value is not None and value != "":
                seen[name].add(value)
    out = {name: sorted(values) for name, values in seen.items()}
    current_app.extensions[CHOICES_KEY] = (time.monotonic(), out)
    return out
