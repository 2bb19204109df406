"""The pipeline commands: sync, assess, write back, report, serve, the database, and the demo."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask

from ..config import ConfigError, demo_config
from ..state import gapbridge
from . import RUNTIME_ERROR, Context, fail, log, main, migrate_db

# 0 lets the system pick a free port; an int beyond 65535 would wrap around (70000 binds 4464)
PORT = click.IntRange(0, 65535)
# what a sync (or a pass) says when a signal stops it, and once it stopped
STOPPING = "stopping after the current page (what is stored stays stored; the next run resumes from the last bookmark)"
STOPPED = "stopped as asked: what was stored is kept; the next run resumes from the last bookmark"


def _progress(label: str) -> Callable[[Any, int | None], None]:
    from .progress import sync_progress

    return sync_progress(label)


def run_sync(app: Flask, sources: list[str] | None = None, *, full: bool = False, write_back: bool | None = None,
             quiet: bool = False) -> int:
    """Sync, assess and (unless switched off) write back; returns the exit status."""
    from ..services import pipeline

    def said(synced: pipeline.SourceSync) -> None:
        if synced.busy or synced.error is not None:
            # a tool's failure keeps what was stored; a busy lease is another process at work
            tail = "" if synced.busy else "\n  Stored pages are kept; the next run resumes from the last bookmark."
            click.echo(("" if synced.busy else "\n") + f"gapbridge: {synced.error}{tail}", err=True)
            return
        s = synced.summary
        if s is not None:
            for warning in s.warnings:  # shown even when quiet: the operator must act on it
                click.echo(f"gapbridge: warning: {synced.source}: {warning}", err=True)
        if quiet or s is None:
            return
        click.echo(("\n" if sys.stderr.isatty() else "") + f"{synced.source}: {s.fetched} fetched in {s.pages} pages, "
                   f"{s.stored} stored ({s.changed} new or changed), {s.rejected} rejected, {s.assessed} assessed "
                   f"({s.opened} gaps opened, {s.closed} closed)", err=True)
        for ext, reason in s.rejections[:10]:
            click.echo(f"  rejected {ext}: {reason}", err=True)

    from .progress import writeback_progress

    with app.app_context():
        show, line = writeback_progress()
        try:
            result = pipeline.run_pass(gapbridge(app), sources, full=full, write_back_after=write_back,
                                       progress_for=None if quiet else _progress, on_source=said,
                                       writeback_progress=None if quiet else show)
        except ConfigError as exc:  # no connector, or an unknown one: the operator's to fix
            fail(str(exc))
        finally:
            line.end()
        if result.stopped:
            click.echo(f"gapbridge: {STOPPED}", err=True)
            return 0 if result.ok else 1
        a = result.assessed
        if not quiet and a is not None:
            click.echo(f"re-assessed {a.assessed} more incidents (open ones whose clocks run, or checks across incidents): "
                       f"{a.opened} gaps opened, {a.closed} closed", err=True)
        if result.assess_skipped and not quiet:
            click.echo(result.assess_skipped, err=True)
        if result.expired and not quiet:
            click.echo(f"risk acceptances expired: {result.expired} (their gaps count again)", err=True)
        if result.writeback is not None and not quiet:
            if result.writeback.plan_skipped:
                click.echo(result.writeback.plan_skipped, err=True)
            _say_writeback(result.writeback)
    return 0 if result.ok else 1


def _say_writeback(result: Any) -> None:
    """Counts of every item that was due, the time and rate, what waits (until when, why), and the errors."""
    from .progress import duration

    p, d = result.plan, result.drain
    for source in result.read_only:
        click.echo(f"write-back: {source} is read-only (its connector writes nothing back): skipped", err=True)
    also = "".join(f", {n} {what}" for n, what in ((d.elsewhere, "in hand elsewhere"), (d.taken_over, "taken over from a dead run"))
                   if n)
    click.echo(f"write-back: {p.queued} queued, {d.written} written, {d.already_current} already current, "
               f"{d.dry_run} dry-run, {d.waiting} waiting to retry, {d.failed} failed{also} "
               f"({d.due} due, in {duration(d.seconds)}, {d.rate:.1f}/s)", err=True)
    for source, wait in sorted(d.waiting_by_source.items()):
        until = f", the first again after {wait.until:%Y-%m-%d %H:%M:%S} UTC" if wait.until is not None else ""
        untried = f", {wait.not_attempted} not attempted" if wait.not_attempted else ""
        why = f": {wait.reason}" if wait.reason else ""
        click.echo(f"  {source}: {wait.retrying + wait.not_attempted} waiting ({wait.retrying} to retry{untried}{until}){why}",
                   err=True)
    for err in d.errors[:10]:
        click.echo(f"  {err}", err=True)
    if len(d.errors) > 10:
        click.echo(f"  ... and {len(d.errors) - 10} more", err=True)


def run_writeback(app: Flask, sources: list[str] | None = None, *, retry_failed: bool = False, quiet: bool = False) -> int:
    from ..services import pipeline
    from .progress import writeback_progress

    with app.app_context():
        show, line = writeback_progress()
        try:
            result = pipeline.write_back(gapbridge(app), sources, retry_failed=retry_failed, progress=None if quiet else show)
        except ConfigError as exc:
            fail(str(exc))
        finally:
            line.end()
        if not quiet:
            if result.plan_skipped:
                click.echo(result.plan_skipped, err=True)
            _say_writeback(result)
        return 0 if result.ok else 1


@main.command()
@click.option("--source", "sources", multiple=True, help="Connector to sync (default: all configured).")
@click.option("--full", is_flag=True, help="Re-sync everything, ignoring the bookmark.")
@click.option("--no-writeback", is_flag=True, help="Do not write enrichments back after the sync.")
@click.pass_obj
def sync(obj: Context, sources: tuple[str, ...], full: bool, no_writeback: bool) -> None:
    """Fetch what changed since the last run, assess it and write gaps back."""
    from ..services import shutdown

    app = obj.app()
    migrate_db(app)
    with shutdown.on_signals(_say_signal, STOPPING):
        status = run_sync(app, list(sources) or None, full=full, write_back=False if no_writeback else None)
    sys.exit(status)


DEMO_USER = "isms"


def _demo_dashboard_user() -> str | None:
    """The demo's ISMS manager, with a new random password each start (printed once); None with the dashboard off."""
    import secrets

    from ..services import users

    if not (gapbridge().config.get("dashboard") or {}).get("enabled", True):
        return None
    password = secrets.token_urlsafe(12)
    if users.find(DEMO_USER) is None:
        users.create(DEMO_USER, "isms_manager", password, "demo")
    else:
        users.set_password(DEMO_USER, password, "demo")
    return password


