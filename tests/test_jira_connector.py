"""The Jira connector over a mocked Jira (``responses``): options, start-up (time zone, fields by name), JQL and
paging (Cloud tokens, Data Center offsets), the overlap, normalisation of real bodies, errors, write-back."""

from __future__ import annotations

import copy
import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
import responses
from marshmallow import ValidationError

from connectors.base import (
    AuthenticationError,
    ConfigurationError,
    ConnectorError,
    Enrichment,
    FatalConnectorError,
    InvalidResponseError,
    NormalizationError,
    RecordRateLimitedError,
    connector_class,
)
from connectors.jira import JiraConnector, JiraOptionsSchema
from connectors.jira.adf import adf_to_text, text_to_adf
from connectors.jira.connector import PROPERTY_LIMIT, jql_time

FIXTURES = Path(__file__).parent / "fixtures" / "jira"
SITE = "https://acme.atlassian.net"
DC = "https://jira.acme.example"
TOKEN = "ATATT-d0nt-l3ak-5eCr3t-4711"
PAT = "pat-d0nt-l3ak-9911"
SEARCH = f"{SITE}/rest/api/3/search/jql"
BERLIN = ZoneInfo("Europe/Berlin")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def field(fid: str, name: str, kind: str = "string", custom: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if custom:
        schema["custom"] = f"com.atlassian.jira.plugin.system.customfieldtypes:{custom}"
    return {"id": fid, "key": fid, "name": name, "custom": fid.startswith("customfield_"), "schema": schema}


FIELDS = [
    field("summary", "Summary"), field("description", "Description"), field("status", "Status", "status"),
    field("priority", "Priority", "priority"), field("assignee", "Assignee", "user"), field("reporter", "Reporter", "user"),
    field("created", "Created", "datetime"), field("updated", "Updated", "datetime"),
    field("resolutiondate", "Resolved", "datetime"), field("resolution", "Resolution", "resolution"),
    field("issuelinks", "Linked Issues", "array"), field("comment", "Comment", "comments-page"), field("labels", "Labels", "array"),
    field("issuetype", "Issue Type", "issuetype"), field("project", "Project", "project"),
    field("customfield_10042", "Root cause", custom="textarea"), field("customfield_10043", "Root cause category", "option", "select"),
    field("customfield_10044", "Lessons learned", custom="textarea"),
    field("customfield_10050", "Security incident", "array", "multicheckboxes"),
    field("customfield_10051", "Evidence", custom="textarea"), field("customfield_10052", "Contained at", "datetime", "datetime"),
    field("customfield_10060", "GapBridge open gaps", "number", "float"),
]


def options(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "type": "jira", "url": SITE, "auth": {"method": "api_token", "email": "gapbridge@acme.example", "token": TOKEN},
        "jql": "project = SEC", "page_size": 2,
        "field_map": {"root_cause": "Root cause", "lessons_learned": "lessons learned", "evidence": "Evidence",
                      "contained_at": "customfield_10052"},
        "is_security": {"field": "Security incident"},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return JiraOptionsSchema().load(raw)


def connector(sleep: Any = None, **over: Any) -> JiraConnector:
    return JiraConnector("jira", options(**over), sleep=sleep or (lambda s: None))


def issue(n: int, updated: str, **fields: Any) -> dict[str, Any]:
    base = {"summary": f"Issue {n}", "updated": updated, "created": "2026-11-01T09:00:00.000+0100",
            "status": {"name": "Open", "statusCategory": {"key": "new"}}, "priority": {"name": "High"},
            "issuetype": {"name": "[System] Incident"}, "labels": []}
    base.update(fields)
    return {"id": str(10000 + n), "key": f"SEC-{n}", "fields": base}


def start_up(rsps: responses.RequestsMock, base: str = SITE, api: str = "3", zone: str = "Europe/Berlin") -> None:
    rsps.get(f"{base}/rest/api/{api}/myself", json={"accountId": "5b10a284", "displayName": "GapBridge", "timeZone": zone})
    rsps.get(f"{base}/rest/api/{api}/field", json=FIELDS)


def query(call: Any) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(call.request.url).query).items()}


def page(issues: list[dict[str, Any]], token: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"issues": issues, "isLast": token is None}
    if token:
        body["nextPageToken"] = token
    return body


@pytest.fixture
def rsps() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


# --- options -----------------------------------------------------------------------------------


