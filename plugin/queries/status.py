"""What an operator watches, per source: sync runs, bookmarks, the outbox, open gaps; read by ``gapbridge status`` and /metrics.

Each read is one grouped query over an indexed column (no per-source loop), so a scrape stays cheap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..extensions import db
from ..models import OUTBOX_STATUSES, Finding, Incident, OutboxBackoff, OutboxItem, SyncBookmark, SyncRun
from .acceptance import open_gap_clause

FINISHED = ("succeeded", "failed", "abandoned")


@dataclass(frozen=True)
class RunTotals:
    """A source's sync runs of one outcome, and the records they fetched and rejected."""

    runs: int
    fetched: int
    rejected: int


@dataclass(frozen=True)
class LastRun:
    id: int
    status: str
    started_at: datetime
    finished_at: datetime | None
    fetched: int
    stored: int
    rejected: int
    error: str | None


@dataclass
class SourceStatus:
    source: str
    last_run: LastRun | None = None  # the newest run, finished or not
    last_finished: LastRun | None = None  # the newest run that ended: its outcome is the source's health
    last_success_at: datetime | None = None
    bookmark_updated_at: datetime | None = None
    outbox: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTBOX_STATUSES, 0))
    open_gaps: int = 0

    @property
    def failing(self) -> bool:
        return self.last_finished is not None and self.last_finished.status != "succeeded"


def run_totals() -> dict[tuple[str, str], RunTotals]:
    """(source, status) -> runs and the records fetched and rejected, over every run recorded."""
    t = SyncRun.__table__.c
    rows = db.session.execute(sa.select(t.source, t.status, sa.func.count(), sa.func.coalesce(sa.func.sum(t.fetched), 0),
                                        sa.func.coalesce(sa.func.sum(t.rejected), 0)).group_by(t.source, t.status))
    return {(r[0], r[1]): RunTotals(int(r[2]), int(r[3]), int(r[4])) for r in rows}


def _newest_runs(statuses: Iterable[str] | None) -> dict[str, LastRun]:
    t = SyncRun.__table__.c
    newest = sa.select(t.source, sa.func.max(t.id).label("id")).group_by(t.source)
    if statuses is not None:
        newest = newest.where(t.status.in_(list(statuses)))
    sub = newest.subquery()
    rows = db.session.execute(sa.select(SyncRun).join(sub, SyncRun.id == sub.c.id)).scalars()
    return {r.source: LastRun(r.id, r.status, r.started_at, r.finished_at, r.fetched, r.stored, r.rejected, r.error) for r in rows}


def last_success() -> dict[str, datetime]:
    """source -> when its newest successful sync finished."""
    t = SyncRun.__table__.c
    rows = db.session.execute(sa.select(t.source, sa.func.max(t.finished_at)).where(t.status == "succeeded").group_by(t.source))
    return {r[0]: _aware(r[1]) for r in rows if r[1] is not None}


def running_since() -> dict[str, tuple[int, datetime]]:
    """source -> (runs recorded as running, the oldest one's start): a run of a dead process stays here until the next sync."""
    t = SyncRun.__table__.c
    rows = db.session.execute(sa.select(t.source, sa.func.count(), sa.func.min(t.started_at)).where(t.status == "running").group_by(t.source))
    return {r[0]: (int(r[1]), _aware(r[2])) for r in rows}


def bookmarks() -> dict[str, datetime]:
    """source -> when its bookmark last moved."""
    return {r.source: r.updated_at for r in db.session.execute(sa.select(SyncBookmark.source, SyncBookmark.updated_at))}


def outbox_depth() -> dict[tuple[str, str], int]:
    """(source, status) -> outbox items."""
    t = OutboxItem.__table__.c
    return {(r[0], r[1]): int(r[2]) for r in db.session.execute(sa.select(t.source, t.status, sa.func.count()).group_by(t.source, t.status))}


def oldest_pending() -> dict[str, datetime]:
    """source -> when its oldest pending outbox item was queued."""
    t = OutboxItem.__table__.c
    rows = db.session.execute(sa.select(t.source, sa.func.min(t.created_at)).where(t.status == "pending").group_by(t.source))
    return {r[0]: _aware(r[1]) for r in rows}


def backoffs() -> dict[str, datetime]:
    """source -> until when its tool asked write-back to wait (a wait served is deleted by the drain)."""
    return {r.source: r.until for r in db.session.execute(sa.select(OutboxBackoff.source, OutboxBackoff.until))}


def open_gaps_by_source(now: datetime) -> dict[str, int]:
    """source -> open gaps (failed gaps no accepted risk covers), as the API and reports count them."""
    rows = db.session.execute(sa.select(Incident.source, sa.func.count()).select_from(Finding)
                              .join(Incident, Incident.id == Finding.incident_id).where(open_gap_clause(now)).group_by(Incident.source))
    return {r[0]: int(r[1]) for r in rows}


def open_gaps_by_control(now: datetime) -> dict[tuple[str, str], int]:
    """(2022 control id, severity) -> open gaps; a finding of a check under two controls counts under each."""
    rows = db.session.execute(sa.select(Finding.controls_2022, Finding.severity, sa.func.count()).select_from(Finding)
                              .join(Incident, Incident.id == Finding.incident_id).where(open_gap_clause(now))
                              .group_by(Finding.controls_2022, Finding.severity))
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for controls, severity, n in rows:
        for control in controls or ["(none)"]:
            counts[(str(control), severity)] += int(n)
    return dict(counts)


def sync_status(sources: Iterable[str]) -> list[SourceStatus]:
    """Only the syncs of each of ``sources`` (newest run, newest finished, last success): what a page shows of each
    source, without the outbox and gap counts ``source_status`` adds."""
    out = {s: SourceStatus(s) for s in sources}
    _add_syncs(out)
    return list(out.values())


def _add_syncs(out: dict[str, SourceStatus]) -> None:
    for source, run in _newest_runs(None).items():
        if source in out:
            out[source].last_run = run
    for source, run in _newest_runs(FINISHED).items():
        if source in out:
            out[source].last_finished = run
    for source, at in last_success().items():
        if source in out:
            out[source].last_success_at = at


def source_status(sources: Iterable[str], now: datetime) -> list[SourceStatus]:
    """The status of each of ``sources`` (the configured connector instances), in that order."""
    out = {s: SourceStatus(s) for s in sources}
    _add_syncs(out)
    for source, at in bookmarks().items():
        if source in out:
            out[source].bookmark_updated_at = at
    for (source, status), n in outbox_depth().items():
        if source in out:
            out[source].outbox[status] = n
    for source, n in open_gaps_by_source(now).items():
        if source in out:
            out[source].open_gaps = n
    return list(out.values())


def _aware(value: Any) -> Any:
    """An aggregate (max, min) comes back without the column's type: naive on SQLite; UTC it is."""
    from ..models import UTCDateTime

    return UTCDateTime().process_result_value(value, db.engine.dialect) if isinstance(value, datetime) else value
