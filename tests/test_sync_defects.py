"""A sync whose processes are killed: no hang, no orphaned worker, no run left `running`."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import downgrade, upgrade

from plugin.db.leases import worker_id
from plugin.extensions import db
from plugin.models import AuditEvent, Lease, RejectedRecord, SyncRun, utcnow
from plugin.services import sync as sync_module
from plugin.services.sync import SyncLeaseLostError, sync_source, worker_process_available

from .fakes import FakeConnector, FakeTicketing

needs_fork = pytest.mark.skipif(not worker_process_available(), reason="the worker process needs fork (Linux)")
WITHIN = 20.0  # seconds for what must happen "within seconds"; generous for a loaded CI machine


def big_tickets(count: int) -> FakeTicketing:
    """Pages of about 2 MB pickled, far more than a pipe holds: the worker blocks in the middle of writing one."""
    tool = FakeTicketing(count)
    for ticket in tool.tickets.values():
        ticket["attachment"] = "x" * 300_000
    return tool


def alive(pid: int) -> bool:
    """A zombie counts as gone: an orphan is reaped by whoever adopted it, if ever."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def wait_until(condition: Callable[[], bool], timeout: float = WITHIN) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def kill(pid: int | None) -> None:
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class SyncProcess:
    """``gapbridge sync`` in a forked process: a worker-process sync whose second page is stored by ``on_store``.

    ``on_store(report, worker)`` runs in the sync's process, with its fetch worker's pid; what it and
    the sync's outcome send come back through ``messages``.
    """

    def __init__(self, app: Flask, tool: FakeTicketing, on_store: Callable[[Any, int], None], death_signal: bool = True) -> None:
        ctx = multiprocessing.get_context("fork")
        self.messages, report = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=self._main, args=(app, tool, on_store, death_signal, report))  # not a daemon: daemons may not fork
        self.process.start()
        report.close()
        self.worker: int | None = None

    @staticmethod
    def _main(app: Flask, tool: FakeTicketing, on_store: Callable[[Any, int], None], death_signal: bool, report: Any) -> None:
        with app.app_context():
            db.engine.dispose(close=False)  # the test's connections stay the test's
            if not death_signal:  # leave the orphan to notice by itself
                sync_module._exit_with_parent = lambda parent: None
            real, calls = sync_module.upsert_incidents, [0]

            def upsert(*args: Any, **kwargs: Any) -> Any:
                calls[0] += 1
                if calls[0] == 2:
                    [worker] = multiprocessing.active_children()
                    report.send(("worker", worker.pid))
                    on_store(report, worker.pid)
                return real(*args, **kwargs)

            sync_module.upsert_incidents = upsert
            try:
                sync_source(FakeConnector(tool), worker_process="always")
                report.send(("finished", "succeeded"))
            except BaseException as exc:
                report.send(("finished", f"{type(exc).__name__}: {exc}"))

    def receive(self, kind: str, timeout: float = WITHIN) -> Any:
        while self.messages.poll(timeout):
            try:
                got, value = self.messages.recv()
            except EOFError:
                break  # the sync process is gone
            if got == "worker":
                self.worker = value
            if got == kind:
                return value
        raise AssertionError(f"no {kind!r} from the sync process within {timeout} s (exit code {self.process.exitcode})")

    def close(self) -> None:
        kill(self.process.pid if self.process.is_alive() else None)
        kill(self.worker if self.worker is not None and alive(self.worker) else None)
        self.process.join(timeout=5.0)


@needs_fork
@pytest.mark.slow
def test_a_worker_killed_in_the_middle_of_a_page_ends_the_sync_with_an_error(app) -> None:
    def kill_the_worker_mid_page(report: Any, worker: int) -> None:
        time.sleep(1.0)  # the worker has prepared the next page and is blocked writing it into the full pipe
        os.kill(worker, signal.SIGKILL)

    with app.app_context():
        sync = SyncProcess(app, big_tickets(70), kill_the_worker_mid_page)
        try:
            outcome = sync.receive("finished")
        finally:
            sync.close()
        assert outcome.startswith("FetchWorkerError: the fetch worker of 'fake' exited with status -9")
        run = db.session.execute(sa.select(SyncRun)).scalar_one()
        # stored: the two pages before the kill, and the two read whole meanwhile (one queued, one held by the receiving
        # thread); not the one the worker was cut off writing
        assert run.status == "failed" and "exited with status -9 while sending a page" in run.error and run.pages == 4
        assert db.session.get(Lease, "sync:fake") is None  # released: the next sync need not wait for it