def _say_signal(text: str) -> None:
    click.echo(("\n" if sys.stderr.isatty() else "") + f"gapbridge: {text}", err=True)  # after a progress line


@main.command()
@click.option("--all", "everything", is_flag=True, help="Re-assess every incident, not only stale ones.")
@click.pass_obj
def assess(obj: Context, everything: bool) -> None:
    """Evaluate stale incidents against the loaded mappings."""
    from ..db.leases import LeaseBusy
    from ..services import pipeline

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        try:
            a = pipeline.reassess(gapbridge(app), everything=everything)
        except LeaseBusy as exc:
            fail(pipeline.busy_step("assessment", exc), code=RUNTIME_ERROR)
        click.echo(f"assessed {a.assessed} incidents under ruleset {a.ruleset}: "
                   + ", ".join(f"{k} {v}" for k, v in sorted(a.statuses.items()))
                   + f"; {a.opened} gaps opened, {a.closed} closed")


@main.command()
@click.option("--retry-failed", is_flag=True, help="Send items that failed for good once more.")
@click.pass_obj
def writeback(obj: Context, retry_failed: bool) -> None:
    """Queue changed enrichments and write pending ones onto the tickets."""
    from ..services import shutdown

    app = obj.app()
    migrate_db(app)
    with shutdown.on_signals(_say_signal, "stopping after the note being written; the next run writes the rest"):
        status = run_writeback(app, retry_failed=retry_failed)
    sys.exit(status)