def test_options_defaults_and_what_is_refused() -> None:
    opts = options()
    assert opts["deployment"] == "cloud" and opts["bookmark_overlap_seconds"] == 120
    assert opts["field_map"]["title"] == "summary" and opts["field_map"]["timeline"] == "comment"
    assert opts["record_type"]["issue_types"]["[System] Incident"] == "incident"
    assert opts["record_type"]["issue_types"]["Service request"] == "request"
    assert opts["record_type"]["issue_types"]["Vulnerability"] == "weakness"
    assert opts["write_back"]["property"] == "gapbridge.findings"
    with pytest.raises(ValidationError) as bad:
        options(jql="project = SEC ORDER BY created DESC")
    assert "ORDER BY" in str(bad.value.messages["jql"])
    with pytest.raises(ValidationError) as bad:
        options(jql="  ")
    assert "unbounded" in str(bad.value.messages["jql"])
    with pytest.raises(ValidationError) as bad:
        options(auth={"method": "personal_access_token", "token": PAT, "email": None})
    assert "api_token" in str(bad.value.messages["auth"])
    with pytest.raises(ValidationError) as bad:
        options(timezone="Mars/Olympus")
    assert "Mars/Olympus" in str(bad.value.messages["timezone"])
    with pytest.raises(ValidationError) as bad:
        options(write_back={"comment_mode": "internal", "visibility": {"type": "role", "value": "Administrators"}})
    assert "visibility" in bad.value.messages["write_back"]
    assert connector_class("jira") is JiraConnector  # the entry point


# --- start-up ----------------------------------------------------------------------------------


def test_fields_are_resolved_by_name_and_the_search_asks_only_for_the_mapped_ones(rsps: Any) -> None:
    start_up(rsps)
    rsps.get(SEARCH, json=page([]))
    c = connector()
    c.check_configuration()
    assert c.ids["Root cause"] == "customfield_10042" and c.ids["lessons learned"] == "customfield_10044"
    assert c.ids["customfield_10052"] == "customfield_10052" and c.zone == BERLIN
    list(c.fetch_pages(None))
    asked = set(query(rsps.calls[-1])["fields"].split(","))
    assert asked == {"summary", "description", "status", "priority", "assignee", "reporter", "created", "updated",
                     "resolutiondate", "resolution", "issuelinks", "comment", "labels", "issuetype", "customfield_10042",
                     "customfield_10044", "customfield_10050", "customfield_10051", "customfield_10052"}
    assert query(rsps.calls[-1])["properties"] == "gapbridge.findings"


def test_an_unknown_field_name_stops_start_up_naming_the_key_and_the_nearest_names(rsps: Any) -> None:
    start_up(rsps)
    c = connector(field_map={"root_cause": "Root cuase"})
    with pytest.raises(ConfigurationError) as err:
        c.check_configuration()
    text = str(err.value)
    assert "connectors.jira.field_map.root_cause" in text and "'Root cuase'" in text
    assert "'Root cause'" in text and "'Root cause category'" in text


def test_the_time_zone_option_overrides_the_api_users(rsps: Any) -> None:
    start_up(rsps, zone="America/New_York")
    c = connector(timezone="Asia/Tokyo")
    c.check_configuration()
    assert c.zone == ZoneInfo("Asia/Tokyo")
    rsps.replace(responses.GET, f"{SITE}/rest/api/3/myself", json={"accountId": "x", "timeZone": "Nowhere/Atlantis"})
    with pytest.raises(ConfigurationError, match="connectors.jira.timezone"):
        connector().check_configuration()


def test_a_refused_login_is_an_authentication_error_without_the_token(rsps: Any, caplog: pytest.LogCaptureFixture) -> None:
    rsps.get(f"{SITE}/rest/api/3/myself", status=401, json={"errorMessages": ["Client must be authenticated to access this resource."]})
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthenticationError) as err:
        connector().check_configuration()
    assert "Client must be authenticated" in str(err.value)
    assert rsps.calls[0].request.headers["Authorization"].startswith("Basic ")
    assert TOKEN not in str(err.value) and TOKEN not in caplog.text and TOKEN not in repr(connector().http.session.auth)


def test_data_center_answering_anonymously_after_a_failed_login_is_refused(rsps: Any) -> None:
    rsps.get(f"{DC}/rest/api/2/myself", json={"name": "anonymous"}, headers={"X-Seraph-LoginReason": "AUTHENTICATED_FAILED"})
    c = JiraConnector("dc", options(url=DC, deployment="data_center", auth={"method": "personal_access_token", "token": PAT, "email": None}))
    with pytest.raises(AuthenticationError, match="AUTHENTICATED_FAILED") as err:
        c.check_configuration()
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {PAT}"
    assert PAT not in str(err.value) and PAT not in repr(c.http.session.auth)


# --- time literals -----------------------------------------------------------------------------


def test_jql_time_is_the_users_local_minute_and_steps_out_of_a_repeated_hour() -> None:
    at = datetime(2026, 11, 2, 8, 15, 42, tzinfo=timezone.utc)
    assert jql_time(at, BERLIN) == "2026-11-02 09:15"  # CET, cut to the minute
    assert jql_time(at, ZoneInfo("America/New_York")) == "2026-11-02 03:15"
    # Berlin, 25 Oct 2026: 03:00 CEST goes back to 02:00 CET; 02:00-03:00 happens twice
    first = datetime(2026, 10, 25, 0, 30, tzinfo=timezone.utc)  # 02:30 CEST, the first reading
    second = datetime(2026, 10, 25, 1, 30, tzinfo=timezone.utc)  # 02:30 CET, the second
    # "02:30" could be read as 01:30 UTC, an hour after the first: the literal steps back out of the fold
    assert jql_time(first, BERLIN) == "2026-10-25 01:30"
    for literal, instant in ((jql_time(first, BERLIN), first), (jql_time(second, BERLIN), second)):
        local = datetime.strptime(literal, "%Y-%m-%d %H:%M")
        readings = [local.replace(tzinfo=BERLIN, fold=f).astimezone(timezone.utc) for f in (0, 1)]
        assert max(readings) <= instant  # however Jira reads it, nothing at or after the instant is missed
    assert jql_time(second, BERLIN) == "2026-10-25 02:30"
    # spring forward (29 Mar 2026, 02:00 -> 03:00): no local time is skipped over
    assert jql_time(datetime(2026, 3, 29, 1, 0, 59, tzinfo=timezone.utc), BERLIN) == "2026-03-29 03:00"