@needs_fork
@pytest.mark.slow
@pytest.mark.parametrize("death_signal", [True, False], ids=["kernel-signal", "broken-pipe"])
def test_a_killed_sync_leaves_no_worker_behind_and_its_run_is_abandoned_by_the_next(app, death_signal: bool) -> None:
    def hang(report: Any, worker: int) -> None:
        time.sleep(1.0)  # the worker blocks writing the next page
        report.send(("storing", None))
        time.sleep(3 * WITHIN)  # killed in here

    tool = big_tickets(70)
    with app.app_context():
        sync = SyncProcess(app, tool, hang, death_signal=death_signal)
        try:
            sync.receive("storing")
            worker = sync.worker
            assert worker is not None and alive(worker)
            os.kill(sync.process.pid, signal.SIGKILL)  # as `kill -9` of `gapbridge sync`
            sync.process.join(timeout=WITHIN)
            assert wait_until(lambda: not alive(worker)), "the orphaned worker is still running"
        finally:
            sync.close()

        killed = db.session.execute(sa.select(SyncRun)).scalar_one()
        assert (killed.status, killed.pages, killed.holder) == ("running", 1, f"{worker_id().rpartition(':')[0]}:{sync.process.pid}")
        # the next sync takes the dead process's lease over, closes its run and stores the rest
        summary = sync_source(FakeConnector(tool), worker_process="never")
        assert summary.status == "succeeded" and summary.stored == 70 - 7
        db.session.expire_all()
        killed = db.session.get(SyncRun, killed.id)
        assert killed.status == "abandoned" and killed.abandoned_by == worker_id() and killed.finished_at is None
        assert utcnow() - timedelta(seconds=WITHIN) < killed.abandoned_at <= utcnow()
        [event] = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "sync.abandoned")).all()
        assert (event.subject_id, event.details["by"], event.details["holder"], event.details["lease_holder"]) == (
            str(killed.id), worker_id(), killed.holder, killed.holder)


def test_a_run_left_running_is_abandoned_when_its_expired_lease_is_taken_over(app) -> None:
    tool = FakeTicketing(14)
    with app.app_context():
        gone = "other-host:4242"  # another machine: only the lease's expiry frees it
        old = SyncRun(source="fake", status="running", started_at=utcnow() - timedelta(hours=2), holder=gone, pages=3, stored=21)
        other = SyncRun(source="elsewhere", status="running", started_at=utcnow(), holder="other-host:4343")
        db.session.add_all([old, other, Lease(name="sync:fake", holder=gone, expires_at=utcnow() - timedelta(minutes=1))])
        db.session.commit()
        summary = sync_source(FakeConnector(tool))
        assert summary.status == "succeeded"
        statuses = dict(db.session.execute(sa.select(SyncRun.id, SyncRun.status)).all())
        assert statuses == {old.id: "abandoned", other.id: "running", summary.run_id: "succeeded"}  # another source's run is its own
        db.session.refresh(old)
        assert old.abandoned_by == worker_id() and old.abandoned_at is not None and old.error is None
        events = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_type == "sync_run").order_by(AuditEvent.id)).all()
        assert [e.action for e in events] == ["sync.abandoned", "sync.started", "sync.succeeded"]
        assert events[0].details == {"source": "fake", "holder": gone, "lease_holder": gone, "by": worker_id(), "pages": 3,
                                     "stored": 21, "bookmark": None}
        # nothing is abandoned twice
        sync_source(FakeConnector(tool))
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.action == "sync.abandoned")) == 1


def test_a_sync_whose_lease_is_taken_over_stops_and_stays_abandoned(app, monkeypatch) -> None:
    tool = FakeTicketing(50)
    real = sync_module.upsert_incidents
    calls = {"n": 0}

    def taken_over(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # our lease expired while we stored this page; another instance took it and marked us
            db.session.execute(sa.update(Lease).values(holder="other-host:1", expires_at=utcnow() + timedelta(minutes=15)))
            db.session.execute(sa.update(SyncRun).values(status="abandoned", abandoned_at=utcnow(), abandoned_by="other-host:1"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sync_module, "upsert_incidents", taken_over)
    with app.app_context():
        with pytest.raises(SyncLeaseLostError, match="taken over by other-host:1"):
            sync_source(FakeConnector(tool))
        run = db.session.execute(sa.select(SyncRun)).scalar_one()
        assert (run.status, run.abandoned_by, run.pages, run.finished_at) == ("abandoned", "other-host:1", 2, None)
        actions = db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.subject_type == "sync_run")).all()
        assert actions == ["sync.started"]  # the closing event is the taker's
        assert db.session.get(Lease, "sync:fake").holder == "other-host:1"  # not released: it is not ours


def test_a_run_of_this_process_is_not_abandoned_by_another_of_its_syncs(app) -> None:
    """The lease is per process (host:pid): a second sync in it must not close a run still under way."""
    tool = FakeTicketing(21)
    inner: list[int] = []

    def progress(summary: Any, total: int | None) -> None:
        if not inner:
            inner.append(sync_source(FakeConnector(tool, name="fake"), full=True).run_id)

    with app.app_context():
        outer = sync_source(FakeConnector(tool), progress=progress)
        statuses = dict(db.session.execute(sa.select(SyncRun.id, SyncRun.status)).all())
        assert statuses == {outer.run_id: "succeeded", inner[0]: "succeeded"}


def test_0008_keeps_each_rejection_linked_to_its_run(app) -> None:
    with app.app_context():
        run = SyncRun(source="fake", status="failed", started_at=utcnow())
        db.session.add(run)
        db.session.flush()
        run_id = run.id
        db.session.add(RejectedRecord(source="fake", external_id="x", reason="bad", raw={}, sync_run_id=run_id))
        db.session.commit()
        db.session.remove()
        downgrade(revision="0007")
        try:
            assert db.session.scalar(sa.text("SELECT sync_run_id FROM rejected_records")) == run_id
        finally:
            upgrade()
        assert db.session.scalar(sa.text("SELECT sync_run_id FROM rejected_records")) == run_id
        db.session.execute(sa.text("UPDATE sync_runs SET status = 'abandoned'"))
        db.session.commit()
        with pytest.raises(sa.exc.IntegrityError):
            db.session.execute(sa.text("UPDATE sync_runs SET status = 'vanished'"))
            db.session.commit()
        db.session.rollback()
