"""Sync: fetch pages since the bookmark, normalize, store; a page and its bookmark commit together."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import multiprocessing
import os
import pickle
import queue
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import wait
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult

from connectors.base import (
    Connector,
    ConnectorError,
    InvalidResponseError,
    NormalizationError,
    Page,
    Stream,
    error_text,
    redact_urls,
    redacted_traceback,
)

from .. import metrics
from ..db.bulk import batch_gc_threshold, bulk_write, heap_frozen, one_of
from ..db.leases import acquire_lease, lease_holder, release_lease, renew_lease, worker_id
from ..errors import GapBridgeError
from ..extensions import db
from ..logs import log_context
from ..models import Incident, RejectedRecord, SyncBookmark, SyncRun, utcnow
from ..rules.model import Ruleset
from . import audit, shutdown
from .assess import AssessSummary, Outcome, applicable_outcomes, outcome_masks, store_outcomes
from .store import EncodedIncidents, Upserted, encode_incidents, refresh_planner_statistics, upsert_incidents

log = logging.getLogger("gapbridge.sync")

# a sync refreshes the planner's statistics when it has stored this many incidents, then at each doubling
FIRST_ANALYZE_AT = 2000


class SyncBusyError(GapBridgeError):
    """Another process holds this source's sync lease."""


class SyncLeaseLostError(SyncBusyError):
    """The lease expired while this sync ran, and another sync took it over (and marked this run abandoned)."""


class BookmarkMovedBackError(InvalidResponseError):
    """A page's bookmark is before the one of the page stored before it: the tool broke the order it promised."""


class BookmarkGuard:
    """The bookmark a sync may store with each page: never one that moves back.

    Within a run, a sorted stream's pages come in replication order: a page whose bookmark is
    before the previous page's is refused (stored data stays as it was after the previous
    page). Across runs, a page re-read from the overlap before the stored bookmark leaves the
    stored one standing. An unsorted stream's bookmark is the latest seen, stored when the run ends.
    """

    def __init__(self, source: str, stream: Stream | None, stored: Mapping[str, Any] | None) -> None:
        self.source, self.stream = source, stream
        self.stored_at = stream.bookmark_time(stored) if stream is not None else None
        self.last_at: datetime | None = None
        self.latest: dict[str, Any] | None = None

    def admit(self, bookmark: dict[str, Any] | None) -> dict[str, Any] | None:
        """The bookmark to store with this page; None keeps the stored one."""
        if bookmark is None or self.stream is None:
            return bookmark
        at = self.stream.bookmark_time(bookmark)
        if at is None:
            return bookmark  # the connector's own shape, without a replication time: its to keep
        if self.last_at is not None and at < self.last_at:
            if self.stream.is_sorted:
                raise BookmarkMovedBackError(
                    f"the bookmark of {self.source!r} would move back from {self.last_at:%Y-%m-%d %H:%M:%S} to "
                    f"{at:%Y-%m-%d %H:%M:%S} UTC: the tool sent records out of {self.stream.replication_key} order; "
                    "what was stored before this page stands")
            return None
        self.last_at = at
        if not self.stream.is_sorted:
            self.latest = bookmark
            return None
        if self.stored_at is not None and at < self.stored_at:
            return None  # re-reading the overlap before the stored bookmark
        return bookmark

    def at_end(self) -> dict[str, Any] | None:
        """An unsorted stream's bookmark, once every page is stored; None when there is none to move to."""
        if self.latest is None or (self.stored_at is not None and self.last_at is not None and self.last_at < self.stored_at):
            return None
        return self.latest


class SyncStopped(Exception):
    """A stop was asked for (``shutdown.request``): raised between pages, so the run ends after the last page it stored."""


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
    warnings: list[str] = field(default_factory=list)  # what the connector asks the operator to know (a scope it ignored)
    error: str | None = None


ProgressFn = Callable[[SyncSummary, int | None], None]

_DONE = object()