# --- Cloud paging ------------------------------------------------------------------------------


def test_cloud_pages_by_next_page_token_to_the_end_with_the_incremental_jql(rsps: Any) -> None:
    start_up(rsps)
    rsps.get(SEARCH, json=page([issue(1, "2026-11-02T09:20:00.000+0100"), issue(2, "2026-11-02T09:21:00.000+0100")], "tok-2"))
    rsps.get(SEARCH, json=page([issue(3, "2026-11-02T09:22:00.000+0100"), issue(4, "2026-11-02T09:23:30.500+0100")], "tok-3"))
    rsps.get(SEARCH, json=page([issue(5, "2026-11-02T09:24:00.000+0100")]))
    c = connector()
    pages = list(c.fetch_pages({"updated": "2026-11-02T08:17:42.000Z"}))
    assert [i["key"] for p in pages for i in p.records] == ["SEC-1", "SEC-2", "SEC-3", "SEC-4", "SEC-5"]
    searches = [query(call) for call in rsps.calls if call.request.url.startswith(SEARCH)]
    # the bookmark less 120 s, in Berlin time, to the minute
    assert searches[0]["jql"] == '(project = SEC) AND updated >= "2026-11-02 09:15" ORDER BY updated ASC, key ASC'
    assert "nextPageToken" not in searches[0] and searches[1]["nextPageToken"] == "tok-2" and searches[2]["nextPageToken"] == "tok-3"
    assert all(s["jql"] == searches[0]["jql"] and s["maxResults"] == "2" for s in searches)
    assert [p.bookmark["updated"] for p in pages if p.bookmark] == [
        "2026-11-02T08:21:00.000Z", "2026-11-02T08:23:30.500Z", "2026-11-02T08:24:00.000Z"]
    full = list(connector().fetch_pages(None))
    assert query(rsps.calls[-1])["jql"] == "(project = SEC) ORDER BY updated ASC, key ASC" and full


def test_a_page_token_given_twice_stops_the_sync_instead_of_looping(rsps: Any) -> None:
    start_up(rsps)
    rsps.get(SEARCH, json=page([issue(1, "2026-11-02T09:20:00.000+0100")], "tok-A"))
    rsps.get(SEARCH, json=page([issue(2, "2026-11-02T09:21:00.000+0100")], "tok-B"))
    rsps.get(SEARCH, json=page([issue(3, "2026-11-02T09:22:00.000+0100")], "tok-A"))
    seen = []
    with pytest.raises(InvalidResponseError, match="page token it gave before"):
        for p in connector().fetch_pages(None):
            seen += [i["key"] for i in p.records]
    assert seen == ["SEC-1", "SEC-2", "SEC-3"]  # what was read is good; the loop is not followed
    assert sum(1 for call in rsps.calls if call.request.url.startswith(SEARCH)) == 3


def test_the_overlap_reread_drops_what_the_bookmark_saw_and_keeps_what_changed(rsps: Any) -> None:
    start_up(rsps)
    stored = {"updated": "2026-11-02T08:21:00.000Z",
              "recent": {"10001": "2026-11-02T08:20:10.000Z", "10002": "2026-11-02T08:21:00.000Z"}}
    rsps.get(SEARCH, json=page([
        issue(1, "2026-11-02T09:20:10.000+0100"),  # seen, unchanged
        issue(9, "2026-11-02T09:20:30.000+0100"),  # committed late, before the bookmark: new
        issue(2, "2026-11-02T09:21:00.000+0100"),  # seen, unchanged
        issue(2, "2026-11-02T09:21:00.000+0100"),  # the same record twice in one answer
    ], "t2"))
    rsps.get(SEARCH, json=page([issue(1, "2026-11-02T09:25:00.000+0100")]))  # changed since
    pages = list(connector().fetch_pages(stored))
    assert [(i["key"], i["fields"]["updated"]) for p in pages for i in p.records] == [
        ("SEC-9", "2026-11-02T09:20:30.000+0100"), ("SEC-1", "2026-11-02T09:25:00.000+0100")]
    assert query(rsps.calls[2])["jql"].count('updated >= "2026-11-02 09:19"')  # 08:21 UTC less 120 s, Berlin
    last = pages[-1].bookmark
    assert last is not None and last["updated"] == "2026-11-02T08:25:00.000Z"
    # the next sync keeps what its own overlap will re-read (the last 180 s), and only that
    assert last["recent"] == {"10001": "2026-11-02T08:25:00.000Z"}
    assert pages[0].bookmark is not None and pages[0].bookmark["updated"] == "2026-11-02T08:21:00.000Z"  # never back


