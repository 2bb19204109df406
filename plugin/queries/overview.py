"""The ISMS manager's overview: open gaps now and week by week, incidents in scope, the share of security incidents with
no open gap, the worst controls, clocks falling due, and the last sync of each source.

Each number is the one the API gives for the same scope: open gaps as ``open_gap_clause`` counts them (failed gaps no
acceptance in force covers), controls as ``coverage`` counts them (incidents failing, per 2022 control).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from ..extensions import db
from ..models import Finding, Incident
from ..rules.model import GAP, PENDING, Ruleset
from . import coverage as cov
from .acceptance import accepted_term, open_gap_clause
from .scope import Scope
from .status import SourceStatus, source_status

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
    where = scope.conditions()
    open_gaps = db.session.scalar(sa.select(sa.func.count()).select_from(Finding).join(Incident, Incident.id == Finding.incident_id)
                                  .where(open_gap_clause(now), *where)) or 0
    in_scope = db.session.scalar(sa.select(sa.func.count()).select_from(Incident).where(*where)) or 0
    with_open_gap = sa.exists().where(Finding.incident_id == Incident.id, open_gap_clause(now)).correlate(Incident)
    security, clear = db.session.execute(sa.select(sa.func.count(), sa.func.count().filter(~with_open_gap))
                                         .select_from(Incident).where(Incident.is_security.is_(True), *where)).one()
    controls = cov.coverage(cov.control_groups(ruleset), scope, now, ruleset)
    worst = sorted((c for c in controls if c.failed), key=lambda c: (-c.failed, -(c.failed / c.in_scope if c.in_scope else 0),
                                                                       cov._control_order(c.group.key)))[:WORST]
    due, due_total = due_soon(ruleset, scope, now)
    return Overview(scope, now, int(open_gaps), int(in_scope), int(security or 0), int(clear or 0), trend(scope, now), worst, due,
                    due_total, source_status(list(sources), now))


def trend(scope: Scope, now: datetime) -> list[Week]:
    """Per week: the gaps open at its end, opened in it and resolved in it, in one pass over the gaps that ever failed.

    A gap keeps when it opened and, once it came to pass, when it did; a gap under a risk acceptance in force now
    is left out of every week, as it is out of the open gaps now.
    """
    starts = weeks_of(scope, now)
    f = Finding
    opened_at, resolved_at = f.first_failed_at, f.resolved_at
    columns = []
    for start in starts:
        end = min(start + timedelta(weeks=1), now)
        still_open = sa.or_(f.status == "fail", resolved_at > end) if end < now else f.status == "fail"
        columns += [sa.func.count().filter(opened_at <= end, still_open),
                    sa.func.count().filter(opened_at >= start, opened_at < end),
                    sa.func.count().filter(resolved_at >= start, resolved_at < end)]
    row = db.session.execute(sa.select(*columns).select_from(f).join(Incident, Incident.id == f.incident_id).where(
        f.kind == GAP, opened_at.is_not(None), opened_at < min(starts[-1] + timedelta(weeks=1), now),
        sa.or_(resolved_at.is_(None), resolved_at >= starts[0]), ~sa.and_(f.status == "fail", accepted_term(now)),
        *scope.conditions())).one()
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


def choices() -> dict[str, list[str]]:
    """The values the filters offer: those the assessed incidents carry."""
    out = {}
    for name in ("business_unit", "source", "severity", "record_type"):
        column = getattr(Incident, name)
        out[name] = sorted(v for v in db.session.scalars(sa.select(column).where(column.is_not(None),
                                                                                 Incident.assessed_ruleset.is_not(None)).distinct()))
    return out