@main.command()
@click.option("--period", help="2026, 2026-Q3, 2026-09 or 2026-W05 (UTC): the period report of the incidents opened then.")
@click.option("--format", "fmt", help="text (default), csv or pdf.")
@click.option("--out", help="The file to write (required for pdf; text and csv go to stdout without it, or with '-').")
@click.option("--edition", help="ISO/IEC 27001 edition of the heatmap and the controls: 2022 (default) or 2013.")
@click.option("--business-unit", help="Only incidents of this business unit.")
@click.option("--source", help="Only incidents of this source (connector instance).")
@click.option("--severity", help="Only incidents of this severity (critical, high, medium, low).")
@click.option("--record-type", help="Only this record type (event, incident, weakness, request).")
@click.pass_obj
def report(obj: Context, period: str | None, fmt: str | None, out: str | None, edition: str | None, business_unit: str | None,
           source: str | None, severity: str | None, record_type: str | None) -> None:
    """Print open gaps by control and by ITIL sub-process; with any option, the period report (text, CSV or PDF)."""
    from ..services.report import format_report, gap_report

    asked = {"period": period, "fmt": fmt, "out": out, "edition": edition, "business_unit": business_unit, "source": source,
             "severity": severity, "record_type": record_type}
    if all(v is None for v in asked.values()):  # today's summary, as before the period report
        app = obj.app()
        migrate_db(app)
        with app.app_context():
            click.echo(format_report(gap_report(gapbridge(app).ruleset)))
        return
    _period_report(obj, **asked)


def _period_report(obj: Context, *, period: str | None, fmt: str | None, out: str | None, edition: str | None,
                   business_unit: str | None, source: str | None, severity: str | None, record_type: str | None) -> None:
    """Check every option before the database is touched: a bad one is one line naming it, exit 2."""
    from marshmallow import ValidationError

    from connectors.canonical import RECORD_TYPES, SEVERITIES

    from ..models import utcnow
    from ..queries.scope import Scope
    from ..schemas.common import MAX_TEXT, parse_period
    from ..services import period_report as pr

    fmt = fmt or "text"
    if fmt not in pr.FORMATS:
        fail(f"--format {fmt!r}: expected one of {', '.join(pr.FORMATS)}")
    if edition is not None and edition not in ("2022", "2013"):
        fail(f"--edition {edition!r}: expected 2022 or 2013")
    for option, value, allowed in (("--severity", severity, SEVERITIES), ("--record-type", record_type, RECORD_TYPES)):
        if value is not None and value not in allowed:
            fail(f"{option} {value!r}: expected one of {', '.join(allowed)}")
    for option, value in (("--business-unit", business_unit), ("--source", source)):
        if value is not None and not 0 < len(value) <= MAX_TEXT:
            fail(f"{option}: expected 1 to {MAX_TEXT} characters")
    target = None if out in (None, "-") else Path(out)
    if fmt == "pdf" and target is None:
        fail("--out: a PDF is written to a file: give --out FILE (e.g. --out report-2026-Q3.pdf)")
    if target is not None and (target.is_dir() or not (target.parent if str(target.parent) else Path(".")).is_dir()):
        fail(f"--out {out}: " + ("is a folder; give a file name" if target.is_dir() else f"no folder {target.parent}"))
    start = end = label = None
    if period is not None:
        try:
            start, end, label = parse_period(period)
        except ValidationError as exc:
            fail(f"--period {period!r}: {exc.messages[0] if isinstance(exc.messages, list) else exc.messages}")
    scope = Scope(start=start, end=end, business_unit=business_unit, source=source, severity=severity, record_type=record_type,
                  label=label)
    app = obj.app()
    migrate_db(app)
    with app.app_context():
        from ..web.api import _version

        state = gapbridge(app)
        built = pr.build(state.ruleset, scope, utcnow(), edition=edition or "2022", sources=list(state.config["connectors"]),
                         version=_version(), overrides=str(state.overrides_path) if state.overrides_path else None)
        try:
            rendered = pr.RENDERERS[fmt](built)
        except (ImportError, OSError) as exc:
            if fmt != "pdf":
                raise
            # WeasyPrint not installed (ImportError), or the system's pango it loads missing (OSError from cffi)
            fail(f"the pdf format needs WeasyPrint and pango: {exc}", code=RUNTIME_ERROR)
    data = rendered if isinstance(rendered, bytes) else rendered.encode()
    if fmt == "text":
        data += b"\n"
    if target is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    pr.write_atomically(target, [data])
    click.echo(f"wrote {target} ({fmt}, {built.period})", err=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=PORT)
@click.option("--no-schedule", is_flag=True, help="Serve only: run no scheduled job in this process (as with schedule.enabled: false).")
@click.pass_obj
def serve(obj: Context, host: str, port: int, no_schedule: bool) -> None:
    """Run the GapBridge web service and, unless switched off, the schedule (for production: gunicorn and `gapbridge worker`)."""
    from ..services import shutdown
    from ..services.scheduler import Scheduler, describe

    app = obj.app()
    migrate_db(app)
    scheduler = None
    if not no_schedule and gapbridge(app).config["schedule"]["enabled"]:
        scheduler = Scheduler(app)
        click.echo(f"Schedule in this process: {describe(list(scheduler.jobs.values()))} "
                   "(--no-schedule or schedule.enabled: false to switch it off)", err=True)
    from ..metrics import start_metrics_server

    metrics_listener = start_metrics_server(app)
    if metrics_listener is not None:
        click.echo(f"Metrics on {metrics_listener.url} (metrics.bind)", err=True)
    try:
        with shutdown.on_signals(_say_signal, SERVE_STOPPING):
            _serve(app, host, port, scheduler)
    finally:
        if metrics_listener is not None:
            metrics_listener.close()