def _put_while(buffer: Any, item: Any, running: Callable[[], bool], timeout: float) -> bool:
    """Put ``item`` on a bounded queue (thread or process), waiting only while ``running()``; False if it stopped."""
    while running():
        try:
            buffer.put(item, timeout=timeout)
            return True
        except queue.Full:
            continue
    return False


def prefetched(pages: Iterator[Page], depth: int = 2) -> Iterator[Page]:
    """Fetch the next pages in a thread while the caller stores this one.

    Against a real ITSM tool most of a sync is waiting for the next page; storing and
    assessing meanwhile hides that. Pages arrive in order; an error in the fetch is
    raised here, after the pages before it.
    """
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        return _put_while(buffer, item, lambda: not stop.is_set(), 0.1)

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
        while (item := _handed(buffer)) is not _DONE:
            yield item
    finally:
        stop.set()
        thread.join(timeout=1.0)  # a fetch blocked on the network is a daemon; do not wait out its timeout


def _handed(buffer: queue.Queue[Any]) -> Any:
    """The next item a thread hands over; one that is an exception is raised here, and so is SyncStopped when asked while waiting."""
    while True:
        try:
            item = buffer.get(timeout=0.25)
        except queue.Empty:  # a page slow to come: a stop asked for meanwhile need not wait for it
            if shutdown.requested():
                raise SyncStopped from None
            continue
        if isinstance(item, BaseException):
            raise item
        return item


@dataclass
class PreparedPage:
    """A fetched page made ready to store: incidents encoded for the database, rejected records, outcomes."""

    fetched: int
    incidents: EncodedIncidents  # the normalized records, in page order
    rejected: list[dict[str, Any]]  # external_id, reason, raw
    bookmark: dict[str, Any] | None
    total: int | None
    prepared_at: datetime
    outcomes: dict[str, list[Outcome]] | None = None  # by external id, with a ruleset
    outcomes_ruleset: str | None = None
    masks: list[tuple[int, ...]] | None = None  # of each incident, in order, from its outcomes (``outcome_masks``)
    warnings: tuple[str, ...] = ()


def prepare_page(connector: Connector, page: Page, ruleset: Ruleset | None, dialect: str) -> PreparedPage:
    """Normalize a page's records (rejecting what cannot be), evaluate them, encode them for ``dialect``.

    No database: this runs in the sync's process or in its worker. Every incident is
    evaluated; the store uses the outcomes of those that turn out new or changed.
    """
    now = utcnow()
    incidents: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for record in page.records:
        try:
            incident = connector.normalize(record)
        except NormalizationError as exc:
            rejected.append({"external_id": connector.record_id(record) or "?", "reason": error_text(exc), "raw": record})
            continue
        if incident.get("url"):  # the ticket link is stored and served to every reader: never with credentials
            incident["url"] = redact_urls(str(incident["url"]))
        incidents.append(incident)
    prepared = PreparedPage(len(page.records), encode_incidents(incidents, now, dialect), rejected, page.bookmark,
                            page.total, now, warnings=page.warnings)
    if ruleset is not None:
        prepared.outcomes = {i["external_id"]: applicable_outcomes(ruleset, i, now) for i in incidents}
        prepared.outcomes_ruleset = ruleset.hash
        prepared.masks = [outcome_masks(ruleset, prepared.outcomes[i["external_id"]]) for i in incidents]
    return prepared


def prepared_pages(connector: Connector, bookmark: dict[str, Any] | None, ruleset: Ruleset | None,
                   dialect: str) -> Generator[PreparedPage, None, None]:
    """Pages fetched in a thread (see ``prefetched``) and prepared in this one."""
    for page in prefetched(connector.fetch_pages(bookmark)):
        yield prepare_page(connector, page, ruleset, dialect)


# --- a worker process for fetching and preparing ------------------------------------------
#
# Fetching, JSON parsing, normalizing and evaluating hold the GIL, as does most of storing, so
# a thread cannot overlap them. For large syncs a forked worker process does the first half and
# hands prepared pages to this process, which stores them: the page, its bookmark and its
# findings still commit together here. Fork, because the connector and the compiled ruleset
# (closures) cannot be pickled; the worker only talks HTTP and never touches the database.


