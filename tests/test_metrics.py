"""/metrics: Prometheus' format, the database's own counts after a real sync, a token to read it, no secret in it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from connectors.base import ConnectorError
from plugin import create_app
from plugin.db_schema import StartupError, head_revision
from plugin.extensions import db
from plugin.metrics import observe_sync, observe_writeback, start_metrics_server
from plugin.models import Finding, OutboxItem, SyncRun
from plugin.services.assess import assess
from plugin.services.enrich import plan
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .apiclient import token_for
from .conftest import REPO, make_config
from .fakes import FakeConnector
from .test_api import varied_tool

SECRET = "pw-metrics-3c2b1a"
METRICS_TOKEN = "scrape-token-0123456789abcdef"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def prod_connector() -> dict[str, Any]:
    """A configured ServiceNow instance with a password: it must never show in the metrics."""
    from connectors.servicenow import ServiceNowConnector

    return {"prod": ServiceNowConnector.config_schema().load({
        "type": "servicenow", "instance_url": "https://acme.service-now.com",
        "auth": {"method": "basic", "username": "integration", "password": SECRET}})}


def parse(body: str) -> Samples:
    """Every sample by name and labels; the parser refuses anything that is not Prometheus' text format."""
    out: Samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(app: Flask, token: str | None = None) -> Samples:
    r = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {token or token_for(app)}"})
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.content_type.startswith("text/plain; version=")
    return parse(r.get_data(as_text=True))


def test_the_metrics_are_the_databases_counts_after_a_real_sync(app_factory: Any) -> None:
    app = app_factory(connectors=prod_connector())
    tool = varied_tool(30)
    tool.bad_ids = set(list(tool.tickets)[:3])
    with app.app_context():
        ruleset = gapbridge(app).ruleset
        sync_source(FakeConnector(tool, name="fake"), ruleset=ruleset)
        assess(ruleset)
        plan(ruleset)
        tool.crash_after_pages = 0
        tool.touch(next(iter(tool.tickets)))
        with pytest.raises(ConnectorError):
            sync_source(FakeConnector(tool, name="fake"), ruleset=ruleset)
        # outbox items in each state, as drains leave them
        ids = db.session.scalars(sa.select(OutboxItem.id).order_by(OutboxItem.id)).all()
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.id.in_(ids[:4])).values(status="sent"))
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.id.in_(ids[4:6])).values(status="failed"))
        db.session.commit()
        runs = db.session.execute(sa.select(SyncRun.status, SyncRun.fetched, SyncRun.rejected, SyncRun.finished_at)).all()
        depth = Counter(db.session.execute(sa.select(OutboxItem.status)).scalars())
        gaps: Counter[tuple[str, str]] = Counter()
        for f in db.session.scalars(sa.select(Finding)):
            if f.is_open_gap:  # no risk is accepted here: every failed gap is open
                gaps.update((c, f.severity) for c in f.controls_2022)
        hash_ = ruleset.hash

    samples = scrape(app)
    assert value(samples, "gapbridge_sync_runs_total", source="fake", outcome="succeeded") == 1
    assert value(samples, "gapbridge_sync_runs_total", source="fake", outcome="failed") == 1
    assert value(samples, "gapbridge_sync_runs_total", source="prod", outcome="succeeded") == 0  # configured, never run
    assert value(samples, "gapbridge_sync_records_fetched_total", source="fake") == sum(r.fetched for r in runs) == 30
    assert value(samples, "gapbridge_sync_records_rejected_total", source="fake") == sum(r.rejected for r in runs) == 3
    last_ok = max(r.finished_at for r in runs if r.status == "succeeded")
    assert value(samples, "gapbridge_sync_last_success_timestamp_seconds", source="fake") == pytest.approx(last_ok.timestamp())
    assert value(samples, "gapbridge_sync_running", source="fake") == 0
    assert depth["pending"] > 0
    for state in ("pending", "sent", "failed", "superseded"):
        assert value(samples, "gapbridge_outbox_items", source="fake", state=state) == depth[state], state
    assert value(samples, "gapbridge_outbox_oldest_pending_seconds", source="fake") is not None
    assert gaps, "the varied tickets fail some checks"
    shown = {(dict(labels)["control"], dict(labels)["severity"]): v for (name, labels), v in samples.items()
             if name == "gapbridge_open_gaps"}
    assert shown == gaps
    assert value(samples, "gapbridge_ruleset_info", hash=hash_, checks=str(len(ruleset.checks))) == 1
    assert value(samples, "gapbridge_schema_current") == 1
    assert value(samples, "gapbridge_schema_info", revision=head_revision(), head=head_revision()) == 1
    assert value(samples, "gapbridge_database_up") == 1


def test_a_failing_scheduled_job_shows(app_factory: Any) -> None:
    from plugin.models import ScheduledJob, utcnow

    app = app_factory()
    now = utcnow()
    with app.app_context():
        db.session.add_all([ScheduledJob(name="audit-verify", next_due_at=now, last_outcome="failed"),
                            ScheduledJob(name="writeback", next_due_at=now, last_outcome="succeeded")])
        db.session.commit()
    samples = scrape(app)
    assert value(samples, "gapbridge_job_failing", job="audit-verify") == 1
    assert value(samples, "gapbridge_job_failing", job="writeback") == 0
    assert value(samples, "gapbridge_job_next_due_timestamp_seconds", job="writeback") == pytest.approx(now.timestamp())


