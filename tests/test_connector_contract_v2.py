"""Connector contract v2 in the core, and the ServiceNow defects found by reading the Table API documentation.

Over the demo ITSM on loopback, which behaves as a real instance does where it matters here:
ACLs that hide rows after sysparm_limit is applied, conditions on unknown fields dropped from the
query, a connection closed mid-body, 429 with X-RateLimit-* headers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
import sqlalchemy as sa
import yaml
from flask import Flask
from marshmallow import Schema, fields

from connectors.base import (
    READ_ONLY,
    Capabilities,
    ConfigurationError,
    Connector,
    ConnectorLoadError,
    Enrichment,
    FatalConnectorError,
    Page,
    RateLimitedError,
    RecordRateLimitedError,
    Stream,
    TransportError,
    connector_class,
)
from connectors.servicenow import ServiceNowConnector
from demo_itsm import DemoITSM
from plugin.config import load_config
from plugin.extensions import db
from plugin.models import AuditEvent, Incident, OutboxItem, SyncBookmark, utcnow
from plugin.services import pipeline
from plugin.services.sync import BookmarkGuard, BookmarkMovedBackError, load_bookmark, sync_source
from plugin.state import gapbridge

from .conftest import NOW
from .fakes import FakeConnector, FakeTicketing

SIZE = 60


def sn_options(url: str, **over: Any) -> dict[str, Any]:
    return ServiceNowConnector.config_schema().load({
        "type": "servicenow", "instance_url": url, "auth": {"method": "basic", "username": "admin", "password": "admin"},
        "page_size": 10, "max_attempts": 3, **over})


@pytest.fixture
def itsm(tmp_path: Path) -> Iterator[DemoITSM]:
    with DemoITSM(tmp_path / "sn.db", size=SIZE, now=NOW.replace(tzinfo=None)) as demo:
        yield demo


@pytest.fixture
def connector(itsm: DemoITSM) -> Iterator[ServiceNowConnector]:
    conn = ServiceNowConnector("sn", sn_options(itsm.url), sleep=lambda s: None)
    yield conn
    conn.close()


def ids_in_order(itsm: DemoITSM) -> list[str]:
    """sys_ids in the keyset order the connector reads them."""
    rows = itsm._db.execute("SELECT sys_id FROM incident ORDER BY sys_updated_on, sys_id").fetchall()
    return [r[0] for r in rows]


def fetched_ids(conn: ServiceNowConnector, bookmark: Mapping[str, Any] | None = None) -> list[str]:
    return [str(r["sys_id"]["value"] if isinstance(r["sys_id"], dict) else r["sys_id"]) for p in conn.fetch_pages(bookmark) for r in p.records]


# --- ACL-short pages ------------------------------------------------------------------------


def test_a_page_made_short_by_acls_does_not_end_the_sync(itsm: DemoITSM, connector: ServiceNowConnector) -> None:
    order = ids_in_order(itsm)
    itsm.hide(order[3:8])  # the first page of 10 comes back with 5 rows while 50 follow
    got = fetched_ids(connector)
    assert got == [i for i in order if i not in itsm.hidden]
    assert len(got) == SIZE - 5


def test_a_page_emptied_by_acls_mid_stream_is_skipped_not_taken_for_the_end(itsm: DemoITSM, connector: ServiceNowConnector) -> None:
    order = ids_in_order(itsm)
    itsm.hide(order[10:32])  # after the first page: two whole windows of 10 hidden, and part of a third
    pages = list(connector.fetch_pages(None))
    got = [r["sys_id"]["value"] for p in pages for r in p.records]
    assert got == order[:10] + order[32:]
    # every bookmark moves forward, the empty windows included
    keys = [(p.bookmark["sys_updated_on"], p.bookmark["sys_id"]) for p in pages if p.bookmark]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_everything_hidden_reads_nothing_and_ends(itsm: DemoITSM, connector: ServiceNowConnector) -> None:
    itsm.hide(ids_in_order(itsm))
    assert fetched_ids(connector) == []
    listed = itsm.stats["GET"]
    assert listed == SIZE // 10  # one request per window of 10, then the count says nothing follows


def test_a_sync_stores_every_visible_record_past_short_and_empty_pages(app: Flask, itsm: DemoITSM,
                                                                       connector: ServiceNowConnector) -> None:
    order = ids_in_order(itsm)
    itsm.hide(order[5:25] + order[41:44])
    with app.app_context():
        summary = sync_source(connector, worker_process="never")
        stored = set(db.session.scalars(sa.select(Incident.external_id)))
    assert summary.status == "succeeded"
    assert stored == set(order) - itsm.hidden and summary.stored == SIZE - 23


# --- a scope query ServiceNow ignores -----------------------------------------------------------


def test_a_scope_the_instance_ignores_is_warned_about_on_the_first_sync(app: Flask, itsm: DemoITSM, caplog) -> None:
    itsm.unknown_query_fields = "ignore"  # ServiceNow's default: a condition on an unknown field is dropped
    conn = ServiceNowConnector("sn", sn_options(itsm.url, query="u_bussiness_unit=emea"), sleep=lambda s: None)
    with app.app_context(), caplog.at_level(logging.WARNING):
        summary = sync_source(conn, worker_process="never")
        warned = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "sync.warning")).all()
    conn.close()
    assert summary.stored == SIZE  # it did read the whole table: the warning is why the operator must know
    (warning,) = summary.warnings
    assert "connectors.sn.query 'u_bussiness_unit=emea' selects all 60 records of incident" in warning
    assert "glide.invalid_query.returns_no_rows" in warning
    assert [w.details["warning"] for w in warned] == [warning]
    assert any(warning in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_a_scope_that_selects_part_of_the_table_is_not_warned_about(app: Flask, itsm: DemoITSM) -> None:
    conn = ServiceNowConnector("sn", sn_options(itsm.url, query="priority=1"), sleep=lambda s: None)
    with app.app_context():
        summary = sync_source(conn, worker_process="never")
    conn.close()
    assert 0 < summary.stored < SIZE and summary.warnings == []


def test_with_the_property_set_a_bad_scope_reads_nothing_and_is_not_warned_about(app: Flask, itsm: DemoITSM) -> None:
    itsm.unknown_query_fields = "no_rows"  # glide.invalid_query.returns_no_rows=true
    conn = ServiceNowConnector("sn", sn_options(itsm.url, query="u_bussiness_unit=emea"), sleep=lambda s: None)
    with app.app_context():
        summary = sync_source(conn, worker_process="never")
    conn.close()
    assert summary.stored == 0 and summary.warnings == []


def test_the_scope_is_only_checked_on_a_first_sync(itsm: DemoITSM) -> None:
    itsm.unknown_query_fields = "ignore"
    conn = ServiceNowConnector("sn", sn_options(itsm.url, query="u_typo=1"), sleep=lambda s: None)
    later = list(conn.fetch_pages({"sys_updated_on": "2026-06-30 00:00:00", "sys_id": ""}))
    conn.close()
    assert all(p.warnings == () for p in later)


# --- a connection closed mid-body; rate-limit headers --------------------------------------------------


def test_a_list_call_cut_mid_body_is_retried(itsm: DemoITSM, connector: ServiceNowConnector) -> None:
    itsm.fail_next(2, methods=["GET"], cut_body=True)
    assert len(fetched_ids(connector)) == SIZE
    assert itsm.stats["failed_injected"] == 2


def test_a_write_cut_mid_body_is_retriable_and_not_doubled(app: Flask, itsm: DemoITSM) -> None:
    """PATCH is not repeated blindly: the error is retriable, the outbox reads the fingerprint before trying again."""
    conn = ServiceNowConnector("sn", sn_options(itsm.url), sleep=lambda s: None)
    sys_id = ids_in_order(itsm)[0]
    itsm.fail_next(1, methods=["PATCH"], cut_body=True)
    with pytest.raises(TransportError, match="closed before the whole answer"):
        conn.write_back(Enrichment(sys_id, "fp0001", "[gapbridge:fp0001] one note"))
    # the tool took it: the fingerprint the ticket carries says so, so the retry writes nothing
    assert conn.current_fingerprint(sys_id) == "fp0001"
    assert sum("fp0001" in j["value"] for j in itsm.journal(sys_id)) == 1
    conn.close()


def test_a_429_names_the_rate_limit_rule_and_waits_until_its_reset() -> None:
    waits: list[float] = []
    conn = ServiceNowConnector("sn", sn_options("https://acme.service-now.com"), sleep=waits.append)
    reset = int(time.time()) + 40
    with responses.RequestsMock() as mocked:
        mocked.get("https://acme.service-now.com/api/now/table/incident", status=429, json={"error": {"message": "Too many"}},
                   headers={"X-RateLimit-Limit": "100", "X-RateLimit-Reset": str(reset), "X-RateLimit-Rule": "integration"})
        mocked.get("https://acme.service-now.com/api/now/table/incident", json={"result": []}, headers={"X-Total-Count": "0"})
        assert list(conn.fetch_pages({"sys_updated_on": "2026-06-30 00:00:00", "sys_id": "a"})) == []
    assert len(waits) == 1 and 35 <= waits[0] <= 41
    with responses.RequestsMock() as mocked:
        mocked.get("https://acme.service-now.com/api/now/table/incident", status=429,
                   headers={"X-RateLimit-Reset": str(int(time.time()) + 3600), "X-RateLimit-Rule": "integration"})
        with pytest.raises(RateLimitedError, match=r"rule 'integration'") as err:
            list(conn.fetch_pages({"sys_updated_on": "2026-06-30 00:00:00", "sys_id": "a"}))
    assert err.value.retry_after is not None and err.value.retry_after > 3000
    conn.close()


# --- the bookmark never moves back -------------------------------------------------------------------


STREAM = Stream("tickets", ("id",), "updated_at")


def test_the_guard_refuses_a_page_that_moves_back_and_keeps_a_stored_bookmark_during_the_overlap() -> None:
    guard = BookmarkGuard("fake", STREAM, {"updated_at": "2026-07-01T10:00:00+00:00", "id": "9"})
    # the overlap re-read before the stored bookmark: the stored one stands
    assert guard.admit({"updated_at": "2026-07-01T09:59:30+00:00", "id": "3"}) is None
    assert guard.admit({"updated_at": "2026-07-01T10:00:05+00:00", "id": "4"}) == {"updated_at": "2026-07-01T10:00:05+00:00", "id": "4"}
    with pytest.raises(BookmarkMovedBackError, match="would move back from 2026-07-01 10:00:05 to 2026-07-01 09:00:00"):
        guard.admit({"updated_at": "2026-07-01T09:00:00+00:00", "id": "5"})


def test_an_unsorted_stream_stores_its_latest_bookmark_when_the_sync_ends() -> None:
    guard = BookmarkGuard("fake", Stream("tickets", ("id",), "updated_at", is_sorted=False), None)
    assert guard.admit({"updated_at": "2026-07-01T10:00:00Z"}) is None
    assert guard.admit({"updated_at": "2026-07-01T09:00:00Z"}) is None  # out of order is allowed, and not stored
    assert guard.admit({"updated_at": "2026-07-01T11:00:00Z"}) is None
    assert guard.at_end() == {"updated_at": "2026-07-01T11:00:00Z"}


class BackwardsConnector(FakeConnector):
    """Serves its third page with a bookmark before the second's, as a tool that broke its ordering would."""

    def fetch_pages(self, bookmark: Mapping[str, Any] | None) -> Iterator[Page]:
        for n, page in enumerate(super().fetch_pages(bookmark)):
            if n == 2:
                page = Page(page.records, {"updated_at": "2000-01-01T00:00:00+00:00", "id": "0"}, page.total)
            yield page


