"""SIGTERM and Ctrl-C: a sync, a write-back, a worker and serve stop at their next safe point, lose nothing,
exit 0 within the bound, and the next run resumes. Real `gapbridge` subprocesses against the demo ITSM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from demo_itsm import DemoITSM
from plugin.extensions import db
from plugin.models import Incident, Lease, OutboxItem, ScheduledJob, SyncBookmark, SyncRun
from plugin.services import shutdown
from plugin.services.sync import worker_process_available

from .conftest import REPO
from .gapbridge_procs import env_for, processes_with_env, write_config

pytestmark = pytest.mark.slow

GAPBRIDGE = [str(Path(sys.executable).parent / "gapbridge")]
WITHIN = 30.0  # seconds for a subprocess to reach a state
# the stop's own bound (shutdown.GRACE_SECONDS) plus start-up slack: a stop that hangs fails here, not the suite
STOP_BOUND = shutdown.GRACE_SECONDS + 10


def wait_until(condition: Any, timeout: float = WITHIN) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


class Command:
    """A `gapbridge` subprocess in a session of its own, so that a signal can go to its whole group, as a terminal's Ctrl-C does.

    Its stdout and stderr go to one file, ``output``.
    """

    def __init__(self, args: list[str], config: Path, cwd: Path) -> None:
        self.config = config
        self.output_path = cwd / f"stderr-{time.monotonic_ns()}.txt"
        self._output = self.output_path.open("w")
        self.proc = subprocess.Popen([*GAPBRIDGE, *args], env=env_for(config), cwd=cwd, stdout=self._output,
                                     stderr=self._output, start_new_session=True)

    def signal_group(self, signum: int) -> float:
        os.killpg(self.proc.pid, signum)
        return time.monotonic()

    def wait(self, timeout: float = STOP_BOUND) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"did not exit within {timeout} s after the signal:\n{self.output}") from None

    @property
    def output(self) -> str:
        self._output.flush()
        return self.output_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self._output.close()


def count(app: Any, model: Any, *where: Any) -> int:
    with app.app_context():
        db.session.remove()
        return int(db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0)


needs_fork = pytest.mark.skipif(not worker_process_available(), reason="the fetch worker process needs fork (Linux)")


@pytest.mark.parametrize(("signum", "worker_process"), [
    pytest.param(signal.SIGTERM, "always", marks=needs_fork, id="sigterm-fetch-worker"),
    pytest.param(signal.SIGINT, "always", marks=needs_fork, id="ctrl-c-fetch-worker"),
    pytest.param(signal.SIGTERM, "never", id="sigterm-fetch-thread"),
])
def test_a_signal_during_a_sync_stops_after_the_page_exits_0_and_the_next_run_resumes(
        app_factory: Any, _migrated: str, tmp_path: Path, signum: int, worker_process: str) -> None:
    size = 240
    app = app_factory()
    with DemoITSM(tmp_path / "itsm.sqlite", size=size) as itsm:
        itsm.delay = 0.1  # slow pages, so the signal lands mid-sync
        config = write_config(tmp_path, _migrated, itsm, sync={"write_back_after_sync": False, "worker_process": worker_process})
        sync = Command(["sync"], config, tmp_path)
        try:
            assert wait_until(lambda: count(app, Incident) >= 50), sync.output
            processes = processes_with_env(f"GAPBRIDGE_CONFIG={config}")
            sent = sync.signal_group(signum)  # the whole group: a fetch worker gets it too, and must leave the stop to its parent
            status = sync.wait()
            took = time.monotonic() - sent
            output = sync.output
        finally:
            sync.close()
        assert status == 0, output
        assert took < STOP_BOUND
        name = signal.Signals(signum).name
        assert f"gapbridge: {name}: stopping after the current page" in output
        assert "stopped as asked: what was stored is kept; the next run resumes from the last bookmark" in output
        assert "Traceback" not in output and "admin" not in output
        if worker_process == "always":
            assert len(processes) == 2  # the sync and its fetch worker
        assert wait_until(lambda: not processes_with_env(f"GAPBRIDGE_CONFIG={config}"), 10), "a process outlived the stop"

        with app.app_context():
            db.session.remove()
            [run] = db.session.scalars(sa.select(SyncRun)).all()
            stored = db.session.scalar(sa.select(sa.func.count()).select_from(Incident))
            assert run.status == "stopped" and run.error is None and run.finished_at is not None
            assert run.stored == stored and 50 <= stored < size, "the stop did not land mid-sync"
            bookmark = db.session.get(SyncBookmark, "demo").value
            assert bookmark == run.bookmark_after  # the last page stored, and its bookmark, committed together
            last = db.session.scalars(sa.select(Incident).order_by(Incident.updated_at.desc(), Incident.external_id.desc())).first()
            assert bookmark["sys_id"] == last.external_id
            assert db.session.get(Lease, "sync:demo") is None  # released: the next run need not wait

        itsm.delay = 0
        rerun = subprocess.run([*GAPBRIDGE, "sync"], env=env_for(config), cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
    with app.app_context():
        db.session.remove()
        ids = db.session.scalars(sa.select(Incident.external_id)).all()
        assert len(ids) == len(set(ids)) == size  # none lost, none twice
        runs = db.session.scalars(sa.select(SyncRun).order_by(SyncRun.id)).all()
        assert [r.status for r in runs] == ["stopped", "succeeded"]
        assert runs[1].bookmark_before == runs[0].bookmark_after  # resumed where the stop left off
        assert runs[0].stored + runs[1].stored >= size  # (the record at the bookmark may be read again: an upsert, not a copy)


def _signalled(report: Any, signals: int, grace: float) -> None:
    """In a forked child: under on_signals, signal itself ``signals`` times, then never stop by itself."""
    with shutdown.on_signals(report.send, "stopping soon", grace=grace):
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs between two signals (Python folds two pending ones into one call)
        report.send(f"requested: {shutdown.requested()}")
        time.sleep(60)  # a job that does not stop: only the grace (or a second signal) ends this process


def _run_signalled(signals: int, grace: float) -> tuple[int | None, list[Any]]:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    receive, report = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_signalled, args=(report, signals, grace))
    child.start()
    report.close()
    sent: list[Any] = []
    while receive.poll(WITHIN):
        try:
            sent.append(receive.recv())
        except EOFError:
            break
    child.join(WITHIN)
    if child.is_alive():
        child.kill()
    return child.exitcode, sent


@pytest.mark.skipif(not worker_process_available(), reason="forks a child to signal (Linux)")
def test_the_first_signal_asks_for_a_stop_and_a_second_exits_at_once() -> None:
    status, said = _run_signalled(2, grace=60)
    assert status == 128 + signal.SIGTERM
    assert said == ["SIGTERM: stopping soon (a second signal exits at once)",  # the first only asks
                    "SIGTERM again: exiting at once (the next run resumes from the last bookmark)"]


@pytest.mark.skipif(not worker_process_available(), reason="forks a child to signal (Linux)")
def test_a_stop_that_takes_longer_than_the_grace_exits_at_once() -> None:
    status, said = _run_signalled(1, grace=0.5)
    assert status == 1
    assert said == ["SIGTERM: stopping soon (a second signal exits at once)", "requested: True",
                    "the stop took longer than 0.5 s: exiting at once (the next run resumes from the last bookmark)"]


def test_sigterm_during_a_write_back_loses_no_note_exits_0_and_the_next_run_writes_the_rest(app_factory: Any, _migrated: str,
                                                                                           tmp_path: Path) -> None:
    app = app_factory()
    with DemoITSM(tmp_path / "itsm.sqlite", size=120) as itsm:
        config = write_config(tmp_path, _migrated, itsm, sync={"write_back_after_sync": False})
        synced = subprocess.run([*GAPBRIDGE, "sync"], env=env_for(config), cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert synced.returncode == 0, synced.stderr
        itsm.delay = 0.1  # slow writes, so the signal lands mid-drain
        writeback = Command(["writeback"], config, tmp_path)
        try:
            assert wait_until(lambda: count(app, OutboxItem, OutboxItem.status == "sent") >= 5), writeback.output
            sent_signal = writeback.signal_group(signal.SIGTERM)
            status = writeback.wait()
            took = time.monotonic() - sent_signal
            output = writeback.output
        finally:
            writeback.close()
        assert status == 0 and took < STOP_BOUND, output
        assert "gapbridge: SIGTERM: stopping after the note being written" in output and "Traceback" not in output
        queued, sent = count(app, OutboxItem), count(app, OutboxItem, OutboxItem.status == "sent")
        assert 5 <= sent < queued, "the stop did not land mid-drain"
        assert count(app, OutboxItem, OutboxItem.status == "pending") == queued - sent  # nothing failed, nothing lost
        itsm.delay = 0
        rerun = subprocess.run([*GAPBRIDGE, "writeback"], env=env_for(config), cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        with app.app_context():
            db.session.remove()
            items = db.session.scalars(sa.select(OutboxItem)).all()
            assert {i.status for i in items} == {"sent"}, [(i.external_id, i.status, i.last_error) for i in items]
            for item in items:  # every note reached its ticket, once
                assert len(itsm.journal(item.external_id)) == 1, item.external_id
                assert itsm.record(item.external_id)["u_gapbridge_fingerprint"] == item.fingerprint


def test_worker_runs_the_jobs_and_stops_on_sigterm_with_exit_0(app_factory: Any, _migrated: str, tmp_path: Path) -> None:
    app = app_factory()
    with DemoITSM(tmp_path / "itsm.sqlite", size=60) as itsm:
        config = write_config(tmp_path, _migrated, itsm, schedule={"tick_seconds": 1})
        worker = Command(["worker"], config, tmp_path)
        try:
            def done(name: str) -> bool:
                with app.app_context():
                    db.session.remove()
                    row = db.session.get(ScheduledJob, name)
                    return row is not None and row.last_outcome == "succeeded"

            for name in ("sync:demo", "writeback", "reassess", "risk-expiry", "audit-verify"):
                assert wait_until(lambda name=name: done(name)), f"{name} never ran:\n{worker.output}"
            sent = worker.signal_group(signal.SIGTERM)
            status = worker.wait()
            took = time.monotonic() - sent
            output = worker.output
        finally:
            worker.close()
        assert status == 0 and took < STOP_BOUND, output
        assert "gapbridge worker: SIGTERM: stopping after the job under way" in output
        assert "gapbridge worker: stopped" in output and "Traceback" not in output
        assert "job sync:demo succeeded" in output  # each job's run is logged
    assert count(app, Incident) == 60
    assert count(app, OutboxItem, OutboxItem.status == "sent") > 0  # the write-back job wrote what the sync found
    assert count(app, Lease) == 0  # every lease released
    assert count(app, ScheduledJob, ScheduledJob.holder.is_not(None)) == 0


def test_serve_runs_the_schedule_in_process_and_stops_on_sigterm(app_factory: Any, _migrated: str, tmp_path: Path) -> None:
    app = app_factory()
    with DemoITSM(tmp_path / "itsm.sqlite", size=30) as itsm:
        config = write_config(tmp_path, _migrated, itsm, schedule={"tick_seconds": 1})
        serve = Command(["serve", "--port", "0"], config, tmp_path)
        try:
            assert wait_until(lambda: count(app, ScheduledJob, ScheduledJob.name == "sync:demo",
                                            ScheduledJob.last_outcome == "succeeded") == 1), serve.output
            sent = serve.signal_group(signal.SIGTERM)
            status = serve.wait()
            took = time.monotonic() - sent
            output = serve.output
        finally:
            serve.close()
        assert status == 0 and took < STOP_BOUND, output
        assert "Schedule in this process: sync:demo every 5 min" in output and "GapBridge stopped" in output
    assert count(app, Incident) == 30


def test_serve_with_no_schedule_runs_no_job(app_factory: Any, _migrated: str, tmp_path: Path) -> None:
    app = app_factory()
    with DemoITSM(tmp_path / "itsm.sqlite", size=5) as itsm:
        config = write_config(tmp_path, _migrated, itsm, schedule={"tick_seconds": 1})
        serve = Command(["serve", "--port", "0", "--no-schedule"], config, tmp_path)
        try:
            assert wait_until(lambda: "GapBridge serving on" in serve.output), serve.output
            time.sleep(2.5)  # two ticks' time: a schedule running anyway would have synced by now
            serve.signal_group(signal.SIGTERM)
            status = serve.wait()
            output = serve.output
        finally:
            serve.close()
        assert status == 0, output
        assert "Schedule in this process" not in output
    assert count(app, ScheduledJob) == 0 and count(app, Incident) == 0


def test_the_demo_re_syncs_through_the_scheduler_and_stops_on_sigterm(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GAPBRIDGE_DATABASE_URL", "GAPBRIDGE_CONFIG")}
    output_path = tmp_path / "demo.txt"
    with output_path.open("w") as output:
        proc = subprocess.Popen([*GAPBRIDGE, "demo", "--size", "20", "--port", "0", "--interval", "5", "--workdir", str(workdir)],
                                env={**env, "PYTHONPATH": str(REPO)}, cwd=tmp_path, stdout=output, stderr=output, start_new_session=True)
    engine = sa.create_engine(f"sqlite:///{workdir / 'gapbridge-demo.db'}")
    try:
        def synced_by_schedule() -> bool:
            if "GapBridge serving on" not in output_path.read_text():
                return False
            with engine.connect() as conn:  # the first pass ran before serving; the schedule's comes an --interval later
                return conn.execute(sa.text("SELECT count(*) FROM scheduled_jobs WHERE name = 'sync:demo' "
                                            "AND last_outcome = 'succeeded'")).scalar() == 1
        assert wait_until(synced_by_schedule), output_path.read_text()
        os.killpg(proc.pid, signal.SIGTERM)
        status = proc.wait(STOP_BOUND)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        engine.dispose()
    text = output_path.read_text()
    assert status == 0, text
    assert "job sync:demo succeeded" in text and "GapBridge stopped" in text and "Traceback" not in text
