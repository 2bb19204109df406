"""Read-side summaries of open gaps, shared by the CLI, the demo and the API.

A failed gap under a risk acceptance in force is not an open gap here: it is counted as accepted, apart.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from ..extensions import db
from ..models import Finding, Incident, OutboxItem, RejectedRecord, utcnow
from ..queries.acceptance import accepted_clause, open_gap_clause
from ..rules.model import FAIL, GAP, PENDING, Ruleset


@dataclass
class GapReport:
    incidents: int
    security_incidents: int
    with_gaps: int
    rejected: int
    by_control: list[tuple[str, str, str, int]]  # (2022 id, 2013 ids, title, open gaps)
    by_subprocess: list[tuple[str, int]]  # (sub-process name, open gaps)
    by_check: list[tuple[str, str, int]]
    outbox: dict[str, int]
    improvements: list[tuple[str, str, int]]  # (check id, title, open improvements): apart from gaps
    pending: int  # clocks still running
    accepted: int = 0  # failed gaps under a risk acceptance in force: not in the open gaps above
    accepted_by_control: dict[str, int] = field(default_factory=dict)  # 2022 id -> accepted gaps
    accepted_by_check: dict[str, int] = field(default_factory=dict)


def gap_report(ruleset: Ruleset, *, now: datetime | None = None) -> GapReport:
    """``now`` decides which risk acceptances are in force."""
    now = now or utcnow()
    ft, it = Finding.__table__, Incident.__table__
    incidents = db.session.scalar(sa.select(sa.func.count()).select_from(it)) or 0
    security = db.session.scalar(sa.select(sa.func.count()).select_from(it).where(it.c.is_security.is_(True))) or 0
    with_gaps = db.session.scalar(sa.select(sa.func.count(sa.distinct(Finding.incident_id))).join(Incident, Incident.id == Finding.incident_id)
                                  .where(open_gap_clause(now))) or 0
    rejected = db.session.scalar(sa.select(sa.func.count()).select_from(RejectedRecord)) or 0
    per_check: dict[str, int] = {}
    accepted_by_check: dict[str, int] = {}
    # one pass over the failed gaps: those an acceptance covers are counted apart
    for check_id, failed, accepted in db.session.execute(
            sa.select(Finding.check_id, sa.func.count(), sa.func.count(sa.case((accepted_clause(now), 1))))
            .join(Incident, Incident.id == Finding.incident_id).where(Finding.is_open_gap).group_by(Finding.check_id)):
        per_check[check_id] = failed - accepted
        if accepted:
            accepted_by_check[check_id] = accepted
    per_improvement: dict[str, int] = dict(db.session.execute(
        sa.select(ft.c.check_id, sa.func.count()).where(ft.c.status == FAIL, ft.c.kind != GAP).group_by(ft.c.check_id)).all())
    pending = db.session.scalar(sa.select(sa.func.count()).select_from(ft).where(ft.c.status == PENDING)) or 0
    by_control: Counter[str] = Counter()
    accepted_by_control: Counter[str] = Counter()
    by_sub: Counter[str] = Counter()
    for check in ruleset.checks:
        if check.kind != GAP:
            continue
        n = per_check.get(check.id, 0)
        for c in check.controls_2022:
            by_control[c] += n
            accepted_by_control[c] += accepted_by_check.get(check.id, 0)
        by_sub[check.subprocess] += n
    controls = []
    for cid, n in sorted(by_control.items(), key=lambda kv: (-kv[1], kv[0])):
        control = ruleset.catalogue.get("2022", cid)
        # the 2013 counterparts of this control, not of every control its checks also name
        olds = ", ".join(ruleset.catalogue.predecessors(cid)
                         or dict.fromkeys(o for ch in ruleset.checks if cid in ch.controls_2022 for o in ch.controls_2013))
        controls.append((cid, olds, control.title if control else "", n))
    subs = [(ruleset.subprocesses[s].name, n) for s, n in sorted(by_sub.items(), key=lambda kv: (-kv[1], kv[0]))]
    checks = [(c.id, c.title, per_check.get(c.id, 0)) for c in ruleset.checks if c.kind == GAP]
    improvements = [(c.id, c.title, per_improvement.get(c.id, 0)) for c in ruleset.checks if c.kind != GAP]
    outbox = dict(db.session.execute(sa.select(OutboxItem.status, sa.func.count()).group_by(OutboxItem.status)).all())
    return GapReport(incidents, security, with_gaps, rejected, controls, subs, checks, outbox, improvements, pending,
                     accepted=sum(accepted_by_check.values()), accepted_by_control={c: n for c, n in accepted_by_control.items() if n},
                     accepted_by_check=accepted_by_check)


def format_report(r: GapReport) -> str:
    lines = [f"Incidents stored: {r.incidents} ({r.security_incidents} security), {r.with_gaps} with open gaps, {r.rejected} rejected"]
    if r.accepted:
        lines.append(f"Accepted risks: {r.accepted} failed {'gap' if r.accepted == 1 else 'gaps'} under an acceptance in force, "
                     "not counted as open gaps")
    lines += ["", "Open gaps by Annex A control (2022 | 2013):"]
    width = max((len(c[0]) for c in r.by_control), default=6)
    for cid, olds, title, n in r.by_control:
        accepted = r.accepted_by_control.get(cid)
        lines.append(f"  {cid:<{width}}  {n:>6}  {title} | {olds}" + (f"  (+{accepted} accepted)" if accepted else ""))
    lines += ["", "Open gaps by ITIL sub-process:"]
    for name, n in r.by_subprocess:
        lines.append(f"  {n:>6}  {name}")
    open_improvements = [(cid, title, n) for cid, title, n in r.improvements if n]
    if open_improvements:
        lines += ["", "Suggested improvements (not gaps):"]
        for cid, title, n in open_improvements:
            lines.append(f"  {n:>6}  {cid} {title}")
    if r.pending:
        lines += ["", f"Deadlines still running: {r.pending} (not gaps until they fall due)"]
    if r.outbox:
        lines += ["", "Write-back outbox: " + ", ".join(f"{k} {v}" for k, v in sorted(r.outbox.items()))]
    return "\n".join(lines)
