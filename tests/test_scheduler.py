"""The schedule: each job runs once across instances sharing a database, a killed instance's job is taken over,
and the assessment pass and the outbox plan run one at a time across processes."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from demo_itsm import DemoITSM
from plugin.cli import main
from plugin.config import ConfigError, load_config
from plugin.db.leases import LeaseBusy, acquire_lease, worker_id
from plugin.extensions import db
from plugin.models import AuditEvent, Incident, Lease, ScheduledJob, SyncRun
from plugin.services import audit, pipeline, shutdown
from plugin.services import scheduler as scheduler_module
from plugin.services.scheduler import FAILED, SKIPPED, STOPPED, SUCCEEDED, Job, JobResult, Scheduler
from plugin.state import gapbridge

from .gapbridge_procs import env_for, write_config

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
WITHIN = 30.0  # seconds for a subprocess to reach a state; generous for a loaded CI machine


@pytest.fixture(autouse=True)
def _no_stop_left_over() -> Any:
    shutdown.reset()
    yield
    shutdown.reset()


class Clock:
    """A clock the test moves: ticks are driven by it, never by sleeping."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def wait_until(condition: Any, timeout: float = WITHIN) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def job_row(app: Any, name: str) -> ScheduledJob | None:
    with app.app_context():
        db.session.remove()
        row = db.session.get(ScheduledJob, name)
        if row is not None:
            db.session.expunge(row)
        return row


# --- run once across instances ------------------------------------------------------------------


def test_two_instances_run_each_job_exactly_once_per_interval_over_many_ticks(app_factory: Any) -> None:
    """Two apps (each its own engine and pool, as two instances) tick at the same moments, in two threads."""
    runs: list[tuple[str, datetime, str]] = []
    lock = threading.Lock()
    clock = Clock()

    def counting(name: str) -> Any:
        def run(_state: Any, memory: dict[str, Any]) -> JobResult:
            with lock:
                runs.append((name, clock(), threading.current_thread().name))
            time.sleep(0.005)  # widen the window in which the other instance looks at the same job
            return JobResult("counted", memory={"runs": memory.get("runs", 0) + 1})
        return run

    intervals = {"every-30s": 30, "every-60s": 60, "every-150s": 150, "every-10s": 10}
    jobs = [Job(name, seconds, counting(name)) for name, seconds in intervals.items()]
    apps = [app_factory(), app_factory()]
    schedulers = [Scheduler(app, jobs, clock=clock, holder=f"host-{i}:{1000 + i}") for i, app in enumerate(apps)]
    steps, step_seconds = 90, 10
    barrier = threading.Barrier(3)
    failures: list[BaseException] = []

    def instance(s: Scheduler) -> None:
        try:
            for _ in range(steps):
                barrier.wait(timeout=60)  # both tick at the same clock time
                s.tick()
                barrier.wait(timeout=60)  # the clock moves only when both are done
        except BaseException as exc:
            failures.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=instance, args=(s,), name=s.holder) for s in schedulers]
    for t in threads:
        t.start()
    try:
        for _ in range(steps):
            barrier.wait(timeout=60)
            barrier.wait(timeout=60)
            clock.advance(step_seconds)
    except threading.BrokenBarrierError:
        pass  # an instance failed: said below
    for t in threads:
        t.join(60)
    assert not failures, failures

    span = (steps - 1) * step_seconds
    for name, seconds in intervals.items():
        times = [at for n, at, _ in runs if n == name]
        expected = [T0 + timedelta(seconds=k * seconds) for k in range(span // seconds + 1)]
        assert sorted(times) == expected, name  # once per interval, never twice at one time, none missed
        row = job_row(apps[0], name)
        assert row is not None and row.holder is None and row.last_outcome == SUCCEEDED
        assert row.memory == {"runs": len(expected)}
    with apps[0].app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Lease)) == 0  # every job lease released


