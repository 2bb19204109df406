"""The incident-management maturity the ticket data supports: seed 003's five levels of practice, outcome and metric.

Each level lists criteria. A criterion is measured on the incidents of the scope (met or not met, with the value
behind it), or is one the ticket data cannot show (staff awareness, prioritisation documents, continuity planning):
those are ``unknown`` and never count as met; one the period gives nothing to judge by (no serious incident, say) is
``no_data``, alike. A level is supported when every measured criterion of it and of every level below is met, and at
least one of its own is; what keeps the next level out of reach is listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..extensions import db
from ..models import Incident
from ..rules.model import Ruleset
from .kpis import CLOSED_STATES, ENDED_STATES, ProcessKpis, process_kpis, security_incidents
from .scope import Scope

MET, NOT_MET, UNKNOWN, NO_DATA = "met", "not_met", "unknown", "no_data"


@dataclass(frozen=True)
class Level:
    number: int
    name: str
    practice: str
    outcome: str
    metric: str


# seed 003, Practices-Outcomes-Metrics for incident management
LEVELS = (
    Level(1, "Initial", "Prioritize steps to manage security incidents.", "Security event handling follows high level steps.",
          "# Prioritization documents; # staff aware of these documents"),
    Level(2, "Basic", "Develop basic security incident handling processes within IT. Log and track all security-related "
          "incidents to closure.", "Specified security incidents can be handled effectively. Issues do not get forgotten "
          "about and actions from security incident handling get addressed.",
          "# Specific incidents covered by advice provided; issues open/closed, by business unit"),
    Level(3, "Intermediate", "Prioritize and manage security incidents based on the urgency to restore services. Record "
          "security incidents and incident handling actions in IT and some business units.", "Business recovery priorities "
          "are facilitated in recovery and incident management. Historical data is built up and this enables lessons to be "
          "learnt from the past.", "# Business units that have contributed to the prioritization exercise; # business units "
          "not contributing to business continuity planning; # incidents and time since last historical review"),
    Level(4, "Advanced", "Root cause analyse any serious or recurring incidents to ensure corrective actions can be identified "
          "and implemented organization-wide. Record and track business continuity incidents organization-wide.",
          "Serious incidents are prevented or mitigated in the future. Recurring issues are eliminated or mitigated. Business "
          "continuity issues are logged and tracked to closure organization-wide.",
          "# Serious issues and % resolved; # recurring issues stopped; issue tracking open/close by business unit"),
    Level(5, "Optimized", "Proactively work to avoid business continuity issues across the business ecosystem. Use automated "
          "incident prediction systems. Effectively manage security incidents.", "Many potential business disruptions are "
          "avoided. Many security issues are warned of in advance and can be managed.",
          "# Issues or near incidents effectively managed; % system identified / manually identified issues; # unforeseen "
          "or unanticipated major incidents"),
)


@dataclass(frozen=True)
class Thresholds:
    """Where a measured share counts as met; organisations may set their own."""

    prioritised: float = 0.95  # security incidents with a severity
    tracked_to_closure: float = 0.90  # of those opened more than ``forgotten_after`` ago, closed
    forgotten_after: timedelta = timedelta(days=90)
    with_business_unit: float = 0.90
    actions_recorded: float = 0.80  # with work notes or comments in their timeline
    business_units: int = 2  # security incidents recorded in more than IT
    review_within: timedelta = timedelta(days=90)  # the last lessons learned recorded
    serious_root_cause: float = 0.90  # closed critical and high incidents with a root cause
    serious_resolved: float = 0.90  # critical and high opened more than ``serious_due`` ago, resolved
    serious_due: timedelta = timedelta(days=30)
    system_detected: float = 0.50  # reported through a monitoring channel


@dataclass(frozen=True)
class Criterion:
    level: int
    what: str
    status: str  # met | not_met | unknown | no_data
    value: Any = None  # the measured value (a share 0..1, a count, a time); None when unknown
    shown: str = ""  # the value as a person reads it
    target: str = ""  # what would meet it

    @property
    def met(self) -> bool:
        return self.status == MET


@dataclass
class Maturity:
    scope: Scope
    as_of: datetime
    level: int  # 0: not even level 1's measured criteria are met
    criteria: list[Criterion] = field(default_factory=list)

    def of(self, level: int) -> list[Criterion]:
        return [c for c in self.criteria if c.level == level]

    @property
    def to_next(self) -> list[Criterion]:
        """What keeps the next level from being supported: its criteria (and any below it) measured and not met."""
        return [c for c in self.criteria if c.level <= self.level + 1 and c.status == NOT_MET]

    @property
    def unknown(self) -> list[Criterion]:
        """What ticket data cannot show, and what the period gave nothing to judge by: neither met nor failed."""
        return [c for c in self.criteria if c.status in (UNKNOWN, NO_DATA)]


def _share(part: int, whole: int, target: float, what: str, level: int, unit: str) -> Criterion:
    if whole == 0:
        return Criterion(level, what, NO_DATA, None, f"no {unit} in the period", f"at least {target:.0%}")
    value = part / whole
    return Criterion(level, what, MET if value >= target else NOT_MET, value, f"{value:.0%} ({part} of {whole} {unit})",
                     f"at least {target:.0%}")


def _unknown(level: int, what: str) -> Criterion:
    return Criterion(level, what, UNKNOWN, None, "not shown by ticket data", "evidence outside the ITSM tool")


def _automated_channels(ruleset: Ruleset | None) -> list[str]:
    """The channels a check of the loaded mappings counts as detection by systems (event reporting's param)."""
    channels: set[str] = set()
    for check in ruleset.checks if ruleset is not None else ():
        value = (check.params or {}).get("automated_channels") or (check.params or {}).get("monitoring_channels")
        if isinstance(value, (list, tuple)):
            channels |= {str(v) for v in value}
    return sorted(channels) or ["monitoring", "siem", "event_management", "alert"]


def _counts(where: list[Any], as_of: datetime, t: Thresholds, channels: list[str]) -> dict[str, Any]:
    """What the criteria count over the security incidents of the scope, in one pass (on PostgreSQL, over
    ix_incidents_security alone: the text columns are asked of through the flags the database keeps)."""
    closed = Incident.state.in_(CLOSED_STATES)
    serious = Incident.severity.in_(["critical", "high"])
    serious_old = sa.and_(serious, Incident.opened_at < as_of - t.serious_due)
    terms: dict[str, Any] = {
        "prioritised": sa.func.count().filter(Incident.severity.is_not(None), Incident.severity != ""),
        # forgotten: still open (not resolved, closed or cancelled) longer than the limit
        "not_forgotten": sa.func.count().filter(sa.or_(Incident.state.in_(ENDED_STATES), Incident.opened_at >= as_of - t.forgotten_after)),
        "with_business_unit": sa.func.count().filter(Incident.business_unit.is_not(None), Incident.business_unit != ""),
        "with_actions": sa.func.count().filter(Incident.has_timeline.is_(True)),
        "last_review": sa.func.max(Incident.closed_at).filter(closed, Incident.has_lessons_learned.is_(True), Incident.closed_at <= as_of),
        "serious_closed_with_root_cause": sa.func.count().filter(serious, closed, Incident.has_root_cause.is_(True)),
        "serious_closed": sa.func.count().filter(serious, closed),
        "serious_old_resolved": sa.func.count().filter(serious_old, Incident.resolved_at.is_not(None)),
        "serious_old": sa.func.count().filter(serious_old),
        "system_detected": sa.func.count().filter(Incident.reported_via.in_(channels)),
    }
    row = db.session.execute(sa.select(*(v.label(k) for k, v in terms.items())).select_from(Incident).where(*where)).one()
    return {k: (v if k == "last_review" else int(v or 0)) for k, v in row._mapping.items()}


def maturity(scope: Scope, now: datetime, ruleset: Ruleset | None = None, *, thresholds: Thresholds = Thresholds(),
             kpis: ProcessKpis | None = None) -> Maturity:
    t = thresholds
    k = kpis or process_kpis(scope, now)
    as_of = k.as_of
    where = security_incidents(scope)
    total = k.security_incidents
    channels = _automated_channels(ruleset)
    n = _counts(where, as_of, t, channels)
    criteria = [
        _share(n["prioritised"], total, t.prioritised,
               "security incidents are prioritised (a severity on each)", 1, "security incidents"),
        _unknown(1, "prioritisation documents exist and staff know them"),
    ]
    criteria += [
        _share(n["not_forgotten"], total, t.tracked_to_closure,
               f"security incidents are tracked to closure (none left open over {t.forgotten_after.days} days)", 2,
               "security incidents"),
        _share(n["with_business_unit"], total, t.with_business_unit,
               "open and closed incidents can be counted by business unit (a business unit on each)", 2, "security incidents"),
        _unknown(2, "specific incidents are covered by handling advice (playbooks)"),
    ]
    units = [u for u in k.by_business_unit if u.business_unit != "(none)"]
    with_actions, last_review = n["with_actions"], n["last_review"]
    if total == 0:
        review = Criterion(3, "lessons are learnt from past incidents (the last review recently)", NO_DATA, None,
                           "no security incidents in the period", f"within {t.review_within.days} days")
    elif last_review is None:
        review = Criterion(3, "lessons are learnt from past incidents (the last review recently)", NOT_MET, None,
                           "no closed incident records lessons learned", f"within {t.review_within.days} days")
    else:
        age = as_of - last_review
        review = Criterion(3, "lessons are learnt from past incidents (the last review recently)",
                           MET if age <= t.review_within else NOT_MET, age.days, f"{age.days} days ago ({last_review:%Y-%m-%d})",
                           f"within {t.review_within.days} days")
    criteria += [
        _share(with_actions, total, t.actions_recorded, "incident handling actions are recorded (work notes on the ticket)", 3,
               "security incidents"),
        Criterion(3, "security incidents are recorded beyond IT (business units recording them)",
                  NO_DATA if total == 0 else MET if len(units) >= t.business_units else NOT_MET, len(units),
                  f"{len(units)} business units", f"at least {t.business_units}"),
        review,
        _unknown(3, "business units contribute to recovery prioritisation and continuity planning"),
    ]
    recurring = len(k.recurring)
    criteria += [
        _share(n["serious_closed_with_root_cause"], n["serious_closed"], t.serious_root_cause,
               "serious incidents are root-cause analysed (closed critical and high with a root cause)", 4,
               "closed serious incidents"),
        _share(n["serious_old_resolved"], n["serious_old"], t.serious_resolved,
               f"serious incidents are resolved (of those opened over {t.serious_due.days} days ago)", 4, "older serious incidents"),
        Criterion(4, "recurring issues are stopped", NO_DATA if total == 0 else MET if k.recurring_stopped == recurring else NOT_MET,
                  k.recurring_stopped, "no recurring incidents" if not recurring else f"{k.recurring_stopped} of {recurring} stopped",
                  "every recurring group stopped"),
        _unknown(4, "business continuity incidents are tracked to closure organisation-wide"),
    ]
    criteria += [
        _share(n["system_detected"], total, t.system_detected,
               f"security issues are identified by systems ({', '.join(channels)}) rather than by hand", 5, "security incidents"),
        _unknown(5, "potential disruptions are avoided and near incidents managed in advance"),
    ]
    level = 0
    for lv in LEVELS:
        # nothing to judge (no data) neither meets nor fails a level, as what tickets cannot show; one met is needed
        judged = [c for c in criteria if c.level == lv.number and c.status in (MET, NOT_MET)]
        if not judged or not all(c.met for c in judged):
            break
        level = lv.number
    return Maturity(scope, as_of, level, criteria)