SERVE_STOPPING = "stopping: no new requests, and the scheduled job under way stops at its next page or note"


def _serve(app: Flask, host: str, port: int, scheduler: Any = None) -> None:
    """Serve until a stop is asked for (``shutdown.request``: the signal handlers), with ``scheduler`` in a thread beside."""
    import os
    import socket

    from werkzeug.serving import make_server, select_address_family

    from ..services import shutdown

    # bound here, not by werkzeug, which prints its own lines and exits when the port is taken
    try:
        listener = socket.create_server((host, port), family=select_address_family(host, port), backlog=128)
    except OSError as exc:  # in use, a privileged port, an address not on this machine
        # os.strerror: create_server's own message repeats the address as a tuple
        fail(f"cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}", code=RUNTIME_ERROR)
    with listener:
        server = make_server(host, port, app, threaded=True, fd=listener.fileno())
        bound = listener.getsockname()[1]  # the port the system chose for --port 0 (a server made on an fd has no server_port)
    click.echo(f"GapBridge serving on http://{host}:{bound}/healthz (Ctrl-C to stop)")
    # the server in a thread, so that this one (where signals arrive) can stop it: shutdown() waits for serve_forever
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="gapbridge-http", daemon=True)
    serving.start()
    if scheduler is not None:
        scheduler.start()
    try:
        while serving.is_alive() and not shutdown.wait(1.0):
            pass
    finally:
        shutdown.request()  # the scheduler too, however this ended
        server.shutdown()
        server.server_close()
        if scheduler is not None and not scheduler.join(shutdown.GRACE_SECONDS):
            log.warning("the scheduled job under way did not stop in time; its next run resumes it")
    click.echo("GapBridge stopped", err=True)


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Context) -> None:
    """Apply pending migrations (under a lock: other instances starting meanwhile wait)."""
    migrate_db(obj.app(), force=True)
    click.echo("database is up to date")


# --- demo


DEMO_SIZE = 300
DEMO_ITSM_DB = "demo-itsm.sqlite"
DEMO_ITSM_PORT = "demo-itsm.port"  # the port the demo ITSM had: ticket links carry it, so a restart keeps it
# the demo Jira's own files: each tool keeps its tickets, and GapBridge's demo database (see demo_config)
DEMO_JIRA_DB, DEMO_JIRA_PORT = "demo-jira.sqlite", "demo-jira.port"


