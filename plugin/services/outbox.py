"""The outbox drain: write the due enrichments onto the tickets, several at once per connector instance.

Each connector instance drains in a lane of its own: ``write_back.concurrency`` threads (1 for a
connector whose options do not say), its own pace, and its own reason to stop. Lanes run side by
side, so a tool that is down, refuses the login or asked us to wait stops only its own lane.

The threads only talk to the tools. Claims, outcomes, waits and the audit trail are written by the
calling thread, in its app context: one writer, so SQLite never says "database is locked" between
our own threads, and outcomes are committed a batch at a time.

What held before holds: an item is claimed in the database before it is written (one writer on any
instance, and one write to a ticket at a time); what the ticket carries is read before writing, so a
write the tool accepted just before a crash is not repeated; a refused login stops the lane at the
first refusal; the wait a tool asks for is kept in ``outbox_backoff`` and honoured by every run;
failed is terminal and ``max_attempts`` holds. New: a claim held by a dead process of this host is
taken over at once, a stop asked for (``shutdown``) ends the drain after the writes in flight, and
the summary accounts for every item that was due.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from connectors.base import (
    AuthenticationError,
    Connector,
    ConnectorError,
    Enrichment,
    PausedError,
    RateLimit,
    RecordRateLimitedError,
    RetriableConnectorError,
    error_text,
)

from ..db.leases import dead_local_holder, worker_id
from ..extensions import db
from ..logs import log_context
from ..models import Incident, OutboxBackoff, OutboxItem, utcnow
from . import audit, shutdown

log = logging.getLogger("gapbridge.writeback")

#: called with (items accounted for, items due) as the drain goes
Progress = Callable[[int, int], None]

# outcomes are committed this many at a time, or this often, whichever comes first
COMMIT_EVERY = 50
COMMIT_SECONDS = 0.5
STOP_ASKED = "a stop was asked for; the next run goes on"


@dataclass
class SourceWait:
    """What one source leaves for a later run."""

    retrying: int = 0  # tried and failed; due again from ``until``
    not_attempted: int = 0  # not tried in this run: the source stopped, or a stop was asked for
    until: datetime | None = None  # the earliest next attempt of a retrying note
    reason: str | None = None  # why the source stopped


@dataclass
class DrainSummary:
    """Every item due when the drain began ends in exactly one of the counts from ``written`` to ``elsewhere``."""

    due: int = 0
    written: int = 0
    already_current: int = 0
    dry_run: int = 0
    retrying: int = 0  # tried, failed, due again later
    failed: int = 0  # for good (until --retry-failed or new gaps)
    not_attempted: int = 0  # left pending untried: its source stopped, or a stop was asked for
    elsewhere: int = 0  # claimed by another live run, or changed by one, meanwhile
    taken_over: int = 0  # of those tried: claims of a dead process on this host, taken at once
    stopped: bool = False  # a stop was asked for
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)  # sources stopped by their tool: down, refusing, asking to wait
    waiting_by_source: dict[str, SourceWait] = field(default_factory=dict)

    @property
    def waiting(self) -> int:
        """Pending for a later run: retrying, or not attempted."""
        return self.retrying + self.not_attempted

    @property
    def accounted(self) -> int:
        return (self.written + self.already_current + self.dry_run + self.retrying + self.failed + self.not_attempted
                + self.elsewhere)

    @property
    def rate(self) -> float:
        """Items settled a second (written, current, dry-run, retrying or failed: what cost a request)."""
        tried = self.written + self.already_current + self.dry_run + self.retrying + self.failed
        return tried / self.seconds if self.seconds > 0 else 0.0

    def error(self, line: str) -> None:
        if line not in self.errors:  # several threads told the same thing say it once
            self.errors.append(line)

    def wait_of(self, source: str) -> SourceWait:
        return self.waiting_by_source.setdefault(source, SourceWait())


def backoff(attempts: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> timedelta:
    """Exponential backoff with full jitter, at least a second."""
    ceiling = min(cap, base * (2 ** max(0, attempts - 1)))
    return timedelta(seconds=max(1.0, ceiling * rand()))


def drain(connectors: Mapping[str, Connector], *, max_attempts: int = 12, backoff_base: float = 30.0,
          backoff_cap: float = 21600.0, batch_size: int = 100, now: datetime | None = None,
          retry_failed: bool = False, claim_seconds: int = 300, progress: Progress | None = None) -> DrainSummary:
    """Write the due outbox items of ``connectors``; what a failing tool leaves stays pending for a later run.

    A source is left alone for the rest of the run after a failure, and for as long as its tool asked
    (a Retry-After, kept in ``outbox_backoff``) by every run on every instance. ``now`` fixes the
    clock (tests); by default each step reads it.
    """
    started = time.monotonic()
    ot = OutboxItem.__table__
    if retry_failed:
        db.session.execute(ot.update().where(ot.c.status == "failed", ot.c.source.in_(list(connectors)))
                           .values(status="pending", attempts=0, next_attempt_at=now or utcnow()))
        db.session.commit()
    run = _Drain(connectors, max_attempts=max_attempts, base=backoff_base, cap=backoff_cap, batch_size=batch_size,
                 now=now, claim_seconds=claim_seconds, progress=progress)
    run.run()
    _forget_served_waits(list(connectors), run.now())
    summary = run.summary
    summary.seconds = time.monotonic() - started
    if summary.taken_over:
        log.info("took over %d outbox claims of processes of this host that are gone", summary.taken_over)
    # the commands and the scheduler say this their own way; the log keeps it for the record
    log.debug("outbox drained: %d due, %d written, %d already current, %d dry-run, %d waiting (%d retrying, %d not attempted), "
             "%d failed, %d elsewhere, %d taken over from dead runs, in %.1f s", summary.due, summary.written,
             summary.already_current, summary.dry_run, summary.waiting, summary.retrying, summary.not_attempted, summary.failed,
             summary.elsewhere, summary.taken_over, summary.seconds)
    return summary


# --- the threads' side: the tools only, never the database -----------------------------------

WRITTEN, CURRENT, DRY_RUN = "written", "already_current", "dry_run"
REFUSED, PAUSED, RETRY, FAILED, CRASHED = "refused", "paused", "retrying", "failed", "crashed"


@dataclass(frozen=True)
class _Task:
    """A claimed item as a thread sees it: plain values, not a row of the session."""

    id: int
    incident_id: int
    source: str
    external_id: str
    fingerprint: str
    payload: dict[str, Any]
    attempts: int
    taken_over: bool
    checked: bool = False  # what the ticket carries was read already (with others, in one request)

    def enrichment(self) -> Enrichment:
        p = self.payload
        return Enrichment(external_id=self.external_id, fingerprint=self.fingerprint, note=p.get("note"),
                          fields=dict(p.get("fields") or {}), labels=list(p.get("labels") or []))


@dataclass(frozen=True)
class _Outcome:
    task: _Task
    kind: str
    error: BaseException | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class _Checked:
    tasks: list[_Task]
    fingerprints: dict[str, str | None] | None
    error: BaseException | None = None


def _kind(exc: BaseException) -> str:
    if isinstance(exc, AuthenticationError):
        return REFUSED
    if isinstance(exc, PausedError):
        return PAUSED
    if isinstance(exc, RetriableConnectorError):
        return RETRY
    return FAILED if isinstance(exc, ConnectorError) else CRASHED


def _write(connector: Connector, task: _Task, pace: RateLimit | None) -> _Outcome:
    t = time.monotonic()
    try:
        if pace is not None:
            pace.acquire(f"write-back to {task.source}")
        # a write the tool accepted just before a crash must not be written again
        if not task.checked and connector.current_fingerprint(task.external_id) == task.fingerprint:
            return _Outcome(task, CURRENT, seconds=time.monotonic() - t)
        result = connector.write_back(task.enrichment())
    except Exception as exc:  # each kind is settled by the drain; a bug (CRASHED) is raised there, after the others
        return _Outcome(task, _kind(exc), exc, time.monotonic() - t)
    return _Outcome(task, DRY_RUN if result.dry_run else WRITTEN, seconds=time.monotonic() - t)


def _check(connector: Connector, tasks: list[_Task]) -> _Checked:
    try:
        return _Checked(tasks, connector.current_fingerprints([t.external_id for t in tasks]))
    except Exception as exc:
        return _Checked(tasks, None, exc)


# --- the caller's side: the database, the lanes ---------------------------------------------


class _Lane:
    """One connector instance's part of a drain: its due items, its threads, and why it stopped."""

    def __init__(self, run: _Drain, name: str, connector: Connector) -> None:
        self.run, self.name, self.connector = run, name, connector
        options = connector.options.get("write_back") if isinstance(connector.options, Mapping) else None
        options = options if isinstance(options, Mapping) else {}
        self.concurrency = max(1, int(options.get("concurrency") or 1))
        rate = options.get("max_per_second")
        self.pace = RateLimit(float(rate)) if rate else None
        self.per_check = max(1, int(getattr(connector, "fingerprints_per_request", 1) or 1))
        # claimed ahead of the threads: enough to keep them busy, few enough that a stop releases little
        self.chunk = self.per_check if self.per_check > 1 else 2 * self.concurrency
        self.executor: ThreadPoolExecutor | None = None  # the writers
        self.reader: ThreadPoolExecutor | None = None  # reads a chunk's fingerprints beside them
        self.cursor = 0
        self.exhausted = False
        self.candidates: deque[Any] = deque()  # due rows not claimed yet
        self.deferred: list[Any] = []  # due rows whose ticket this lane is writing now
        self.ready: deque[_Task] = deque()  # claimed (and checked, if in chunks), waiting for a thread
        self.running: dict[Future[Any], list[_Task]] = {}
        self.checking: set[Future[Any]] = set()  # of those running, the reads of a chunk's fingerprints
        self.tickets: set[str] = set()  # external ids claimed by this lane and not settled: one write a ticket at a time
        self.proven = False  # an answer that was no refusal or outage: the other threads may start
        self.stopped: str | None = None
        self.next_hold_check = float("-inf")
        self.next_renewal = time.monotonic() + run.claim_seconds / 3

    # --- dispatch

    def top_up(self) -> None:
        if self.stopped is not None:
            return
        if time.monotonic() >= self.next_hold_check:
            # another instance may have been asked to wait a moment ago
            self.next_hold_check = time.monotonic() + 1.0
            if self.run.held(self):
                return
        self._renew_claims()
        # the first request goes alone: a refused login or a tool that is down costs one request, not one a thread.
        # Then each writer has a note queued behind the one it writes, so it never waits for this thread to hand it one.
        limit = 2 * self.concurrency if self.proven else 1
        while len(self.running) - len(self.checking) < limit and self.stopped is None:
            if self.ready:
                task = self.ready.popleft()
                self._submit(_write, [task], task, self.pace)
                continue
            if self.checking:
                break  # the next chunk is being read; its notes come next
            tasks = self.run.claim(self, self.chunk)
            if not tasks:
                break
            if self.per_check > 1:
                self._submit(_check, tasks, tasks)
            else:
                self.ready.extend(tasks)
        # in chunks, read the next one while the writers still have two rounds of notes to write
        if (self.per_check > 1 and self.stopped is None and self.proven and not self.checking
                and len(self.ready) <= 2 * self.concurrency):
            tasks = self.run.claim(self, self.chunk)
            if tasks:
                self._submit(_check, tasks, tasks)

    def _submit(self, fn: Callable[..., Any], tasks: list[_Task], *args: Any) -> None:
        if fn is _check:
            if self.reader is None:
                self.reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"writeback-{self.name}-read")
            future = self.reader.submit(fn, self.connector, *args)
            self.checking.add(future)
        else:
            if self.executor is None:
                self.executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"writeback-{self.name}")
            future = self.executor.submit(fn, self.connector, *args)
        self.running[future] = tasks

    def _renew_claims(self) -> None:
        """Every third of a claim's time, this lane's claims are renewed: a slow tool must not let them lapse in the queue."""
        if time.monotonic() < self.next_renewal:
            return
        self.next_renewal = time.monotonic() + self.run.claim_seconds / 3
        mine = list(self.ready) + [t for tasks in self.running.values() for t in tasks]
        if not mine:
            return
        kept = self.run.renew(mine)
        for task in [t for t in self.ready if t.id not in kept]:  # taken over by someone else while it waited: theirs
            self.ready.remove(task)
            self.run.summary.elsewhere += 1
            self.settled(task)

    # --- outcomes

    def settle(self, future: Future[Any]) -> None:
        tasks = self.running.pop(future)
        self.checking.discard(future)
        result = future.result()  # the thread caught everything
        if isinstance(result, _Checked):
            self._checked(result)
            return
        assert isinstance(result, _Outcome) and result.task is tasks[0]
        self.run.record(self, result)
        self.settled(result.task)

    def _checked(self, checked: _Checked) -> None:
        if checked.error is not None:
            self.run.refused_check(self, checked.tasks, checked.error)
            for task in checked.tasks:
                self.settled(task)
            return
        self.proven = True
        assert checked.fingerprints is not None
        for task in checked.tasks:
            if checked.fingerprints.get(task.external_id) == task.fingerprint:
                self.run.record(self, _Outcome(task, CURRENT))
                self.settled(task)
            elif self.stopped is not None:  # stopped while this chunk was read
                self.run.release([task], self.stopped)
                self.settled(task)
            else:
                self.ready.append(replace(task, checked=True))

    def settled(self, task: _Task) -> None:
        self.tickets.discard(task.external_id)
        if self.deferred:
            back = [r for r in self.deferred if r.external_id == task.external_id]
            if back:
                self.deferred = [r for r in self.deferred if r.external_id != task.external_id]
                self.candidates.extendleft(reversed(back))

    def stop(self, reason: str, *, unreachable: bool = True) -> None:
        """No more is dispatched; what is claimed and not started is released, not attempted."""
        if self.stopped is not None:
            return
        self.stopped = reason
        if unreachable:
            self.run.summary.unreachable.add(self.name)
        queued = list(self.ready)
        self.ready.clear()
        for future, tasks in list(self.running.items()):  # handed to a writer, not begun
            if future not in self.checking and future.cancel():
                del self.running[future]
                queued.extend(tasks)
        self.run.release(queued, reason)
        for task in queued:
            self.settled(task)

    # --- candidates

    def fetch(self) -> bool:
        ot = OutboxItem.__table__
        rows = db.session.execute(sa.select(ot.c.id, ot.c.external_id, ot.c.claimed_by, ot.c.claimed_until).where(
            ot.c.source == self.name, ot.c.status == "pending", ot.c.next_attempt_at <= self.run.cutoff, ot.c.id > self.cursor,
        ).order_by(ot.c.id).limit(self.run.batch_size)).all()
        if not rows:
            self.exhausted = True
            return False
        self.cursor = rows[-1].id
        self.candidates.extend(rows)
        return True

    def close(self) -> None:
        for executor in (self.executor, self.reader):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)