def test_a_job_that_fails_is_recorded_and_the_schedule_goes_on(app_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gapbridge")  # as a worker logs without -v (which adds the traceback at DEBUG)
    clock = Clock()

    def broken(_state: Any, _memory: dict[str, Any]) -> JobResult:
        raise RuntimeError("the tool said no")

    ran: list[datetime] = []
    jobs = [Job("broken", 60, broken), Job("fine", 60, lambda _s, _m: ran.append(clock()) or JobResult("ok"))]
    app = app_factory()
    s = Scheduler(app, jobs, clock=clock)
    done = {r.name: r for r in s.tick()}
    assert done["broken"].outcome == FAILED and done["broken"].error == "RuntimeError: the tool said no"
    assert done["fine"].outcome == SUCCEEDED and ran == [T0]
    row = job_row(app, "broken")
    assert row is not None and row.last_outcome == FAILED and row.last_error == "RuntimeError: the tool said no"
    assert row.next_due_at == T0 + timedelta(seconds=60)  # tried again when next due, not at every tick
    assert "job broken failed" in caplog.text and "Traceback" not in caplog.text
    assert s.tick() == []  # nothing due
    clock.advance(60)
    assert {r.name for r in s.tick()} == {"broken", "fine"}


def test_a_stopped_job_stays_due_and_the_next_tick_resumes_it(app_factory: Any) -> None:
    clock = Clock()
    outcomes = iter([STOPPED, SUCCEEDED])
    app = app_factory()
    s = Scheduler(app, [Job("long", 300, lambda _s, _m: JobResult("did some", next(outcomes)))], clock=clock)
    assert [r.outcome for r in s.tick()] == [STOPPED]
    clock.advance(1)
    assert [r.outcome for r in s.tick()] == [SUCCEEDED]
    row = job_row(app, "long")
    assert row is not None and row.next_due_at == T0 + timedelta(seconds=301)


def test_a_stop_asked_for_ends_the_tick_between_jobs(app_factory: Any) -> None:
    def first(_state: Any, _memory: dict[str, Any]) -> JobResult:
        shutdown.request()  # as the SIGTERM handler does while this job runs
        return JobResult("done")

    app = app_factory()
    s = Scheduler(app, [Job("a-first", 60, first), Job("b-second", 60, lambda _s, _m: JobResult("never"))], clock=Clock())
    assert [r.name for r in s.tick()] == ["a-first"]
    row = job_row(app, "b-second")
    assert row is not None and row.last_started_at is None and row.next_due_at == T0  # still due for the next instance


# --- taken over ------------------------------------------------------------------------------------


def test_a_job_held_by_an_instance_elsewhere_is_taken_over_once_its_lease_runs_out(app_factory: Any,
                                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The holder is on another host (no process to look for): only the lease's expiry frees the job."""
    app = app_factory()
    ran: list[str] = []
    s = Scheduler(app, [Job("sync:elsewhere", 60, lambda _s, _m: ran.append("ran") or JobResult("ok"))], clock=Clock())
    with app.app_context():
        db.session.add(ScheduledJob(name="sync:elsewhere", next_due_at=T0 - timedelta(seconds=5), holder="other-host:4242",
                                    last_started_at=T0 - timedelta(seconds=5)))
        db.session.commit()
        assert acquire_lease("job:sync:elsewhere", "other-host:4242", 300)
    assert s.tick() == [] and ran == []  # its holder may still be running it
    with app.app_context():
        db.session.execute(sa.update(Lease).where(Lease.name == "job:sync:elsewhere")
                           .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))  # the holder stopped renewing
        db.session.commit()
    [run] = s.tick()
    assert (run.outcome, run.took_over_from, ran) == (SUCCEEDED, "other-host:4242", ["ran"])
    assert "the run of other-host:4242 never finished (killed or crashed): taken over" in caplog.text


GAPBRIDGE = [str(Path(sys.executable).parent / "gapbridge")]


@pytest.mark.slow
def test_a_worker_killed_mid_sync_is_taken_over_by_another_instance_and_nothing_is_lost(app_factory: Any, _migrated: str,
                                                                                        tmp_path: Path) -> None:
    size = 300
    app = app_factory()
    with DemoITSM(tmp_path / "itsm.sqlite", size=size) as itsm:
        itsm.delay = 0.15  # slow pages (3 s to go after the first 40 incidents): the kill lands mid-sync
        config = write_config(tmp_path, _migrated, itsm, schedule={"tick_seconds": 1}, sync={"worker_process": "never"})
        proc = subprocess.Popen([*GAPBRIDGE, "worker"], env=env_for(config), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            def stored() -> int:
                with app.app_context():
                    db.session.remove()
                    return int(db.session.scalar(sa.select(sa.func.count()).select_from(Incident)) or 0)

            assert wait_until(lambda: stored() >= 40), "the worker's sync never got going"
            row = job_row(app, "sync:demo")
            assert row is not None and row.holder is not None and row.holder.endswith(f":{proc.pid}")
            # another instance (this process) ticks meanwhile: the job is held by a live worker, so it is not run twice
            with app.app_context():  # this instance has the worker's configuration
                state = gapbridge(app)
                state.config["connectors"] = load_config(config)["connectors"]
                state.config["sync"] = {**state.config["sync"], "worker_process": "never"}
            other = Scheduler(app, [j for j in scheduler_module.configured_jobs(state) if j.name == "sync:demo"])
            assert other.tick() == []
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
            assert proc.stderr is not None
            proc.stderr.close()
        killed_at = stored()
        assert killed_at < size, "the kill did not land mid-sync"
        itsm.delay = 0
        # the holder is a process of this host that is gone: taken over at once, not after the lease's 300 s
        [run] = [r for r in other.tick() if r.name == "sync:demo"]
        assert run.outcome == SUCCEEDED and run.took_over_from == row.holder
    with app.app_context():
        db.session.remove()
        ids = db.session.scalars(sa.select(Incident.external_id)).all()
        assert len(ids) == len(set(ids)) == size
        runs = db.session.scalars(sa.select(SyncRun).order_by(SyncRun.id)).all()
        assert [r.status for r in runs] == ["abandoned", "succeeded"]
        assert runs[1].bookmark_before == runs[0].bookmark_after  # resumed from the killed run's last page
        assert db.session.get(ScheduledJob, "sync:demo").holder is None


# --- the assessment and plan leases ----------------------------------------------------------------


class HoldingProcess:
    """A forked process that runs ``step`` (reassess or write_back) and holds it inside until told to go on."""

    def __init__(self, app: Any, step: str) -> None:
        ctx = multiprocessing.get_context("fork")
        self.messages, report = ctx.Pipe(duplex=False)
        go_read, self.go = ctx.Pipe(duplex=False)
        self.process = ctx.Process(target=self._main, args=(app, step, report, go_read))
        self.process.start()
        report.close()

    @staticmethod
    def _main(app: Any, step: str, report: Any, go: Any) -> None:
        from .fakes import FakeConnector, FakeTicketing

        with app.app_context():
            db.engine.dispose(close=False)  # the test's connections stay the test's
            state = gapbridge(app)
            state.connector = lambda name: FakeConnector(FakeTicketing(0))  # type: ignore[method-assign]
            state.config["connectors"] = {"fake": {"type": "fake"}}

            def held(*_args: Any, **_kwargs: Any) -> Any:
                report.send(("inside", os.getpid()))
                go.poll(WITHIN)
                from plugin.services.assess import AssessSummary
                from plugin.services.enrich import PlanSummary

                return AssessSummary("held") if step == "reassess" else PlanSummary(queued=7)

            try:
                if step == "reassess":
                    pipeline.assess = held  # type: ignore[attr-defined]
                    pipeline.reassess(state)
                else:
                    pipeline.plan = held  # type: ignore[attr-defined]
                    pipeline.write_back(state)
                report.send(("finished", "ok"))
            except BaseException as exc:
                report.send(("finished", f"{type(exc).__name__}: {exc}"))

    def receive(self, kind: str) -> Any:
        seen = []
        while self.messages.poll(WITHIN):
            try:
                got, value = self.messages.recv()
            except EOFError:
                break
            if got == kind:
                return value
            seen.append((got, value))
        raise AssertionError(f"no {kind!r} from the holding process (exit code {self.process.exitcode}); it sent {seen}")

    def close(self) -> None:
        self.go.send("go")
        self.process.join(WITHIN)
        if self.process.is_alive():
            self.process.kill()


def test_two_processes_never_assess_at_once_the_second_skips_and_says_so(app_factory: Any) -> None:
    from .fakes import FakeConnector, FakeTicketing

    app = app_factory()
    holder = HoldingProcess(app, "reassess")
    try:
        pid = holder.receive("inside")
        host = worker_id().rpartition(":")[0]
        with app.app_context():
            state = gapbridge(app)
            with pytest.raises(LeaseBusy) as busy:
                pipeline.reassess(state)
            assert busy.value.holder == f"{host}:{pid}"
            # a whole pass: its sync runs, its re-assessment is skipped and said so, and the pass is no failure
            tool = FakeTicketing(5)
            state.connector = lambda name: FakeConnector(tool)  # type: ignore[method-assign]
            state.config["connectors"] = {"fake": {"type": "fake"}}
            result = pipeline.run_pass(state, write_back_after=False)
            assert result.synced[0].summary is not None and result.synced[0].summary.stored == 5
            assert result.assessed is None and result.ok
            assert result.assess_skipped is not None and result.assess_skipped.startswith(
                f"re-assessment skipped: another process is at it ({host}:{pid} until ")
    finally:
        holder.close()
    assert holder.receive("finished") == "ok"
    with app.app_context():
        assert db.session.get(Lease, pipeline.ASSESS_LEASE) is None  # released
        assert pipeline.reassess(gapbridge(app)).assessed == 0  # free again (the pass's sync assessed its incidents)


def test_the_assess_command_says_who_is_assessing_when_the_lease_is_held(app_factory: Any, _migrated: str) -> None:
    app = app_factory()
    with app.app_context():
        assert acquire_lease(pipeline.ASSESS_LEASE, "other-host:77", 300)
    result = CliRunner().invoke(main, ["assess"], env={"GAPBRIDGE_CONFIG": None, "GAPBRIDGE_DATABASE_URL": None,
                                                       "DATABASE_URL": _migrated})
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("gapbridge: assessment skipped: another process is at it (other-host:77 until "), result.output


def test_two_processes_never_plan_at_once_the_second_writes_what_is_queued(app_factory: Any) -> None:
    from .fakes import FakeConnector, FakeTicketing

    app = app_factory(connectors={})
    holder = HoldingProcess(app, "writeback")
    try:
        pid = holder.receive("inside")
        with app.app_context():
            state = gapbridge(app)
            tool = FakeTicketing(0)
            state.connector = lambda name: FakeConnector(tool)  # type: ignore[method-assign]
            state.config["connectors"] = {"fake": {"type": "fake"}}
            result = pipeline.write_back(state)
            assert result.plan.queued == 0 and result.plan_skipped is not None
            assert result.plan_skipped.startswith(f"outbox plan skipped: another process is at it ({worker_id().rpartition(':')[0]}:{pid} ")
            assert result.ok  # skipping the plan is no failure
    finally:
        holder.close()
    assert holder.receive("finished") == "ok"
    with app.app_context():
        assert db.session.get(Lease, pipeline.PLAN_LEASE) is None


# --- the audit verify job -------------------------------------------------------------------------


def test_the_audit_verify_job_records_a_tampered_chain_and_keeps_the_head_it_found_intact(app_factory: Any,
                                                                                         caplog: pytest.LogCaptureFixture) -> None:
    from .test_audit_chain import tampering

    clock = Clock()
    app = app_factory()
    s = Scheduler(app, [Job(scheduler_module.AUDIT_VERIFY, 3600, scheduler_module.audit_verify_job)], clock=clock)
    with app.app_context():
        for i in range(3):
            audit.record("test.event", "incident", i)
        db.session.commit()
    [run] = s.tick()
    assert run.outcome == SUCCEEDED and run.summary.startswith("audit log intact: 3 rows, head 3:")
    head = job_row(app, scheduler_module.AUDIT_VERIFY).memory["head"]
    with app.app_context():
        newest = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
        with tampering():  # the newest row removed: the chain left is intact, only the head kept shows it
            db.session.execute(sa.delete(AuditEvent).where(AuditEvent.id == newest.id))
    clock.advance(3600)
    [run] = s.tick()
    assert run.outcome == FAILED and "the audit log has been tampered with: 1 problems in 2 rows" in run.error
    assert "the log ends at seq 2 but reached 3:" in run.error
    assert "job audit-verify failed" in caplog.text
    row = job_row(app, scheduler_module.AUDIT_VERIFY)
    assert row.last_outcome == FAILED and row.memory["head"] == head  # still expected next time
    with app.app_context():
        event = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "audit.verify_failed")).one()
        assert event.details["problems"] == 1 and event.details["expected_head"] == head


