"""Enrichment: turn an incident's open gaps, improvements and running deadlines into a note and fields, and queue it in
the outbox (``plan``). ``services.outbox`` drains the outbox onto the tickets."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..models import Finding, Incident, OutboxItem, RiskAcceptance, utcnow
from ..queries.acceptance import matches, reaches
from ..rules.clocks import format_utc, time_left
from ..rules.model import FAIL, GAP, PENDING, SEVERITIES, SEVERITY_RANK, Ruleset

MARKER = "[gapbridge:{fingerprint}]"
CLEAN = "clean"  # the fingerprint of "no open gaps"
# an acceptance that expired or was revoked this recently is named beside the gap it no longer covers
RECENTLY_ENDED = timedelta(days=30)


class AcceptedGap(NamedTuple):
    """A failed gap under a risk acceptance in force: reported, but not counted as an open gap."""

    check_id: str
    details: list[str]
    expires_at: datetime
    approver: str


class EndedAcceptance(NamedTuple):
    """The acceptance that covered an open gap until recently."""

    approver: str
    ended_at: datetime
    how: str  # expired or revoked


@dataclass
class TicketFindings:
    """What a ticket is told: open gaps, accepted gaps, improvements, clocks still running. (check id, details[, due]).

    ``ended``: by check id, the acceptance of an open gap that ran out recently. The note says so, but it is not
    in the fingerprint: the gap coming back already changes it, and the line dropping out later must not.
    """

    gaps: list[tuple[str, list[str]]] = field(default_factory=list)
    improvements: list[tuple[str, list[str]]] = field(default_factory=list)
    pending: list[tuple[str, datetime]] = field(default_factory=list)
    accepted: list[AcceptedGap] = field(default_factory=list)
    ended: dict[str, EndedAcceptance] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.gaps or self.improvements or self.pending or self.accepted)


def fingerprint(findings: TicketFindings) -> str:
    """Stable over what the note reports: each gap and improvement with what it lacks, each clock with its due time.

    The time left on a clock is not in it: the note says it as of writing, and is not
    rewritten as the clock runs down; it is rewritten when the clock stops or falls due.
    """
    if not findings:
        return CLEAN
    lines = [f"{cid}:{'|'.join(details)}" for cid, details in sorted(findings.gaps)]
    lines += [f"improvement {cid}:{'|'.join(details)}" for cid, details in sorted(findings.improvements)]
    lines += [f"pending {cid}:{due.isoformat()}" for cid, due in sorted(findings.pending)]
    # who accepted it and until when are on the note: amending either rewrites it
    lines += [f"accepted {a.check_id}:{'|'.join(a.details)}:{a.expires_at.isoformat()}:{a.approver}" for a in sorted(findings.accepted)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _control_label(ruleset: Ruleset, edition: str, ids: tuple[str, ...]) -> str:
    parts = []
    for cid in ids:
        c = ruleset.catalogue.get(edition, cid)
        parts.append(f"{cid} {c.title}" if c else cid)
    return "; ".join(parts)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def render_note(ruleset: Ruleset, number: str | None, findings: TicketFindings, closed: list[str], fp: str,
                now: datetime) -> str:
    """The work note a service desk agent reads: what is missing, what to do, and what falls due when."""
    subject = number or "this incident"
    if findings.gaps:
        head = f"GapBridge: ISO/IEC 27001 check of {subject} found {_plural(len(findings.gaps), 'open gap')}."
    else:
        head = f"GapBridge: ISO/IEC 27001 check of {subject}: no open gaps."
    extra = []
    if findings.accepted:
        n = len(findings.accepted)
        extra.append(f"{_plural(n, 'accepted risk')} (not counted as {'a gap' if n == 1 else 'gaps'})")
    if findings.pending:
        extra.append(f"{_plural(len(findings.pending), 'deadline')} still running")
    if findings.improvements:
        extra.append(f"{_plural(len(findings.improvements), 'suggested improvement')} (not a gap)")
    if extra:
        head += " " + "; ".join(extra).capitalize() + "."
    elif not findings.gaps:
        head += " Thank you."
    lines = [head]

    def by_severity(item: tuple[Any, ...]) -> tuple[int, str]:
        check = ruleset.check(item[0])
        return (SEVERITY_RANK[check.severity] if check else 9, item[0])

    def block(i: int, cid: str, details: list[str]) -> list[str]:
        check = ruleset.check(cid)
        ended = findings.ended.get(cid)
        counts_again = [] if ended is None else [
            f"   Risk acceptance by {ended.approver} {'expired' if ended.how == 'expired' else 'was revoked'}"
            f" on {format_utc(ended.ended_at)}: this gap counts again."]
        if check is None:  # a check removed since it was assessed; the next assessment drops it
            return ["", f"{i}. {cid}", f"   Missing: {'; '.join(details)}", *counts_again]
        sub = ruleset.subprocesses[check.subprocess]
        return [
            "",
            f"{i}. [{check.severity.upper()}] {check.title} ({check.id})",
            *counts_again,
            f"   Missing: {'; '.join(details) if details else check.missing}",
            f"   What to do: {check.remediation}",
            f"   Control: ISO 27001:2022 {_control_label(ruleset, '2022', check.controls_2022)}"
            f" | ISO 27001:2013 {_control_label(ruleset, '2013', check.controls_2013)}",
            f"   ITIL sub-process: {sub.name} ({check.relation})",
        ]

    n = 0
    for cid, details in sorted(findings.gaps, key=by_severity):
        n += 1
        lines += block(n, cid, details)
    if findings.accepted:
        lines += ["", "Accepted risks (not counted as gaps; each counts again when its acceptance expires or is revoked):"]
        for accepted in sorted(findings.accepted, key=by_severity):
            check = ruleset.check(accepted.check_id)
            what = f"{check.title} ({check.id}, {', '.join(check.controls_2022)})" if check is not None else accepted.check_id
            lines.append(f"- {what}: accepted by {accepted.approver} until {format_utc(accepted.expires_at)}")
            if accepted.details:
                lines.append(f"  Missing: {'; '.join(accepted.details)}")
    if findings.pending:
        lines += ["", "Deadlines still running (not gaps yet):"]
        for cid, due in sorted(findings.pending, key=lambda p: (p[1], p[0])):
            check = ruleset.check(cid)
            what = check.clock.what if check is not None and check.clock is not None else cid
            left = f"due in {time_left(due - now)}" if due > now else "due now"
            lines.append(f"- {what}: {left}, at {format_utc(due)} ({cid})")
            if check is not None:
                lines.append(f"  What to do: {check.remediation}")
    if findings.improvements:
        lines += ["", "Suggested improvements (not gaps; they do not make the ticket non-compliant):"]
        for cid, details in sorted(findings.improvements, key=by_severity):
            n += 1
            lines += block(n, cid, details)
    if closed:
        lines += ["", "Resolved since the last check: " + ", ".join(sorted(closed)) + "."]
    lines += ["", MARKER.format(fingerprint=fp)]
    return "\n".join(lines)


def enrichment_fields(ruleset: Ruleset, findings: TicketFindings, fp: str) -> dict[str, Any]:
    checks = [ruleset.check(cid) for cid, _ in findings.gaps]
    c22 = sorted({c for ch in checks if ch for c in ch.controls_2022})
    c13 = sorted({c for ch in checks if ch for c in ch.controls_2013})
    worst = min((SEVERITY_RANK[ch.severity] for ch in checks if ch), default=None)
    next_due = min((due for _, due in findings.pending), default=None)
    return {
        "fingerprint": fp,
        "open_gaps": len(findings.gaps),
        "gap_checks": ",".join(sorted(cid for cid, _ in findings.gaps)),
        "controls_2022": ",".join(c22),
        "controls_2013": ",".join(c13),
        # improvements never make a ticket non-compliant; accepted gaps leave it neither failing nor plainly compliant
        "compliance_status": "gaps" if findings.gaps else "accepted_risk" if findings.accepted else "compliant",
        "worst_severity": "" if worst is None else SEVERITIES[worst],
        "improvements": len(findings.improvements),
        "improvement_checks": ",".join(sorted(cid for cid, _ in findings.improvements)),
        "pending_clocks": len(findings.pending),
        "accepted_risks": len(findings.accepted),
        "accepted_checks": ",".join(sorted(a.check_id for a in findings.accepted)),
        "next_due_at": "" if next_due is None else next_due.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ruleset": ruleset.hash,
    }


def ticket_labels(findings: TicketFindings) -> list[str]:
    """Ticket-level labels: an accepted gap does not keep ``gapbridge-gaps`` (it is not open), nor earn ``-compliant``."""
    labels = [label for label, present in (("gapbridge-gaps", findings.gaps), ("gapbridge-accepted-risk", findings.accepted))
              if present] or ["gapbridge-compliant"]
    if findings.pending:
        labels.append("gapbridge-deadline-running")
    return labels


@dataclass
class PlanSummary:
    queued: int = 0
    unchanged: int = 0
    superseded: int = 0
    failed: int = 0  # current notes that failed: reported, not re-queued


class _Acceptances:
    """The risk acceptances one batch of incidents may need: in force, or ended within ``RECENTLY_ENDED``."""

    def __init__(self, incident_ids: list[int], now: datetime) -> None:
        ra = RiskAcceptance
        since = now - RECENTLY_ENDED
        self.now = now
        self.by_incident: dict[tuple[int, str], list[RiskAcceptance]] = defaultdict(list)
        self.by_scope: dict[str, list[RiskAcceptance]] = defaultdict(list)
        # one query a batch: the acceptances of these incidents and every scoped one (few), matched in Python
        for a in db.session.scalars(sa.select(ra).where(
                sa.or_(ra.incident_id.in_(incident_ids), ra.incident_id.is_(None)),
                sa.or_(sa.and_(ra.revoked_at.is_(None), ra.expires_at > since), ra.revoked_at > since))):
            if a.incident_id is None:
                self.by_scope[a.check_id].append(a)
            else:
                self.by_incident[(a.incident_id, a.check_id)].append(a)

    def of(self, check_id: str, incident: Any) -> tuple[RiskAcceptance | None, EndedAcceptance | None]:
        """The acceptance in force that lasts longest over this gap; else the one that ended last, if recently."""
        candidates = self.by_incident.get((incident.id, check_id), []) + self.by_scope.get(check_id, [])
        # the incident row has the columns matches() reads (id, source, business_unit, category)
        in_force = [a for a in candidates if matches(a, check_id, cast(Incident, incident), self.now)]
        if in_force:
            return max(in_force, key=lambda a: (a.expires_at, a.id)), None
        ended = [(a.revoked_at or a.expires_at, a) for a in candidates if reaches(a, incident)]
        ended = [(at, a) for at, a in ended if at <= self.now]
        if not ended:
            return None, None
        at, a = max(ended, key=lambda e: (e[0], e[1].id))
        return None, EndedAcceptance(a.approver, at, "revoked" if a.revoked_at is not None else "expired")


def plan(ruleset: Ruleset, *, source: str | None = None, exclude_sources: Collection[str] = (), now: datetime | None = None) -> PlanSummary:
    """Queue an enrichment for every assessed incident whose open gaps, accepted gaps or running clocks changed.

    ``now`` decides which risk acceptances are in force (default: the time of each batch).
    """
    summary = PlanSummary()
    it, ft, ot = Incident.__table__, Finding.__table__, OutboxItem.__table__
    last_id = 0
    while True:
        q = sa.select(it.c.id, it.c.source, it.c.external_id, it.c.number, it.c.enrichment_fingerprint, it.c.business_unit,
                      it.c.category).where(it.c.assessed_ruleset == ruleset.hash, it.c.id > last_id).order_by(it.c.id).limit(1000)
        if source:
            q = q.where(it.c.source == source)
        if exclude_sources:  # read-only connectors: nothing would ever be written, so nothing is queued
            q = q.where(it.c.source.not_in(sorted(exclude_sources)))
        incidents = db.session.execute(q).all()
        if not incidents:
            break
        last_id = incidents[-1].id
        ids = [i.id for i in incidents]
        now_ = now or utcnow()
        by_id = {i.id: i for i in incidents}
        acceptances = _Acceptances(ids, now_)
        reported: dict[int, TicketFindings] = defaultdict(TicketFindings)
        for f in db.session.execute(sa.select(ft.c.incident_id, ft.c.check_id, ft.c.kind, ft.c.status, ft.c.details, ft.c.due_at).where(
                ft.c.incident_id.in_(ids), ft.c.status.in_([FAIL, PENDING]))):
            found = reported[f.incident_id]
            if f.status == PENDING and f.due_at is not None:
                found.pending.append((f.check_id, f.due_at))
            elif f.status == FAIL and f.kind == GAP:
                details = list(f.details or [])
                acceptance, ended = acceptances.of(f.check_id, by_id[f.incident_id])
                if acceptance is not None:
                    found.accepted.append(AcceptedGap(f.check_id, details, acceptance.expires_at, acceptance.approver))
                else:
                    found.gaps.append((f.check_id, details))
                    if ended is not None:
                        found.ended[f.check_id] = ended
            elif f.status == FAIL:
                found.improvements.append((f.check_id, list(f.details or [])))
        by_fp: dict[tuple[int, str], Any] = {}
        last_sent: dict[int, Any] = {}
        for o in db.session.execute(sa.select(ot.c.id, ot.c.incident_id, ot.c.fingerprint, ot.c.status, ot.c.payload, ot.c.sent_at)
                                    .where(ot.c.incident_id.in_(ids))):
            by_fp[(o.incident_id, o.fingerprint)] = o
            if o.status == "sent" and (o.incident_id not in last_sent or (o.sent_at, o.id) > (last_sent[o.incident_id].sent_at,
                                                                                               last_sent[o.incident_id].id)):
                last_sent[o.incident_id] = o
        for inc in incidents:
            findings = reported.get(inc.id, TicketFindings())
            fp = fingerprint(findings)
            sent = last_sent.get(inc.id)
            # What the ticket carries: the last note we sent (by sent_at; a re-sent older row counts from its new
            # sent_at). Only before we ever sent one, what the tool showed at the last sync.
            on_ticket = sent.fingerprint if sent is not None else inc.enrichment_fingerprint
            # any other note still waiting, or failed, is stale now: it must never reach the ticket after this one
            stale = [o.id for (iid, ofp), o in by_fp.items() if iid == inc.id and ofp != fp and o.status in ("pending", "failed")]
            if stale:
                db.session.execute(ot.update().where(ot.c.id.in_(stale), ot.c.status.in_(["pending", "failed"]))
                                   .values(status="superseded", claimed_by=None, claimed_until=None))
                summary.superseded += len(stale)
            mine = by_fp.get((inc.id, fp))
            if fp == on_ticket or (fp == CLEAN and on_ticket is None):  # current, or clean and never reported: no note
                summary.unchanged += 1
                continue
            if mine is not None and mine.status == "pending":
                summary.unchanged += 1
                continue
            if mine is not None and mine.status == "failed":
                summary.failed += 1  # terminal until --retry-failed or a new set of gaps
                continue
            told = (sent.payload or {}).get("fields", {}) if sent is not None else {}
            # an accepted gap that passes now was resolved too; one just accepted was not
            previous = set(f"{told.get('gap_checks', '')},{told.get('accepted_checks', '')}".split(",")) - {""}
            closed = sorted(previous - {cid for cid, _ in findings.gaps} - {a.check_id for a in findings.accepted})
            payload = {
                "note": render_note(ruleset, inc.number, findings, closed, fp, now_),
                "fields": enrichment_fields(ruleset, findings, fp),
                "labels": ticket_labels(findings),
            }
            if _queue(inc, fp, payload):
                summary.queued += 1
            else:
                summary.unchanged += 1  # another instance queued it since we read the outbox
        db.session.commit()
    return summary


def _queue(inc: Any, fp: str, payload: dict[str, Any]) -> bool:
    """Insert the note as pending, or send an old row of the same gaps again; True if this call queued it.

    One statement, so two plans at once cannot both insert (the unique key on incident and fingerprint):
    the later one finds the row and leaves it as it is, unless it was sent or superseded before.
    """
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    ot = OutboxItem.__table__
    now = utcnow()
    stmt = insert(ot).values(incident_id=inc.id, source=inc.source, external_id=inc.external_id, fingerprint=fp, payload=payload,
                             status="pending", attempts=0, next_attempt_at=now, created_at=now)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ot.c.incident_id, ot.c.fingerprint],
        set_={"status": "pending", "payload": stmt.excluded.payload, "attempts": 0, "next_attempt_at": now, "last_error": None,
              "sent_at": None, "claimed_by": None, "claimed_until": None},
        where=ot.c.status.in_(["sent", "superseded"]))
    # RETURNING says whether this call wrote the row, alike on SQLite and PostgreSQL (rowcount did not, on psycopg)
    return db.session.execute(stmt.returning(ot.c.id)).first() is not None
