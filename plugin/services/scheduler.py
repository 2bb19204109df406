"""The schedule: jobs that each run once across every instance sharing the database.

Each job has a row in ``scheduled_jobs``: when it is next due, who runs it now, how its last run went.
A tick takes each due job's lease (``job:<name>``, renewed while the job runs), claims the row with an
UPDATE that only succeeds while the job is still due, runs it, and records the outcome and the next due
time. A job whose instance was killed keeps its row due and its holder set: another instance takes it
over once the lease runs out (at once when the holder was a process of this host that is gone).

``gapbridge serve`` runs the schedule in a thread of its own, ``gapbridge worker`` in its main thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult

from connectors.base import error_text, redacted_traceback

from ..db.leases import LeaseBusy, held_lease, worker_id
from ..extensions import db
from ..models import ScheduledJob, utcnow
from ..state import GapBridge, gapbridge
from . import audit, shutdown

log = logging.getLogger("gapbridge.scheduler")

SUCCEEDED, FAILED, SKIPPED, STOPPED = "succeeded", "failed", "skipped", "stopped"
WRITEBACK, REASSESS, RISK_EXPIRY, AUDIT_VERIFY = "writeback", "reassess", "risk-expiry", "audit-verify"


@dataclass
class JobResult:
    """What a run did, in one line; ``memory`` is kept for the job's next run (None: keep what it had)."""

    summary: str
    outcome: str = SUCCEEDED
    error: str | None = None
    memory: dict[str, Any] | None = None


@dataclass(frozen=True)
class Job:
    name: str
    interval: float  # seconds from the start of one run to the next
    run: Callable[[GapBridge, dict[str, Any]], JobResult]  # (state, memory of the last run)


@dataclass
class JobRun:
    """One run of a job by this scheduler, as a tick reports it."""

    name: str
    outcome: str
    summary: str
    error: str | None = None
    took_over_from: str | None = None  # the holder whose run never finished (killed, crashed)


# --- the jobs -------------------------------------------------------------------------------


def sync_job(source: str) -> Callable[[GapBridge, dict[str, Any]], JobResult]:
    def run(state: GapBridge, _memory: dict[str, Any]) -> JobResult:
        from .pipeline import sync_one

        synced = sync_one(state, source)
        if synced.busy:  # a sync run by hand, or by an instance that does not share this schedule
            return JobResult(f"skipped: {synced.error}", SKIPPED)
        if synced.error is not None or synced.summary is None:
            return JobResult("failed; the next run resumes from the last bookmark", FAILED, synced.error)
        s = synced.summary
        line = (f"{s.fetched} fetched in {s.pages} pages, {s.stored} stored ({s.changed} new or changed), {s.rejected} rejected, "
                f"{s.opened} gaps opened, {s.closed} closed")
        if synced.stopped:
            return JobResult(f"stopped as asked after {line}; the next run resumes from the last bookmark", STOPPED)
        return JobResult(line)
    return run


def writeback_job(state: GapBridge, _memory: dict[str, Any]) -> JobResult:
    from .pipeline import write_back

    result = write_back(state)
    p, d = result.plan, result.drain
    planned = result.plan_skipped or f"{p.queued} queued"
    line = f"{planned}; {d.written} written, {d.already_current} already current, {d.waiting} waiting to retry, {d.failed} failed"
    if d.stopped or shutdown.requested():
        return JobResult(f"stopped as asked: {line}", STOPPED)
    if not result.ok:
        return JobResult(line, FAILED, "; ".join(d.errors[:5]) or None)
    return JobResult(line)


def reassess_job(state: GapBridge, _memory: dict[str, Any]) -> JobResult:
    from .pipeline import busy_step, reassess

    try:
        a = reassess(state)
    except LeaseBusy as exc:
        return JobResult(busy_step("re-assessment", exc), SKIPPED)
    return JobResult(f"{a.assessed} assessed, {a.opened} gaps opened, {a.closed} closed", STOPPED if shutdown.requested() else SUCCEEDED)


def risk_expiry_job(_state: GapBridge, _memory: dict[str, Any]) -> JobResult:
    from .risk import expire_due

    expired = expire_due()
    return JobResult(f"{len(expired)} risk acceptances expired" + (" (their gaps count again)" if expired else ""))