class _Drain:
    """One drain over several lanes, settled by the calling thread."""

    def __init__(self, connectors: Mapping[str, Connector], *, max_attempts: int, base: float, cap: float, batch_size: int,
                 now: datetime | None, claim_seconds: int, progress: Progress | None) -> None:
        self.summary = DrainSummary()
        self.me = worker_id()
        self.fixed_now = now
        self.cutoff = self.now()  # due when the drain began: what it accounts for
        self.max_attempts, self.base, self.cap, self.batch_size = max_attempts, base, cap, batch_size
        self.claim_seconds = claim_seconds
        self.progress = progress
        self.lanes = [_Lane(self, name, connector) for name, connector in connectors.items()]
        self.dead: dict[str, bool] = {}
        self.audit_rows: list[dict[str, Any]] = []
        self.sent: list[tuple[_Task, datetime]] = []
        self.uncommitted = 0
        self.last_commit = time.monotonic()
        self.crash: BaseException | None = None

    def now(self) -> datetime:
        return self.fixed_now or utcnow()

    def run(self) -> None:
        ot = OutboxItem.__table__
        due = db.session.execute(sa.select(ot.c.source, sa.func.count()).where(
            ot.c.status == "pending", ot.c.next_attempt_at <= self.cutoff, ot.c.source.in_([lane.name for lane in self.lanes]),
        ).group_by(ot.c.source)).all()
        self.summary.due = sum(n for _, n in due)
        try:
            self._loop()
        except BaseException:
            self._abandon()
            raise
        for lane in self.lanes:
            lane.close()
            self._left_over(lane)
        self.commit()
        self._report()
        if self.crash is not None:
            raise self.crash

    def _loop(self) -> None:
        while True:
            if not self.summary.stopped and shutdown.requested():
                self.summary.stopped = True
                for lane in self.lanes:
                    lane.stop(STOP_ASKED, unreachable=False)
            for lane in self.lanes:
                lane.top_up()
            running = {future: lane for lane in self.lanes for future in lane.running}
            if not running:
                return
            self.commit(if_due=True)
            done, _ = wait(running, timeout=COMMIT_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                running[future].settle(future)
            self.commit(if_due=True)
            self._report()

    def _abandon(self) -> None:
        """The drain itself failed: let the threads end, and free what it claimed (every write is checked first)."""
        for lane in self.lanes:
            lane.close()
        try:
            db.session.rollback()
            mine = [t.id for lane in self.lanes for t in [*lane.ready, *(t for ts in lane.running.values() for t in ts)]]
            if mine:
                ot = OutboxItem.__table__
                db.session.execute(ot.update().where(ot.c.id.in_(mine), ot.c.claimed_by == self.me)
                                   .values(claimed_by=None, claimed_until=None))
                db.session.commit()
        except Exception as exc:  # the database may be what failed; the claims lapse on their own, or on our exit
            log.warning("write-back: could not release claims after a failure: %s", error_text(exc))

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(self.summary.accounted, self.summary.due)

    # --- the database

    def commit(self, *, if_due: bool = False) -> None:
        if if_due and not (self.uncommitted >= COMMIT_EVERY
                           or (self.uncommitted and time.monotonic() - self.last_commit >= COMMIT_SECONDS)):
            return
        self.apply_sent()
        if self.audit_rows:
            audit.record_many(self.audit_rows)
            self.audit_rows = []
        db.session.commit()
        self.uncommitted = 0
        self.last_commit = time.monotonic()

    def apply_sent(self) -> None:
        """The notes on their tickets since the last commit, marked sent in two statements (the hot path: one a note)."""
        if not self.sent:
            return
        ot, it = OutboxItem.__table__, Incident.__table__
        db.session.execute(ot.update().where(ot.c.id == sa.bindparam("oid")).values(
            status="sent", sent_at=sa.bindparam("at"), attempts=ot.c.attempts + 1, last_error=None, claimed_by=None,
            claimed_until=None), [{"oid": t.id, "at": at} for t, at in self.sent])
        db.session.execute(it.update().where(it.c.id == sa.bindparam("iid")).values(enrichment_fingerprint=sa.bindparam("fp")),
                           [{"iid": t.incident_id, "fp": t.fingerprint} for t, _ in self.sent])
        self.sent = []

    def is_dead(self, holder: str | None) -> bool:
        if not holder or holder == self.me:
            return False  # our own claims are another drain's of this process, alive
        if holder not in self.dead:
            self.dead[holder] = dead_local_holder(holder, self.me)
        return self.dead[holder]

    def claim(self, lane: _Lane, n: int) -> list[_Task]:
        """Claim up to ``n`` due items of ``lane``, committed before any is written; [] when none is left."""
        while True:
            rows = self._pick(lane, n)
            if not rows:
                return []
            tasks = self._claim(lane, rows)
            if tasks:
                return tasks

    def _pick(self, lane: _Lane, n: int) -> list[Any]:
        now = self.now()
        rows: list[Any] = []
        while len(rows) < n:
            if not lane.candidates and (lane.exhausted or not lane.fetch()):
                break
            row = lane.candidates.popleft()
            if row.external_id in lane.tickets:
                lane.deferred.append(row)  # after the write in flight to the same ticket
                continue
            live_claim = row.claimed_until is not None and row.claimed_until >= now
            if live_claim and not self.is_dead(row.claimed_by):
                self.summary.elsewhere += 1
                continue
            lane.tickets.add(row.external_id)
            rows.append(row)
        return rows

    def _claim(self, lane: _Lane, rows: list[Any]) -> list[_Task]:
        self.apply_sent()  # a note just sent no longer holds its ticket
        now = self.now()
        ot = OutboxItem.__table__
        other = ot.alias("other")
        dead = sorted({r.claimed_by for r in rows if r.claimed_by and self.is_dead(r.claimed_by)})
        claimable = sa.or_(ot.c.claimed_until.is_(None), ot.c.claimed_until < now, *([ot.c.claimed_by.in_(dead)] if dead else []))
        # another instance writing another note to the same ticket now: not at the same time (plan leaves one pending
        # a ticket; this holds if it ever did not)
        busy_ticket = sa.exists().where(other.c.incident_id == ot.c.incident_id, other.c.id != ot.c.id,
                                        other.c.status == "pending", other.c.claimed_until >= now,
                                        *([other.c.claimed_by.not_in(dead)] if dead else []))
        got = db.session.execute(ot.update().where(ot.c.id.in_([r.id for r in rows]), ot.c.status == "pending", claimable,
                                                   ~busy_ticket)
                                 .values(claimed_by=self.me, claimed_until=now + timedelta(seconds=self.claim_seconds))
                                 .returning(ot.c.id, ot.c.incident_id, ot.c.external_id, ot.c.fingerprint, ot.c.payload,
                                            ot.c.attempts)).all()
        self.commit()
        by_id = {g.id: g for g in got}
        tasks = []
        for row in rows:
            g = by_id.get(row.id)
            if g is None:  # claimed, sent or superseded by another run since we read it
                self.summary.elsewhere += 1
                lane.tickets.discard(row.external_id)
                continue
            taken = row.claimed_until is not None and row.claimed_until >= now and row.claimed_by in dead
            if taken:
                self.summary.taken_over += 1
            tasks.append(_Task(g.id, g.incident_id, lane.name, g.external_id, g.fingerprint, dict(g.payload or {}), g.attempts,
                               taken))
        return tasks

    def renew(self, tasks: list[_Task]) -> set[int]:
        ot = OutboxItem.__table__
        now = self.now()
        kept = db.session.execute(ot.update().where(ot.c.id.in_([t.id for t in tasks]), ot.c.claimed_by == self.me,
                                                    ot.c.status == "pending")
                                  .values(claimed_until=now + timedelta(seconds=self.claim_seconds)).returning(ot.c.id)).scalars()
        ids = set(kept)
        self.commit()
        return ids

    def release(self, tasks: list[_Task], reason: str) -> None:
        """Claimed, not tried: back to pending as it was, counted as not attempted."""
        if not tasks:
            return
        ot = OutboxItem.__table__
        db.session.execute(ot.update().where(ot.c.id.in_([t.id for t in tasks]), ot.c.claimed_by == self.me)
                           .values(claimed_by=None, claimed_until=None))
        self.uncommitted += len(tasks)
        for task in tasks:
            self.summary.not_attempted += 1
            wait_ = self.summary.wait_of(task.source)
            wait_.not_attempted += 1
            wait_.reason = wait_.reason or reason

    def held(self, lane: _Lane) -> bool:
        """True if the tool behind the lane asked us to wait past now; the run then says what it asked, once."""
        hold = db.session.get(OutboxBackoff, lane.name, populate_existing=True)
        if hold is None or hold.until <= self.now():
            return False
        self.summary.error(f"{lane.name}: {hold.message}")
        lane.stop(hold.message)
        return True

    def _audit(self, action: str, task: _Task, **details: Any) -> None:
        self.audit_rows.append({"action": action, "subject_type": "incident", "subject_id": task.incident_id,
                                "details": {"source": task.source, "fingerprint": task.fingerprint, **details}})

    def record(self, lane: _Lane, outcome: _Outcome) -> None:
        """Settle one write's outcome in the session (committed with the next batch)."""
        with log_context(source=lane.name, incident=outcome.task.external_id):
            self._record(lane, outcome)

    def _record(self, lane: _Lane, outcome: _Outcome) -> None:
        task, exc = outcome.task, outcome.error
        s = self.summary
        ot = OutboxItem.__table__
        row = ot.update().where(ot.c.id == task.id)
        released = {"claimed_by": None, "claimed_until": None}
        self.uncommitted += 1
        _observe(task.source, outcome)
        if outcome.kind in (WRITTEN, CURRENT):
            self.sent.append((task, utcnow()))  # applied with the next commit, or before the next claim
            self._audit(f"writeback.{outcome.kind}", task, external_id=task.external_id,
                        open_gaps=(task.payload.get("fields") or {}).get("open_gaps"))
            lane.proven = True
            if outcome.kind == WRITTEN:
                s.written += 1
            else:
                s.already_current += 1
            return
        if outcome.kind == DRY_RUN:
            db.session.execute(row.values(**released))  # stays pending: a real run writes it
            self._audit("writeback.dry_run", task)
            lane.proven = True
            s.dry_run += 1
            return
        assert exc is not None
        error = error_text(exc)
        if outcome.kind == REFUSED:
            # the account is refused, not the note: one more login per note would lock the account out. The note
            # keeps its attempts and stays pending; the lane stops and says so, once.
            db.session.execute(row.values(last_error=f"the login was refused: {error}", **released))
            self._not_attempted(task)
            if lane.stopped is None:
                self.commit()
                waiting = db.session.scalar(sa.select(sa.func.count()).select_from(ot).where(
                    ot.c.source == lane.name, ot.c.status == "pending"))
                reason = f"the login was refused ({error}); write-back stopped for this connector, {waiting} notes wait"
                s.error(f"{lane.name}: {reason}")
                log.error("write-back to %s stopped: the login was refused (%s)", lane.name, error)
                lane.stop(reason)
            self.summary.wait_of(task.source).reason = lane.stopped
            return
        if outcome.kind == PAUSED:
            # not sent: another thread was told to wait, longer than a request waits
            assert isinstance(exc, PausedError)
            db.session.execute(row.values(**released))
            self._not_attempted(task)
            self._stop_for_wait(lane, exc)
            return
        if outcome.kind == RETRY:
            assert isinstance(exc, RetriableConnectorError)
            # one ticket's own write limit (Jira's per-issue limit): that ticket waits, the instance's others go on
            one_ticket = isinstance(exc, RecordRateLimitedError)
            message = self._stop_for_wait(lane, exc) if exc.retry_after and not one_ticket else None
            attempts = task.attempts + 1
            values: dict[str, Any] = {"attempts": attempts, "last_error": message or error, **released}
            if attempts >= self.max_attempts:
                values["status"] = "failed"
                s.failed += 1
                self._audit("writeback.failed", task, error=message or error, attempts=attempts)
            else:
                delay = backoff(attempts, self.base, self.cap)
                if exc.retry_after:
                    delay = max(delay, timedelta(seconds=exc.retry_after))
                values["next_attempt_at"] = until = self.now() + delay
                s.retrying += 1
                wait_ = s.wait_of(task.source)
                wait_.retrying += 1
                wait_.until = until if wait_.until is None else min(wait_.until, until)
            db.session.execute(row.values(**values))
            if one_ticket:
                log.info("%s %s: %s; that ticket is written again after its wait", task.source, task.external_id, error)
            elif message is None:
                s.error(f"{task.source} {task.external_id}: {error}")
                lane.stop(f"{task.source} {task.external_id}: {error}")  # stop hammering a tool that is down; the rest waits
            if lane.stopped is not None:
                s.wait_of(task.source).reason = lane.stopped
            return
        if outcome.kind == FAILED:
            lane.proven = True  # the tool answered, and not with a refused login
            attempts = task.attempts + 1
            db.session.execute(row.values(status="failed", attempts=attempts, last_error=error, **released))
            s.failed += 1
            s.error(f"{task.source} {task.external_id}: {error}")
            self._audit("writeback.failed", task, error=error, attempts=attempts)
            return
        # a bug, not the tool: the item is freed for the next run, the others are settled, then it is raised
        db.session.execute(row.values(**released))
        self._not_attempted(task)
        if self.crash is None:
            self.crash = exc
        lane.stop(f"write-back failed: {error}", unreachable=False)

    def _not_attempted(self, task: _Task) -> None:
        self.summary.not_attempted += 1
        self.summary.wait_of(task.source).not_attempted += 1

    def _stop_for_wait(self, lane: _Lane, exc: RetriableConnectorError) -> str:
        """The tool asked to wait: kept for every run and instance, said once, and the lane stops."""
        assert exc.retry_after
        message = _hold(lane.connector, exc.retry_after, self.now())
        self.summary.error(f"{lane.name}: {message}")
        lane.stop(message)
        return message

    def refused_check(self, lane: _Lane, tasks: list[_Task], exc: BaseException) -> None:
        """Reading what a chunk of tickets carries failed: none of them was written; the lane stops."""
        error = error_text(exc)
        kind = _kind(exc)
        if kind == CRASHED and self.crash is None:
            self.crash = exc
        if kind in (PAUSED, RETRY) and isinstance(exc, RetriableConnectorError) and exc.retry_after:
            reason = self._stop_for_wait(lane, exc)
        elif kind == REFUSED:
            waiting = db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem).where(
                OutboxItem.source == lane.name, OutboxItem.status == "pending"))
            reason = f"the login was refused ({error}); write-back stopped for this connector, {waiting} notes wait"
            log.error("write-back to %s stopped: the login was refused (%s)", lane.name, error)
        else:
            reason = f"could not read what the tickets carry: {error}"
        self.summary.error(f"{lane.name}: {reason}")
        lane.stop(reason)
        self.release(tasks, lane.stopped or reason)

    def _left_over(self, lane: _Lane) -> None:
        """What a stopped lane did not reach: not attempted (or another run's, if it holds them)."""
        if lane.stopped is None:
            return
        now = self.now()
        rows = list(lane.candidates) + lane.deferred
        lane.candidates.clear()
        lane.deferred = []
        live = sum(1 for r in rows if r.claimed_until is not None and r.claimed_until >= now and not self.is_dead(r.claimed_by))
        free = len(rows) - live
        if not lane.exhausted:
            ot = OutboxItem.__table__
            beyond = sa.select(sa.func.count()).select_from(ot).where(
                ot.c.source == lane.name, ot.c.status == "pending", ot.c.next_attempt_at <= self.cutoff, ot.c.id > lane.cursor)
            total = db.session.scalar(beyond) or 0
            others = db.session.scalar(beyond.where(ot.c.claimed_until >= now)) or 0
            free += total - others
            live += others
        self.summary.elsewhere += live
        if free:
            self.summary.not_attempted += free
            wait_ = self.summary.wait_of(lane.name)
            wait_.not_attempted += free
            wait_.reason = wait_.reason or lane.stopped


