"""Sync: fetch pages since the bookmark, normalize, store; a page and its bookmark commit together."""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from connectors.base import Connector, ConnectorError, NormalizationError, Page

from .. import audit
from ..extensions import db
from ..models import Incident, RejectedRecord, SyncBookmark, SyncRun, utcnow
from ..rules.ruleset import Ruleset
from .assess import AssessSummary, assess_batch
from .store import acquire_lease, bulk_write, lease_holder, release_lease, upsert_incidents

log = logging.getLogger("gapbridge.sync")


class SyncBusyError(Exception):
    """Another process holds this source's sync lease."""


@dataclass
class SyncSummary:
    source: str
    run_id: int
    status: str
    pages: int = 0
    fetched: int = 0
    stored: int = 0
    changed: int = 0
    rejected: int = 0
    assessed: int = 0  # assessed on arrival, in the page's transaction
    opened: int = 0
    closed: int = 0
    rejections: list[tuple[str, str]] = field(default_factory=list)  # (external id, reason), first few
    error: str | None = None


ProgressFn = Callable[[SyncSummary, int | None], None]

_DONE = object()


def prefetched(pages: Iterator[Page], depth: int = 2) -> Iterator[Page]:
    """Fetch the next pages in a thread while the caller stores this one.

    Against a real ITSM tool most of a sync is waiting for the next page; storing and
    assessing meanwhile hides that. Pages arrive in order; an error in the fetch is
    raised here, after the pages before it.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in pages:
                if not put(page):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        finally:
            close = getattr(pages, "close", None)
            if close:
                close()

    thread = threading.Thread(target=fetch, name="gapbridge-fetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=1.0)  # a fetch blocked on the network is a daemon; do not wait out its timeout


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def load_bookmark(source: str) -> dict[str, Any] | None:
    row = db.session.get(SyncBookmark, source)
    return dict(row.value) if row else None


def sync_source(connector: Connector, *, full: bool = False, lease_seconds: int = 900,
                progress: ProgressFn | None = None, ruleset: Ruleset | None = None) -> SyncSummary:
    """Run one sync of ``connector``; raise ConnectorError after recording a failed run.

    With a ``ruleset``, each page's new and changed incidents are assessed as they are
    stored (the normalized incidents are at hand; no second read), in the page's transaction.
    """
    source, me = connector.name, worker_id()
    lease = f"sync:{source}"
    if not acquire_lease(lease, me, lease_seconds):
        holder = lease_holder(lease)
        who = f" by {holder.holder} until {holder.expires_at:%Y-%m-%d %H:%M:%S} UTC" if holder else ""
        raise SyncBusyError(f"a sync of {source!r} is already running{who}")
    try:
        return _run(connector, source, me, full, lease, lease_seconds, progress, ruleset)
    finally:
        release_lease(lease, me)


def _run(connector: Connector, source: str, me: str, full: bool, lease: str, lease_seconds: int,
         progress: ProgressFn | None, ruleset: Ruleset | None) -> SyncSummary:
    bookmark = None if full else load_bookmark(source)
    run = SyncRun(source=source, full=full, status="running", started_at=utcnow(), bookmark_before=bookmark)
    db.session.add(run)
    audit.record("sync.started", "sync_run", None, source=source, full=full, bookmark=bookmark)
    db.session.commit()
    summary = SyncSummary(source, run.id, "running")
    try:
        for page in prefetched(connector.fetch_pages(bookmark)):
            _store_page(connector, run, page.records, page.bookmark, summary, ruleset)
            acquire_lease(lease, me, lease_seconds)  # renew while we make progress
            if progress:
                progress(summary, page.total)
    except ConnectorError as exc:
        db.session.rollback()
        _finish(run, summary, "failed", str(exc))
        raise
    except BaseException as exc:
        # KeyboardInterrupt included: record the run as failed, the bookmark stays at the last page
        db.session.rollback()
        _finish(run, summary, "failed", f"{type(exc).__name__}: {exc}")
        raise
    _finish(run, summary, "succeeded", None)
    return summary


def _store_page(connector: Connector, run: SyncRun, records: list[dict[str, Any]],
                bookmark: dict[str, Any] | None, summary: SyncSummary, ruleset: Ruleset | None) -> None:
    now = utcnow()
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for record in records:
        try:
            good.append(connector.normalize(record))
        except NormalizationError as exc:
            ident = record.get("sys_id") or record.get("id") or record.get("key")
            if isinstance(ident, dict):  # ServiceNow with display_value=all: {display_value, value}
                ident = ident.get("value")
            ext = str(ident or "?")
            bad.append({"source": connector.name, "external_id": ext, "reason": str(exc), "raw": record,
                        "sync_run_id": run.id, "rejected_at": now})
    upserted = upsert_incidents(good, now, ruleset.hash if ruleset is not None else None)
    changed = upserted.changed
    if ruleset is not None and upserted.stale:
        _assess_arrivals(ruleset, connector.name, good, upserted.stale, now, summary)
    if good:
        table = RejectedRecord.__table__
        db.session.execute(table.delete().where(
            table.c.source == connector.name, table.c.external_id.in_([g["external_id"] for g in good])))
    bulk_write(RejectedRecord.__table__, bad, ["source", "external_id", "reason", "raw", "sync_run_id", "rejected_at"],
               conflict=["source", "external_id"], update=["reason", "raw", "sync_run_id", "rejected_at"])
    if bookmark is not None:
        bulk_write(SyncBookmark.__table__, [{"source": connector.name, "value": bookmark, "updated_at": now}],
                   ["source", "value", "updated_at"], conflict=["source"], update=["value", "updated_at"])
    summary.pages += 1
    summary.fetched += len(records)
    summary.stored += len(good)
    summary.changed += changed
    summary.rejected += len(bad)
    summary.rejections.extend((b["external_id"], b["reason"]) for b in bad[: max(0, 20 - len(summary.rejections))])
    db.session.execute(sa.update(SyncRun).where(SyncRun.id == run.id).values(
        pages=summary.pages, fetched=summary.fetched, stored=summary.stored, changed=summary.changed,
        rejected=summary.rejected, bookmark_after=bookmark))
    db.session.commit()  # the page, its rejections and the bookmark, in one transaction


def _finish(run: SyncRun, summary: SyncSummary, status: str, error: str | None) -> None:
    summary.status, summary.error = status, error
    db.session.execute(sa.update(SyncRun).where(SyncRun.id == summary.run_id).values(
        status=status, finished_at=utcnow(), error=error))
    audit.record(f"sync.{status}", "sync_run", summary.run_id, source=summary.source, pages=summary.pages,
                 fetched=summary.fetched, stored=summary.stored, changed=summary.changed,
                 rejected=summary.rejected, error=error)
    db.session.commit()


def _assess_arrivals(ruleset: Ruleset, source: str, incidents: list[dict[str, Any]], stale: list[str], now: Any,
                     summary: SyncSummary) -> None:
    """Assess the stored page's stale incidents (the upsert marked them assessed) from the dicts at hand."""
    t = Incident.__table__.c
    by_ext = {i["external_id"]: i for i in incidents}
    rows = db.session.execute(sa.select(t.id, t.revision, t.number, t.source, t.external_id)
                              .where(t.source == source, t.external_id.in_(stale))).all()
    result = AssessSummary(ruleset.hash)
    assess_batch(ruleset, [(r, by_ext[r.external_id]) for r in rows], now, result, mark_assessed=False)
    summary.assessed += result.assessed
    summary.opened += result.opened
    summary.closed += result.closed