def test_a_body_that_is_not_json_is_an_invalid_response(rsps: Any) -> None:
    start_up(rsps)
    rsps.get(SEARCH, body="<html><body>Proxy error</body></html>", content_type="text/html")
    with pytest.raises(InvalidResponseError, match="not JSON"):
        list(connector().fetch_pages(None))


def test_a_jql_jira_refuses_stops_the_sync_with_its_message_and_the_config_key(rsps: Any) -> None:
    start_up(rsps)
    rsps.get(SEARCH, status=400, json={"errorMessages": ["The value 'SECC' does not exist for the field 'project'."],
                                       "warningMessages": []})
    with pytest.raises(ConfigurationError) as err:
        list(connector(jql="project = SECC").fetch_pages(None))
    assert "connectors.jira.jql" in str(err.value) and "The value 'SECC' does not exist for the field 'project'." in str(err.value)
    assert "['" not in str(err.value)


# --- Data Center -------------------------------------------------------------------------------


def dc_connector(**over: Any) -> JiraConnector:
    return JiraConnector("dc", options(url=DC, deployment="data_center", auth={"method": "personal_access_token", "token": PAT,
                                                                                "email": None}, **over), sleep=lambda s: None)


def test_data_center_pages_by_start_at_and_starts_again_from_the_last_time_read(rsps: Any) -> None:
    start_up(rsps, DC, "2", "UTC")
    real = fixture("webhook_issue_updated_status.json")["issue"]  # a REST v2 issue as Data Center sends it
    real["fields"]["updated"] = "2026-11-02T11:06:00.000+0300"
    same_minute = [issue(1, "2026-11-02T08:00:10.000+0000"), issue(2, "2026-11-02T08:00:20.000+0000")]
    rsps.get(f"{DC}/rest/api/2/search", json={"startAt": 0, "maxResults": 2, "total": 5, "issues": same_minute})
    rsps.get(f"{DC}/rest/api/2/search", json={"startAt": 0, "maxResults": 2, "total": 4, "issues": same_minute})
    rsps.get(f"{DC}/rest/api/2/search", json={"startAt": 2, "maxResults": 2, "total": 5,
                                              "issues": [issue(3, "2026-11-02T08:00:30.000+0000"), issue(4, "2026-11-02T08:05:00.000+0000")]})
    rsps.get(f"{DC}/rest/api/2/search", json={"startAt": 0, "maxResults": 2, "total": 2,
                                              "issues": [issue(4, "2026-11-02T08:05:00.000+0000"), real]})
    c = dc_connector()
    pages = list(c.fetch_pages(None))
    searches = [query(call) for call in rsps.calls if "/search" in call.request.url]
    assert all(call.request.headers["Authorization"] == f"Bearer {PAT}" for call in rsps.calls)
    assert [(s["startAt"], s["jql"]) for s in searches] == [
        ("0", "(project = SEC) ORDER BY updated ASC, key ASC"),
        ("0", '(project = SEC) AND updated >= "2026-11-02 08:00" ORDER BY updated ASC, key ASC'),  # again from the last time
        ("2", '(project = SEC) AND updated >= "2026-11-02 08:00" ORDER BY updated ASC, key ASC'),  # one minute: offsets
        ("0", '(project = SEC) AND updated >= "2026-11-02 08:05" ORDER BY updated ASC, key ASC'),  # moved on: from 0
    ]
    assert [i["key"] for p in pages for i in p.records] == ["SEC-1", "SEC-2", "SEC-3", "SEC-4", "INDEV-6"]  # SEC-4 once
    assert pages[0].total == 5 and len(pages) == 3  # the page of records read again holds nothing new
    inc = c.normalize(real)
    assert inc["number"] == "INDEV-6" and inc["state"] == "in_progress" and inc["severity"] == "critical"
    assert inc["title"] == inc["description"] == "Prueba de creación de tareas en un proyecto público"
    assert inc["opened_at"] == datetime(2018, 12, 5, 11, 32, 11, 571000, tzinfo=timezone.utc)
    assert inc["related_refs"] == ["INDEV-7"] and inc["url"] == f"{DC}/browse/INDEV-6"


def test_the_old_search_answering_410_says_this_is_jira_cloud(rsps: Any) -> None:
    start_up(rsps, DC, "2", "UTC")
    rsps.get(f"{DC}/rest/api/2/search", status=410, json={"errorMessages": ["The requested API has been removed. Please "
                                                                          "migrate to the /rest/api/3/search/jql API."]})
    with pytest.raises(ConfigurationError) as err:
        list(dc_connector().fetch_pages(None))
    assert "410 Gone" in str(err.value) and "connectors.dc.deployment" in str(err.value) and "/rest/api/3/search/jql" in str(err.value)


# --- normalising -------------------------------------------------------------------------------


def adf(text: str) -> dict[str, Any]:
    return text_to_adf(text)