def test_a_sync_whose_bookmark_would_move_back_fails_and_keeps_the_last_good_one(app: Flask) -> None:
    conn = BackwardsConnector(FakeTicketing(30))
    with app.app_context():
        with pytest.raises(BookmarkMovedBackError):
            sync_source(conn, worker_process="never")
        kept = load_bookmark("fake")
        stored = db.session.scalar(sa.select(sa.func.count()).select_from(Incident))
    assert kept is not None and kept["updated_at"] > "2000"
    assert stored == 14  # the two pages before it, 7 each


# --- record ids, read-only connectors ---------------------------------------------------------------


def test_a_rejected_record_is_named_by_the_connectors_record_id(app: Flask) -> None:
    tool = FakeTicketing(10)
    bad = sorted(tool.tickets)[4]
    tool.bad_ids = {bad}
    with app.app_context():
        summary = sync_source(FakeConnector(tool), worker_process="never")
    assert summary.rejected == 1 and summary.rejections[0][0] == bad


def test_the_default_record_id_unwraps_display_value_cells() -> None:
    conn = ServiceNowConnector("sn", sn_options("https://acme.service-now.com"))
    assert conn.record_id({"sys_id": {"display_value": "x", "value": "abc"}}) == "abc"
    assert conn.record_id({"sys_id": "abc"}) == "abc"
    assert conn.record_id({"number": "INC1"}) is None
    conn.close()


