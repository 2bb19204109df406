"""Prometheus metrics: what the database knows is read at scrape time, what only a process sees is observed as it happens.

Counts from sync_runs, the outbox and the findings come from the database when Prometheus scrapes
(``DatabaseCollector``), so they are right whichever process or instance answers and survive restarts.
What no table records (the time of one write-back request and the HTTP status it got, how long a
sync took) is observed by the code doing it, through ``observe_writeback`` and ``observe_sync``.

Under gunicorn every worker is a process of its own: set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder
(emptied before each start) and the observations of every worker land there, summed at each scrape.
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import sqlalchemy as sa
from flask import Flask
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from .db_schema import StartupError, schema_status
from .extensions import db
from .models import OUTBOX_STATUSES, utcnow
from .state import gapbridge

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# a write-back that got one of these is done; anything else counts as an error (by the HTTP status the tool sent)
WRITEBACK_DONE = frozenset({"written", "already_current", "dry_run"})
RUN_OUTCOMES = ("succeeded", "failed", "abandoned")

# the metrics of this process; in multiprocess mode their values live in the folder's files instead
PROCESS = CollectorRegistry(auto_describe=True)
WRITEBACK_SECONDS = Histogram(
    "gapbridge_writeback_request_seconds", "Time of one write-back to a ticket, the tool's answers included, by outcome",
    ["source", "outcome"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=PROCESS)
WRITEBACK_ERRORS = Counter(
    "gapbridge_writeback_errors", "Write-backs that did not succeed, by the HTTP status of the tool's answer (none: no answer)",
    ["source", "status"], registry=PROCESS)
SYNC_SECONDS = Histogram(
    "gapbridge_sync_duration_seconds", "Time of one sync of a source, by outcome",
    ["source", "outcome"], buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 7200, 14400), registry=PROCESS)


def observe_writeback(source: str, outcome: str, seconds: float, status: int | None = None) -> None:
    """One write-back of a note to a ticket: its outcome (written, already_current, dry_run, retrying, failed, refused, ...),
    how long it took, and the HTTP status of the tool's answer when it failed (None: no answer, such as a timeout)."""
    WRITEBACK_SECONDS.labels(source, outcome).observe(max(0.0, seconds))
    if outcome not in WRITEBACK_DONE:
        WRITEBACK_ERRORS.labels(source, str(status) if status is not None else "none").inc()