def test_adf_becomes_plain_text() -> None:
    request = fixture("add_comment_request.json")
    assert adf_to_text(request["body"]).startswith("Lorem ipsum dolor sit amet") and "\n" not in adf_to_text(request["body"])
    doc = {"type": "doc", "version": 1, "content": [
        {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Timeline"}]},
        {"type": "orderedList", "content": [
            {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "Contained", "marks": [{"type": "strong"}]}]}]},
            {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "Eradicated"}]}]}]},
        {"type": "paragraph", "content": [{"type": "mention", "attrs": {"id": "5b10", "text": "@Ana Analyst"}}, {"type": "text", "text": " see "},
                                          {"type": "inlineCard", "attrs": {"url": "https://siem.example/case/7"}}, {"type": "hardBreak"},
                                          {"type": "text", "text": "second line"}]},
        {"type": "table", "content": [{"type": "tableRow", "content": [
            {"type": "tableCell", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "host"}]}]},
            {"type": "tableCell", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "ws-fin-07"}]}]}]}]},
    ]}
    assert adf_to_text(doc) == ("Timeline\n\n1. Contained\n2. Eradicated\n\n@Ana Analyst see https://siem.example/case/7\n"
                                "second line\n\nhost | ws-fin-07")
    note = "GapBridge: 1 open gap.\n\n1. [HIGH] Evidence (ISO-7)\n   Missing: sha256\n\n[gapbridge:0a1b2c3d4e5f6a7b]"
    assert adf_to_text(text_to_adf(note)) == note


def test_a_cloud_issue_normalizes_with_adf_comments_custom_fields_and_the_property(rsps: Any) -> None:
    start_up(rsps)
    c = connector()
    c.check_configuration()
    body = issue(7, "2026-11-02T10:00:00.000+0100",
                 description=adf("Phishing mail reported by Rita.\n\nTwo users clicked."),
                 status={"name": "Waiting for vendor", "statusCategory": {"key": "indeterminate"}},  # not mapped: by category
                 priority={"name": "Highest"}, assignee={"accountId": "a1", "displayName": "Ana Analyst"},
                 reporter={"accountId": "r1", "displayName": "Rita Reporter"}, resolution=None,
                 issuetype={"name": "Security incident"},
                 customfield_10042=adf("Missing MFA on webmail"), customfield_10050=[{"value": "Yes", "id": "10100"}],
                 customfield_10051=adf(json.dumps([{"what": "Original email", "collected_at": "2026-11-02T09:10:00Z", "sha256": "ab" * 32}])),
                 customfield_10052="2026-11-02T09:45:00.000+0100",
                 comment={"comments": [
                     {"id": "2", "author": {"displayName": "Ana Analyst"}, "created": "2026-11-02T09:40:00.000+0100",
                      "body": adf("Blocked the sender."), "jsdPublic": False},
                     {"id": "1", "author": {"displayName": "Rita Reporter"}, "created": "2026-11-02T09:05:00.000+0100",
                      "body": adf("I clicked it, sorry."), "jsdPublic": True}], "total": 2})
    body["properties"] = {"gapbridge.findings": {"fingerprint": "0a1b2c3d4e5f6a7b", "fields": {"open_gaps": 1}}}
    inc = c.normalize(body)
    assert inc["external_id"] == "10007" and inc["number"] == "SEC-7" and inc["url"] == f"{SITE}/browse/SEC-7"
    assert inc["description"] == "Phishing mail reported by Rita.\n\nTwo users clicked."
    assert inc["state"] == "in_progress" and inc["severity"] == "critical" and inc["assignee"] == "Ana Analyst"
    assert inc["root_cause"] == "Missing MFA on webmail" and inc["is_security"] is True and inc["record_type"] == "incident"
    assert inc["contained_at"] == datetime(2026, 11, 2, 8, 45, tzinfo=timezone.utc)
    assert inc["evidence"][0]["collected_at"] == datetime(2026, 11, 2, 9, 10, tzinfo=timezone.utc)
    assert [(t["author"], t["kind"], t["text"]) for t in inc["timeline"]] == [
        ("Rita Reporter", "comment", "I clicked it, sorry."), ("Ana Analyst", "internal_comment", "Blocked the sender.")]
    assert inc["enrichment_fingerprint"] == "0a1b2c3d4e5f6a7b" and inc["raw"]["key"] == "SEC-7"
    weakness = c.normalize(issue(8, "2026-11-02T10:00:00.000+0100", issuetype={"name": "Vulnerability"}, labels=["scanner"]))
    assert weakness["record_type"] == "weakness" and weakness["is_security"] is False and weakness["timeline"] == []
    request = c.normalize(issue(9, "2026-11-02T10:00:00.000+0100", issuetype={"name": "[System] Service request"}, labels=["security"]))
    assert request["record_type"] == "request" and request["is_security"] is True  # by its label
    with pytest.raises(NormalizationError, match=r"SEC-10: field 'Status' \(status\) .*'Bogus'.*status category weird"):
        c.normalize(issue(10, "2026-11-02T10:00:00.000+0100", status={"name": "Bogus", "statusCategory": {"key": "weird"}}))