class _RunningRT:
    """The RT the demo syncs with ``--tool rt``: one already running (RT needs Debian's package; the demo starts none).

    One on this machine (loopback) is seeded with the demo incidents first, into the queue of ``demo_itsm.rt_seed``,
    unless that queue holds tickets; any other RT is synced as it is.
    """

    def __init__(self, url: str, size: int, size_given: bool) -> None:
        from demo_itsm import rt_seed

        from ..config import demo_rt_auth

        self.url = url.rstrip("/")
        self.size, self.size_given = size, size_given
        self.auth = demo_rt_auth()
        self.rt = rt_seed.RT(self.url, self.auth, timeout=(10, 30))
        self.queue: Any = None  # the demo queue, once known

    def __enter__(self) -> _RunningRT:
        import requests

        try:
            answer = self.rt.http.get(f"{self.url}/REST/2.0/rt", timeout=10)
        except requests.RequestException:
            answer = None
        if answer is None or answer.status_code != 200:
            said = "no answer" if answer is None else f"HTTP {answer.status_code}"
            fail(f"No Request Tracker 5 answers at {self.url} ({said}). Start one on loopback (Debian: apt-get install "
                 "request-tracker5 rt5-db-sqlite rt5-standalone, then, in a GapBridge checkout, `python -m tests.rt_server "
                 "start`), or point GAPBRIDGE_RT_URL at yours with GAPBRIDGE_RT_USER and GAPBRIDGE_RT_PASSWORD (or "
                 "GAPBRIDGE_RT_TOKEN).")
        self._seed()
        return self

    def __exit__(self, *_: Any) -> None:
        self.rt.close()

    def _seed(self) -> None:
        import contextlib
        import os

        from demo_itsm import rt_seed

        if "GAPBRIDGE_RT_QUERY" in os.environ:
            click.echo("GAPBRIDGE_RT_QUERY is set: the demo syncs the tickets it selects and seeds nothing.", err=True)
            return
        if not rt_seed.is_loopback(self.url):
            with contextlib.suppress(rt_seed.SeedError):  # an account that may not see it: the demo syncs what it may
                self.queue = rt_seed.find_queue(self.rt)
            click.echo(f"{self.url} is not on this machine: the demo seeds only an RT on loopback, and syncs what this "
                       "one holds as it is.", err=True)
            return
        try:
            self.queue = rt_seed.find_queue(self.rt)
            if self.queue is not None and self.queue.tickets:
                if self.size_given and self.queue.tickets != self.size:
                    click.echo(f"The RT queue {rt_seed.DEMO_QUEUE!r} keeps the {self.queue.tickets} tickets it holds (--size "
                               f"{self.size} seeds only an empty queue; a new `python -m tests.rt_server start --dir DIR` "
                               "is an empty RT).", err=True)
                return
            click.echo(f"Seeding the RT at {self.url} with {self.size} demo incidents, in the queue {rt_seed.DEMO_QUEUE!r} "
                       "(RT takes a few tenths of a second a ticket)...", err=True)
            try:
                result = rt_seed.seed(self.url, self.auth, self.size, progress=self._progress)
            finally:
                if sys.stderr.isatty():
                    click.echo("", err=True)  # after the progress line
            click.echo(rt_seed.describe(result), err=True)
            self.queue = rt_seed.find_queue(self.rt)
        except rt_seed.SeedError as exc:
            fail(f"Seeding the RT at {self.url} failed: {exc}", code=RUNTIME_ERROR)

    @property
    def scope(self) -> str:
        from demo_itsm import rt_seed

        return f" in the queue {rt_seed.DEMO_QUEUE!r}" if self.queue is not None else ""

    @staticmethod
    def _progress(text: str) -> None:
        if sys.stderr.isatty():
            click.echo(f"\r  {text}", err=True, nl=False)

    def count(self) -> int:
        import os

        from demo_itsm import rt_seed

        if self.queue is not None:
            return int(self.queue.tickets)
        try:
            return self.rt.count(os.environ.get("GAPBRIDGE_RT_QUERY") or "id > 0")
        except rt_seed.SeedError:
            return 0  # a query RT refuses: the sync says why, naming it


def _demo_itsm(folder: Path, size: int, tool: str = "servicenow", size_given: bool = False) -> Any:
    """The demo ITSM of this folder, on the port it had last time if that is free (else on a new one, said)."""
    if tool == "rt":
        import os

        return _RunningRT(os.environ.get("GAPBRIDGE_RT_URL") or "http://127.0.0.1:8095", size, size_given)
    from demo_itsm import DemoITSM
    from demo_itsm.jira import DemoJira

    port_file = folder / (DEMO_JIRA_PORT if tool == "jira" else DEMO_ITSM_PORT)
    text = port_file.read_text().strip() if port_file.is_file() else ""
    last = int(text) if text.isdigit() and 0 < int(text) < 65536 else 0
    if last and not _port_free("127.0.0.1", last):
        click.echo(f"Port {last} of the demo ITSM is taken now: it moves, and every ticket link with it "
                   "(the next sync re-reads the incidents).", err=True)
        last = 0
    itsm = (DemoJira(folder / DEMO_JIRA_DB, size=size, port=last) if tool == "jira"
            else DemoITSM(folder / DEMO_ITSM_DB, size=size, port=last)).start()
    assert itsm.url is not None
    port_file.write_text(f"{itsm.url.rsplit(':', 1)[1]}\n")
    return itsm


def _port_free(host: str, port: int) -> bool:
    """Checked before werkzeug binds: it exits the process on a port in use."""
    import socket

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug binds: a closed run's TIME_WAIT is no obstacle
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _forget_demo_data(folder: Path) -> None:
    """What --reseed removes: the demo ITSM and the demo's own SQLite database (an external one is left as it is)."""
    import os

    for name in (DEMO_ITSM_DB, DEMO_ITSM_PORT, "gapbridge-demo.db", DEMO_JIRA_DB, DEMO_JIRA_PORT, "gapbridge-demo-jira.db",
                 "gapbridge-demo-rt.db"):
        for suffix in ("", "-wal", "-shm", "-journal"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)
    if os.environ.get("GAPBRIDGE_DATABASE_URL"):
        click.echo("--reseed: GAPBRIDGE_DATABASE_URL is set, so GapBridge's own database keeps what it holds.", err=True)