def _observe(source: str, outcome: _Outcome) -> None:
    from .. import metrics

    status = getattr(outcome.error, "status", None)
    metrics.observe_writeback(source, outcome.kind, outcome.seconds, status if isinstance(status, int) else None)


def _hold(connector: Connector, seconds: float, now: datetime) -> str:
    """Keep the wait the tool asked for, for every run and instance; the message says what was asked."""
    until = now + timedelta(seconds=seconds)
    tool = getattr(connector, "tool_name", None) or type(connector).__name__.removesuffix("Connector")
    when = f"{until:%H:%M:%S} UTC" if until.date() == now.date() else f"{until:%Y-%m-%d %H:%M:%S} UTC"
    message = f"{tool} asked to wait {seconds:g} s; next attempt after {when}"
    insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(OutboxBackoff).values(source=connector.name, until=until, asked_seconds=seconds, message=message, set_at=utcnow())
    db.session.execute(stmt.on_conflict_do_update(index_elements=["source"], set_={
        "until": stmt.excluded.until, "asked_seconds": stmt.excluded.asked_seconds, "message": stmt.excluded.message,
        "set_at": stmt.excluded.set_at}))
    return message


def _forget_served_waits(sources: list[str], now: datetime) -> None:
    """A wait served is deleted, so that what is left in ``outbox_backoff`` is only what still holds."""
    bt = OutboxBackoff.__table__
    db.session.execute(bt.delete().where(bt.c.source.in_(sources), bt.c.until <= now))
    db.session.commit()
