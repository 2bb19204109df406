"""Credentials never ride in a URL that is stored, logged or returned.

A connector's URL with ``user:password@`` is refused when the configuration loads; URL userinfo and
credential query parameters are redacted from error texts (sync runs, outbox, rejected records,
audit log, log lines) and from the ticket link stored on every incident.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
import sqlalchemy as sa
from click.testing import CliRunner

from connectors.base import (
    ConnectorError,
    Enrichment,
    FatalConnectorError,
    NormalizationError,
    Page,
    RetriableConnectorError,
    ServerError,
    TransportError,
    WriteResult,
    error_text,
    redact_urls,
    redacted_traceback,
)
from connectors.servicenow import ServiceNowConnector, ServiceNowOptionsSchema
from plugin.cli import main
from plugin.config import ConfigError, load_config, redact
from plugin.extensions import db
from plugin.models import AuditEvent, Incident, OutboxItem, RejectedRecord, SyncRun
from plugin.services.assess import assess
from plugin.services.enrich import plan
from plugin.services.outbox import drain
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .apiclient import ApiClient
from .conftest import NOW
from .fakes import FakeConnector, FakeTicketing

SECRET = "s3cret"
TOKEN = "tok-s3cret-77"
# what a tool, requests or urllib3 may say, quoting URLs with both kinds of secret
QUOTED = (f"upstream https://svc:{SECRET}@backend.example/q?sys_id=1&access_token={TOKEN} failed; "
          f"HTTPSConnectionPool(host='itsm.example', port=443): Max retries exceeded with url: /api/now/table/incident?token={TOKEN}")
REDACTED = ("upstream https://backend.example/q?sys_id=1&access_token=*** failed; "
            "HTTPSConnectionPool(host='itsm.example', port=443): Max retries exceeded with url: /api/now/table/incident?token=***")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    return p


def servicenow_config(url: str) -> str:
    return ("connectors:\n  demo:\n    type: servicenow\n"
            f"    instance_url: {url}\n"
            "    auth:\n      method: basic\n      username: gapbridge\n      password: ${SN_PASSWORD}\n")


# --- the helper -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    (f"https://admin:{SECRET}@itsm.example/incident.do?sys_id=1", "https://itsm.example/incident.do?sys_id=1"),
    ("https://admin@itsm.example", "https://itsm.example"),
    (f"postgresql+psycopg://gb:p@{SECRET}@db:5432/gapbridge", "postgresql+psycopg://db:5432/gapbridge"),  # "@" in the password
    (f"Invalid URL 'http//admin:{SECRET}@h/x': No scheme supplied", "Invalid URL 'http//h/x': No scheme supplied"),  # requests' words
    (QUOTED, REDACTED),
    (f"?client_secret={SECRET}&X-Amz-Signature={SECRET}&X-Amz-Date=1#id_token={SECRET}",
     "?client_secret=***&X-Amz-Signature=***&X-Amz-Date=1#id_token=***"),
    (f"password={SECRET} api-key={SECRET}", "password=*** api-key=***"),
    # any case, as IGNORECASE folds it (the long s and the Kelvin sign included): the quick test before the match must too
    (f"?API_KEY={SECRET}&Pwd={SECRET}&\u017fecret={SECRET}&to\u212aen={SECRET}", "?API_KEY=***&Pwd=***&\u017fecret=***&to\u212aen=***"),
    # left alone: ordinary parameters, addresses, an "@" in a path, empty values
    ("https://itsm.example/x?sysparm_query=a=b&sort_key=1&mytoken=2&token=", "https://itsm.example/x?sysparm_query=a=b&sort_key=1&mytoken=2&token="),
    ("mail bob@example.com about https://itsm.example/users/@bob", "mail bob@example.com about https://itsm.example/users/@bob"),
])
def test_redact_urls(text: str, expected: str) -> None:
    assert redact_urls(text) == expected
    assert redact_urls(expected) == expected


def test_a_connector_error_is_redacted_when_built_and_stays_so_across_processes() -> None:
    err = ServerError(f"GET https://admin:{SECRET}@itsm.example/api/now/table/incident?access_token={TOKEN}: HTTP 503", 5.0, 503)
    assert str(err) == "GET https://itsm.example/api/now/table/incident?access_token=***: HTTP 503"
    back = pickle.loads(pickle.dumps(err))  # the fetch worker hands errors to the sync this way
    assert (str(back), back.retry_after, back.status) == (str(err), 5.0, 503)
    assert SECRET not in str(ConnectorError(requests.ConnectionError(QUOTED)))  # an exception as the message
    assert error_text(requests.ConnectionError(QUOTED)) == f"ConnectionError: {REDACTED}"


def test_a_traceback_for_the_log_is_redacted_causes_included() -> None:
    try:
        try:
            raise requests.ConnectionError(QUOTED)
        except requests.ConnectionError as exc:
            raise RuntimeError("the sync pass failed") from exc
    except RuntimeError as exc:
        text = redacted_traceback(exc)
    assert "Traceback" in text and REDACTED in text and "the sync pass failed" in text
    assert SECRET not in text


# --- refused at load ------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "message"), [
    (f"https://admin:{SECRET}@itsm.example", "must not contain a user name or password: put credentials under auth:, not in the URL"),
    ("https://admin@itsm.example", "must not contain a user name or password"),
    (f"https://:{SECRET}@itsm.example/", "must not contain a user name or password"),
    ("https://admin:${SN_PASSWORD}@itsm.example", "must not contain a user name or password"),  # the secret from the environment
    (f"https://itsm.example/?access_token={SECRET}", "must be the base URL, without a query string or fragment: put credentials under auth:"),
])
def test_credentials_in_a_connector_url_are_refused_naming_the_key_not_the_password(tmp_path: Path, url: str, message: str) -> None:
    p = write(tmp_path, servicenow_config(url))
    with pytest.raises(ConfigError) as exc:
        load_config(p, env={"SN_PASSWORD": SECRET})
    text = str(exc.value)
    assert text.startswith(f"{p}:4: connectors.demo.instance_url: {message}")
    assert SECRET not in text and text.count("\n") == 0


def test_a_plain_connector_url_still_loads_without_its_trailing_slash(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, servicenow_config("https://itsm.example:8443/")), env={"SN_PASSWORD": SECRET})
    assert cfg["connectors"]["demo"]["instance_url"] == "https://itsm.example:8443"


def test_gapbridge_sync_refuses_it_with_exit_2_and_no_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SN_PASSWORD", "pw-from-env")
    p = write(tmp_path, servicenow_config(f"https://admin:{SECRET}@itsm.example"))
    result = CliRunner().invoke(main, ["--config", str(p), "sync"])
    assert result.exit_code == 2
    assert (f"gapbridge: configuration error:\n{p}:4: connectors.demo.instance_url: must not contain a user name or password: "
            "put credentials under auth:, not in the URL") in result.output
    assert SECRET not in result.output and "Traceback" not in result.output


# --- database_url may carry a password, but it is never printed -----------------------------------


def test_database_url_keeps_its_password_and_redact_hides_it(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, f"database_url: postgresql://gb:{SECRET}@db/gapbridge\n"), env={})
    assert cfg["database_url"] == f"postgresql://gb:{SECRET}@db/gapbridge"
    assert redact(cfg)["database_url"] == "postgresql://db/gapbridge"


@pytest.mark.parametrize("url", [f"postgresql//gb:{SECRET}@db/gapbridge", f"postgresql://gb:{SECRET}@db:port/gapbridge"])
def test_a_malformed_database_url_is_a_configuration_error_that_does_not_repeat_it(tmp_path: Path, url: str) -> None:
    # SQLAlchemy 2.0's own parse error quotes the whole URL
    p = write(tmp_path, f"log_level: INFO\ndatabase_url: {url}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(p, env={})
    assert str(exc.value).startswith(f"{p}:2: database_url: not a database URL") and SECRET not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_config(None, env={"DATABASE_URL": url})
    assert str(exc.value).startswith("environment variable DATABASE_URL: not a database URL") and SECRET not in str(exc.value)


def test_an_unreachable_database_is_one_line_without_its_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DATABASE_URL", "GAPBRIDGE_DATABASE_URL"):  # they would win over the file's URL
        monkeypatch.delenv(var, raising=False)
    # port 1: nothing listens there, the connection is refused at once
    p = write(tmp_path, f"database_url: postgresql://gb:{SECRET}@127.0.0.1:1/gapbridge\ninstance_path: {tmp_path}\n")
    result = CliRunner().invoke(main, ["--config", str(p), "sync"])
    assert result.exit_code == 1
    assert result.output.startswith("gapbridge: cannot use the database: connection failed: connection to server at \"127.0.0.1\", port 1 failed")
    assert SECRET not in result.output and "Traceback" not in result.output


# --- redacted where it is stored and logged ---------------------------------------------------------


BASE = "https://itsm.example"
TABLE_URL = f"{BASE}/api/now/table/incident"


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def assert_redacted(text: str | None) -> None:
    assert text is not None
    assert SECRET not in text and TOKEN not in text and "svc:" not in text, text


def test_a_tool_error_quoting_secrets_is_redacted_in_the_retry_log_the_sync_run_and_the_audit_log(app, mocked, caplog) -> None:
    mocked.get(TABLE_URL, status=503, json={"error": {"message": QUOTED}})
    options = ServiceNowOptionsSchema().load({"type": "servicenow", "instance_url": BASE, "max_attempts": 2,
                                              "auth": {"method": "basic", "username": "gapbridge", "password": "pw"}})
    conn = ServiceNowConnector("sn", options, sleep=lambda _: None)
    with app.app_context(), caplog.at_level(logging.DEBUG):
        try:
            with pytest.raises(ServerError) as err:
                sync_source(conn)
        finally:
            conn.close()
        run = db.session.execute(sa.select(SyncRun)).scalar_one()
        failed = db.session.execute(sa.select(AuditEvent).where(AuditEvent.action == "sync.failed")).scalar_one()
    retries = [r.getMessage() for r in caplog.records if r.name == "connectors.base"]
    assert len(retries) == 1 and REDACTED in retries[0]
    assert_redacted(caplog.text)
    assert run.status == "failed" and REDACTED in run.error
    assert run.error == str(err.value)
    assert_redacted(run.error)
    assert failed.details["error"] == run.error


class LeakyConnector(FakeConnector):
    """A connector that gets it wrong: links with credentials, raw library errors, secrets in messages."""

    error: ConnectorError | None = None

    def fetch_pages(self, bookmark: Mapping[str, Any] | None) -> Iterator[Page]:
        if self.tool.crash_after_pages == 0:
            raise requests.ConnectionError(QUOTED)  # not wrapped in a ConnectorError, as the contract asks
        yield from super().fetch_pages(bookmark)

    def normalize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        if record["id"] in self.tool.bad_ids:
            raise NormalizationError(f"{record['number']}: no link: {QUOTED}")
        incident = super().normalize(record)
        incident["url"] = f"https://admin:{SECRET}@itsm.example/incident.do?sys_id={record['id']}&access_token={TOKEN}"
        return incident

    def current_fingerprint(self, external_id: str) -> str | None:
        if self.error is not None:
            raise self.error
        return super().current_fingerprint(external_id)

    def write_back(self, enrichment: Enrichment) -> WriteResult:
        if self.error is not None:
            raise self.error
        return super().write_back(enrichment)


def test_a_raw_library_error_is_redacted_in_the_sync_run(app) -> None:
    tool = FakeTicketing(3)
    tool.crash_after_pages = 0
    with app.app_context():
        with pytest.raises(requests.ConnectionError):
            sync_source(LeakyConnector(tool))
        run = db.session.execute(sa.select(SyncRun)).scalar_one()
    assert run.error == f"ConnectionError: {REDACTED}"


def test_the_stored_ticket_link_and_rejection_reason_carry_no_credentials(app) -> None:
    tool = FakeTicketing(3)
    bad = sorted(tool.tickets)[0]
    tool.bad_ids = {bad}
    with app.app_context():
        summary = sync_source(LeakyConnector(tool))
        incidents = db.session.scalars(sa.select(Incident).order_by(Incident.external_id)).all()
        rejected = db.session.execute(sa.select(RejectedRecord)).scalar_one()
    assert summary.stored == 2
    for incident in incidents:
        assert incident.url == f"https://itsm.example/incident.do?sys_id={incident.external_id}&access_token=***"
    assert rejected.reason == f"INC0000000: no link: {REDACTED}" and summary.rejections == [(bad, rejected.reason)]
    body = ApiClient(app).json(f"/api/v1/incidents/{incidents[0].id}")
    assert body["url"] == incidents[0].url


@pytest.mark.parametrize(("error", "status"), [
    (TransportError(f"PATCH https://admin:{SECRET}@itsm.example/api: no connection; {QUOTED}"), "pending"),
    (FatalConnectorError(f"PATCH https://admin:{SECRET}@itsm.example/api: HTTP 403; {QUOTED}"), "failed"),
])
def test_a_write_back_error_quoting_secrets_is_redacted_in_the_outbox(app, error: ConnectorError, status: str) -> None:
    tool = FakeTicketing(6)
    connector = LeakyConnector(tool)
    with app.app_context():
        ruleset = gapbridge().ruleset
        sync_source(connector)
        assess(ruleset, now=NOW)
        assert plan(ruleset).queued > 0
        connector.error = error
        drained = drain({"fake": connector})
        tried = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.attempts > 0).order_by(OutboxItem.id)).all()
        audited = [e.details["error"] for e in db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "writeback.failed"))]
    # a retriable error stops the drain for that tool after one item; a fatal one fails each item it meets
    assert tried and (len(tried) == 1) == isinstance(error, RetriableConnectorError)
    said = "no connection" if status == "pending" else "HTTP 403"
    assert [(t.status, t.last_error) for t in tried] == [(status, f"PATCH https://itsm.example/api: {said}; {REDACTED}")] * len(tried)
    assert drained.errors == [f"fake {t.external_id}: {t.last_error}" for t in tried]
    assert audited == ([t.last_error for t in tried] if status == "failed" else [])