@main.command()
@click.option("--once", is_flag=True, help="Do one pass and exit (for scripts).")
@click.option("--size", type=click.IntRange(1, 1_000_000), help="Incidents to seed a new demo ITSM with.  [default: 300]")
@click.option("--reseed", is_flag=True, help="Start over: a freshly seeded demo ITSM and an empty demo database.")
@click.option("--workdir", default="instance", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo's databases.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=PORT)
@click.option("--interval", default=60, show_default=True, type=click.IntRange(5), help="Seconds between passes while serving.")
@click.option("--tool", type=click.Choice(["servicenow", "jira", "rt"]), default="servicenow", show_default=True,
              help="Which ITSM the demo stands in for: ServiceNow's Table API, or Jira Cloud; rt: a running Request "
                   "Tracker 5 (GAPBRIDGE_RT_URL, default http://127.0.0.1:8095).")
@click.pass_obj
def demo(obj: Context, once: bool, size: int | None, reseed: bool, workdir: str, host: str, port: int, interval: int,
         tool: str) -> None:
    """Run a demo ITSM, sync and assess it, write gaps back, and serve GapBridge."""
    from ..services import shutdown
    from ..services.report import format_report, gap_report
    from ..services.scheduler import REASSESS, RISK_EXPIRY, WRITEBACK, Scheduler

    folder = Path(workdir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    if reseed:
        _forget_demo_data(folder)
    if reseed and tool == "rt":
        click.echo("--reseed: GapBridge's demo database starts over; the RT keeps its tickets.", err=True)
    with _demo_itsm(folder, size or DEMO_SIZE, tool, size is not None) as itsm:
        held = itsm.count()
        if size is not None and held != size and tool != "rt":  # the RT says its own
            click.echo(f"The demo ITSM in {folder} keeps the {held} incidents it already holds (--size {size} seeds only an "
                       "empty one; add --reseed to start over).", err=True)
        what = {"jira": "Jira Cloud REST API", "rt": "Request Tracker 5 REST2"}.get(tool, "ServiceNow Table API")
        click.echo(f"Demo ITSM ({what}) with {held} incidents{getattr(itsm, 'scope', '')} on {itsm.url}", err=True)
        assert itsm.url is not None  # set once the server started
        cfg = demo_config(itsm.url, folder, tool)
        # the demo's passes come every --interval seconds: its syncs and write-back
        cfg["schedule"].update(sync_interval_seconds=interval, writeback_interval_seconds=interval)
        app = obj.app(cfg)
        migrate_db(app)
        with shutdown.on_signals(_say_signal, STOPPING):
            status = run_sync(app)
            if shutdown.requested():  # it said so
                sys.exit(status)
        with app.app_context():
            click.echo("")
            click.echo(format_report(gap_report(gapbridge(app).ruleset)))
        if once:
            sys.exit(0 if status == 0 else status)
        with app.app_context():
            from datetime import timedelta

            from ..models import utcnow
            from ..services import tokens

            # the demo's own throwaway token, so the API can be tried at once (a real deployment creates its own)
            _, token = tokens.create(f"demo-auditor-{utcnow():%Y%m%d%H%M%S}", "auditor", utcnow() + timedelta(days=1), "demo")
            password = _demo_dashboard_user()
        click.echo(f"\nAPI docs: http://{host}:{port}/api/docs\nAuditor token for this demo (valid 24 h):\n  {token}\n"
                   f"  curl -H 'Authorization: Bearer {token}' http://{host}:{port}/api/v1/coverage/controls", err=True)
        if password is not None:
            click.echo(f"\nDashboard: http://{host}:{port}/dashboard/\n  sign in as {DEMO_USER} (ISMS manager) with the password "
                       f"{password} (new at each start of the demo)", err=True)
        scheduler = Scheduler(app)
        # the pass just done counts as their first run: the next comes an interval on
        scheduler.ran_now([name for name in scheduler.jobs if name.startswith("sync:")] + [WRITEBACK, REASSESS, RISK_EXPIRY])
        with shutdown.on_signals(_say_signal, SERVE_STOPPING):
            _serve(app, host, port, scheduler)