def audit_verify_job(_state: GapBridge, memory: dict[str, Any]) -> JobResult:
    """Verify the chain, and that it still reaches the head found intact last time (the newest rows removed show so)."""
    head = memory.get("head")
    expect = None
    if isinstance(head, str) and ":" in head:
        seq, _, digest = head.partition(":")
        expect = (int(seq), digest) if seq.isdigit() else None
    result = audit.verify(expect)
    db.session.commit()  # end the read
    if result.intact:
        return JobResult(f"audit log intact: {result.rows} rows, head {result.head}", memory={"head": result.head})
    first = "; ".join(str(p) for p in result.problems[:3])
    error = f"the audit log has been tampered with: {result.problem_count} problems in {result.rows} rows, first: {first}"
    # an event an auditor finds in the log itself; the head found intact before stays what the next run expects
    audit.record("audit.verify_failed", "audit_log", None, problems=result.problem_count, rows=result.rows, head=result.head,
                 first=[str(p) for p in result.problems[:10]], expected_head=head)
    db.session.commit()
    return JobResult("audit log tampered (run `gapbridge audit verify` for every problem)", FAILED, error)


def configured_jobs(state: GapBridge) -> list[Job]:
    """The jobs the configuration asks for: a sync per connector instance, the write-back, re-assessment, expiries, verify."""
    s = state.config["schedule"]
    sources = list(state.config["connectors"])
    jobs = [Job(f"sync:{name}", s["sync_intervals"].get(name, s["sync_interval_seconds"]), sync_job(name)) for name in sources]
    if sources:  # the write-back needs a tool to write to
        jobs.append(Job(WRITEBACK, s["writeback_interval_seconds"], writeback_job))
    jobs += [
        Job(REASSESS, s["reassess_interval_seconds"], reassess_job),
        Job(RISK_EXPIRY, s["risk_expiry_interval_seconds"], risk_expiry_job),
        Job(AUDIT_VERIFY, s["audit_verify_interval_seconds"], audit_verify_job),
    ]
    return jobs


def describe(jobs: Sequence[Job]) -> str:
    return ", ".join(f"{j.name} every {_seconds(j.interval)}" for j in jobs)


def _seconds(value: float) -> str:
    if value % 3600 == 0:
        return f"{value / 3600:g} h"
    if value % 60 == 0:
        return f"{value / 60:g} min"
    return f"{value:g} s"


# --- the scheduler --------------------------------------------------------------------------