class FetchWorkerError(ConnectorError):
    """The fetch worker process died without saying why (killed, out of memory)."""


@dataclass
class _WorkerFailure:
    exception: BaseException | None  # None when it could not be pickled
    description: str


def worker_process_available() -> bool:
    """Fork is needed (see above); macOS offers it but its system libraries are not fork-safe."""
    return "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin"


# each message from the worker: its length, then the pickled item
_FRAME = struct.Struct("!Q")
# a sync's pipe is made and its worker forked under this lock, so that another sync's worker,
# forked meanwhile in another thread, never holds a copy of this pipe's writing end
_FORK_LOCK = threading.Lock()
_PR_SET_PDEATHSIG = 1


def prepared_in_worker(connector: Connector, bookmark: dict[str, Any] | None, ruleset: Ruleset | None, dialect: str,
                       depth: int = 2) -> Generator[PreparedPage, None, None]:
    """Pages fetched, normalized and evaluated in a forked worker process, in order.

    An error in the worker is raised here after the pages before it; the worker dying raises
    FetchWorkerError, also in the middle of a page. Closing the generator (or this process
    dying) stops the worker.

    A plain pipe, not a multiprocessing.Queue: each end is held by one process only, so the
    worker dying is an end of file here and this process dying fails the worker's next write.
    A Queue keeps both ends in both processes, so either could wait on the other forever.
    """
    ctx = multiprocessing.get_context("fork")
    with _FORK_LOCK:
        read_fd, write_fd = os.pipe()
        worker = ctx.Process(target=_worker_main, args=(connector, bookmark, ruleset, dialect, read_fd, write_fd, depth, os.getpid()),
                             name=f"gapbridge-fetch-{connector.name}", daemon=True)
        try:
            worker.start()
        finally:
            os.close(write_fd)
    os.set_blocking(read_fd, False)  # never block on a read: see _read
    # pages are read and unpickled in a thread while this one stores the page before (mostly waiting on the database)
    received: queue.Queue[Any] = queue.Queue(maxsize=1)
    closing = threading.Event()
    receiver = threading.Thread(target=_receive_all, args=(read_fd, worker, connector.name, received, closing),
                                name=f"gapbridge-receive-{connector.name}", daemon=True)
    receiver.start()
    try:
        while (item := _handed(received)) is not None:
            if isinstance(item, _WorkerFailure):
                if item.exception is not None:
                    raise item.exception
                raise FetchWorkerError(f"the fetch worker of {connector.name!r} failed: {item.description}")
            yield item
    finally:
        closing.set()
        receiver.join(timeout=2.0)  # it closes the pipe, so the worker's next write fails and it stops
        worker.join(timeout=1.0)
        if worker.is_alive():  # busy in a fetch: it holds nothing we need
            worker.kill()
            worker.join(timeout=5.0)


def _receive_all(fd: int, worker: Any, name: str, received: queue.Queue[Any], closing: threading.Event) -> None:
    """Each item from the worker's pipe, in order, onto ``received`` (an error as the last), until the last or ``closing``.

    The pipe's reading end is this thread's to close: closed by another thread, its number could be
    reused by a file opened meanwhile and read from here.
    """
    def put(item: Any) -> bool:
        return _put_while(received, item, lambda: not closing.is_set(), 0.1)

    try:
        while True:
            item = _receive(fd, worker, name, closing)
            if item is _CLOSING or not put(item) or item is None or isinstance(item, _WorkerFailure):
                return
    except BaseException as exc:  # handed to the consumer, raised there
        put(exc)
    finally:
        os.close(fd)


_CLOSING = object()