def test_the_metrics_need_a_token_and_carry_no_secret(app_factory: Any) -> None:
    app = app_factory(connectors=prod_connector(), metrics={"token": METRICS_TOKEN})
    client = app.test_client()
    missing = client.get("/metrics")
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert "gapbridge_" not in missing.get_data(as_text=True)
    assert client.get("/metrics", headers={"Authorization": "Bearer not-the-scrape-token-at-all"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}x"}).status_code == 401
    assert client.get("/metrics", headers={"Authorization": f"Basic {METRICS_TOKEN}"}).status_code == 401
    bodies = []
    for token in (METRICS_TOKEN, token_for(app, "auditor"), token_for(app, "admin")):
        r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        bodies.append((token, r.get_data(as_text=True)))
    for token, body in bodies:
        assert SECRET not in body and METRICS_TOKEN not in body and token not in body
        assert "service-now.com" not in body  # nor where the tool is


def test_metrics_switched_off_or_on_their_own_address(app_factory: Any) -> None:
    off = app_factory(metrics={"enabled": False})
    assert off.test_client().get("/metrics", headers={"Authorization": f"Bearer {token_for(off)}"}).status_code == 404
    assert start_metrics_server(off) is None

    app = app_factory(connectors=prod_connector(), metrics={"bind": "127.0.0.1:0"})
    shut = app.test_client().get("/metrics", headers={"Authorization": f"Bearer {token_for(app)}"})
    assert shut.status_code == 404 and "metrics.bind" in shut.get_json()["message"]
    server = start_metrics_server(app)
    assert server is not None
    try:
        r = requests.get(server.url, timeout=10)  # the address is the protection: no token asked
        assert r.status_code == 200 and SECRET not in r.text
        assert value(parse(r.text), "gapbridge_database_up") == 1
        assert requests.get(server.url.replace("/metrics", "/api/v1/coverage/controls"), timeout=10).status_code == 404
    finally:
        server.close()

    guarded = app_factory(metrics={"bind": "127.0.0.1:0", "token": METRICS_TOKEN})
    server = start_metrics_server(guarded)
    assert server is not None
    try:
        assert requests.get(server.url, timeout=10).status_code == 401
        assert requests.get(server.url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10).status_code == 200
    finally:
        server.close()


def test_a_taken_metrics_address_is_one_line(app_factory: Any) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = app_factory(metrics={"bind": f"127.0.0.1:{port}"})
        with pytest.raises(StartupError, match=rf"^metrics.bind: cannot listen on 127.0.0.1:{port}: Address already in use$"):
            start_metrics_server(app)


def test_what_a_process_observes_is_in_the_scrape(app_factory: Any) -> None:
    app = app_factory()
    token = token_for(app)
    before = scrape(app, token)
    observe_writeback("obs", "written", 0.2)
    observe_writeback("obs", "retrying", 0.4, 503)
    observe_writeback("obs", "failed", 1.5, None)
    observe_sync("obs", "succeeded", 12.0)
    after = scrape(app, token)

    def delta(name: str, **labels: str) -> float:
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("gapbridge_writeback_request_seconds_count", source="obs", outcome="written") == 1
    assert delta("gapbridge_writeback_request_seconds_sum", source="obs", outcome="retrying") == pytest.approx(0.4)
    assert delta("gapbridge_writeback_errors_total", source="obs", status="503") == 1
    assert delta("gapbridge_writeback_errors_total", source="obs", status="none") == 1
    assert delta("gapbridge_writeback_errors_total", source="obs", status="200") == 0  # a write that went through is no error
    assert delta("gapbridge_sync_duration_seconds_bucket", source="obs", outcome="succeeded", le="15.0") == 1
    assert delta("gapbridge_sync_duration_seconds_bucket", source="obs", outcome="succeeded", le="5.0") == 0


def test_the_multiprocess_folder_sums_every_process(app_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(REPO)}
    code = "from plugin.metrics import observe_writeback as o; o('mp', 'retrying', 0.3, 429); o('mp', 'written', 0.1)"
    for _ in range(2):  # two gunicorn workers, say
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert len(list(folder.glob("*.db"))) >= 2
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    app = app_factory()
    samples = scrape(app)
    assert value(samples, "gapbridge_writeback_errors_total", source="mp", status="429") == 2
    assert value(samples, "gapbridge_writeback_request_seconds_count", source="mp", outcome="written") == 2
    assert value(samples, "gapbridge_database_up") == 1  # the database's metrics are there as well


def test_an_unusable_multiprocess_folder_stops_start_up(app_factory: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "missing"))
    with pytest.raises(StartupError, match=r"^PROMETHEUS_MULTIPROC_DIR: .*missing is not a folder"):
        app_factory()


def test_a_schema_behind_or_a_database_away_still_answers(tmp_path: Path) -> None:
    def app_over(url: str) -> Flask:
        app = create_app(gapbridge_config=make_config(url, tmp_path / "instance"), manage_schema=False)
        app.config["TESTING"] = True
        return app

    empty = app_over(f"sqlite:///{tmp_path / 'empty.db'}")  # never migrated
    away = app_over(f"sqlite:///{tmp_path / 'no-such-folder' / 'x.db'}")
    try:
        for app in (empty, away):
            with app.app_context():
                from plugin.metrics import exposition

                samples = parse(exposition(app)[0].decode())
            if app is empty:
                assert value(samples, "gapbridge_database_up") == 1 and value(samples, "gapbridge_schema_current") == 0
            else:
                assert value(samples, "gapbridge_database_up") == 0 and value(samples, "gapbridge_schema_current") is None
            assert not any(name.startswith("gapbridge_sync_runs") for name, _ in samples)
            assert value(samples, "gapbridge_build_info", version=_installed_version()) == 1
    finally:
        for app in (empty, away):
            with app.app_context():
                db.engine.dispose()


def _installed_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("gapbridge")
