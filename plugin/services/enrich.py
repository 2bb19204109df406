"""Enrichment: turn an incident's open gaps into a note and fields, queue it in the outbox,
and drain the outbox onto the tickets with retries that survive restarts."""

from __future__ import annotations

import hashlib
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult

from connectors.base import Connector, ConnectorError, Enrichment, FatalConnectorError, RetriableConnectorError

from .. import audit
from ..extensions import db
from ..models import Finding, Incident, OutboxItem, utcnow
from ..rules.model import FAIL, SEVERITY_RANK, Ruleset
from .sync import worker_id

log = logging.getLogger("gapbridge.writeback")

MARKER = "[gapbridge:{fingerprint}]"
CLEAN = "clean"  # the fingerprint of "no open gaps"


def fingerprint(gaps: list[tuple[str, list[str]]]) -> str:
    """Stable over the set of open gaps and what each one lacks."""
    if not gaps:
        return CLEAN
    body = "\n".join(f"{cid}:{'|'.join(details)}" for cid, details in sorted(gaps))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def _control_label(ruleset: Ruleset, edition: str, ids: tuple[str, ...]) -> str:
    parts = []
    for cid in ids:
        c = ruleset.catalogue.get(edition, cid)
        parts.append(f"{cid} {c.title}" if c else cid)
    return "; ".join(parts)


def render_note(ruleset: Ruleset, number: str | None, gaps: list[tuple[str, list[str]]], closed: list[str], fp: str) -> str:
    """The work note a service desk agent reads: what is missing and what to do."""
    lines = []
    if gaps:
        lines.append(f"GapBridge: ISO/IEC 27001 check of {number or 'this incident'} found "
                     f"{len(gaps)} open gap{'s' if len(gaps) != 1 else ''}.")
    else:
        lines.append(f"GapBridge: ISO/IEC 27001 check of {number or 'this incident'}: no open gaps. Thank you.")
    ordered = sorted(gaps, key=lambda g: (SEVERITY_RANK[ruleset.check(g[0]).severity], g[0]))  # type: ignore[union-attr]
    for i, (cid, details) in enumerate(ordered, 1):
        check = ruleset.check(cid)
        assert check is not None
        sub = ruleset.subprocesses[check.subprocess]
        lines += [
            "",
            f"{i}. [{check.severity.upper()}] {check.title} ({check.id})",
            f"   Missing: {'; '.join(details) if details else check.missing}",
            f"   What to do: {check.remediation}",
            f"   Control: ISO 27001:2022 {_control_label(ruleset, '2022', check.controls_2022)}"
            f" | ISO 27001:2013 {_control_label(ruleset, '2013', check.controls_2013)}",
            f"   ITIL sub-process: {sub.name} ({check.relation})",
        ]
    if closed:
        lines += ["", "Resolved since the last check: " + ", ".join(sorted(closed)) + "."]
    lines += ["", MARKER.format(fingerprint=fp)]
    return "\n".join(lines)


def enrichment_fields(ruleset: Ruleset, gaps: list[tuple[str, list[str]]], fp: str) -> dict[str, Any]:
    checks = [ruleset.check(cid) for cid, _ in gaps]
    c22 = sorted({c for ch in checks if ch for c in ch.controls_2022})
    c13 = sorted({c for ch in checks if ch for c in ch.controls_2013})
    worst = min((SEVERITY_RANK[ch.severity] for ch in checks if ch), default=None)
    return {
        "fingerprint": fp,
        "open_gaps": len(gaps),
        "gap_checks": ",".join(sorted(cid for cid, _ in gaps)),
        "controls_2022": ",".join(c22),
        "controls_2013": ",".join(c13),
        "compliance_status": "gaps" if gaps else "compliant",
        "worst_severity": "" if worst is None else ("critical", "high", "medium", "low")[worst],
        "ruleset": ruleset.hash,
    }


@dataclass
class PlanSummary:
    queued: int = 0
    unchanged: int = 0
    superseded: int = 0