def _receive(fd: int, worker: Any, name: str, closing: threading.Event) -> Any:
    header = _read(fd, _FRAME.size, worker, closing)
    if header is not None:
        body = _read(fd, _FRAME.unpack(header)[0], worker, closing)
        if body is not None:
            return pickle.loads(body)
    if closing.is_set():
        return _CLOSING
    worker.join(timeout=5.0)  # its end of file comes as it exits; the status a moment later
    during = " while sending a page" if header is not None else ""
    raise FetchWorkerError(f"the fetch worker of {name!r} exited with status {worker.exitcode}{during} before the sync finished")


def _read(fd: int, size: int, worker: Any, closing: threading.Event) -> bytearray | None:
    """``size`` bytes from the worker's pipe (non-blocking), or None if the worker ended before they all came, or on ``closing``.

    The end of file ends it; so does the worker being dead with nothing left to read, in case
    some other process (forked from this one by other code) holds a copy of the writing end.
    """
    buffer = bytearray(size)
    view = memoryview(buffer)
    got, dead = 0, False
    while got < size:
        try:
            n = os.readv(fd, [view[got:]])
        except BlockingIOError:
            if dead or closing.is_set():
                return None
            if not worker.is_alive():
                dead = True  # read once more: all it wrote before exiting is in the pipe
            else:
                wait([fd, worker.sentinel], timeout=0.1)
            continue
        if n == 0:
            return None
        got += n
    return buffer


