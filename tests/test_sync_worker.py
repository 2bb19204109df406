"""Sync with its fetching and preparing in a worker process (``sync.worker_process``)."""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.base import Page, RateLimitedError, ServerError
from plugin.extensions import db
from plugin.models import AuditEvent, Finding, Incident, RejectedRecord, SyncBookmark, SyncRun
from plugin.services import sync as sync_module
from plugin.services.sync import FetchWorkerError, sync_source, worker_process_available
from plugin.state import gapbridge

from .fakes import FakeConnector, FakeTicketing

pytestmark = pytest.mark.skipif(not worker_process_available(),
                                reason="the worker process needs fork (Linux); elsewhere sync fetches in a thread")


def count(model: type, *where: object) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


def stored_state(source: str) -> dict[str, Any]:
    """What a sync of ``source`` left in the database, keyed by external id."""
    it, ft, rt = Incident.__table__.c, Finding.__table__.c, RejectedRecord.__table__.c
    incidents = {r.external_id: (r.revision, r.assessed_ruleset, r.assessed_revision, r.raw, r.opened_at, r.evidence)
                 for r in db.session.execute(sa.select(it.external_id, it.revision, it.assessed_ruleset,
                                                       it.assessed_revision, it.raw, it.opened_at, it.evidence).where(it.source == source))}
    findings = {(r.external_id, r.check_id): (r.status, r.details, r.controls_2022, r.controls_2013, r.first_failed_at is not None)
                for r in db.session.execute(sa.select(it.external_id, ft.check_id, ft.status, ft.details, ft.controls_2022,
                                                      ft.controls_2013, ft.first_failed_at)
                                            .join(Incident, Incident.id == ft.incident_id).where(it.source == source))}
    rejected = {r.external_id: r.reason for r in db.session.execute(sa.select(rt.external_id, rt.reason).where(rt.source == source))}
    bookmark = db.session.get(SyncBookmark, source).value
    return {"incidents": incidents, "findings": findings, "rejected": rejected, "bookmark": bookmark}


def test_the_worker_stores_exactly_what_a_sync_in_one_process_stores(app) -> None:
    tool = FakeTicketing(60)
    tool.bad_ids = {sorted(tool.tickets)[9], sorted(tool.tickets)[33]}
    with app.app_context():
        ruleset = gapbridge().ruleset
        here = sync_source(FakeConnector(tool, name="here"), ruleset=ruleset, worker_process="never")
        there = sync_source(FakeConnector(tool, name="there"), ruleset=ruleset, worker_process="always")
        fields = ("status", "pages", "fetched", "stored", "changed", "rejected", "assessed", "opened", "closed")
        assert [getattr(there, f) for f in fields] == [getattr(here, f) for f in fields]
        assert there.stored == 58 and there.rejected == 2 and there.opened > 0
        assert stored_state("there") == stored_state("here")
        events = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "findings.changed")).all()
        for source, summary in (("here", here), ("there", there)):
            assert sum(len(e.details["opened"]) for e in events if e.details["source"] == source) == summary.opened
        # the next sync of either starts from its bookmark and finds nothing new
        assert sync_source(FakeConnector(tool, name="there"), ruleset=ruleset, worker_process="always").fetched == 0


def test_a_connector_error_in_the_worker_is_raised_after_the_pages_before_it(app) -> None:
    tool = FakeTicketing(50)
    tool.crash_after_pages = 3
    with app.app_context():
        with pytest.raises(ServerError, match="simulated crash"):
            sync_source(FakeConnector(tool), worker_process="always")
        assert count(Incident) == 21  # three committed pages of seven
        run = db.session.execute(sa.select(SyncRun)).scalar_one()
        assert run.status == "failed" and "simulated crash" in run.error
        assert db.session.get(SyncBookmark, "fake").value["id"] == run.bookmark_after["id"]
        tool.crash_after_pages = None
        assert sync_source(FakeConnector(tool), worker_process="always").stored == 29
        assert count(Incident) == 50


def test_retry_hints_survive_the_process_boundary() -> None:
    error = pickle.loads(pickle.dumps(RateLimitedError("429 Too Many Requests", retry_after=42.0, status=429)))
    assert (type(error), str(error), error.retry_after, error.status) == (RateLimitedError, "429 Too Many Requests", 42.0, 429)