def test_the_real_search_body_normalizes_and_its_unreadable_record_is_rejected_while_the_sync_goes_on(app: Any, rsps: Any) -> None:
    from plugin.extensions import db
    from plugin.models import Incident
    from plugin.services.sync import sync_source

    start_up(rsps)
    real = fixture("search_jql_response.json")  # Atlassian's own example: "updated": 1, which is no time
    good = issue(1, "2026-11-02T09:20:00.000+0100")
    assert real["isLast"] is True and "nextPageToken" not in real
    rsps.get(SEARCH, json={"isLast": True, "issues": [*real["issues"], good]})
    c = connector(field_map={"root_cause": None, "lessons_learned": None, "evidence": None, "contained_at": None, "state": None},
                  is_security={"field": None})
    c.check_configuration()
    with pytest.raises(NormalizationError, match="ED-1: field 'Updated' \\(updated\\)"):
        c.normalize(real["issues"][0])
    shaped = copy.deepcopy(real["issues"][0])
    shaped["fields"]["updated"] = "2026-11-02T09:00:00.000+0000"
    inc = c.normalize(shaped)  # the rest of Atlassian's example reads
    assert inc["description"] == "Main order flow broken" and inc["related_refs"] == ["PR-2", "PR-3"]
    assert inc["timeline"][0]["author"] == "Mia Krystof" and inc["timeline"][0]["kind"] == "internal_comment"  # role visibility
    with app.app_context():
        summary = sync_source(c)
        assert summary.rejected == 1 and summary.stored == 1 and summary.rejections[0][0] == "10002"
        assert db.session.scalars(db.select(Incident.number)).all() == ["SEC-1"]


# --- writing -----------------------------------------------------------------------------------


def enrichment(fp: str = "0a1b2c3d4e5f6a7b", controls: str = "5.24,5.26", **over: Any) -> Enrichment:
    fields = {"fingerprint": fp, "open_gaps": 2, "controls_2022": controls, "gap_checks": "ISO-7,ISO-9"}
    values: dict[str, Any] = dict(external_id="10007", fingerprint=fp, note=f"GapBridge: 2 open gaps.\n\n[gapbridge:{fp}]",
                                  fields=fields, labels=["gapbridge-gaps"])
    values.update(over)
    return Enrichment(**values)


def current(rsps: Any, project_type: str = "service_desk", labels: list[str] | None = None, fp: str | None = None,
            base: str = SITE, api: str = "3") -> None:
    body: dict[str, Any] = {"id": "10007", "key": "SEC-7", "fields": {"labels": labels or [], "project": {"key": "SEC", "projectTypeKey": project_type}}}
    if fp:
        body["properties"] = {"gapbridge.findings": {"fingerprint": fp}}
    rsps.get(f"{base}/rest/api/{api}/issue/10007", json=body)


def comments(rsps: Any, *bodies: Any, base: str = SITE, api: str = "3") -> None:
    rsps.get(f"{base}/rest/api/{api}/issue/10007/comment", json={
        "comments": [{"id": str(i), "created": f"2026-11-0{i + 1}T10:00:00.000+0000", "body": b} for i, b in enumerate(bodies)],
        "total": len(bodies)})


def writes(rsps: Any) -> list[tuple[str, str, Any]]:
    return [(c.request.method, urlsplit(c.request.url).path, json.loads(c.request.body) if c.request.body else None)
            for c in rsps.calls if c.request.method in ("POST", "PUT")]


def test_service_desk_issue_gets_an_internal_comment_labels_and_the_findings_property_last(rsps: Any) -> None:
    start_up(rsps)
    current(rsps, labels=["iso27001-gap-5.25", "gapbridge-compliant", "vip-customer"])
    comments(rsps, adf("Customer called again."))
    rsps.post(f"{SITE}/rest/servicedeskapi/request/10007/comment", status=201, json={"id": "30", "public": False})
    rsps.put(f"{SITE}/rest/api/3/issue/10007", status=204)
    rsps.put(f"{SITE}/rest/api/3/issue/10007/properties/gapbridge.findings", status=200)
    result = connector().write_back(enrichment())
    assert result.written is True
    done = writes(rsps)
    assert [(m, p) for m, p, _ in done] == [("PUT", "/rest/api/3/issue/10007"), ("POST", "/rest/servicedeskapi/request/10007/comment"),
                                           ("PUT", "/rest/api/3/issue/10007/properties/gapbridge.findings")]
    labels = done[0][2]["update"]["labels"]
    # the shape of Atlassian's editIssue example: update.labels add/remove verbs
    assert set(fixture("edit_issue_request.json")["update"]["labels"][0]) == {"add"}
    assert labels == [{"add": "gapbridge-gaps"}, {"add": "iso27001-gap-5.24"}, {"add": "iso27001-gap-5.26"},
                      {"remove": "gapbridge-compliant"}, {"remove": "iso27001-gap-5.25"}]  # vip-customer is not ours
    assert done[1][2]["public"] is False and "[gapbridge:0a1b2c3d4e5f6a7b]" in done[1][2]["body"]
    assert done[1][2]["body"].startswith("{noformat}")  # wiki markup would read [brackets] as links
    assert done[2][2] == {"fingerprint": "0a1b2c3d4e5f6a7b", "fields": enrichment().fields}


