"""``gapbridge status``: per source the last sync, bookmark, outbox and open gaps, the schema; exit 1 when something needs attention."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from connectors.base import ConnectorError
from plugin.cli import main
from plugin.db_schema import head_revision
from plugin.extensions import db
from plugin.models import Finding, OutboxItem
from plugin.services.assess import assess
from plugin.services.enrich import plan
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .fakes import FakeConnector
from .test_api import varied_tool

# the developer's own configuration and database never reach these runs
ENV = {"GAPBRIDGE_CONFIG": None, "DATABASE_URL": None, "GAPBRIDGE_DATABASE_URL": None}
SECRET = "pw-status-77aa"


def write_config(tmp_path: Path, url: str, sources: tuple[str, ...] = ("prod",)) -> Path:
    config = tmp_path / "config.yaml"
    connectors = "".join(f"  {name}:\n    type: servicenow\n    instance_url: https://{name}.service-now.com\n"
                         f"    auth: {{method: basic, username: integration, password: {SECRET}}}\n" for name in sources)
    config.write_text(f"database_url: {url}\ninstance_path: {tmp_path / 'instance'}\nconnectors:\n{connectors}")
    return config


def status(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), "status", *args], env=ENV)


def synced(app: Any, name: str = "prod", *, fail: bool = False) -> Any:
    """A real sync of a fake tool under the configured source's name, assessed and planned; then, if asked, a failed one."""
    tool = varied_tool(24)
    with app.app_context():
        ruleset = gapbridge(app).ruleset
        sync_source(FakeConnector(tool, name=name), ruleset=ruleset)
        assess(ruleset)
        plan(ruleset)
        if fail:
            tool.crash_after_pages = 0
            tool.touch(next(iter(tool.tickets)))
            with pytest.raises(ConnectorError):
                sync_source(FakeConnector(tool, name=name), ruleset=ruleset)
    return tool


def test_status_after_a_sync_reports_each_source_and_exits_0(app_factory: Any, tmp_path: Path) -> None:
    app = app_factory()
    synced(app)
    with app.app_context():
        depth = Counter(db.session.scalars(sa.select(OutboxItem.status)))
        gaps = sum(1 for f in db.session.scalars(sa.select(Finding)) if f.is_open_gap)
        url = db.engine.url.render_as_string(hide_password=False)
    config = write_config(tmp_path, url, ("prod", "jira"))

    result = status(config, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["problems"] == []
    assert report["schema"] == {"revision": head_revision(), "head": head_revision(), "current": True}
    prod, jira = report["sources"]
    assert prod["source"] == "prod" and prod["type"] == "servicenow"
    assert prod["last_sync"]["status"] == "succeeded" and prod["last_sync"]["fetched"] == 24 and prod["last_sync"]["rejected"] == 0
    assert prod["bookmark_age_seconds"] is not None and prod["bookmark_age_seconds"] >= 0
    assert prod["outbox"] == {"pending": depth["pending"], "sent": 0, "failed": 0, "superseded": 0} and depth["pending"] > 0
    assert prod["open_gaps"] == gaps > 0
    assert jira["last_sync"] is None and jira["open_gaps"] == 0 and jira["failing"] is False  # configured, never synced
    assert SECRET not in result.output

    text = status(config)
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[1] == f"schema: current (revision {head_revision()})"
    assert "source prod (servicenow)" in lines and "all is well" == lines[-1]
    assert any(line.startswith("  last sync:  succeeded, started ") and line.endswith(": 24 fetched, 0 rejected") for line in lines)
    assert f"  open gaps:  {gaps}" in lines
    assert f"  outbox:     {depth['pending']} pending, 0 sent, 0 failed, 0 superseded" in lines


def test_a_failed_last_sync_exits_1_and_says_why(app_factory: Any, tmp_path: Path) -> None:
    app = app_factory()
    synced(app, fail=True)
    with app.app_context():
        url = db.engine.url.render_as_string(hide_password=False)
    result = status(write_config(tmp_path, url), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    (prod,) = report["sources"]
    assert report["ok"] is False and prod["failing"] is True and prod["last_sync"]["status"] == "failed"
    assert prod["last_success_at"] is not None  # the sync before it went through
    assert len(report["problems"]) == 1 and report["problems"][0].startswith("the last sync of 'prod' failed at ")
    assert "simulated crash" in report["problems"][0]

    text = status(write_config(tmp_path, url))
    assert text.exit_code == 1
    assert text.stdout.splitlines()[-2:] == ["needs attention:", "  " + report["problems"][0]]


def test_status_on_a_database_never_migrated_reports_it_behind_and_does_not_migrate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = status(write_config(tmp_path, url), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["schema"] == {"revision": None, "head": head_revision(), "current": False}
    assert report["problems"] == ["the database schema is at revision (none: empty database), this GapBridge needs "
                                  f"{head_revision()}: run `gapbridge db upgrade`"]
    assert report["sources"][0]["source"] == "prod" and report["sources"][0]["outbox"] is None
    engine = sa.create_engine(url)
    try:
        assert sa.inspect(engine).get_table_names() == []  # status reads, never migrates
    finally:
        engine.dispose()
    text = status(write_config(tmp_path, url))
    assert text.exit_code == 1 and f"schema: BEHIND (revision none, this GapBridge needs {head_revision()})" in text.stdout


def test_a_database_that_cannot_be_reached_is_one_line(tmp_path: Path) -> None:
    result = status(write_config(tmp_path, f"sqlite:///{tmp_path / 'no-such-folder' / 'gb.db'}"))
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("gapbridge: cannot use the database: unable to open database file") and "no-such-folder" in line


def test_a_failed_scheduled_job_such_as_a_tampered_audit_log_exits_1(app_factory: Any, tmp_path: Path) -> None:
    from plugin.models import ScheduledJob, utcnow

    app = app_factory()
    now = utcnow()
    with app.app_context():
        db.session.add_all([
            ScheduledJob(name="audit-verify", next_due_at=now, last_started_at=now, last_finished_at=now, last_outcome="failed",
                         last_summary="audit log tampered (run `gapbridge audit verify` for every problem)"),
            ScheduledJob(name="writeback", next_due_at=now, last_finished_at=now, last_outcome="succeeded"),
        ])
        db.session.commit()
        url = db.engine.url.render_as_string(hide_password=False)
    config = write_config(tmp_path, url)
    result = status(config, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [(j["name"], j["last_outcome"]) for j in report["jobs"]] == [("audit-verify", "failed"), ("writeback", "succeeded")]
    (problem,) = report["problems"]
    assert problem.startswith("the scheduled job audit-verify failed at ") and problem.endswith("audit log tampered "
                                                                                                  "(run `gapbridge audit verify` for every problem)")
    text = status(config).stdout.splitlines()
    assert "scheduled jobs" in text and any(line.startswith("  audit-verify  failed ") for line in text)