def plan(ruleset: Ruleset, *, source: str | None = None) -> PlanSummary:
    """Queue an enrichment for every assessed incident whose open gaps changed."""
    summary = PlanSummary()
    it, ft, ot = Incident.__table__, Finding.__table__, OutboxItem.__table__
    last_id = 0
    while True:
        q = sa.select(it.c.id, it.c.source, it.c.external_id, it.c.number, it.c.enrichment_fingerprint).where(
            it.c.assessed_ruleset == ruleset.hash, it.c.id > last_id).order_by(it.c.id).limit(1000)
        if source:
            q = q.where(it.c.source == source)
        incidents = db.session.execute(q).all()
        if not incidents:
            break
        last_id = incidents[-1].id
        ids = [i.id for i in incidents]
        gaps: dict[int, list[tuple[str, list[str]]]] = defaultdict(list)
        for f in db.session.execute(sa.select(ft.c.incident_id, ft.c.check_id, ft.c.details).where(
                ft.c.incident_id.in_(ids), ft.c.status == FAIL)):
            gaps[f.incident_id].append((f.check_id, list(f.details or [])))
        latest: dict[int, Any] = {}
        for o in db.session.execute(sa.select(ot.c.id, ot.c.incident_id, ot.c.fingerprint, ot.c.status, ot.c.payload)
                                    .where(ot.c.incident_id.in_(ids)).order_by(ot.c.id)):
            latest[o.incident_id] = o  # the newest row wins
        for inc in incidents:
            open_gaps = gaps.get(inc.id, [])
            fp = fingerprint(open_gaps)
            queued = latest.get(inc.id)
            on_ticket = inc.enrichment_fingerprint or (queued.fingerprint if queued is not None and queued.status == "sent" else None)
            if fp == on_ticket or (queued is not None and queued.fingerprint == fp and queued.status in ("pending", "sent")):
                summary.unchanged += 1
                continue
            if fp == CLEAN and on_ticket is None:
                summary.unchanged += 1  # nothing was ever reported: no note for a clean ticket
                continue
            previous = set((queued.payload or {}).get("fields", {}).get("gap_checks", "").split(",")) - {""} if queued is not None else set()
            closed = sorted(previous - {cid for cid, _ in open_gaps})
            if queued is not None and queued.status == "pending":
                db.session.execute(ot.update().where(ot.c.incident_id == inc.id, ot.c.status == "pending")
                                   .values(status="superseded", claimed_by=None, claimed_until=None))
                summary.superseded += 1
            payload = {
                "note": render_note(ruleset, inc.number, open_gaps, closed, fp),
                "fields": enrichment_fields(ruleset, open_gaps, fp),
                "labels": ["gapbridge-gaps"] if open_gaps else ["gapbridge-compliant"],
            }
            existing = db.session.execute(sa.select(ot.c.id).where(ot.c.incident_id == inc.id, ot.c.fingerprint == fp)).first()
            if existing:  # the same gaps came back after a different set: send that row again
                db.session.execute(ot.update().where(ot.c.id == existing.id).values(
                    status="pending", payload=payload, attempts=0, next_attempt_at=utcnow(), last_error=None, sent_at=None))
            else:
                db.session.execute(sa.insert(OutboxItem).values(
                    incident_id=inc.id, source=inc.source, external_id=inc.external_id, fingerprint=fp,
                    payload=payload, status="pending", attempts=0, next_attempt_at=utcnow(), created_at=utcnow()))
            summary.queued += 1
        db.session.commit()
    return summary


# --- draining the outbox ---------------------------------------------------------------


@dataclass
class DrainSummary:
    written: int = 0
    already_current: int = 0
    dry_run: int = 0
    retrying: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)