def observe_sync(source: str, outcome: str, seconds: float) -> None:
    """One sync of a source ended (succeeded, failed, abandoned) after ``seconds``.

    Its records fetched and rejected are not counted here: sync_runs holds them, page by page, and
    the scrape reads them from there (right across processes, and while a sync still runs).
    """
    SYNC_SECONDS.labels(source, outcome).observe(max(0.0, seconds))


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def check_multiprocess_dir() -> None:
    """A multiprocess folder that cannot be used would fail the first observation, deep in a sync: say so at start."""
    folder = multiprocess_dir()
    if folder is None:
        return
    if not os.path.isdir(folder):
        raise StartupError(f"{MULTIPROC_ENV}: {folder} is not a folder (create it, empty, before starting GapBridge)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StartupError(f"{MULTIPROC_ENV}: the folder {folder} cannot be written")


def _version() -> str:
    try:
        return importlib.metadata.version("gapbridge")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class DatabaseCollector(Collector):
    """The metrics the database knows, read when Prometheus scrapes (in an app context of ``app``)."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        state = gapbridge(self.app)
        yield InfoMetricFamily("gapbridge_build", "The GapBridge version serving", value={"version": _version()})
        ruleset = _try_ruleset(state)
        if ruleset is not None:
            yield InfoMetricFamily("gapbridge_ruleset", "The ruleset running (a hash of the loaded mappings)",
                                   value={"hash": ruleset.hash, "checks": str(len(ruleset.checks))})
        started = time.perf_counter()
        up = GaugeMetricFamily("gapbridge_database_up", "1 when the database answered this scrape")
        try:
            families = list(self._from_database(list(state.config["connectors"])))
        except sa.exc.SQLAlchemyError:
            db.session.rollback()
            up.add_metric([], 0)
            yield up
            return
        finally:
            db.session.rollback()  # a scrape holds no transaction open
        up.add_metric([], 1)
        yield up
        yield from families
        took = GaugeMetricFamily("gapbridge_metrics_database_seconds", "Time the database reads of this scrape took")
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _from_database(self, configured: list[str]) -> Iterable[Metric]:
        from .queries import status as q

        schema = schema_status(db.session.connection())
        current = GaugeMetricFamily("gapbridge_schema_current", "1 when the database schema is at the revision this code needs")
        current.add_metric([], 1 if schema["current"] else 0)
        yield current
        yield InfoMetricFamily("gapbridge_schema", "The database schema's revision and the one this code needs",
                               value={"revision": schema["revision"] or "none", "head": schema["head"] or "none"})
        if not schema["current"]:
            return  # tables may be missing or short of columns: nothing more to read until `gapbridge db upgrade`
        now = utcnow()

        runs = CounterMetricFamily("gapbridge_sync_runs", "Sync runs that ended, by source and outcome", labels=["source", "outcome"])
        fetched = CounterMetricFamily("gapbridge_sync_records_fetched", "Records fetched from the tool by every sync run",
                                      labels=["source"])
        rejected = CounterMetricFamily("gapbridge_sync_records_rejected", "Records that could not be normalized, by every sync run",
                                       labels=["source"])
        totals = q.run_totals()
        sources = sorted(set(configured) | {s for s, _ in totals})
        for source in sources:
            for outcome in RUN_OUTCOMES:
                runs.add_metric([source, outcome], totals[(source, outcome)].runs if (source, outcome) in totals else 0)
            fetched.add_metric([source], sum(t.fetched for (s, _), t in totals.items() if s == source))
            rejected.add_metric([source], sum(t.rejected for (s, _), t in totals.items() if s == source))
        yield from (runs, fetched, rejected)

        running = GaugeMetricFamily("gapbridge_sync_running", "Sync runs recorded as running (one of a killed process stays until the next sync)",
                                    labels=["source"])
        running_for = GaugeMetricFamily("gapbridge_sync_running_seconds", "Age of the oldest sync run recorded as running",
                                        labels=["source"])
        since = q.running_since()
        for source in sources:
            n, started = since.get(source, (0, None))
            running.add_metric([source], n)
            if started is not None:
                running_for.add_metric([source], (now - started).total_seconds())
        yield from (running, running_for)

        yield _timestamps("gapbridge_sync_last_success_timestamp_seconds", "When the newest successful sync of a source finished",
                          q.last_success())
        yield _timestamps("gapbridge_sync_bookmark_timestamp_seconds", "When a source's bookmark last moved", q.bookmarks())

        depth = GaugeMetricFamily("gapbridge_outbox_items", "Outbox items by source and state", labels=["source", "state"])
        counts = q.outbox_depth()
        for source in sorted(set(sources) | {s for s, _ in counts}):
            for st in OUTBOX_STATUSES:
                depth.add_metric([source, st], counts.get((source, st), 0))
        yield depth
        oldest = GaugeMetricFamily("gapbridge_outbox_oldest_pending_seconds", "Age of the oldest note waiting to be written",
                                   labels=["source"])
        for source, at in sorted(q.oldest_pending().items()):
            oldest.add_metric([source], (now - at).total_seconds())
        yield oldest
        yield _timestamps("gapbridge_writeback_backoff_until_timestamp_seconds",
                          "Until when a tool asked write-back to wait (Retry-After)", q.backoffs())

        gaps = GaugeMetricFamily("gapbridge_open_gaps", "Open gaps (failed gaps no accepted risk covers) by 2022 control and severity",
                                 labels=["control", "severity"])
        for (control, severity), n in sorted(q.open_gaps_by_control(now).items()):
            gaps.add_metric([control, severity], n)
        yield gaps

        from .services.scheduler import job_statuses

        failing = GaugeMetricFamily("gapbridge_job_failing", "1 when a scheduled job's last run failed (a tampered audit log among them)",
                                    labels=["job"])
        due = GaugeMetricFamily("gapbridge_job_next_due_timestamp_seconds", "When a scheduled job is next due (long past: no worker runs it)",
                                labels=["job"])
        for job in job_statuses():
            failing.add_metric([job.name], 1 if job.last_outcome == "failed" else 0)
            due.add_metric([job.name], job.next_due_at.timestamp())
        yield from (failing, due)


def _timestamps(name: str, documentation: str, values: dict[str, Any]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["source"])
    for source, at in sorted(values.items()):
        family.add_metric([source], at.timestamp())
    return family


def _try_ruleset(state: Any) -> Any:
    from .rules.yamlsource import MappingErrors

    try:
        return state.ruleset
    except MappingErrors:  # a scrape does not fail on the mappings: /healthz and the logs say what is wrong
        return None


def exposition(app: Flask) -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type (call inside an app context of ``app``)."""
    registry = CollectorRegistry(auto_describe=False)
    folder = multiprocess_dir()
    if folder:
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry, path=folder)  # every process's observations, this one's included
    else:
        registry.register(PROCESS)
    registry.register(DatabaseCollector(app))
    return generate_latest(registry), CONTENT_TYPE_LATEST


# --- the metrics address (metrics.bind) -------------------------------------------------------

LISTENER_KEY = "gapbridge.metrics_listener"  # set in the WSGI environ of a request to the metrics address


class MetricsServer:
    """A listener on ``metrics.bind`` that answers /metrics only, in a thread of its own; ``close()`` stops it."""

    def __init__(self, app: Flask, host: str, port: int) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server, select_address_family

        class Quiet(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass  # a scrape every 15 s would fill the log

        def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
            if environ.get("PATH_INFO") != "/metrics":
                start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
                return [b"this address serves /metrics only\n"]
            environ[LISTENER_KEY] = True
            return app.wsgi_app(environ, start_response)

        # bound here, not by werkzeug, which prints its own lines and exits when the port is taken
        try:
            listener = socket.create_server((host, port), family=select_address_family(host, port), backlog=64)
        except OSError as exc:  # in use, a privileged port, not an address of this machine
            raise StartupError(f"metrics.bind: cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}") from None
        with listener:
            self.server = make_server(host, port, wsgi, threaded=True, request_handler=Quiet, fd=listener.fileno())
        self.host, self.port = host, int(self.server.port)
        self._thread = threading.Thread(target=self.server.serve_forever, name="gapbridge-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


def start_metrics_server(app: Flask) -> MetricsServer | None:
    """Start the listener on ``metrics.bind`` if one is configured (``gapbridge serve`` and ``gapbridge worker`` do)."""
    options = gapbridge(app).config.get("metrics") or {}
    if not options.get("enabled", True) or not options.get("bind"):
        return None
    host, _, port = options["bind"].rpartition(":")
    return MetricsServer(app, host.strip("[]"), int(port))