def test_an_issue_outside_a_service_desk_gets_a_plain_comment_with_the_configured_visibility(rsps: Any) -> None:
    start_up(rsps)
    current(rsps, project_type="software")
    comments(rsps)
    rsps.post(f"{SITE}/rest/api/3/issue/10007/comment", status=201, json=fixture("add_comment_response.json"))
    rsps.put(f"{SITE}/rest/api/3/issue/10007", status=204)
    rsps.put(f"{SITE}/rest/api/3/issue/10007/properties/gapbridge.findings", status=200)
    c = connector(write_back={"visibility": {"type": "role", "value": "Administrators"}})
    c.write_back(enrichment())
    posted = [b for m, p, b in writes(rsps) if p.endswith("/comment")][0]
    example = fixture("add_comment_request.json")
    assert posted["visibility"] == {"type": "role", "value": "Administrators"}
    assert set(posted["visibility"]) <= set(example["visibility"]) and posted["body"]["type"] == example["body"]["type"] == "doc"
    assert adf_to_text(posted["body"]) == enrichment().note


def test_the_findings_property_over_32_kb_is_refused_and_nothing_is_written(rsps: Any) -> None:
    start_up(rsps)
    current(rsps)
    big = enrichment(fields={"fingerprint": "f" * 16, "gap_checks": "ISO-1," * 6000})
    with pytest.raises(FatalConnectorError) as err:
        connector().write_back(big)
    assert f"{PROPERTY_LIMIT} bytes" in str(err.value) and "not cut short" in str(err.value)
    assert writes(rsps) == []


def test_a_second_write_back_writes_nothing_and_an_interrupted_one_does_not_repeat_its_comment(rsps: Any) -> None:
    start_up(rsps)
    current(rsps, fp="0a1b2c3d4e5f6a7b")
    c = connector()
    assert c.current_fingerprint("10007") == "0a1b2c3d4e5f6a7b"
    result = c.write_back(enrichment())
    assert result.written is False and writes(rsps) == []
    # the comment was taken but the property not written (a crash between): the comment is not posted again
    rsps.replace(responses.GET, f"{SITE}/rest/api/3/issue/10007", json={"id": "10007", "key": "SEC-7", "fields": {
        "labels": ["gapbridge-gaps", "iso27001-gap-5.24", "iso27001-gap-5.26"], "project": {"projectTypeKey": "service_desk"}}})
    comments(rsps, {"type": "doc", "version": 1, "content": [{"type": "codeBlock", "content": [
        {"type": "text", "text": "GapBridge: 2 open gaps.\n\n[gapbridge:0a1b2c3d4e5f6a7b]"}]}]})
    rsps.put(f"{SITE}/rest/api/3/issue/10007/properties/gapbridge.findings", status=200)
    assert c.write_back(enrichment()).written is True
    assert [(m, p) for m, p, _ in writes(rsps)] == [("PUT", "/rest/api/3/issue/10007/properties/gapbridge.findings")]


def test_without_the_property_the_newest_gapbridge_comment_tells_the_fingerprint(rsps: Any) -> None:
    start_up(rsps)
    comments(rsps, adf("old [gapbridge:1111111111111111]"), adf("human reply"), adf("[gapbridge:2222222222222222] newer"))
    c = connector(write_back={"property": None})
    assert c.current_fingerprint("10007") == "2222222222222222"


def test_fingerprints_of_many_issues_come_from_one_search(rsps: Any) -> None:
    start_up(rsps)
    rsps.get(SEARCH, json={"isLast": True, "issues": [
        {"id": "10001", "key": "SEC-1", "properties": {"gapbridge.findings": {"fingerprint": "aaaa"}}},
        {"id": "10002", "key": "SEC-2", "properties": {}}]})
    c = connector()
    assert c.current_fingerprints(["10001", "10002", "10003"]) == {"10001": "aaaa", "10002": None, "10003": None}
    asked = query([call for call in rsps.calls if call.request.url.startswith(SEARCH)][0])
    assert asked["jql"] == "issue in (10001, 10002, 10003)" and asked["properties"] == "gapbridge.findings"


def test_dry_run_writes_nothing_and_says_what_it_would(rsps: Any) -> None:
    start_up(rsps)
    current(rsps)
    comments(rsps)
    result = connector(write_back={"dry_run": True}).write_back(enrichment())
    assert result.dry_run and "internal comment" in result.detail and "add labels" in result.detail and writes(rsps) == []