# --- configuration and the worker command -----------------------------------------------------------


def test_the_schedule_section_names_the_key_at_fault(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("connectors:\n  sn:\n    type: servicenow\n    instance_url: https://sn.example\n"
                    "    auth: {method: basic, username: a, password: b}\n"
                    "schedule:\n  sync_intervals:\n    jira: 60\n  writeback_interval_seconds: 1\n  every: 5\n")
    with pytest.raises(ConfigError) as bad:
        load_config(path)
    assert str(bad.value).splitlines() == [
        f"{path}:9: schedule.writeback_interval_seconds: Must be greater than or equal to 10.",
        f"{path}:10: schedule.every: unknown key",
    ]
    path.write_text(path.read_text().replace("  writeback_interval_seconds: 1\n  every: 5\n", ""))
    with pytest.raises(ConfigError) as bad:
        load_config(path)
    assert str(bad.value) == f"{path}:8: schedule.sync_intervals.jira: no connector named 'jira' (configured: sn)"


def test_configured_jobs_take_each_sources_interval(app_factory: Any) -> None:
    from plugin.services.scheduler import configured_jobs, describe

    connectors = {name: {"type": "fake"} for name in ("alpha", "beta")}
    app = app_factory(connectors=connectors, schedule={"sync_intervals": {"beta": 120}})
    with app.app_context():
        jobs = configured_jobs(gapbridge(app))
    assert describe(jobs) == ("sync:alpha every 5 min, sync:beta every 2 min, writeback every 1 min, reassess every 5 min, "
                              "risk-expiry every 5 min, audit-verify every 1 h")


def cli(args: list[str], database_url: str, config: Path | None = None) -> Any:
    env = {"GAPBRIDGE_CONFIG": str(config) if config else None, "GAPBRIDGE_DATABASE_URL": None, "DATABASE_URL": database_url}
    return CliRunner().invoke(main, args, env=env)


def test_worker_once_runs_the_due_jobs_and_exits(app_factory: Any, _migrated: str) -> None:
    app = app_factory()
    result = cli(["worker", "--once"], _migrated)
    assert result.exit_code == 0, result.output
    lines = sorted(line.split(":")[0] for line in result.stderr.splitlines() if ": succeeded: " in line)
    assert lines == ["audit-verify", "reassess", "risk-expiry"]  # no connector: no sync, no write-back
    again = cli(["worker", "--once"], _migrated)
    assert again.exit_code == 0 and ": succeeded: " not in again.stderr  # none due again yet
    row = job_row(app, "reassess")
    assert row is not None and row.last_outcome == SUCCEEDED and row.holder is None


def test_worker_refuses_to_start_with_the_schedule_switched_off(_migrated: str, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("schedule:\n  enabled: false\n")
    result = cli(["worker"], _migrated, config)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == ("gapbridge: schedule.enabled is false in the configuration: a worker would have no job to run "
                                     "(set it to true, or do not start workers)")


def test_a_sync_job_whose_source_is_being_synced_by_hand_is_skipped_not_failed(app_factory: Any) -> None:
    from .fakes import FakeConnector, FakeTicketing

    app = app_factory()
    clock = Clock()
    with app.app_context():
        state = gapbridge(app)
        state.connector = lambda name: FakeConnector(FakeTicketing(3))  # type: ignore[method-assign]
        assert acquire_lease("sync:fake", "other-host:9", 300)  # `gapbridge sync` on another machine
    s = Scheduler(app, [Job("sync:fake", 300, scheduler_module.sync_job("fake"))], clock=clock)
    [run] = s.tick()
    assert run.outcome == SKIPPED and run.summary.startswith("skipped: a sync of 'fake' is already running by other-host:9 until ")
    row = job_row(app, "sync:fake")
    assert row is not None and row.last_outcome == SKIPPED and row.next_due_at == T0 + timedelta(seconds=300)
    with app.app_context():
        db.session.execute(sa.delete(Lease))
        db.session.commit()
    clock.advance(300)
    [run] = s.tick()
    assert run.outcome == SUCCEEDED and run.summary.startswith("3 fetched in 1 pages, 3 stored")


def test_a_lease_held_for_a_long_job_is_renewed_while_it_runs_and_released_after(app_factory: Any) -> None:
    from plugin.db.leases import held_lease

    app = app_factory()
    with app.app_context():
        def expires() -> datetime:
            db.session.commit()  # a fresh read
            return db.session.execute(sa.select(Lease.expires_at).where(Lease.name == "job:long")).scalar_one()

        with held_lease("job:long", 3, "host-a:1"):  # renewed every second
            first = expires()
            assert wait_until(lambda: expires() > first), "the lease was not renewed"
            assert not acquire_lease("job:long", "host-b:2", 3)  # still held
        assert db.session.get(Lease, "job:long") is None