def test_capabilities_know_only_what_can_be_written() -> None:
    assert READ_ONLY.read_only and not Capabilities(frozenset({"note"})).read_only
    with pytest.raises(ValueError, match="unknown write capabilities"):
        Capabilities(frozenset({"attachments"}))
    assert ServiceNowConnector.capabilities.write_back == {"note", "fields"}


ARCHIVE = FakeTicketing(8)


class ArchiveConnector(FakeConnector):
    """A read-only source, registered as a connector type of its own."""

    config_schema = Schema.from_dict({"type": fields.String()})
    capabilities = READ_ONLY
    # the contract's own: a read-only connector implements no writing
    write_back = Connector.write_back
    current_fingerprint = Connector.current_fingerprint

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(ARCHIVE, name=name)


class _EntryPoint:
    def __init__(self, name: str, load: Any, dist: tuple[str, str] = ("gapbridge-extra", "0.3.1")) -> None:
        self.name, self.value, self.module, self._load = name, f"gapbridge_extra:{name}", "gapbridge_extra", load
        self.dist = type("Dist", (), {"name": dist[0], "version": dist[1]})

    def load(self) -> Any:
        return self._load()


def _missing_dependency() -> Any:
    raise ModuleNotFoundError("No module named 'zeep'")


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two third-party connector types beside the shipped ones: a read-only one, and one whose import fails."""
    import connectors.registry as registry

    real = registry.entry_points
    extra = [_EntryPoint("archive", lambda: ArchiveConnector), _EntryPoint("brokentool", _missing_dependency, ("gapbridge-brokentool", "0.3.1"))]

    def entry_points(**kw: Any) -> Any:
        return [*real(**kw), *(ep for ep in extra if kw.get("name") in (None, ep.name))]

    monkeypatch.setattr(registry, "entry_points", entry_points)


def config_file(tmp_path: Path, connectors: dict[str, Any]) -> Path:
    path = tmp_path / "gapbridge.yaml"
    path.write_text(yaml.safe_dump({"connectors": connectors}))
    return path


def test_a_read_only_source_queues_nothing_and_is_said_to_be_skipped(plugins: None, app_factory: Any, tmp_path: Path) -> None:
    cfg = load_config(config_file(tmp_path, {"archive": {"type": "archive"}}), env={})
    app = app_factory(connectors=cfg["connectors"])
    with app.app_context():
        state = gapbridge(app)
        assert state.read_only_sources() == ["archive"]
        synced = pipeline.sync_one(state, "archive")
        result = pipeline.write_back(state)
        queued = db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem))
    assert synced.summary is not None and synced.summary.stored == 8
    assert result.read_only == ["archive"] and queued == 0 and result.ok
    assert ARCHIVE.notes == {}


def test_a_read_only_connector_refuses_to_write_with_a_clear_error() -> None:
    conn = ArchiveConnector("archive", {})
    with pytest.raises(FatalConnectorError, match="'archive' is read-only"):
        conn.write_back(Enrichment("x", "fp", None))


# --- entry points by name; a broken plugin fails only its own instances ---------------------------------


def test_only_the_type_asked_for_is_loaded(plugins: None) -> None:
    assert connector_class("servicenow") is ServiceNowConnector  # the broken one is never imported for this
    with pytest.raises(ConnectorLoadError) as err:
        connector_class("brokentool")
    assert "connector type 'brokentool' from package gapbridge-brokentool 0.3.1 cannot be loaded" in str(err.value)
    assert "ModuleNotFoundError: No module named 'zeep'" in str(err.value)
    with pytest.raises(ConfigurationError, match=r"unknown connector type 'jiraa' \(known: .*brokentool.*servicenow"):
        connector_class("jiraa")


def test_a_broken_plugin_fails_its_instance_and_the_others_sync(plugins: None, app_factory: Any, itsm: DemoITSM,
                                                                tmp_path: Path, caplog) -> None:
    good = {"type": "servicenow", "instance_url": itsm.url, "auth": {"method": "basic", "username": "admin", "password": "admin"},
            "page_size": 20}
    with caplog.at_level(logging.ERROR):
        cfg = load_config(config_file(tmp_path, {"good": good, "odd": {"type": "brokentool", "anything": 1}}), env={})
    assert "gapbridge-brokentool 0.3.1 cannot be loaded" in caplog.text
    app = app_factory(connectors=cfg["connectors"])
    with app.app_context():
        result = pipeline.run_pass(gapbridge(app))
    by_source = {s.source: s for s in result.synced}
    assert by_source["good"].error is None and by_source["good"].summary.stored == SIZE
    assert "connectors.odd: connector type 'brokentool' from package gapbridge-brokentool 0.3.1 cannot be loaded" in by_source["odd"].error
    # the write-back of the good source goes on; the broken one is reported, not silently dropped
    assert result.writeback is not None and result.writeback.drain.written > 0
    assert "odd" in result.writeback.unusable and not result.writeback.ok


# --- several instances at once --------------------------------------------------------------------------


def test_two_servicenow_instances_and_a_jira_sync_side_by_side_each_with_its_own_bookmark_and_maps(
        app_factory: Any, itsm: DemoITSM, tmp_path: Path) -> None:
    from demo_itsm.jira import DemoJira
    from plugin.config import _demo_jira_options

    with DemoITSM(tmp_path / "second.db", size=25, seed=7, now=NOW.replace(tzinfo=None)) as second, \
            DemoJira(tmp_path / "jira.db", size=30, seed=9, now=NOW.replace(tzinfo=None)) as jira:
        app = app_factory(connectors={
            "emea": sn_options(itsm.url, page_size=15),
            "apac": sn_options(second.url, page_size=10, priority_map={"1": "critical", "2": "critical", "3": "high", "4": "low", "5": "low"}),
            "jira": _demo_jira_options(jira.url),
        })
        with app.app_context():
            result = pipeline.run_pass(gapbridge(app))
            marks = {b.source: b.value for b in db.session.scalars(sa.select(SyncBookmark))}
            counts = dict(db.session.execute(sa.select(Incident.source, sa.func.count()).group_by(Incident.source)).all())
            apac_high = db.session.scalar(sa.select(sa.func.count()).select_from(Incident).where(
                Incident.source == "apac", Incident.severity == "high"))
            raw_p3 = second._db.execute("SELECT COUNT(*) FROM incident WHERE priority = '3'").fetchone()[0]
            written = dict(db.session.execute(sa.select(OutboxItem.source, sa.func.count()).where(
                OutboxItem.status == "sent").group_by(OutboxItem.source)).all())
            again = pipeline.run_pass(gapbridge(app))
    assert [s.error for s in result.synced] == [None, None, None]
    assert counts == {"emea": SIZE, "apac": 25, "jira": 30}
    assert set(marks) == {"emea", "apac", "jira"} and "sys_updated_on" in marks["emea"] and marks["emea"] != marks["apac"]
    assert apac_high == raw_p3  # apac's own priority map: its P3 is high
    assert set(written) == {"emea", "apac", "jira"} and result.writeback is not None and result.writeback.ok
    # the second pass reads only what changed since each one's own bookmark (the notes it wrote), and writes nothing
    assert again.writeback is not None and again.writeback.drain.written == 0


def test_an_http_session_is_closed_by_close_and_in_a_fork(connector: ServiceNowConnector) -> None:
    assert connector.http_sessions() == [connector.http]
    session = connector.http.session
    adapter = session.get_adapter("http://x")
    connector.forked()
    assert isinstance(adapter, requests.adapters.HTTPAdapter) and adapter.poolmanager.pools.keys() == set()


def test_a_drain_whose_write_is_cut_mid_body_keeps_the_item_and_never_doubles_the_note(app_factory: Any, itsm: DemoITSM) -> None:
    """Before, requests' ChunkedEncodingError escaped the connector: a traceback, and the item stayed claimed."""
    app = app_factory(connectors={"sn": sn_options(itsm.url, page_size=50)},
                      outbox={"backoff_base_seconds": 0, "backoff_max_seconds": 0})
    itsm.fail_next(1, methods=["PATCH"], cut_body=True)
    with app.app_context():
        first = pipeline.run_pass(gapbridge(app))
        assert first.writeback is not None
        d = first.writeback.drain
        # no answer is taken for the instance being down: its lane stops, the rest waits for the next run
        assert d.retrying == 1 and d.failed == 0 and d.written + d.not_attempted == d.due - 1
        assert any("closed before the whole answer" in e for e in d.errors)
        claimed = db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem).where(OutboxItem.claimed_by.is_not(None),
                                                                                              OutboxItem.status == "pending"))
        assert claimed == 0
        second = pipeline.write_back(gapbridge(app))
        assert second.drain.written == d.not_attempted and second.drain.failed == 0
        # its back-off over, the cut PATCH (which had landed) is read back, not written again
        db.session.execute(sa.update(OutboxItem).where(OutboxItem.status == "pending").values(next_attempt_at=utcnow()))
        db.session.commit()
        third = pipeline.write_back(gapbridge(app))
    assert third.drain.already_current == 1 and third.drain.written == 0 and third.ok
    notes = [sum("[gapbridge:" in j["value"] for j in itsm.journal(sid)) for sid in itsm.sys_ids()]
    assert max(notes) == 1 and sum(notes) == d.due