class Scheduler:
    """Runs the due jobs of ``app`` at each tick; ``clock`` and ``holder`` are for tests (default: UTC now, host:pid)."""

    def __init__(self, app: Flask, jobs: Sequence[Job] | None = None, *, clock: Callable[[], datetime] = utcnow,
                 holder: str | None = None) -> None:
        self.app = app
        with app.app_context():
            state = gapbridge(app)
            self.jobs = {j.name: j for j in (jobs if jobs is not None else configured_jobs(state))}
            self.tick_seconds = float(state.config["schedule"]["tick_seconds"])
            self.lease_seconds = float(state.config["schedule"]["job_lease_seconds"])
        self.clock = clock
        self.holder = holder or worker_id()
        self._thread: threading.Thread | None = None

    # --- one tick

    def tick(self) -> list[JobRun]:
        """Run every job that is due and not running elsewhere, one after the other, until a stop is asked for."""
        ran: list[JobRun] = []
        with self.app.app_context():
            try:
                now = self.clock()
                self._ensure_rows(now)
                t = ScheduledJob.__table__.c
                due = db.session.execute(sa.select(t.name).where(t.name.in_(list(self.jobs)), t.next_due_at <= now)
                                         .order_by(t.next_due_at, t.name)).scalars().all()
                db.session.commit()
                for name in due:
                    if shutdown.requested():
                        break
                    done = self._run_one(self.jobs[name])
                    if done is not None:
                        ran.append(done)
            finally:
                db.session.remove()
        return ran

    def _ensure_rows(self, now: datetime) -> None:
        """A row for every configured job, due at once when new."""
        insert = postgresql.insert if db.engine.dialect.name == "postgresql" else sqlite.insert
        db.session.execute(insert(ScheduledJob).values([{"name": name, "next_due_at": now} for name in self.jobs])
                           .on_conflict_do_nothing(index_elements=["name"]))
        db.session.commit()

    def _run_one(self, job: Job) -> JobRun | None:
        try:
            with held_lease(f"job:{job.name}", self.lease_seconds, self.holder):
                return self._claimed(job)
        except LeaseBusy:
            return None  # running on another instance

    def _claimed(self, job: Job) -> JobRun | None:
        started = self.clock()
        row = db.session.get(ScheduledJob, job.name, populate_existing=True)
        previous = row.holder if row is not None and row.holder != self.holder else None
        memory = dict(row.memory or {}) if row is not None else {}
        # still due: another instance may have run it between our reading it due and taking its lease
        table = ScheduledJob.__table__
        claimed = cast(CursorResult[Any], db.session.execute(table.update().where(
            table.c.name == job.name, table.c.next_due_at <= started).values(holder=self.holder, last_started_at=started)))
        db.session.commit()
        if claimed.rowcount != 1:
            return None
        if previous is not None:
            log.warning("job %s: the run of %s never finished (killed or crashed): taken over", job.name, previous)
        log.debug("job %s started", job.name)
        began = time.monotonic()
        try:
            result = job.run(gapbridge(self.app), memory)
        except Exception as exc:  # keep the schedule going: the job is tried again at its next due time
            db.session.rollback()
            log.debug("job %s: %s", job.name, redacted_traceback(exc))
            result = JobResult("stopped by an error; tried again when next due", FAILED, error_text(exc))
        took = time.monotonic() - began
        finished = self.clock()
        # a stopped job stays due, so that the next tick (here or on another instance) resumes it
        next_due = started if result.outcome == STOPPED else started + timedelta(seconds=job.interval)
        values: dict[str, Any] = {"holder": None, "last_finished_at": finished, "last_outcome": result.outcome,
                                  "last_error": result.error, "last_summary": result.summary, "next_due_at": next_due}
        if result.memory is not None:
            values["memory"] = result.memory
        db.session.execute(table.update().where(table.c.name == job.name, table.c.holder == self.holder).values(**values))
        db.session.commit()
        if result.outcome == FAILED:
            log.error("job %s failed after %.1f s: %s%s", job.name, took, result.summary, f": {result.error}" if result.error else "")
        else:
            log.info("job %s %s in %.1f s: %s", job.name, result.outcome, took, result.summary)
        return JobRun(job.name, result.outcome, result.summary, result.error, previous)

    def ran_now(self, names: Sequence[str]) -> None:
        """Count a pass just done outside the schedule (the demo's first) as a run of these jobs: next due an interval on."""
        now = self.clock()
        with self.app.app_context():
            self._ensure_rows(now)
            table = ScheduledJob.__table__
            for name in names:
                if name in self.jobs:
                    db.session.execute(table.update().where(table.c.name == name, table.c.holder.is_(None))
                                       .values(next_due_at=now + timedelta(seconds=self.jobs[name].interval)))
            db.session.commit()
            db.session.remove()

    # --- running

    def run(self) -> None:
        """Tick until a stop is asked for (``shutdown.request``); a tick's failure (the database away) is logged and retried."""
        while not shutdown.requested():
            try:
                self.tick()
            except Exception as exc:
                log.error("scheduler tick failed (tried again in %g s): %s", self.tick_seconds, error_text(exc))
            shutdown.wait(self.tick_seconds)

    def start(self) -> threading.Thread:
        """Run the schedule in a background thread (``gapbridge serve``)."""
        self._thread = threading.Thread(target=self.run, name="gapbridge-scheduler", daemon=True)
        self._thread.start()
        return self._thread

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background thread (after a stop was asked for); True if it ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


def job_statuses() -> list[ScheduledJob]:
    """Every job's row, for ``gapbridge status``: next due, holder, last outcome and error."""
    return list(db.session.scalars(sa.select(ScheduledJob).order_by(ScheduledJob.name)))
