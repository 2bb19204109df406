"""The pipeline commands: sync, assess, write back, report, serve, the database, and the demo."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from flask import Flask

from connectors.base import ConnectorError, FatalConnectorError, redacted_traceback

from ..config import ConfigError, load_config
from ..state import gapbridge
from . import RUNTIME_ERROR, Context, fail, log, main, migrate_db

# 0 lets the system pick a free port; an int beyond 65535 would wrap around (70000 binds 4464)
PORT = click.IntRange(0, 65535)


def _progress(label: str) -> Callable[[Any, int | None], None]:
    tty = sys.stderr.isatty()
    last = [0.0]

    def show(summary: Any, total: int | None) -> None:
        now = time.monotonic()
        if not tty and now - last[0] < 5:
            return
        last[0] = now
        of = f"/{total}" if total else ""
        text = f"{label}: {summary.fetched}{of} fetched, {summary.stored} stored, {summary.rejected} rejected (page {summary.pages})"
        click.echo(("\r" + text) if tty else text, err=True, nl=not tty)
    return show


def run_sync(app: Flask, sources: list[str] | None = None, *, full: bool = False, write_back: bool | None = None,
             quiet: bool = False) -> int:
    """Sync, assess and (unless switched off) write back; returns the exit status."""
    from ..services.assess import assess
    from ..services.risk import expire_due
    from ..services.sync import SyncBusyError, sync_source

    status = 0
    with app.app_context():
        state = gapbridge(app)
        names = sources or list(state.config["connectors"])
        if not names:
            fail("no connector is configured (add one under connectors: in the configuration file)")
        for name in names:
            try:
                connector = state.connector(name)
            except ConfigError as exc:
                fail(str(exc))
            try:
                s = sync_source(connector, full=full, lease_seconds=state.config["sync"]["lease_seconds"],
                                progress=None if quiet else _progress(name), ruleset=state.ruleset,
                                worker_process=state.config["sync"]["worker_process"])
            except SyncBusyError as exc:
                click.echo(f"gapbridge: {exc}", err=True)
                status = 1
                continue
            except ConnectorError as exc:
                kind = "fatal" if isinstance(exc, FatalConnectorError) else "gave up after retries"
                click.echo(f"\ngapbridge: sync of {name!r} failed ({kind}): {exc}\n"
                           "  Stored pages are kept; the next run resumes from the last bookmark.", err=True)
                status = 1
                continue
            finally:
                connector.close()
            if not quiet:
                click.echo(("\n" if sys.stderr.isatty() else "") + f"{name}: {s.fetched} fetched in {s.pages} pages, "
                           f"{s.stored} stored ({s.changed} new or changed), {s.rejected} rejected, {s.assessed} assessed "
                           f"({s.opened} gaps opened, {s.closed} closed)", err=True)
                for ext, reason in s.rejections[:10]:
                    click.echo(f"  rejected {ext}: {reason}", err=True)
        a = assess(state.ruleset, time_sensitive_minutes=state.config["mappings"]["time_sensitive_interval_minutes"])
        if not quiet:
            click.echo(f"re-assessed {a.assessed} more incidents (open ones whose clocks run, or checks across incidents): "
                       f"{a.opened} gaps opened, {a.closed} closed", err=True)
        # recorded before the write-back, whose plan then tells the tickets concerned that their gaps count again
        expired = expire_due()
        if expired and not quiet:
            click.echo(f"risk acceptances expired: {len(expired)} (their gaps count again)", err=True)
        if write_back if write_back is not None else state.config["sync"]["write_back_after_sync"]:
            status = max(status, run_writeback(app, names, quiet=quiet))
    return status


def run_writeback(app: Flask, sources: list[str] | None = None, *, retry_failed: bool = False, quiet: bool = False) -> int:
    from ..services.enrich import drain, plan

    with app.app_context():
        state = gapbridge(app)
        names = sources or list(state.config["connectors"])
        p = plan(state.ruleset)
        connectors = {n: state.connector(n) for n in names}
        ob = state.config["outbox"]
        try:
            d = drain(connectors, max_attempts=ob["max_attempts"], backoff_base=ob["backoff_base_seconds"],
                      backoff_cap=ob["backoff_max_seconds"], batch_size=ob["batch_size"], retry_failed=retry_failed)
        finally:
            for c in connectors.values():
                c.close()
        if not quiet:
            click.echo(f"write-back: {p.queued} queued, {d.written} written, {d.already_current} already current, "
                       f"{d.dry_run} dry-run, {d.retrying} waiting to retry, {d.failed} failed", err=True)
            for err in d.errors[:10]:
                click.echo(f"  {err}", err=True)
        return 1 if d.failed or d.retrying else 0


@main.command()
@click.option("--source", "sources", multiple=True, help="Connector to sync (default: all configured).")
@click.option("--full", is_flag=True, help="Re-sync everything, ignoring the bookmark.")
@click.option("--no-writeback", is_flag=True, help="Do not write enrichments back after the sync.")
@click.pass_obj
def sync(obj: Context, sources: tuple[str, ...], full: bool, no_writeback: bool) -> None:
    """Fetch what changed since the last run, assess it and write gaps back."""
    app = obj.app()
    migrate_db(app)
    sys.exit(run_sync(app, list(sources) or None, full=full, write_back=False if no_writeback else None))


@main.command()
@click.option("--all", "everything", is_flag=True, help="Re-assess every incident, not only stale ones.")
@click.pass_obj
def assess(obj: Context, everything: bool) -> None:
    """Evaluate stale incidents against the loaded mappings."""
    from ..services.assess import assess as run_assess

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        state = gapbridge(app)
        a = run_assess(state.ruleset, everything=everything,
                       time_sensitive_minutes=state.config["mappings"]["time_sensitive_interval_minutes"])
        click.echo(f"assessed {a.assessed} incidents under ruleset {a.ruleset}: "
                   + ", ".join(f"{k} {v}" for k, v in sorted(a.statuses.items()))
                   + f"; {a.opened} gaps opened, {a.closed} closed")


@main.command()
@click.option("--retry-failed", is_flag=True, help="Send items that failed for good once more.")
@click.pass_obj
def writeback(obj: Context, retry_failed: bool) -> None:
    """Queue changed enrichments and write pending ones onto the tickets."""
    app = obj.app()
    migrate_db(app)
    sys.exit(run_writeback(app, retry_failed=retry_failed))


@main.command()
@click.pass_obj
def report(obj: Context) -> None:
    """Print open gaps by control and by ITIL sub-process."""
    from ..services.report import format_report, gap_report

    app = obj.app()
    migrate_db(app)
    with app.app_context():
        click.echo(format_report(gap_report(gapbridge(app).ruleset)))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=PORT)
@click.pass_obj
def serve(obj: Context, host: str, port: int) -> None:
    """Run the GapBridge web service (for production, run create_app under gunicorn)."""
    app = obj.app()
    migrate_db(app)
    _serve(app, host, port)


def _serve(app: Flask, host: str, port: int) -> None:
    import os
    import socket

    from werkzeug.serving import make_server, select_address_family

    # bound here, not by werkzeug, which prints its own lines and exits when the port is taken
    try:
        listener = socket.create_server((host, port), family=select_address_family(host, port), backlog=128)
    except OSError as exc:  # in use, a privileged port, an address not on this machine
        # os.strerror: create_server's own message repeats the address as a tuple
        fail(f"cannot listen on {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}", code=RUNTIME_ERROR)
    with listener:
        server = make_server(host, port, app, threaded=True, fd=listener.fileno())
    click.echo(f"GapBridge serving on http://{host}:{server.server_port}/healthz (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


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


def demo_config(itsm_url: str, workdir: Path) -> dict[str, Any]:
    """The configuration the demo runs with: the demo ITSM through the real ServiceNow connector."""
    import os

    cfg = load_config(None, env={})
    cfg["instance_path"] = str(workdir)
    cfg["database_url"] = os.environ.get("GAPBRIDGE_DATABASE_URL") or f"sqlite:///{workdir / 'gapbridge-demo.db'}"
    cfg["mappings"]["regulatory"] = ["gdpr", "nis2", "dora"]  # show every check the demo data exercises
    from connectors.servicenow import ServiceNowConnector

    cfg["connectors"] = {"demo": ServiceNowConnector.config_schema().load({
        "type": "servicenow",
        "instance_url": itsm_url,
        "auth": {"method": "basic", "username": "admin", "password": "admin"},
        "table": "incident",
        "page_size": 200,
        "display_value": "all",
        "is_security": {"field": "u_security_incident"},
        "write_back": {
            "work_note": True,
            "fingerprint_field": "u_gapbridge_fingerprint",
            "fields": {"controls_2022": "u_iso27001_controls", "open_gaps": "u_gapbridge_open_gaps"},
        },
    })}
    return cfg


@main.command()
@click.option("--once", is_flag=True, help="Do one pass and exit (for scripts).")
@click.option("--size", default=300, show_default=True, type=click.IntRange(1, 1_000_000), help="Incidents in the demo ITSM.")
@click.option("--workdir", default="instance", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the demo's databases.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=PORT)
@click.option("--interval", default=60, show_default=True, type=click.IntRange(5), help="Seconds between passes while serving.")
@click.pass_obj
def demo(obj: Context, once: bool, size: int, workdir: str, host: str, port: int, interval: int) -> None:
    """Run a demo ITSM, sync and assess it, write gaps back, and serve GapBridge."""
    from demo_itsm import DemoITSM

    from ..services.report import format_report, gap_report

    folder = Path(workdir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    with DemoITSM(folder / "demo-itsm.sqlite", size=size) as itsm:
        click.echo(f"Demo ITSM (ServiceNow Table API) with {size} incidents on {itsm.url}", err=True)
        assert itsm.url is not None  # set once the server started
        app = obj.app(demo_config(itsm.url, folder))
        migrate_db(app)
        status = run_sync(app)
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
        click.echo(f"\nAPI docs: http://{host}:{port}/api/docs\nAuditor token for this demo (valid 24 h):\n  {token}\n"
                   f"  curl -H 'Authorization: Bearer {token}' http://{host}:{port}/api/v1/coverage/controls", err=True)
        stop = threading.Event()

        def scheduler() -> None:
            while not stop.wait(interval):
                try:
                    run_sync(app, quiet=True)
                except Exception as exc:  # keep serving; the next pass tries again
                    log.error("scheduled pass failed: %s", redacted_traceback(exc))
        threading.Thread(target=scheduler, name="gapbridge-scheduler", daemon=True).start()
        try:
            _serve(app, host, port)
        finally:
            stop.set()