class PerTicketLimitedConnector(FakeConnector):
    """Jira's per-issue write limit: one ticket's writes are refused for a while, the others' go through."""

    limited: str = ""

    def write_back(self, enrichment: Enrichment) -> Any:
        if enrichment.external_id == self.limited:
            raise RecordRateLimitedError(f"PUT issue {enrichment.external_id}: HTTP 429 [jira-per-issue-on-write]", 90.0, 429)
        return super().write_back(enrichment)


def test_one_tickets_write_limit_delays_that_ticket_only(app: Flask) -> None:
    from plugin.models import OutboxBackoff
    from plugin.services.enrich import plan
    from plugin.services.outbox import drain

    tool = FakeTicketing(12)
    conn = PerTicketLimitedConnector(tool)
    with app.app_context():
        state = gapbridge(app)
        sync_source(conn, worker_process="never", ruleset=state.ruleset)
        plan(state.ruleset)
        queued = sorted(db.session.scalars(sa.select(OutboxItem.external_id)))
        assert len(queued) >= 3
        conn.limited = queued[1]
        before = utcnow()
        summary = drain({"fake": conn}, backoff_base=1, backoff_cap=5)
        held = db.session.get(OutboxBackoff, "fake")
        waiting = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.status == "pending")).all()
    assert summary.written == summary.due - 1 and summary.retrying == 1 and summary.not_attempted == 0
    assert held is None  # the instance is not held: the next run writes the others at once
    assert [w.external_id for w in waiting] == [conn.limited]
    assert (waiting[0].next_attempt_at - before).total_seconds() >= 89  # the wait the tool asked for, for that ticket
    assert conn.limited not in tool.notes and len(tool.notes) == summary.due - 1