class DyingConnector(FakeConnector):
    """Serves two pages, then its process is killed (as by the OOM killer): only ever in a worker."""

    def __init__(self, tool: FakeTicketing) -> None:
        super().__init__(tool)
        self.parent = os.getpid()

    def fetch_pages(self, bookmark: Mapping[str, Any] | None) -> Iterator[Page]:
        for n, page in enumerate(super().fetch_pages(bookmark)):
            if n == 2:
                assert os.getpid() != self.parent, "would kill the test run"
                os.kill(os.getpid(), signal.SIGKILL)
            yield page


def test_a_worker_that_is_killed_is_reported_not_waited_for(app) -> None:
    tool = FakeTicketing(40)
    with app.app_context():
        with pytest.raises(FetchWorkerError, match=r"fetch worker of 'fake' exited with status -9"):
            sync_source(DyingConnector(tool), worker_process="always")
        run = db.session.execute(sa.select(SyncRun)).scalar_one()
        assert run.status == "failed" and "exited with status -9" in run.error
        # what reached this process before the kill is stored, with its bookmark; the rest is fetched again
        assert count(Incident) == 7 * run.pages <= 14
        assert multiprocessing.active_children() == []
        assert sync_source(FakeConnector(tool), worker_process="always").stored == 40 - 7 * run.pages
        assert count(Incident) == 40


def test_a_store_that_fails_stops_the_worker_and_keeps_what_committed(app, monkeypatch) -> None:
    tool = FakeTicketing(70)
    real = sync_module.upsert_incidents
    calls = {"n": 0}

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C while the third page is stored
        return real(*args, **kwargs)

    monkeypatch.setattr(sync_module, "upsert_incidents", interrupted)
    with app.app_context():
        with pytest.raises(KeyboardInterrupt):
            sync_source(FakeConnector(tool), worker_process="always")
        assert count(Incident) == 14
        assert multiprocessing.active_children() == []  # the worker was stopped, not left reading ahead
        assert gc.get_freeze_count() == 0  # the collector sees the whole heap again


def test_auto_uses_the_worker_for_a_sync_from_the_start_only(app) -> None:
    tool = FakeTicketing(20)
    with app.app_context():
        sync_source(FakeConnector(tool), worker_process="auto")
        tool.touch(sorted(tool.tickets)[3], evidence=False)
        assert sync_source(FakeConnector(tool), worker_process="auto").stored == 1
        sync_source(FakeConnector(tool), full=True, worker_process="auto")
        started = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "sync.started").order_by(AuditEvent.id)).all()
        assert [e.details["worker_process"] for e in started] == [True, False, True]
        assert gc.get_freeze_count() == 0
        with pytest.raises(ValueError, match="worker_process must be auto, always or never, not 'sometimes'"):
            sync_source(FakeConnector(tool), worker_process="sometimes")


def test_a_growing_table_gets_fresh_planner_statistics(app, monkeypatch) -> None:
    refreshed: list[int] = []
    real = sync_module.refresh_planner_statistics

    def spy() -> None:
        refreshed.append(count(Incident))
        real()

    monkeypatch.setattr(sync_module, "FIRST_ANALYZE_AT", 10)
    monkeypatch.setattr(sync_module, "refresh_planner_statistics", spy)
    with app.app_context():
        sync_source(FakeConnector(tool=FakeTicketing(30)), worker_process="always")
        assert refreshed == [14, 28]  # after the page that passed 10 stored incidents, then at each doubling
        if db.engine.dialect.name == "postgresql":
            analyzed = db.session.scalar(sa.text("SELECT count(*) FROM pg_stats WHERE tablename = 'incidents' AND attname = 'external_id'"))
            assert analyzed == 1


def test_a_forked_connector_drops_the_connections_it_shares_with_its_parent(tmp_path: Path) -> None:
    from connectors.servicenow import ServiceNowConnector
    from demo_itsm import DemoITSM

    with DemoITSM(tmp_path / "itsm.sqlite", size=5) as itsm:
        options = ServiceNowConnector.config_schema().load(
            {"type": "servicenow", "instance_url": itsm.url, "auth": {"method": "basic", "username": "admin", "password": "admin"}})
        connector = ServiceNowConnector("demo", options)
        pools = connector.http.session.get_adapter(itsm.url).poolmanager.pools
        assert sum(len(p.records) for p in connector.fetch_pages(None)) == 5
        assert len(pools) == 1  # a kept-alive connection a fork would share
        connector.forked()
        assert len(connector.http.session.get_adapter(itsm.url).poolmanager.pools) == 0
        assert sum(len(p.records) for p in connector.fetch_pages(None)) == 5  # and it reconnects
        connector.close()
