"""``gapbridge status``: per source the last sync, the bookmark's age, the outbox and the open gaps; the scheduled jobs; the schema.

Exit status 0 when all is well, 1 when the schema is behind, the newest finished sync of a source did not
succeed (failed, or abandoned by a process that died) or a scheduled job's last run failed (the audit verify
among them). It reads only: it never migrates.
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta
from typing import Any

import click
import orjson

from connectors.base import redact_urls

from .. import db_schema
from ..models import OUTBOX_STATUSES, utcnow
from ..state import gapbridge
from . import Context, main


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout, for scripts and monitoring.")
@click.pass_obj
def status(obj: Context, as_json: bool) -> None:
    """Show the state of each configured source and of the database schema (exit 1 if something needs attention)."""
    app = obj.app()
    schema = db_schema.check(app)  # a database that cannot be reached is one line, exit 1 (the top group's)
    report = gather(app, schema, utcnow())
    click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() if as_json else format_status(report))
    sys.exit(0 if report["ok"] else 1)


def gather(app: Any, schema: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The status as plain data: what --json prints and the text is made from."""
    from ..queries.status import source_status

    state = gapbridge(app)
    connectors = state.config["connectors"]
    problems: list[str] = []
    if not schema["current"]:
        problems.append(db_schema.behind_message(schema["revision"], schema["head"]))
    sources: list[dict[str, Any]] = []
    with app.app_context():
        # a schema behind may lack tables or columns: the sources are then listed, their numbers unknown
        statuses = source_status(list(connectors), now) if schema["current"] else []
        for s in statuses:
            run = s.last_run
            if s.failing and s.last_finished is not None:
                problems.append(f"the last sync of {s.source!r} {s.last_finished.status} at "
                                f"{_when(s.last_finished.finished_at or s.last_finished.started_at)}"
                                + (f": {redact_urls(s.last_finished.error)}" if s.last_finished.error else ""))
            sources.append({
                "source": s.source, "type": connectors[s.source].get("type"),
                "last_sync": None if run is None else {
                    "id": run.id, "status": run.status, "started_at": run.started_at, "finished_at": run.finished_at,
                    "fetched": run.fetched, "stored": run.stored, "rejected": run.rejected,
                    "error": redact_urls(run.error) if run.error else None},
                "last_success_at": s.last_success_at,
                "bookmark_updated_at": s.bookmark_updated_at,
                "bookmark_age_seconds": _age(now, s.bookmark_updated_at),
                "outbox": s.outbox, "open_gaps": s.open_gaps, "failing": s.failing,
            })
    jobs: list[dict[str, Any]] = []
    if schema["current"]:
        from ..services.scheduler import job_statuses

        with app.app_context():
            for job in job_statuses():
                jobs.append({"name": job.name, "last_outcome": job.last_outcome, "last_finished_at": job.last_finished_at,
                             "next_due_at": job.next_due_at, "running_on": job.holder,
                             "error": redact_urls(job.last_error) if job.last_error else None, "summary": job.last_summary})
                if job.last_outcome == "failed":  # the audit verify finding a tampered log among them
                    problems.append(f"the scheduled job {job.name} failed at {_when(job.last_finished_at or job.next_due_at)}"
                                    + (f": {redact_urls(job.last_summary or job.last_error or '')}" if job.last_summary or job.last_error else ""))
    if not schema["current"]:
        sources = [{"source": name, "type": options.get("type"), "last_sync": None, "last_success_at": None,
                    "bookmark_updated_at": None, "bookmark_age_seconds": None, "outbox": None, "open_gaps": None,
                    "failing": None} for name, options in connectors.items()]
    return {"ok": not problems, "at": now, "schema": schema, "sources": sources, "jobs": jobs, "problems": problems}


def format_status(report: dict[str, Any]) -> str:
    now = report["at"]
    schema = report["schema"]
    lines = [f"GapBridge status at {_when(now)}",
             f"schema: {'current' if schema['current'] else 'BEHIND'} (revision {schema['revision'] or 'none'}"
             + ("" if schema["current"] else f", this GapBridge needs {schema['head']}") + ")"]
    if not report["sources"]:
        lines.append("sources: none configured (add one under connectors: in the configuration file)")
    for s in report["sources"]:
        lines.append(f"source {s['source']} ({s['type']})")
        if s["outbox"] is None:
            lines.append("  unknown until the schema is current")
            continue
        run = s["last_sync"]
        if run is None:
            lines.append("  last sync:  never")
        else:
            took = f", took {_span(run['finished_at'] - run['started_at'])}" if run["finished_at"] else ""
            lines.append(f"  last sync:  {run['status']}, started {_when(run['started_at'])} ({_ago(now, run['started_at'])})"
                         f"{took}: {run['fetched']} fetched, {run['rejected']} rejected")
            if run["status"] != "succeeded" and s["last_success_at"]:
                lines.append(f"  last good:  {_when(s['last_success_at'])} ({_ago(now, s['last_success_at'])})")
        lines.append("  bookmark:   " + (f"moved {_ago(now, s['bookmark_updated_at'])}" if s["bookmark_updated_at"] else "none yet"))
        lines.append("  outbox:     " + ", ".join(f"{s['outbox'].get(st, 0)} {st}" for st in OUTBOX_STATUSES))
        lines.append(f"  open gaps:  {s['open_gaps']}")
    if report["jobs"]:
        lines.append("scheduled jobs")
        width = max(len(j["name"]) for j in report["jobs"])
        for j in report["jobs"]:
            last = (f"{j['last_outcome']} {_ago(now, j['last_finished_at'])}" if j["last_outcome"] and j["last_finished_at"]
                    else "not run yet")
            running = f", running on {j['running_on']}" if j["running_on"] else ""
            lines.append(f"  {j['name']:<{width}}  {last}{running}; next due {_when(j['next_due_at'])}")
    lines.append("all is well" if report["ok"] else "needs attention:")
    lines.extend(f"  {p}" for p in report["problems"])
    return "\n".join(lines)


def _when(at: datetime) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC"


def _age(now: datetime, at: datetime | None) -> float | None:
    return None if at is None else round((now - at).total_seconds(), 1)


def _ago(now: datetime, at: datetime) -> str:
    return f"{_span(now - at)} ago"


def _span(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}" + (f" {seconds % size // 60} min" if unit == "h" and seconds % size >= 60 else "")
    return f"{seconds} s"