def backoff(attempts: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> timedelta:
    """Exponential backoff with full jitter, at least a second."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    return timedelta(seconds=max(1.0, ceiling * rand()))


def _claim(item_id: int, me: str, now: datetime, seconds: int = 300) -> bool:
    ot = OutboxItem.__table__
    # an UPDATE's result is a CursorResult, which has rowcount; Session.execute is typed as plain Result
    res = cast(CursorResult[Any], db.session.execute(ot.update().where(
        ot.c.id == item_id, ot.c.status == "pending",
        sa.or_(ot.c.claimed_until.is_(None), ot.c.claimed_until < now),
    ).values(claimed_by=me, claimed_until=now + timedelta(seconds=seconds))))
    db.session.commit()
    return res.rowcount == 1


def drain(connectors: Mapping[str, Connector], *, max_attempts: int = 12, backoff_base: float = 30.0,
          backoff_cap: float = 21600.0, batch_size: int = 100, now: datetime | None = None,
          retry_failed: bool = False) -> DrainSummary:
    """Write due outbox items; a failing tool leaves them pending for a later run."""
    summary = DrainSummary()
    me = worker_id()
    ot = OutboxItem.__table__
    if retry_failed:
        db.session.execute(ot.update().where(ot.c.status == "failed").values(status="pending", attempts=0, next_attempt_at=utcnow()))
        db.session.commit()
    last_id = 0
    while True:
        now_ = now or utcnow()
        due = db.session.execute(sa.select(ot.c.id, ot.c.source).where(
            ot.c.status == "pending", ot.c.next_attempt_at <= now_, ot.c.id > last_id,
            ot.c.source.in_(list(connectors)), ot.c.source.not_in(list(summary.unreachable)),
        ).order_by(ot.c.id).limit(batch_size)).all()
        if not due:
            break
        last_id = due[-1].id
        for row in due:
            if row.source in summary.unreachable or not _claim(row.id, me, now_):
                continue
            item = db.session.get(OutboxItem, row.id)
            assert item is not None
            _deliver(item, connectors[item.source], summary, max_attempts, backoff_base, backoff_cap, now_)
    return summary


def _deliver(item: OutboxItem, connector: Connector, summary: DrainSummary, max_attempts: int,
             base: float, cap: float, now: datetime) -> None:
    p = item.payload
    enrichment = Enrichment(external_id=item.external_id, fingerprint=item.fingerprint, note=p.get("note"),
                            fields=dict(p.get("fields") or {}), labels=list(p.get("labels") or []))
    try:
        # A write the tool accepted just before we crashed must not be written again.
        if connector.current_fingerprint(item.external_id) == item.fingerprint:
            _sent(item, "already_current")
            summary.already_current += 1
            return
        result = connector.write_back(enrichment)
    except RetriableConnectorError as exc:
        item.attempts += 1
        item.last_error = str(exc)
        item.claimed_by = item.claimed_until = None
        if item.attempts >= max_attempts:
            item.status = "failed"
            summary.failed += 1
            audit.record("writeback.failed", "incident", item.incident_id, source=item.source, fingerprint=item.fingerprint, error=str(exc), attempts=item.attempts)
        else:
            delay = backoff(item.attempts, base, cap)
            if exc.retry_after:
                delay = max(delay, timedelta(seconds=exc.retry_after))
            item.next_attempt_at = now + delay
            summary.retrying += 1
        summary.errors.append(f"{item.source} {item.external_id}: {exc}")
        summary.unreachable.add(item.source)  # stop hammering a tool that is down; the rest waits
        db.session.commit()
        return
    except (FatalConnectorError, ConnectorError) as exc:
        item.attempts += 1
        item.status = "failed"
        item.last_error = str(exc)
        item.claimed_by = item.claimed_until = None
        summary.failed += 1
        summary.errors.append(f"{item.source} {item.external_id}: {exc}")
        audit.record("writeback.failed", "incident", item.incident_id, source=item.source, fingerprint=item.fingerprint, error=str(exc), attempts=item.attempts)
        db.session.commit()
        return
    if result.dry_run:
        item.claimed_by = item.claimed_until = None  # stays pending: a real run writes it
        summary.dry_run += 1
        audit.record("writeback.dry_run", "incident", item.incident_id, source=item.source, fingerprint=item.fingerprint)
        db.session.commit()
        return
    _sent(item, "written")
    summary.written += 1


def _sent(item: OutboxItem, how: str) -> None:
    item.status = "sent"
    item.sent_at = utcnow()
    item.attempts += 1
    item.claimed_by = item.claimed_until = None
    item.last_error = None
    db.session.execute(sa.update(Incident).where(Incident.id == item.incident_id).values(enrichment_fingerprint=item.fingerprint))
    audit.record(f"writeback.{how}", "incident", item.incident_id, source=item.source, external_id=item.external_id,
                 fingerprint=item.fingerprint, open_gaps=(item.payload.get("fields") or {}).get("open_gaps"))
    db.session.commit()