def test_a_per_issue_write_limit_slows_that_issue_and_does_not_pause_the_others(rsps: Any) -> None:
    start_up(rsps)
    for n in (7, 8):
        rsps.get(f"{SITE}/rest/api/3/issue/1000{n}", json={"id": f"1000{n}", "fields": {"labels": [], "project": {"projectTypeKey": "software"}}})
    limited = {"Retry-After": "3", "RateLimit-Reason": "jira-per-issue-on-write", "X-RateLimit-Remaining": "0",
               "X-RateLimit-Reset": "2099-01-01T00:00Z"}
    rsps.put(f"{SITE}/rest/api/3/issue/10007", status=429, headers=limited, json={"errorMessages": ["Too many writes to this issue"]})
    rsps.put(f"{SITE}/rest/api/3/issue/10007", status=204)
    rsps.put(f"{SITE}/rest/api/3/issue/10008", status=204)
    rsps.put(re_path("/properties/gapbridge.findings"), status=200)
    slept: list[tuple[str, float]] = []
    c = connector(sleep=lambda s: slept.append((threading.current_thread().name, s)), write_back={"comment": False})
    assert c.write_back(enrichment()).written is True
    assert slept == [("MainThread", 3.0)] and c.http.pace.remaining() == 0  # the issue's request waited; the site is not held
    other = threading.Thread(target=lambda: c.write_back(enrichment(external_id="10008")), name="writer-2")
    other.start()
    other.join(5)
    assert slept == [("MainThread", 3.0)]  # the other issue's writes went at once
    # a limit of the whole site (burst) holds every thread of the instance
    rsps.replace(responses.PUT, f"{SITE}/rest/api/3/issue/10008", status=429, headers={"Retry-After": "500", "RateLimit-Reason": "jira-burst-based"})
    with pytest.raises(ConnectorError):
        c.write_back(enrichment(external_id="10008"))
    assert c.http.pace.remaining() > 400


def test_jira_rate_limit_headers_are_read() -> None:
    from connectors.base import parse_rate_limit_reset

    at = datetime(2026, 11, 22, 13, 56, tzinfo=timezone.utc).timestamp()
    assert parse_rate_limit_reset("2026-11-22T13:57Z", now=at) == 60.0  # Jira Cloud: ISO 8601, to the minute
    assert parse_rate_limit_reset("1900000030", now=1900000000.0) == 30.0 and parse_rate_limit_reset("soon") is None


def test_a_per_issue_limit_that_outlasts_the_retries_is_a_record_rate_limit(rsps: Any) -> None:
    start_up(rsps)
    rsps.get(f"{SITE}/rest/api/3/issue/10007", json={"id": "10007", "fields": {"labels": [], "project": {}}})
    rsps.put(f"{SITE}/rest/api/3/issue/10007", status=429, headers={"Retry-After": "1", "RateLimit-Reason": "jira-per-issue-on-write"})
    c = connector(write_back={"comment": False}, max_attempts=2)
    with pytest.raises(RecordRateLimitedError) as err:
        c.write_back(enrichment())
    assert "jira-per-issue-on-write" in str(err.value) and c.http.pace.remaining() == 0


def test_no_secret_reaches_an_error_or_the_log(rsps: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    start_up(rsps)
    rsps.get(SEARCH, status=503, body=f"upstream said token={TOKEN}")
    c = connector()
    errors = []
    try:
        list(c.fetch_pages(None))
    except ConnectorError as exc:
        errors.append(str(exc))
    rsps.replace(responses.GET, f"{SITE}/rest/api/3/myself", body=requests.ConnectionError(f"https://x:{TOKEN}@acme.atlassian.net refused"))
    try:
        connector().check_configuration()
    except ConnectorError as exc:
        errors.append(str(exc))
    assert len(errors) == 2 and caplog.records
    for text in [*errors, caplog.text]:
        assert TOKEN not in text


def re_path(suffix: str) -> Any:
    import re

    return re.compile(rf"{SITE}/rest/api/3/issue/\d+{re.escape(suffix)}")


def test_fetch_since_a_bookmark_near_a_dst_fold_reads_from_before_it(rsps: Any) -> None:
    start_up(rsps)
    rsps.get(SEARCH, json=page([]))
    # 02:31 CEST on the day the clocks go back, less 120 s: 02:29 CEST, in the repeated hour; read from 01:29
    bookmark = {"updated": (datetime(2026, 10, 25, 0, 31, tzinfo=timezone.utc)).strftime("%Y-%m-%dT%H:%M:%S.000Z")}
    list(connector().fetch_pages(bookmark))
    assert 'updated >= "2026-10-25 01:29"' in query(rsps.calls[-1])["jql"]
    assert timedelta(seconds=120) == timedelta(seconds=options()["bookmark_overlap_seconds"])


def test_the_commented_jira_example_in_config_example_yaml_loads() -> None:
    import yaml

    from .conftest import REPO

    text = (REPO / "config.example.yaml").read_text()
    lines = text.split("\n  # jira:", 1)[1].splitlines()[1:]
    block = "\n".join(line[4:] for line in lines if line.startswith("  #"))
    raw = yaml.safe_load(block)
    raw["auth"].update(email="gapbridge@acme.example", token=TOKEN)  # the ${...} the loader fills from the environment
    opts = JiraOptionsSchema().load(raw)
    assert opts["field_map"]["root_cause"] == "Root cause" and opts["write_back"]["comment_mode"] == "auto"
    assert opts["record_type"]["issue_types"]["[System] Problem"] == "request" and opts["record_type"]["issue_types"]["Vulnerability"] == "weakness"