def _write(fd: int, data: bytes) -> None:
    for part in (_FRAME.pack(len(data)), data):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def _exit_with_parent(parent: int) -> None:
    """Have the kernel kill this worker when its parent dies (Linux), wherever the worker is blocked, a fetch included."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _worker_main(connector: Connector, bookmark: dict[str, Any] | None, ruleset: Ruleset | None, dialect: str,
                 read_fd: int, write_fd: int, depth: int, parent: int) -> None:
    os.close(read_fd)  # the parent holds the only reading end: when it dies or closes it, our writes fail
    _exit_with_parent(parent)
    # Ctrl-C and SIGTERM (sent to the whole group by a terminal, systemd, docker) are the parent's to handle:
    # it finishes the page it stores, then stops us; dying here would fail its sync instead
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ahead: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth - 1))  # plus the one being written: depth pages ahead
    broken = threading.Event()

    def send() -> None:  # pickling and writing overlap preparing the next page
        while True:
            item = ahead.get()
            try:
                _write(write_fd, pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))
            except OSError:  # the parent closed its end (done, failed) or died
                broken.set()
                return
            if item is None or isinstance(item, _WorkerFailure):
                return

    sender = threading.Thread(target=send, name="gapbridge-send", daemon=True)
    sender.start()

    def put(item: Any) -> bool:  # an orphan (parent killed) stops too
        return _put_while(ahead, item, lambda: not broken.is_set() and os.getppid() == parent, 0.5)

    connector.forked()
    gc.freeze()  # what the parent built is never garbage here; do not traverse (or copy on write) it
    gc.set_threshold(*batch_gc_threshold(gc.get_threshold()))  # inherited from a parent in heap_frozen, or set here
    try:
        for page in prefetched(connector.fetch_pages(bookmark)):  # the ITSM serves the next page meanwhile
            if not put(prepare_page(connector, page, ruleset, dialect)):
                return
        put(None)
    except BaseException as exc:
        description = error_text(exc)
        log.debug("fetch worker failed: %s", redacted_traceback(exc))
        try:
            pickle.dumps(exc)
            put(_WorkerFailure(exc, description))
        except Exception:
            put(_WorkerFailure(None, description))
    finally:
        connector.close()
    # the last item must reach the parent before we exit; a write fails at once if the parent is gone
    while sender.is_alive() and os.getppid() == parent:
        sender.join(timeout=0.5)


def load_bookmark(source: str) -> dict[str, Any] | None:
    row = db.session.get(SyncBookmark, source)
    return dict(row.value) if row else None


def sync_source(connector: Connector, *, full: bool = False, lease_seconds: int = 900,
                progress: ProgressFn | None = None, ruleset: Ruleset | None = None,
                worker_process: str = "never") -> SyncSummary:
    """Run one sync of ``connector``; raise ConnectorError after recording a failed run.

    With a ``ruleset``, each page's new and changed incidents are assessed as they are
    stored (the normalized incidents are at hand; no second read), in the page's transaction.

    ``worker_process``: fetch and prepare pages in a worker process (``prepared_in_worker``)
    "always", "never", or on "auto" for a sync from the start (first or full), the large ones.
    """
    source, me = connector.name, worker_id()
    lease = f"sync:{source}"
    before = lease_holder(lease)
    previous = before.holder if before is not None and before.holder != me else None
    db.session.commit()  # end the read's transaction; the lease is taken in its own
    if not acquire_lease(lease, me, lease_seconds):
        holder = lease_holder(lease)
        who = f" by {holder.holder} until {holder.expires_at:%Y-%m-%d %H:%M:%S} UTC" if holder else ""
        raise SyncBusyError(f"a sync of {source!r} is already running{who}")
    try:
        with log_context(source=source):
            _abandon_runs(source, me, previous)
            return _run(connector, source, me, full, lease, lease_seconds, progress, ruleset, worker_process)
    finally:
        release_lease(lease, me)


# the runs this process has under way: the lease is per process (host:pid), so another thread's run
# of the same source is not stale, while a run of an earlier process with the same host:pid (a
# restarted container) is
_RUNS_HERE: set[int] = set()


def _abandon_runs(source: str, me: str, previous: str | None) -> None:
    """Mark abandoned the runs of ``source`` still recorded as running, each with a closing audit event.

    We hold the source's lease, so none of them is running: its process was killed or crashed
    (its lease expired, or its host:pid is gone), or it lost the lease and stops at its next page.
    ``previous`` is who held the lease when we took it, if anyone else did.
    """
    t = SyncRun.__table__.c
    stale = [r for r in db.session.execute(sa.select(t.id, t.holder, t.pages, t.stored, t.bookmark_after)
                                           .where(t.source == source, t.status == "running")) if r.id not in _RUNS_HERE]
    if not stale:
        return
    now = utcnow()
    db.session.execute(sa.update(SyncRun).where(SyncRun.id.in_([r.id for r in stale]), SyncRun.status == "running")
                       .values(status="abandoned", abandoned_at=now, abandoned_by=me))
    for r in stale:
        log.warning("sync run %s of %r (by %s) never finished: marked abandoned", r.id, source, r.holder or previous or "?")
        audit.record("sync.abandoned", "sync_run", r.id, source=source, holder=r.holder, lease_holder=previous, by=me,
                     pages=r.pages, stored=r.stored, bookmark=r.bookmark_after)
    db.session.commit()


def _run(connector: Connector, source: str, me: str, full: bool, lease: str, lease_seconds: int,
         progress: ProgressFn | None, ruleset: Ruleset | None, worker_process: str) -> SyncSummary:
    bookmark = None if full else load_bookmark(source)
    if worker_process not in ("auto", "always", "never"):
        raise ValueError(f"worker_process must be auto, always or never, not {worker_process!r}")
    use_worker = worker_process == "always" or (worker_process == "auto" and bookmark is None)
    if use_worker and not worker_process_available():
        log.info("no fork on this platform: fetching in a thread of this process")
        use_worker = False
    run = SyncRun(source=source, full=full, status="running", started_at=utcnow(), bookmark_before=bookmark, holder=me)
    db.session.add(run)
    audit.record("sync.started", "sync_run", None, source=source, full=full, bookmark=bookmark, worker_process=use_worker)
    db.session.commit()
    summary = SyncSummary(source, run.id, "running")
    _RUNS_HERE.add(run.id)
    started = time.monotonic()
    with log_context(run_id=run.id):
        try:
            connector.check_configuration()  # in this process, before a worker forks: it inherits what was resolved
            guard = BookmarkGuard(source, getattr(connector, "stream", None), bookmark)
            dialect = db.engine.dialect.name
            pages = (prepared_in_worker(connector, bookmark, ruleset, dialect) if use_worker
                     else prepared_pages(connector, bookmark, ruleset, dialect))
            analyze_at = FIRST_ANALYZE_AT  # stored incidents; doubles after each refresh
            # whether this source has rejected records that an incident stored now must clear (one sync of a source at a time)
            rejections = _has_rejections(source)
            with heap_frozen(), contextlib.closing(pages):  # closing stops the worker at once, also on an error here
                for page in pages:
                    # renew while we make progress, in the page's transaction; a lease taken over (ours expired) means our
                    # run was marked abandoned and another sync stores this source now: store nothing more
                    if not renew_lease(lease, me, lease_seconds):
                        db.session.rollback()
                        raise SyncLeaseLostError(f"the sync lease of {source!r} expired and was taken over by {_holder_name(lease)}")
                    for warning in page.warnings:
                        _warn(source, run, summary, warning)
                    _store_page(source, run, page, guard.admit(page.bookmark), summary, ruleset, rejections)
                    rejections = rejections or bool(page.rejected)
                    if summary.stored >= analyze_at:
                        refresh_planner_statistics()
                        db.session.commit()
                        analyze_at = 2 * summary.stored
                    if progress:
                        progress(summary, page.total)
                    if shutdown.requested():  # this page and its bookmark are committed: the next run resumes after it
                        raise SyncStopped
        except SyncStopped:
            db.session.rollback()
            log.info("sync of %r stopped as asked after %d pages; the next run resumes from the last bookmark", source, summary.pages)
            _finish(run, summary, "stopped", None, started)
            return summary
        except BaseException as exc:
            # KeyboardInterrupt included: record the run as failed, the bookmark stays at the last page
            db.session.rollback()
            _finish(run, summary, "failed", error_text(exc), started)
            raise
        else:
            final = guard.at_end()
            if final is not None:
                _store_bookmark(source, run, final)
                db.session.commit()
            _finish(run, summary, "succeeded", None, started)
            return summary
        finally:
            _RUNS_HERE.discard(run.id)


def _warn(source: str, run: SyncRun, summary: SyncSummary, warning: str) -> None:
    """A connector's word to the operator: in the log, the audit trail and the run's summary."""
    log.warning("%s: %s", source, warning)
    summary.warnings.append(warning)
    audit.record("sync.warning", "sync_run", run.id, source=source, warning=warning)


def _store_bookmark(source: str, run: SyncRun, bookmark: dict[str, Any]) -> None:
    bulk_write(SyncBookmark.__table__, [{"source": source, "value": bookmark, "updated_at": utcnow()}],
               ["source", "value", "updated_at"], conflict=["source"], update=["value", "updated_at"])
    db.session.execute(sa.update(SyncRun).where(SyncRun.id == run.id).values(bookmark_after=bookmark))


def _has_rejections(source: str) -> bool:
    table = RejectedRecord.__table__
    return db.session.execute(sa.select(table.c.id).where(table.c.source == source).limit(1)).first() is not None


def _store_page(source: str, run: SyncRun, page: PreparedPage, bookmark: dict[str, Any] | None, summary: SyncSummary,
                ruleset: Ruleset | None, rejections: bool = True) -> None:
    """Store a prepared page, its rejections and its bookmark in one transaction.

    ``rejections``: whether the source may have rejected records stored, which the page's incidents clear.
    """
    now = page.prepared_at
    if db.engine.dialect.name == "postgresql":
        # a page's commit need not wait for its WAL to reach the disk: a server crash can lose only the last pages
        # committed, each whole with its bookmark (commits are lost in order), and the next sync reads them again
        db.session.execute(sa.text("SET LOCAL synchronous_commit = off"))
    masks = page.masks if ruleset is not None and page.outcomes_ruleset == ruleset.hash else None
    upserted = upsert_incidents(source, page.incidents, now, ruleset.hash if ruleset is not None else None, masks)
    if ruleset is not None and upserted.stale:
        _assess_arrivals(ruleset, source, page, upserted, now, summary)
    if page.incidents and rejections:  # a record rejected before and stored now is no longer rejected
        table = RejectedRecord.__table__
        db.session.execute(table.delete().where(
            table.c.source == source, one_of(table.c.external_id)), {"ids": page.incidents.external_ids})
    run_id = summary.run_id  # not run.id: after the last commit, reading that loads the run again
    bad = [{**b, "source": source, "sync_run_id": run_id, "rejected_at": now} for b in page.rejected]
    bulk_write(RejectedRecord.__table__, bad, ["source", "external_id", "reason", "raw", "sync_run_id", "rejected_at"],
               conflict=["source", "external_id"], update=["reason", "raw", "sync_run_id", "rejected_at"])
    if bookmark is not None:
        bulk_write(SyncBookmark.__table__, [{"source": source, "value": bookmark, "updated_at": now}],
                   ["source", "value", "updated_at"], conflict=["source"], update=["value", "updated_at"])
    summary.pages += 1
    summary.fetched += page.fetched
    summary.stored += len(page.incidents)
    summary.changed += upserted.changed
    summary.rejected += len(bad)
    summary.rejections.extend((b["external_id"], b["reason"]) for b in bad[: max(0, 20 - len(summary.rejections))])
    db.session.execute(sa.update(SyncRun).where(SyncRun.id == run_id).values(
        pages=summary.pages, fetched=summary.fetched, stored=summary.stored, changed=summary.changed,
        rejected=summary.rejected, **({"bookmark_after": bookmark} if bookmark is not None else {})))
    db.session.commit()  # the page, its rejections and the bookmark, in one transaction


def _holder_name(lease: str) -> str:
    holder = lease_holder(lease)
    return holder.holder if holder else "another sync"


def _finish(run: SyncRun, summary: SyncSummary, status: str, error: str | None, started: float) -> None:
    summary.status, summary.error = status, error
    # a run marked abandoned (its lease taken over) keeps that status and the taker's closing event
    finished = cast(CursorResult[Any], db.session.execute(sa.update(SyncRun).where(
        SyncRun.id == summary.run_id, SyncRun.status == "running").values(status=status, finished_at=utcnow(), error=error)))
    if finished.rowcount == 0:
        summary.status = "abandoned"
        db.session.commit()
        metrics.observe_sync(summary.source, summary.status, time.monotonic() - started)
        return
    audit.record(f"sync.{status}", "sync_run", summary.run_id, source=summary.source, pages=summary.pages,
                 fetched=summary.fetched, stored=summary.stored, changed=summary.changed,
                 rejected=summary.rejected, error=error)
    db.session.commit()
    metrics.observe_sync(summary.source, status, time.monotonic() - started)


def _assess_arrivals(ruleset: Ruleset, source: str, page: PreparedPage, upserted: Upserted, now: Any,
                     summary: SyncSummary) -> None:
    """Store the outcomes of the page's stale incidents (the upsert marked them assessed)."""
    if page.outcomes is None or page.outcomes_ruleset != ruleset.hash:
        raise RuntimeError(f"page prepared under ruleset {page.outcomes_ruleset}, stored under {ruleset.hash}")
    stored: Sequence[Any] | None = upserted.stored
    if stored is None:  # the upsert could not tell their rows: read them
        t = Incident.__table__.c
        stored = db.session.execute(sa.select(t.id, t.revision, t.number, t.source, t.external_id)
                                    .where(t.source == source, one_of(t.external_id)),
                                    {"ids": upserted.stale}).all()
    result = AssessSummary(ruleset.hash)
    new = set(upserted.new)
    first = {r.id for r in stored if r.external_id in new}
    store_outcomes(ruleset, [(r, page.outcomes[r.external_id]) for r in stored], now, result, mark_assessed=False,
                   without_findings=first, masks_written=first if page.masks is not None else ())
    summary.assessed += result.assessed
    summary.opened += result.opened
    summary.closed += result.closed
