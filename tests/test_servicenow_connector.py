"""The ServiceNow connector over a mocked Table API (``responses``): options, queries, paging,
normalisation of real response bodies, errors and retries, OAuth, write-back, and the sync service."""

from __future__ import annotations

import base64
import copy
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
import sqlalchemy as sa
from marshmallow import ValidationError
from responses import matchers

from connectors.base import (
    AuthenticationError,
    BadRequestError,
    ConnectorError,
    Enrichment,
    InvalidResponseError,
    NormalizationError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    ServerError,
    TransportError,
    offset_pages,
    parse_retry_after,
)
from connectors.servicenow import ServiceNowConnector, ServiceNowOptionsSchema
from connectors.servicenow.schema import DEFAULT_FIELD_MAP, DEFAULT_PRIORITY_MAP, DEFAULT_STATE_MAPS

FIXTURES = Path(__file__).parent / "fixtures" / "servicenow"
BASE = "https://acme.service-now.com"
TABLE_URL = f"{BASE}/api/now/table/incident"
SIR_URL = f"{BASE}/api/now/table/sn_si_incident"
TOKEN_URL = f"{BASE}/oauth_token.do"
JOURNAL_URL = f"{BASE}/api/now/table/sys_journal_field"
ORDER = "ORDERBYsys_updated_on^ORDERBYsys_id"
PASSWORD = "Pw-d0nt-l3ak-7731"
CLIENT_SECRET = "cs-d0nt-l3ak-4412"
ACCESS_TOKEN = "at-d0nt-l3ak-9001"
REFRESH_TOKEN = "rt-d0nt-l3ak-5150"
SECRETS = (PASSWORD, CLIENT_SECRET, ACCESS_TOKEN, REFRESH_TOKEN)
SID = "1c741bd70b2322007518478d83673af3"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def raw_options(**over: Any) -> dict[str, Any]:
    base = {"type": "servicenow", "instance_url": BASE + "/", "auth": {"method": "basic", "username": "gapbridge.integration",
                                                                       "password": PASSWORD}}
    return merge(base, over)


def load(**over: Any) -> dict[str, Any]:
    return ServiceNowOptionsSchema().load(raw_options(**over))


def sent(call: Any) -> dict[str, str]:
    """The query parameters of one recorded request, one value each."""
    params = parse_qs(urlsplit(call.request.url).query, keep_blank_values=True)
    assert all(len(v) == 1 for v in params.values()), params
    return {k: v[0] for k, v in params.items()}


def rec(i: int, updated: str, **extra: Any) -> dict[str, Any]:
    """A minimal display_value=false incident row."""
    row = {"sys_id": f"{i:032x}", "number": f"INC{i:07d}", "sys_updated_on": updated, "sys_class_name": "incident",
           "state": "2", "priority": "3", "opened_at": updated, "short_description": f"incident {i}", "category": "network"}
    row.update(extra)
    return row


def page(records: list[dict[str, Any]], total: int | None = None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"json": {"result": records}}
    if total is not None:
        kwargs["headers"] = {"X-Total-Count": str(total)}
    return kwargs


def chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def assert_no_secret(exc: BaseException) -> None:
    for e in chain(exc):
        text = f"{e} {e!r}"
        for secret in SECRETS:
            assert secret not in text, f"{secret!r} leaked in {type(e).__name__}: {text}"


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def make(waits: list[float]) -> Iterator[Any]:
    """Build connectors whose sleeps are recorded, not slept; all are closed after the test."""
    made: list[ServiceNowConnector] = []

    def build(name: str = "sn", **over: Any) -> ServiceNowConnector:
        conn = ServiceNowConnector(name, load(**over), sleep=waits.append)
        made.append(conn)
        return conn

    yield build
    for conn in made:
        conn.close()


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


# --- options --------------------------------------------------------------------------


def test_the_connector_is_registered_under_servicenow() -> None:
    from connectors.base import connector_class

    assert connector_class("servicenow") is ServiceNowConnector
    assert ServiceNowConnector.config_schema is ServiceNowOptionsSchema


def test_options_defaults_for_the_incident_table() -> None:
    opts = load()
    assert opts["instance_url"] == BASE
    assert (opts["table"], opts["query"], opts["page_size"], opts["display_value"]) == ("incident", "", 200, "all")
    assert (opts["max_attempts"], opts["bookmark_overlap_seconds"]) == (5, 60)
    assert opts["timeout"] == {"connect": 5.0, "read": 60.0}
    assert opts["state_map"] == {"1": "new", "2": "in_progress", "3": "on_hold", "6": "resolved", "7": "closed", "8": "cancelled"}
    assert opts["priority_map"] == {"1": "critical", "2": "high", "3": "medium", "4": "low", "5": "low"}
    assert opts["field_map"] == DEFAULT_FIELD_MAP
    assert opts["write_back"] == {"work_note": True, "fingerprint_field": None, "columns": {}, "dry_run": False, "concurrency": 4,
                                  "max_per_second": None}
    assert opts["is_security"]["tables"] == ["sn_si_incident"] and opts["is_security"]["field"] is None
    # the defaults are copies: changing one loaded configuration does not change the next
    opts["state_map"]["1"] = "closed"
    assert load()["state_map"]["1"] == "new" and DEFAULT_STATE_MAPS["incident"]["1"] == "new"


def test_options_sn_si_incident_gets_the_security_incident_state_map() -> None:
    opts = load(table="sn_si_incident")
    assert opts["state_map"] == {"10": "new", "16": "triaged", "18": "in_progress", "19": "in_progress", "20": "in_progress",
                                 "100": "resolved", "3": "closed", "7": "cancelled"}
    assert opts["priority_map"] == DEFAULT_PRIORITY_MAP


def test_options_explicit_state_and_priority_maps_replace_the_defaults() -> None:
    opts = load(state_map={"1": "new", "99": "closed"}, priority_map={"1": "high"})
    assert opts["state_map"] == {"1": "new", "99": "closed"} and opts["priority_map"] == {"1": "high"}


def test_options_field_map_merges_with_defaults_and_null_switches_a_mapping_off() -> None:
    opts = load(field_map={"title": "u_headline", "description": None, "timeline": "u_timeline"})
    fm = opts["field_map"]
    assert fm["title"] == "u_headline" and fm["timeline"] == "u_timeline"
    assert "description" not in fm
    assert fm["state"] == "state" and fm["evidence"] == "u_evidence"  # untouched defaults stay
    assert set(fm) == (set(DEFAULT_FIELD_MAP) - {"description"}) | {"timeline"}


@pytest.mark.parametrize(("method", "given", "missing"), [
    ("basic", {"username": "u"}, {"password"}),
    ("basic", {}, {"username", "password"}),
    ("oauth_password", {"client_id": "c", "client_secret": "s"}, {"username", "password"}),
    ("oauth_password", {"username": "u", "password": "p"}, {"client_id", "client_secret"}),
    ("oauth_client_credentials", {"client_id": "c"}, {"client_secret"}),
    ("oauth_client_credentials", {"username": "u", "password": "p"}, {"client_id", "client_secret"}),
])
def test_options_auth_fields_required_per_method(method: str, given: dict[str, str], missing: set[str]) -> None:
    raw = raw_options()
    raw["auth"] = {"method": method, **given}
    with pytest.raises(ValidationError) as err:
        ServiceNowOptionsSchema().load(raw)
    assert err.value.messages == {"auth": {k: [f"required for method {method}"] for k in missing}}


@pytest.mark.parametrize("auth", [
    {"method": "basic", "username": "u", "password": "p"},
    {"method": "oauth_password", "client_id": "c", "client_secret": "s", "username": "u", "password": "p"},
    {"method": "oauth_client_credentials", "client_id": "c", "client_secret": "s"},
])
def test_options_complete_auth_per_method_loads(auth: dict[str, str]) -> None:
    raw = raw_options()
    raw["auth"] = auth
    assert ServiceNowOptionsSchema().load(raw)["auth"]["method"] == auth["method"]


@pytest.mark.parametrize(("over", "path", "text"), [
    ({"auth": {"method": "kerberos"}}, ("auth", "method"), "Must be one of"),
    ({"table": "problem"}, ("table",), "Must be one of: incident, sn_si_incident"),
    ({"query": "active=true^NQpriority=1"}, ("query",), "may not contain ^NQ"),
    ({"query": "active=true^ORDERBYnumber"}, ("query",), "ORDERBY"),
    ({"query": "active=true^orderbydescnumber"}, ("query",), "ORDERBY"),
    ({"field_map": {"titel": "short_description"}}, ("field_map", "titel"), "not a canonical incident field"),
    ({"field_map": {"is_security": "u_sec"}}, ("field_map", "is_security"), "not a canonical incident field"),
    ({"field_map": {"external_id": "number"}}, ("field_map", "external_id"), "not a canonical incident field"),
    ({"field_map": {"title": "Short Description"}}, ("field_map", "title", "value"), "not a ServiceNow column name"),
    ({"display_value": True}, ("display_value",), "must be false or all"),
    ({"display_value": "true"}, ("display_value",), "must be false or all"),
    ({"write_back": {"fields": {"gaps": "u_gaps"}}}, ("write_back", "fields", "gaps", "key"), "Must be one of"),
    ({"write_back": {"fields": {"open_gaps": "u-gaps"}}}, ("write_back", "fields", "open_gaps", "value"), "not a ServiceNow column name"),
    ({"write_back": {"fingerprint_field": "U_FP"}}, ("write_back", "fingerprint_field"), "not a ServiceNow column name"),
    ({"write_back": {"note": True}}, ("write_back", "note"), "Unknown field"),
    ({"page_size": 0}, ("page_size",), "greater than or equal to 1"),
    ({"record_type": {"default": "ticket"}}, ("record_type", "default"), "Must be one of: event, incident, weakness, request"),
    ({"record_type": {"categories": {"vulnerability": "weak"}}}, ("record_type", "categories", "vulnerability", "value"), "Must be one of"),
    ({"record_type": {"by_issue_type": {}}}, ("record_type", "by_issue_type"), "Unknown field"),
    ({"field_map": {"record_type": "u_type"}}, ("field_map", "record_type"), "not a canonical incident field"),
    ({"instance_url": "ftp://acme.service-now.com"}, ("instance_url",), "Not a valid URL"),
    ({"state_map": {"1": "open"}}, ("state_map", "1", "value"), "Must be one of"),
    ({"priority": {"1": "p1"}}, ("priority",), "Unknown field"),
])
def test_options_errors_name_the_field(over: dict[str, Any], path: tuple[str, ...], text: str) -> None:
    with pytest.raises(ValidationError) as err:
        ServiceNowOptionsSchema().load(raw_options(**over))
    node: Any = err.value.messages
    for key in path:
        assert key in node, (path, err.value.messages)
        node = node[key]
    assert any(text in m for m in node), node


@pytest.mark.parametrize("value", [False, "false", "False", "all"])
def test_options_display_value_false_or_all(value: Any) -> None:
    assert load(display_value=value)["display_value"] == str(value).lower()


# --- the query ------------------------------------------------------------------------


@pytest.mark.parametrize(("over", "bookmark", "query"), [
    ({}, None, ORDER),
    ({"query": "active=true^category=network"}, None, f"active=true^category=network^{ORDER}"),
    ({"query": "^active=true^"}, None, f"active=true^{ORDER}"),
    # keyset after (sys_updated_on, sys_id) when the overlap is off: both halves of ^NQ carry the scope
    ({"bookmark_overlap_seconds": 0}, {"sys_updated_on": "2024-05-01 10:00:00", "sys_id": "abc"},
     f"sys_updated_on>2024-05-01 10:00:00^NQsys_updated_on=2024-05-01 10:00:00^sys_id>abc^{ORDER}"),
    ({"bookmark_overlap_seconds": 0, "query": "active=true^priority<=2"}, {"sys_updated_on": "2024-05-01 10:00:00", "sys_id": "abc"},
     f"active=true^priority<=2^sys_updated_on>2024-05-01 10:00:00^NQ"
     f"active=true^priority<=2^sys_updated_on=2024-05-01 10:00:00^sys_id>abc^{ORDER}"),
    # the default overlap re-reads 60 seconds before the bookmark, from that time on
    ({}, {"sys_updated_on": "2024-05-01 10:00:00", "sys_id": "abc"}, f"sys_updated_on>=2024-05-01 09:59:00^{ORDER}"),
    ({"query": "active=true"}, {"sys_updated_on": "2024-05-01 10:00:00", "sys_id": "abc"},
     f"active=true^sys_updated_on>=2024-05-01 09:59:00^{ORDER}"),
    ({"bookmark_overlap_seconds": 3600}, {"sys_updated_on": "2024-05-01 00:30:00", "sys_id": "abc"},
     f"sys_updated_on>=2024-04-30 23:30:00^{ORDER}"),
    # a bookmark without a sys_id starts at its time, inclusive
    ({"bookmark_overlap_seconds": 0}, {"sys_updated_on": "2024-05-01 10:00:00"}, f"sys_updated_on>=2024-05-01 10:00:00^{ORDER}"),
    # a bookmark of another shape (no sys_updated_on) reads everything
    ({}, {"updated_at": "2024-05-01"}, ORDER),
])
def test_the_query_sent_for_a_bookmark(make, mocked, over, bookmark, query) -> None:
    mocked.get(TABLE_URL, json={"result": []})
    conn = make(**over)
    assert list(conn.fetch_pages(bookmark)) == []
    listed = [c for c in mocked.calls if sent(c).get("sysparm_limit") != "1"]  # a first sync with a scope also counts
    assert len(listed) == 1
    assert sent(listed[0])["sysparm_query"] == query


def test_the_params_sent_with_the_list_call(make, mocked) -> None:
    mocked.get(TABLE_URL, json={"result": []})
    conn = make(page_size=50, display_value=False, field_map={"title": "u_headline", "description": None},
                write_back={"fingerprint_field": "u_gapbridge_fp"}, is_security={"field": "u_security"})
    list(conn.fetch_pages(None))
    params = sent(mocked.calls[0])
    assert set(params) == {"sysparm_query", "sysparm_limit", "sysparm_display_value", "sysparm_exclude_reference_link", "sysparm_fields"}
    assert (params["sysparm_limit"], params["sysparm_display_value"], params["sysparm_exclude_reference_link"]) == ("50", "false", "true")
    columns = params["sysparm_fields"].split(",")
    assert columns == sorted(columns) and len(columns) == len(set(columns))
    assert {"sys_id", "number", "sys_updated_on", "sys_class_name", "u_headline", "u_gapbridge_fp", "u_security", "state", "priority"} <= set(columns)
    assert "short_description" not in columns and "description" not in columns and "work_notes" not in columns
    assert mocked.calls[0].request.headers["Accept"] == "application/json"


def test_the_default_params_read_work_notes_for_the_marker_and_display_all(make, mocked) -> None:
    mocked.get(TABLE_URL, json={"result": []})
    list(make().fetch_pages(None))
    params = sent(mocked.calls[0])
    assert (params["sysparm_limit"], params["sysparm_display_value"]) == ("200", "all")
    expected = {"sys_id", "number", "sys_updated_on", "sys_class_name", "work_notes", *DEFAULT_FIELD_MAP.values()}
    assert params["sysparm_fields"] == ",".join(sorted(expected))


def test_sn_si_incident_is_read_from_its_own_table(make, mocked) -> None:
    mocked.get(SIR_URL, json={"result": []})
    assert list(make(table="sn_si_incident").fetch_pages(None)) == []
    assert mocked.calls[0].request.url.startswith(SIR_URL + "?")


# --- paging -----------------------------------------------------------------------------


def test_pages_to_the_end_with_the_bookmark_of_each_last_record(make, mocked) -> None:
    rows = [rec(1, "2024-05-01 10:00:00"), rec(2, "2024-05-01 10:00:00"), rec(3, "2024-05-01 10:00:00"),
            rec(4, "2024-05-01 10:05:00"), rec(5, "2024-05-01 11:00:00")]
    mocked.get(TABLE_URL, **page(rows[0:2], total=5))
    mocked.get(TABLE_URL, **page(rows[2:4], total=3))
    mocked.get(TABLE_URL, **page(rows[4:5], total=1))
    pages = list(make(page_size=2).fetch_pages(None))
    assert [[r["sys_id"] for r in p.records] for p in pages] == [[rows[0]["sys_id"], rows[1]["sys_id"]],
                                                                 [rows[2]["sys_id"], rows[3]["sys_id"]], [rows[4]["sys_id"]]]
    assert [p.bookmark for p in pages] == [
        {"sys_updated_on": "2024-05-01 10:00:00", "sys_id": rows[1]["sys_id"]},
        {"sys_updated_on": "2024-05-01 10:05:00", "sys_id": rows[3]["sys_id"]},
        {"sys_updated_on": "2024-05-01 11:00:00", "sys_id": rows[4]["sys_id"]},
    ]
    assert [p.total for p in pages] == [5, 5, 5]
    assert len(mocked.calls) == 3  # the short third page ends it, no fourth call
    queries = [sent(c)["sysparm_query"] for c in mocked.calls]
    assert queries == [
        ORDER,
        f"sys_updated_on>2024-05-01 10:00:00^NQsys_updated_on=2024-05-01 10:00:00^sys_id>{rows[1]['sys_id']}^{ORDER}",
        f"sys_updated_on>2024-05-01 10:05:00^NQsys_updated_on=2024-05-01 10:05:00^sys_id>{rows[3]['sys_id']}^{ORDER}",
    ]


def test_a_full_last_page_is_followed_by_one_empty_read(make, mocked) -> None:
    rows = [rec(i, f"2024-05-01 10:0{i}:00") for i in range(1, 5)]
    mocked.get(TABLE_URL, **page(rows[0:2]))
    mocked.get(TABLE_URL, **page(rows[2:4]))
    mocked.get(TABLE_URL, **page([]))
    pages = list(make(page_size=2).fetch_pages(None))
    assert [len(p.records) for p in pages] == [2, 2] and len(mocked.calls) == 3
    assert [p.total for p in pages] == [None, None]  # no X-Total-Count, no total
    assert sent(mocked.calls[2])["sysparm_query"].startswith("sys_updated_on>2024-05-01 10:04:00^NQ")


def test_an_empty_first_page_yields_nothing(make, mocked) -> None:
    mocked.get(TABLE_URL, **page([], total=0))
    assert list(make().fetch_pages({"sys_updated_on": "2024-05-01 10:00:00", "sys_id": "abc"})) == []
    assert len(mocked.calls) == 1


def test_a_tool_that_ignores_the_keyset_raises_instead_of_looping(make, mocked) -> None:
    rows = [rec(1, "2024-05-01 10:00:00"), rec(2, "2024-05-01 10:01:00")]
    mocked.get(TABLE_URL, **page(rows, total=4))  # the same full page, whatever the query
    pages = make(page_size=2).fetch_pages(None)
    assert len(next(pages).records) == 2
    with pytest.raises(InvalidResponseError, match="did not advance past"):
        next(pages)
    assert len(mocked.calls) == 2


def test_a_last_record_without_sys_id_cannot_continue_the_page(make, mocked) -> None:
    rows = [rec(1, "2024-05-01 10:00:00"), {"number": "INC0000002", "sys_updated_on": "2024-05-01 10:01:00"}]
    mocked.get(TABLE_URL, **page(rows))
    with pytest.raises(InvalidResponseError, match="without sys_updated_on or sys_id"):
        list(make(page_size=2).fetch_pages(None))


def test_display_all_records_page_by_their_utc_values(make, mocked) -> None:
    body = fixture("sn_si_incident_display_all_response.json")
    mocked.get(SIR_URL, json=body, headers={"X-Total-Count": "1"})
    (only,) = list(make(table="sn_si_incident").fetch_pages(None))
    # the bookmark is the UTC value, not the user-time-zone display value 09:02:10
    assert only.bookmark == {"sys_updated_on": "2023-04-28 16:02:10", "sys_id": "9de5069c5afe602b2ea0a04b66beb2c0"}
    assert only.total == 1


@pytest.mark.parametrize(("body", "text"), [
    ({"records": []}, "no 'result' list"),
    ({"result": {"sys_id": "x"}}, "no 'result' list"),
    ([], "no 'result' list"),
])
def test_a_json_body_without_a_result_list_is_invalid(make, mocked, body, text) -> None:
    mocked.get(TABLE_URL, json=body)
    with pytest.raises(InvalidResponseError, match=text):
        list(make().fetch_pages(None))


def test_a_200_body_that_is_not_json_is_invalid(make, mocked, waits) -> None:
    mocked.get(TABLE_URL, body="<html><body>Instance Hibernating</body></html>", content_type="text/html")
    with pytest.raises(InvalidResponseError, match=r"answered text/html, not JSON: '<html><body>Instance Hibernating"):
        list(make().fetch_pages(None))
    assert len(mocked.calls) == 1 and waits == []


@pytest.mark.parametrize(("body", "content_type"), [
    ('{"result": [{"sys_id": "a1", "sys_updated_on": "2026-01-02 03:04:05", "number": "INC1"}]}'.encode("utf-16"), "application/json; charset=utf-16"),
    (b'{"result": [{"sys_id": "a1", "sys_updated_on": "2026-01-02 03:04:05", "number": "INC1", "score": NaN}]}', "application/json"),
])
def test_a_json_body_the_fast_parser_refuses_is_still_read(make, mocked, body, content_type) -> None:
    # pages are parsed with orjson, which takes UTF-8 and strict JSON only; requests reads the rest as it always did
    mocked.get(TABLE_URL, body=body, content_type=content_type, headers={"X-Total-Count": "1"})
    (page,) = list(make().fetch_pages(None))
    assert [r["number"] for r in page.records] == ["INC1"]

def test_offset_pages_stop_at_a_short_page_or_the_total() -> None:
    data = list(range(7))
    calls: list[tuple[int, int]] = []

    def fetch(offset: int, limit: int) -> tuple[list[int], int | None]:
        calls.append((offset, limit))
        return data[offset:offset + limit], None

    assert list(offset_pages(fetch, 3)) == data
    assert calls == [(0, 3), (3, 3), (6, 3)]
    calls.clear()
    assert list(offset_pages(lambda o, n: (calls.append((o, n)) or data[o:o + n], 6), 3)) == data[:6]
    assert calls == [(0, 3), (3, 3)]  # the total says there is no third page
    assert list(offset_pages(lambda o, n: (data[o:o + n], None), 3, max_records=3)) == data[:3]


# --- normalising ------------------------------------------------------------------------


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def test_normalize_the_real_display_false_incident(make) -> None:
    (record,) = fixture("incident_list_response.json")["result"]
    inc = make(display_value=False).normalize(record)
    assert {k: inc[k] for k in ("source", "external_id", "number", "url")} == {
        "source": "sn", "external_id": SID, "number": "INC0000060", "url": f"{BASE}/incident.do?sys_id={SID}"}
    assert (inc["title"], inc["description"]) == ("Unable to connect to email", "I am unable to connect to the email server. It appears to be down.")
    assert (inc["category"], inc["subcategory"], inc["reported_via"]) == ("inquiry", "email", "self-service")
    assert (inc["state"], inc["severity"]) == ("closed", "medium")  # state "7", priority "3"
    # references {link, value} become the sys_id
    assert inc["business_unit"] == "31bea3d53790200044e0bfc8bcbe5dec"
    assert inc["assignment_group"] == "287ebd7da9fe198100f92cc8d1d2154e"
    assert inc["assignee"] == "5137153cc611227c000bbd1bd8cd2007"
    assert inc["reporter"] == "681ccaf9c0a8016400b98a06818d57c7"
    assert inc["affected_ci"] == "109562a3c611227500a7b7ff98cc0dc7"
    # naive UTC times become aware UTC datetimes
    assert inc["opened_at"] == utc(2016, 12, 12, 15, 19, 57) and inc["opened_at"].tzinfo is timezone.utc
    assert inc["resolved_at"] == utc(2016, 12, 13, 21, 43, 14)
    assert inc["closed_at"] == inc["updated_at"] == utc(2016, 12, 14, 2, 46, 44)
    assert (inc["close_code"], inc["resolution_notes"]) == ("Solved (Permanently)", "This incident is resolved.")
    # empty strings are missing values, never ""
    assert inc["problem_ref"] is None
    assert all(v != "" for v in inc.values())
    # the u_ columns are not on this instance: missing, lists empty
    assert inc["major_incident"] is None and inc["contained_at"] is None
    assert inc["evidence"] == [] and inc["related_refs"] == [] and inc["notifications"] == []
    assert inc["is_security"] is False  # category inquiry, incident table
    assert inc["enrichment_fingerprint"] is None
    assert inc["raw"] == record and inc["raw"] is not record


def test_normalize_the_display_all_security_incident(make) -> None:
    (record,) = fixture("sn_si_incident_display_all_response.json")["result"]
    inc = make(table="sn_si_incident").normalize(record)
    sys_id = "9de5069c5afe602b2ea0a04b66beb2c0"
    assert (inc["external_id"], inc["number"], inc["url"]) == (sys_id, "SIR0010044", f"{BASE}/sn_si_incident.do?sys_id={sys_id}")
    # references by display name
    assert (inc["assignment_group"], inc["assignee"], inc["affected_ci"]) == ("Example Group", "Test User", "Example CI")
    # codes from value, not the label
    assert (inc["category"], inc["subcategory"], inc["reported_via"]) == ("malware", "ransomware", "email")
    assert inc["state"] == "in_progress"  # "18" (Contain) in the sn_si_incident state map
    assert inc["severity"] == "medium"  # priority value "3", not "3 - Moderate"
    # times from value (UTC), not the user-time-zone display value
    assert inc["opened_at"] == utc(2023, 4, 28, 15, 48, 7)
    assert inc["updated_at"] == utc(2023, 4, 28, 16, 2, 10)
    assert inc["closed_at"] is None and inc["close_code"] is None and inc["resolution_notes"] is None
    assert inc["reporter"] is None  # caller_id is not on sn_si_incident
    assert inc["title"] == "Example description"
    assert inc["is_security"] is True
    assert all(v != "" for v in inc.values())


def test_is_security_comes_from_the_table_the_category_or_the_flag_column(make) -> None:
    (sir,) = fixture("sn_si_incident_display_all_response.json")["result"]
    (inc,) = fixture("incident_list_response.json")["result"]
    # no categories: the sn_si_incident table alone makes it a security incident
    assert make(table="sn_si_incident", is_security={"categories": []}).normalize(sir)["is_security"] is True
    assert make(table="sn_si_incident", is_security={"categories": [], "tables": []}).normalize(sir)["is_security"] is False
    assert make(table="sn_si_incident", is_security={"tables": []}).normalize(sir)["is_security"] is True  # category malware
    assert make(display_value=False).normalize({**inc, "category": "Phishing"})["is_security"] is True  # case-insensitive
    flagged = make(display_value=False, is_security={"field": "u_security"})
    assert flagged.normalize({**inc, "u_security": "true"})["is_security"] is True
    assert flagged.normalize({**inc, "u_security": "false"})["is_security"] is False


def test_record_type_comes_from_a_column_the_table_or_the_category(make) -> None:
    (sir,) = fixture("sn_si_incident_display_all_response.json")["result"]
    (inc,) = fixture("incident_list_response.json")["result"]
    plain = make(display_value=False)
    assert plain.normalize(inc)["record_type"] == "incident"  # the default
    assert plain.normalize({**inc, "category": "Vulnerability"})["record_type"] == "weakness"  # shipped categories, any case
    assert plain.normalize({**inc, "category": "software", "subcategory": "weakness"})["record_type"] == "weakness"
    assert make(table="sn_si_incident", record_type={"tables": {"sn_si_incident": "event"}}).normalize(sir)["record_type"] == "event"
    typed = make(display_value=False, record_type={"field": "u_kind", "values": {"sr": "request"}, "default": "event"})
    assert "u_kind" in typed.columns.split(",")
    assert typed.normalize({**inc, "u_kind": "SR"})["record_type"] == "request"
    assert typed.normalize({**inc, "u_kind": "weakness"})["record_type"] == "weakness"  # already a canonical name
    assert typed.normalize({**inc, "u_kind": "something else"})["record_type"] == "event"


def _custom(**cells: Any) -> dict[str, Any]:
    (record,) = fixture("incident_list_response.json")["result"]
    return {**record, **cells}


def test_normalize_custom_u_columns(make) -> None:
    evidence = [{"what": "Original email (.eml)", "where": "evidence-store://1", "collected_by": "Ana", "collected_at": "2016-12-12 16:00:00",
                 "sha256": "ab" * 32, "custody": [{"at": "2016-12-12T16:05:00Z", "by": "Ana", "action": "collected"}]}]
    notifications = [{"to": "reporter", "at": "2016-12-14T03:00:00+01:00", "channel": "email", "reference": "MSG-1"}]
    record = _custom(u_evidence=json.dumps(evidence), u_notifications=json.dumps(notifications), u_escalations="",
                     u_related_refs="PRB0040001, CHG0030002;INC0010003\n", u_log_refs=" ", u_weakness_refs="VUL0001",
                     u_major_incident="true", u_personal_data_breach="false", u_legal_hold="", u_major_declared_at="2016-12-12 15:30:00",
                     u_contained_at="2016-12-13T10:00:00-05:00", u_root_cause="Mail relay certificate expired", u_maintenance_ref="")
    inc = make(display_value=False).normalize(record)
    (ev,) = inc["evidence"]
    assert ev["collected_at"] == utc(2016, 12, 12, 16, 0, 0) and ev["sha256"] == "ab" * 32 and ev["what"] == "Original email (.eml)"
    assert ev["custody"] == [{"at": utc(2016, 12, 12, 16, 5, 0), "by": "Ana", "action": "collected"}]
    assert inc["notifications"] == [{"to": "reporter", "at": utc(2016, 12, 14, 2, 0, 0), "channel": "email", "reference": "MSG-1"}]
    assert inc["escalations"] == []
    assert inc["related_refs"] == ["PRB0040001", "CHG0030002", "INC0010003"]
    assert inc["log_refs"] == [] and inc["weakness_refs"] == ["VUL0001"]
    assert (inc["major_incident"], inc["personal_data_breach"], inc["legal_hold"]) == (True, False, None)
    assert inc["major_declared_at"] == utc(2016, 12, 12, 15, 30, 0)
    assert inc["contained_at"] == utc(2016, 12, 13, 15, 0, 0)
    assert inc["root_cause"] == "Mail relay certificate expired" and inc["maintenance_ref"] is None


def test_normalize_custom_columns_sent_as_display_all_cells(make) -> None:
    (record,) = fixture("sn_si_incident_display_all_response.json")["result"]
    items = [{"to": "CISO", "at": "2023-04-28 16:00:00", "reason": "ransomware"}]
    record = {**record, "u_escalations": {"display_value": json.dumps(items), "value": json.dumps(items)},
              "u_major_incident": {"display_value": "true", "value": "true"},
              "u_related_refs": {"display_value": "SIR0010010,SIR0010011", "value": "aaa,bbb"}}
    inc = make(table="sn_si_incident").normalize(record)
    assert inc["escalations"] == [{"to": "CISO", "at": utc(2023, 4, 28, 16, 0, 0), "reason": "ransomware"}]
    assert inc["major_incident"] is True
    assert inc["related_refs"] == ["aaa", "bbb"]


def test_an_unreadable_time_inside_a_list_item_counts_as_missing(make) -> None:
    # documented in connector._item: the item is kept, its time is None, the raw record keeps the text
    inc = make(display_value=False).normalize(_custom(u_notifications='[{"to": "reporter", "at": "soon"}]'))
    assert inc["notifications"] == [{"to": "reporter", "at": None}]
    assert inc["raw"]["u_notifications"] == '[{"to": "reporter", "at": "soon"}]'


@pytest.mark.parametrize(("cells", "message"), [
    ({"u_evidence": "[{'what': 'eml'}]"}, "INC0000060: column u_evidence (canonical evidence): not a JSON list (Expecting property name"),
    ({"u_notifications": '{"to": "reporter"}'}, "INC0000060: column u_notifications (canonical notifications): expected a JSON list of objects, got dict"),
    ({"u_escalations": '["CISO"]'}, "INC0000060: column u_escalations (canonical escalations): item 0 is str, expected an object"),
    ({"opened_at": "yesterday"}, "INC0000060: column opened_at (canonical opened_at): not a timestamp: 'yesterday'"),
    ({"u_contained_at": "2016-13-01 00:00:00"}, "INC0000060: column u_contained_at (canonical contained_at): not a timestamp"),
    ({"state": "42"}, "INC0000060: column state (canonical state): state '42' is not in state_map (1, 2, 3, 6, 7, 8)"),
    ({"state": ""}, "INC0000060: column state (canonical state): no state"),
    ({"priority": "9"}, "INC0000060: column priority (canonical severity): '9' is not in priority_map"),
    ({"u_major_incident": "maybe"}, "INC0000060: column u_major_incident (canonical major_incident): not a boolean: 'maybe'"),
])
def test_a_record_that_cannot_be_mapped_names_number_column_and_fault(make, cells, message) -> None:
    with pytest.raises(NormalizationError) as err:
        make(display_value=False).normalize(_custom(**cells))
    assert str(err.value).startswith(message), str(err.value)


def test_an_unknown_state_code_in_a_display_all_record(make) -> None:
    (record,) = fixture("sn_si_incident_display_all_response.json")["result"]
    record = {**record, "state": {"display_value": "Draft", "value": "1"}}  # an incident-table code on sn_si_incident
    with pytest.raises(NormalizationError, match=r"^SIR0010044: column state \(canonical state\): state '1' is not in state_map \(10, 16"):
        make(table="sn_si_incident").normalize(record)


@pytest.mark.parametrize("sys_id", [None, "", {"display_value": "", "value": ""}])
def test_a_record_without_sys_id_is_rejected(make, sys_id) -> None:
    record = _custom(sys_id=sys_id)
    if sys_id is None:
        del record["sys_id"]
    with pytest.raises(NormalizationError, match="record has no sys_id"):
        make(display_value=False).normalize(record)


def test_a_record_without_number_is_known_by_its_sys_id(make) -> None:
    record = _custom()
    del record["number"]
    assert make(display_value=False).normalize(record)["number"] == SID
    with pytest.raises(NormalizationError, match=f"^{SID}: column state"):
        make(display_value=False).normalize({**record, "state": "42"})


def test_a_switched_off_mapping_is_not_read(make) -> None:
    inc = make(display_value=False, field_map={"title": None, "reporter": "opened_by"}).normalize(_custom())
    assert inc["title"] is None
    assert inc["reporter"] == "681ccaf9c0a8016400b98a06818d57c7"


def test_enrichment_fingerprint_from_the_fingerprint_column(make) -> None:
    conn = make(display_value=False, write_back={"fingerprint_field": "u_gapbridge_fp"})
    assert conn.normalize(_custom(u_gapbridge_fp="0123456789abcdef"))["enrichment_fingerprint"] == "0123456789abcdef"
    assert conn.normalize(_custom(u_gapbridge_fp=""))["enrichment_fingerprint"] is None
    # the column wins over a marker in the notes
    assert conn.normalize(_custom(u_gapbridge_fp="", work_notes="[gapbridge:feedfacefeedface]"))["enrichment_fingerprint"] is None


def test_enrichment_fingerprint_from_the_newest_work_note_marker(make) -> None:
    (record,) = fixture("sn_si_incident_display_all_response.json")["result"]
    journal = ("2023-04-29 10:00:00 - GapBridge Integration (Work notes)\nGapBridge: no open gaps. Thank you.\n\n[gapbridge:clean]\n\n"
               "2023-04-28 18:00:00 - GapBridge Integration (Work notes)\nGapBridge: found 2 open gaps.\n\n[gapbridge:0f1e2d3c4b5a6978]\n\n")
    conn = make(table="sn_si_incident")
    with_notes = {**record, "work_notes": {"display_value": journal, "value": ""}}
    assert conn.normalize(with_notes)["enrichment_fingerprint"] == "clean"
    assert conn.normalize(record)["enrichment_fingerprint"] is None  # no notes yet
    other = {**record, "work_notes": {"display_value": "Called the user back", "value": ""}}
    assert conn.normalize(other)["enrichment_fingerprint"] is None


# --- errors and retries --------------------------------------------------------------------

SN_ERROR = {"error": {"message": "Invalid table incidnt", "detail": None}, "status": "failure"}


@pytest.mark.parametrize(("status", "body", "error", "text"), [
    (401, {"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}, "status": "failure"},
     AuthenticationError, "HTTP 401 Unauthorized (User Not Authenticated: Required to provide Auth information): check the credentials"),
    (403, {"error": {"message": "Operation Failed", "detail": "ACL Exception Read Failed due to security constraints"}, "status": "failure"},
     PermissionDeniedError, "HTTP 403 Forbidden (Operation Failed: ACL Exception Read Failed due to security constraints): the account lacks a role"),
    (404, {"error": {"message": "Invalid table incidnt", "detail": None}, "status": "failure"},
     NotFoundError, "HTTP 404 Not Found (Invalid table incidnt)"),
    (400, {"error": {"message": "Invalid query", "detail": "sysparm_query: unknown field u_nope"}, "status": "failure"},
     BadRequestError, "HTTP 400 Bad Request (Invalid query: sysparm_query: unknown field u_nope)"),
])
def test_fatal_statuses_map_to_errors_and_are_not_retried(make, mocked, waits, status, body, error, text) -> None:
    mocked.get(TABLE_URL, status=status, json=body)
    with pytest.raises(error) as err:
        list(make().fetch_pages(None))
    assert type(err.value) is error  # 400 is plain fatal, not one of the subclasses
    assert str(err.value).startswith(f"GET {TABLE_URL}: ") and text in str(err.value)
    assert len(mocked.calls) == 1 and waits == []
    assert_no_secret(err.value)


def test_429_retry_after_seconds_is_waited_then_the_call_succeeds(make, mocked, waits) -> None:
    mocked.get(TABLE_URL, status=429, headers={"Retry-After": "7"}, json={"error": {"message": "Too many requests"}})
    mocked.get(TABLE_URL, **page([rec(1, "2024-05-01 10:00:00")], total=1))
    pages = list(make().fetch_pages(None))
    assert len(pages) == 1 and len(pages[0].records) == 1
    assert waits == [7.0] and len(mocked.calls) == 2


def test_429_retry_after_http_date_is_waited(make, mocked, waits) -> None:
    mocked.get(TABLE_URL, status=429, headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)})
    mocked.get(TABLE_URL, **page([]))
    assert list(make().fetch_pages(None)) == []
    (wait,) = waits
    assert 27 <= wait <= 30


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 5 ") == 5.0
    assert parse_retry_after(formatdate(now + 45, usegmt=True), now=now) == 45.0
    assert parse_retry_after(formatdate(now - 45, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after("") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(("status", "error"), [(429, RateLimitedError), (503, ServerError)])
def test_a_persisting_429_or_503_gives_up_after_max_attempts(make, mocked, waits, status, error) -> None:
    mocked.get(TABLE_URL, status=status, headers={"Retry-After": "2"}, json={"error": {"message": "slow down"}})
    with pytest.raises(error) as err:
        list(make(max_attempts=3).fetch_pages(None))
    assert f"HTTP {status}" in str(err.value) and str(err.value).endswith("(gave up after 3 attempts)")
    assert err.value.retry_after == 2.0
    assert len(mocked.calls) == 3 and waits == [2.0, 2.0]


def test_a_retry_after_longer_than_max_wait_is_raised_at_once(make, mocked, waits) -> None:
    mocked.get(TABLE_URL, status=429, headers={"Retry-After": "600"})
    with pytest.raises(RateLimitedError) as err:
        list(make().fetch_pages(None))
    assert err.value.retry_after == 600.0 and "gave up" not in str(err.value)
    assert len(mocked.calls) == 1 and waits == []


def test_5xx_is_retried_with_exponential_backoff(make, mocked, waits, monkeypatch) -> None:
    monkeypatch.setattr("connectors.http.random.uniform", lambda low, high: high)  # the top of each jitter range
    for status in (500, 502, 504, 503):
        mocked.get(TABLE_URL, status=status, body="upstream error")
    mocked.get(TABLE_URL, **page([rec(1, "2024-05-01 10:00:00")], total=1))
    assert len(list(make().fetch_pages(None))) == 1
    assert waits == [0.5, 1.0, 2.0, 4.0] and len(mocked.calls) == 5


def test_backoff_jitter_stays_within_its_range(make, mocked, waits) -> None:
    mocked.get(TABLE_URL, status=500)
    with pytest.raises(ServerError, match=r"HTTP 500 .*\(gave up after 6 attempts\)$"):
        list(make(max_attempts=6).fetch_pages(None))
    assert len(waits) == 5
    assert all(0 <= w <= cap for w, cap in zip(waits, [0.5, 1, 2, 4, 8], strict=True)), waits


@pytest.mark.parametrize(("exc", "text"), [
    (requests.exceptions.ConnectTimeout("connect timed out"), "timed out connecting (ConnectTimeout)"),
    (requests.exceptions.ReadTimeout("read timed out"), "timed out waiting for the answer (ReadTimeout)"),
    (requests.exceptions.ConnectionError("connection refused"), "no connection (ConnectionError)"),
])
def test_no_answer_is_retried_then_a_transport_error(make, mocked, waits, exc, text) -> None:
    mocked.get(TABLE_URL, body=exc)
    with pytest.raises(TransportError) as err:
        list(make(max_attempts=4).fetch_pages(None))
    assert str(err.value) == f"GET {TABLE_URL}: {text} (gave up after 4 attempts)"
    assert len(mocked.calls) == 4 and len(waits) == 3


def test_a_timeout_then_an_answer_succeeds(make, mocked, waits) -> None:
    mocked.get(TABLE_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    mocked.get(TABLE_URL, **page([rec(1, "2024-05-01 10:00:00")], total=1))
    assert len(list(make().fetch_pages(None))) == 1
    assert len(waits) == 1 and len(mocked.calls) == 2


def test_the_configured_timeouts_are_used(make, mocked) -> None:
    seen: list[Any] = []
    real = requests.Session.send

    def spy(self: requests.Session, request: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("timeout"))
        return real(self, request, **kwargs)

    mocked.get(TABLE_URL, **page([]))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(requests.Session, "send", spy)
        list(make(timeout={"connect": 3, "read": 45}).fetch_pages(None))
    assert seen == [(3.0, 45.0)]


def test_basic_auth_sends_the_credentials(make, mocked) -> None:
    mocked.get(TABLE_URL, **page([]))
    list(make().fetch_pages(None))
    header = mocked.calls[0].request.headers["Authorization"]
    assert base64.b64decode(header.removeprefix("Basic ")).decode() == f"gapbridge.integration:{PASSWORD}"


# --- OAuth ----------------------------------------------------------------------------------

OAUTH_PASSWORD = {"method": "oauth_password", "client_id": "gb-client", "client_secret": CLIENT_SECRET,
                  "username": "gapbridge.integration", "password": PASSWORD}
OAUTH_CLIENT = {"method": "oauth_client_credentials", "client_id": "gb-client", "client_secret": CLIENT_SECRET}


def token_body(access: str = ACCESS_TOKEN, refresh: str | None = REFRESH_TOKEN, expires_in: int = 1800) -> dict[str, Any]:
    body: dict[str, Any] = {"access_token": access, "scope": "useraccount", "token_type": "Bearer", "expires_in": expires_in}
    if refresh:
        body["refresh_token"] = refresh
    return body


def bearer(token: str) -> Any:
    return matchers.header_matcher({"Authorization": f"Bearer {token}"})


@pytest.fixture
def make_oauth(waits: list[float]) -> Iterator[Any]:
    made: list[ServiceNowConnector] = []

    def build(auth: dict[str, Any] = OAUTH_PASSWORD, clock: Any = None, **over: Any) -> ServiceNowConnector:
        raw = raw_options(**over)
        raw["auth"] = dict(auth)
        conn = ServiceNowConnector("sn", ServiceNowOptionsSchema().load(raw), sleep=waits.append)
        made.append(conn)
        if clock is not None:
            conn.http.session.auth.clock = clock
        return conn

    yield build
    for conn in made:
        conn.close()


def test_oauth_password_grant_and_the_bearer_token_on_api_calls(make_oauth, mocked) -> None:
    form = {"grant_type": "password", "client_id": "gb-client", "client_secret": CLIENT_SECRET,
            "username": "gapbridge.integration", "password": PASSWORD}
    mocked.post(TOKEN_URL, json=token_body(), match=[matchers.urlencoded_params_matcher(form)])
    mocked.get(TABLE_URL, **page([]), match=[bearer(ACCESS_TOKEN)])
    conn = make_oauth(OAUTH_PASSWORD)
    assert list(conn.fetch_pages(None)) == []
    assert list(conn.fetch_pages({"sys_updated_on": "2024-05-01 10:00:00", "sys_id": "a"})) == []
    assert [c.request.method for c in mocked.calls] == ["POST", "GET", "GET"]  # one token for both calls
    assert mocked.calls[0].request.headers["Accept"] == "application/json"
    assert "Authorization" not in mocked.calls[0].request.headers


def test_oauth_client_credentials_grant(make_oauth, mocked) -> None:
    form = {"grant_type": "client_credentials", "client_id": "gb-client", "client_secret": CLIENT_SECRET}
    mocked.post(TOKEN_URL, json=token_body(refresh=None), match=[matchers.urlencoded_params_matcher(form)])
    mocked.get(TABLE_URL, **page([]), match=[bearer(ACCESS_TOKEN)])
    assert list(make_oauth(OAUTH_CLIENT).fetch_pages(None)) == []
    assert len(mocked.calls) == 2


def test_oauth_refreshes_with_the_refresh_token_when_expired(make_oauth, mocked) -> None:
    now = [0.0]
    first = {"grant_type": "password", "client_id": "gb-client", "client_secret": CLIENT_SECRET,
             "username": "gapbridge.integration", "password": PASSWORD}
    refresh = {"grant_type": "refresh_token", "client_id": "gb-client", "client_secret": CLIENT_SECRET, "refresh_token": REFRESH_TOKEN}
    mocked.post(TOKEN_URL, json=token_body(), match=[matchers.urlencoded_params_matcher(first)])
    mocked.post(TOKEN_URL, json=token_body("at-second", refresh=None), match=[matchers.urlencoded_params_matcher(refresh)])
    old = mocked.get(TABLE_URL, **page([]), match=[bearer(ACCESS_TOKEN)])
    new = mocked.get(TABLE_URL, **page([]), match=[bearer("at-second")])
    conn = make_oauth(OAUTH_PASSWORD, clock=lambda: now[0])
    list(conn.fetch_pages(None))
    now[0] = 1700.0  # still valid (30 minutes less the 60 s skew)
    list(conn.fetch_pages(None))
    assert (old.call_count, new.call_count, len(mocked.calls)) == (2, 0, 3)
    now[0] = 1741.0  # inside the skew: refresh before it expires
    list(conn.fetch_pages(None))
    assert (old.call_count, new.call_count) == (2, 1)
    assert dict(parse_qs(mocked.calls[3].request.body)) == {k: [v] for k, v in refresh.items()}
    # the server sent no new refresh token: the old one is kept for next time
    assert conn.http.session.auth.refresh_token == REFRESH_TOKEN


def test_a_refused_refresh_token_falls_back_to_the_original_grant(make_oauth, mocked) -> None:
    now = [0.0]
    mocked.post(TOKEN_URL, json=token_body())
    mocked.post(TOKEN_URL, status=401, json={"error_description": "access_denied", "error": "server_error"})
    mocked.post(TOKEN_URL, json=token_body("at-third", refresh="rt-third"))
    mocked.get(TABLE_URL, **page([]))
    conn = make_oauth(OAUTH_PASSWORD, clock=lambda: now[0])
    list(conn.fetch_pages(None))
    now[0] = 5000.0
    list(conn.fetch_pages(None))
    grants = [parse_qs(c.request.body)["grant_type"][0] for c in mocked.calls if c.request.method == "POST"]
    assert grants == ["password", "refresh_token", "password"]
    assert mocked.calls[-1].request.headers["Authorization"] == "Bearer at-third"
    assert conn.http.session.auth.refresh_token == "rt-third"


def test_a_401_from_the_api_invalidates_the_token_and_retries_once(make_oauth, mocked, waits) -> None:
    mocked.post(TOKEN_URL, json=token_body(refresh=None))
    mocked.post(TOKEN_URL, json=token_body("at-fresh", refresh=None))
    stale = mocked.get(TABLE_URL, status=401, json={"error": {"message": "User Not Authenticated"}}, match=[bearer(ACCESS_TOKEN)])
    fresh = mocked.get(TABLE_URL, **page([rec(1, "2024-05-01 10:00:00")], total=1), match=[bearer("at-fresh")])
    pages = list(make_oauth(OAUTH_CLIENT).fetch_pages(None))
    assert len(pages) == 1
    assert (stale.call_count, fresh.call_count) == (1, 1)
    assert [c.request.method for c in mocked.calls] == ["POST", "GET", "POST", "GET"]
    assert waits == []


def test_the_fresh_token_try_does_not_use_up_a_retry_attempt(make_oauth, mocked, waits) -> None:
    mocked.post(TOKEN_URL, json=token_body(refresh=None))
    mocked.post(TOKEN_URL, json=token_body("at-fresh", refresh=None))
    mocked.get(TABLE_URL, status=401, match=[bearer(ACCESS_TOKEN)])
    mocked.get(TABLE_URL, status=503, headers={"Retry-After": "1"}, match=[bearer("at-fresh")])
    mocked.get(TABLE_URL, **page([]), match=[bearer("at-fresh")])
    # 401 (token refreshed, not an attempt), 503 (attempt 1), 200 (attempt 2 of 2)
    assert list(make_oauth(OAUTH_CLIENT, max_attempts=2).fetch_pages(None)) == []
    assert waits == [1.0] and [c.response.status_code for c in mocked.calls if c.request.method == "GET"] == [401, 503, 200]


def test_a_second_401_after_a_fresh_token_is_an_authentication_error(make_oauth, mocked, waits) -> None:
    mocked.post(TOKEN_URL, json=token_body(refresh=None))
    mocked.get(TABLE_URL, status=401, json={"error": {"message": "User Not Authenticated"}})
    with pytest.raises(AuthenticationError, match="HTTP 401") as err:
        list(make_oauth(OAUTH_CLIENT, max_attempts=5).fetch_pages(None))
    assert [c.request.method for c in mocked.calls] == ["POST", "GET", "POST", "GET"]
    assert waits == []
    assert_no_secret(err.value)


@pytest.mark.parametrize("status", [400, 401])
def test_a_refused_token_request_is_an_authentication_error(make_oauth, mocked, waits, status) -> None:
    mocked.post(TOKEN_URL, status=status, json={"error_description": "access_denied", "error": "server_error"})
    with pytest.raises(AuthenticationError) as err:
        list(make_oauth(OAUTH_PASSWORD).fetch_pages(None))
    assert str(err.value) == (f"POST {TOKEN_URL}: OAuth token refused (HTTP {status}, access_denied); "
                              "check client_id, client_secret and the password grant")
    assert len(mocked.calls) == 1 and waits == []  # no API call, no retry
    assert_no_secret(err.value)


@pytest.mark.parametrize(("body", "text"), [("<html>login</html>", "token response is not JSON"), ('{"token_type": "Bearer"}', "has no access_token")])
def test_an_unreadable_token_response_is_invalid(make_oauth, mocked, body, text) -> None:
    mocked.post(TOKEN_URL, body=body)
    with pytest.raises(InvalidResponseError, match=text):
        list(make_oauth(OAUTH_CLIENT).fetch_pages(None))


def test_a_token_endpoint_that_is_down_is_retried(make_oauth, mocked, waits) -> None:
    mocked.post(TOKEN_URL, status=503, headers={"Retry-After": "3"})
    mocked.post(TOKEN_URL, json=token_body())
    mocked.get(TABLE_URL, **page([]), match=[bearer(ACCESS_TOKEN)])
    assert list(make_oauth(OAUTH_CLIENT).fetch_pages(None)) == []
    assert waits == [3.0]


# --- secrets --------------------------------------------------------------------------------


def _fail_everything(mocked: responses.RequestsMock, scenario: str) -> None:
    if scenario == "token-refused":
        mocked.post(TOKEN_URL, status=401, json={"error_description": "access_denied", "error": "server_error"})
        return
    mocked.post(TOKEN_URL, json=token_body())
    if scenario == "api-401":
        mocked.get(TABLE_URL, status=401, json={"error": {"message": "User Not Authenticated"}})
    elif scenario == "api-500":
        mocked.get(TABLE_URL, status=500, body="Internal Server Error")
    elif scenario == "timeout":
        mocked.get(TABLE_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    elif scenario == "refused":
        mocked.get(TABLE_URL, body=requests.exceptions.ConnectionError("connection refused"))
    elif scenario == "not-json":
        mocked.get(TABLE_URL, body="<html>please log in</html>", content_type="text/html")
    elif scenario == "token-timeout":
        mocked.replace(responses.POST, TOKEN_URL, body=requests.exceptions.ConnectTimeout("connect timed out"))


BASIC = {"method": "basic", "username": "gapbridge.integration", "password": PASSWORD}
API_FAILURES = ["api-401", "api-500", "timeout", "refused", "not-json"]


@pytest.mark.parametrize(("auth", "scenario"), [
    *((a, s) for a in (OAUTH_PASSWORD, OAUTH_CLIENT) for s in [*API_FAILURES, "token-refused", "token-timeout"]),
    *((BASIC, s) for s in API_FAILURES),
])
def test_secrets_never_appear_in_errors_or_retry_logs(make_oauth, mocked, caplog, auth, scenario) -> None:
    _fail_everything(mocked, scenario)
    with caplog.at_level("DEBUG"), pytest.raises(ConnectorError) as err:
        list(make_oauth(auth, max_attempts=2).fetch_pages(None))
    assert_no_secret(err.value)
    for secret in SECRETS:
        assert secret not in caplog.text


# --- write-back ---------------------------------------------------------------------------------

NOTE = "GapBridge: ISO/IEC 27001 check of INC0000060 found 1 open gap.\n\n[gapbridge:0123456789abcdef]"
FIELDS = {"fingerprint": "0123456789abcdef", "open_gaps": 1, "gap_checks": "EVID-001", "controls_2022": "A.5.28",
          "controls_2013": "A.16.1.7", "compliance_status": "gaps", "worst_severity": "high", "ruleset": "r1"}
WRITE = {"fields": {"open_gaps": "u_gap_count", "gap_checks": "u_gap_checks", "compliance_status": "u_iso_status"},
         "fingerprint_field": "u_gapbridge_fp"}
PATCH_URL = f"{TABLE_URL}/{SID}"


def enrichment(**over: Any) -> Enrichment:
    base: dict[str, Any] = {"external_id": SID, "fingerprint": "0123456789abcdef", "note": NOTE, "fields": dict(FIELDS), "labels": ["gapbridge-gaps"]}
    return Enrichment(**{**base, **over})


def test_write_back_patches_the_note_the_columns_and_the_fingerprint(make, mocked) -> None:
    body = {"work_notes": NOTE, "u_gap_count": "1", "u_gap_checks": "EVID-001", "u_iso_status": "gaps", "u_gapbridge_fp": "0123456789abcdef"}
    params = {"sysparm_fields": "sys_id,u_gap_checks,u_gap_count,u_gapbridge_fp,u_iso_status", "sysparm_display_value": "false",
              "sysparm_exclude_reference_link": "true"}
    answer = {"result": {"sys_id": SID, "u_gap_count": "1", "u_gap_checks": "EVID-001", "u_iso_status": "gaps", "u_gapbridge_fp": "0123456789abcdef"}}
    patch = mocked.patch(PATCH_URL, json=answer, match=[matchers.json_params_matcher(body), matchers.query_param_matcher(params)])
    result = make(write_back=WRITE).write_back(enrichment())
    assert patch.call_count == 1
    assert (result.external_id, result.written, result.dry_run) == (SID, True, False)
    assert result.detail == "patched u_gap_checks, u_gap_count, u_gapbridge_fp, u_iso_status, work_notes"
    assert mocked.calls[0].request.headers["Content-Type"] == "application/json"


def test_write_back_body_matches_the_documented_patch_request(make, mocked) -> None:
    documented = fixture("patch_work_notes_request.json")
    mocked.patch(PATCH_URL, json={"result": {"sys_id": SID, "u_iso27001_controls": documented["u_iso27001_controls"]}},
                 match=[matchers.json_params_matcher(documented)])
    conn = make(write_back={"fields": {"controls_2022": "u_iso27001_controls"}})
    result = conn.write_back(enrichment(note=documented["work_notes"], fields={"controls_2022": documented["u_iso27001_controls"]}))
    assert result.written and len(mocked.calls) == 1
    assert sent(mocked.calls[0])["sysparm_fields"] == "sys_id,u_iso27001_controls"


def test_write_back_to_sn_si_incident(make, mocked) -> None:
    mocked.patch(f"{SIR_URL}/abc", json={"result": {"sys_id": "abc"}}, match=[matchers.json_params_matcher({"work_notes": NOTE})])
    assert make(table="sn_si_incident").write_back(enrichment(external_id="abc")).written


def test_dry_run_sends_nothing(make, mocked) -> None:
    result = make(write_back={**WRITE, "dry_run": True}).write_back(enrichment())
    assert (result.written, result.dry_run) == (False, True)
    assert result.detail == "would PATCH u_gap_checks, u_gap_count, u_gapbridge_fp, u_iso_status, work_notes"
    assert len(mocked.calls) == 0


def test_a_response_lacking_a_configured_column_names_it(make, mocked) -> None:
    # ServiceNow ignores unknown columns in a PATCH and answers 200 without them
    mocked.patch(PATCH_URL, json={"result": {"sys_id": SID, "u_gap_count": "1", "u_gapbridge_fp": "0123456789abcdef"}})
    with pytest.raises(InvalidResponseError, match=r"^incident has no column u_gap_checks, u_iso_status: create it or change write_back"):
        make(write_back=WRITE).write_back(enrichment())


@pytest.mark.parametrize("body", [{"result": []}, {"sys_id": SID}, "ok"])
def test_a_patch_answer_without_a_result_record_is_invalid(make, mocked, body) -> None:
    mocked.patch(PATCH_URL, json=body)
    with pytest.raises(InvalidResponseError, match="no 'result' record"):
        make().write_back(enrichment())


def test_work_note_off_writes_only_the_columns(make, mocked) -> None:
    body = {"u_gap_count": "1", "u_gap_checks": "EVID-001", "u_iso_status": "gaps", "u_gapbridge_fp": "0123456789abcdef"}
    mocked.patch(PATCH_URL, json={"result": {"sys_id": SID, **body}}, match=[matchers.json_params_matcher(body)])
    result = make(write_back={**WRITE, "work_note": False}).write_back(enrichment())
    assert result.written and "work_notes" not in json.loads(mocked.calls[0].request.body)


def test_an_enrichment_without_a_note_and_nothing_else_configured_writes_nothing(make, mocked) -> None:
    result = make(write_back={"work_note": False}).write_back(enrichment())
    assert (result.written, result.detail) == (False, "nothing configured to write") and len(mocked.calls) == 0
    assert make().write_back(enrichment(note=None)).written is False and len(mocked.calls) == 0


def test_only_the_enrichment_fields_present_are_written_with_their_text(make, mocked) -> None:
    mocked.patch(PATCH_URL, json={"result": {"sys_id": SID, "u_gap_count": "0"}},
                 match=[matchers.json_params_matcher({"work_notes": NOTE, "u_gap_count": "0"})])
    conn = make(write_back={"fields": {"open_gaps": "u_gap_count", "worst_severity": "u_worst"}})
    assert conn.write_back(enrichment(fields={"open_gaps": 0})).written


def test_patch_errors_go_through_the_error_tree(make, mocked, waits) -> None:
    mocked.patch(PATCH_URL, status=403, json={"error": {"message": "Operation Failed", "detail": "ACL Exception Update Failed"}})
    with pytest.raises(PermissionDeniedError, match=f"PATCH {PATCH_URL}: HTTP 403 .*ACL Exception Update Failed"):
        make().write_back(enrichment())
    assert waits == []


def test_a_patch_whose_answer_timed_out_is_not_sent_again_blindly(make, mocked) -> None:
    mocked.patch(PATCH_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    mocked.patch(PATCH_URL, json={"result": {"sys_id": SID}})
    with pytest.raises(TransportError):
        make().write_back(enrichment())
    # the outbox checks current_fingerprint before it tries again; the session must not resend on its own
    assert len(mocked.calls) == 1


@pytest.mark.parametrize(("status", "resent"), [(429, True), (503, True), (500, False), (502, False), (504, False)])
def test_a_patch_is_resent_only_when_the_tool_refused_it_before_acting(make, mocked, waits, status, resent) -> None:
    mocked.patch(PATCH_URL, status=status, json={"error": {"message": "busy"}, "status": "failure"}, headers={"Retry-After": "1"})
    mocked.patch(PATCH_URL, json={"result": {"sys_id": SID}})
    if resent:
        assert make().write_back(enrichment()).written
        assert len(mocked.calls) == 2 and waits == [1.0]
    else:
        with pytest.raises(ServerError):
            make().write_back(enrichment())
        assert len(mocked.calls) == 1 and waits == []


def test_current_fingerprint_from_the_fingerprint_column(make, mocked) -> None:
    params = {"sysparm_fields": "sys_id,u_gapbridge_fp", "sysparm_display_value": "false"}
    mocked.get(PATCH_URL, json={"result": {"sys_id": SID, "u_gapbridge_fp": "0123456789abcdef"}}, match=[matchers.query_param_matcher(params)])
    mocked.get(f"{TABLE_URL}/other", json={"result": {"sys_id": "other", "u_gapbridge_fp": ""}}, match=[matchers.query_param_matcher(params)])
    conn = make(write_back=WRITE)
    assert conn.current_fingerprint(SID) == "0123456789abcdef"
    assert conn.current_fingerprint("other") is None
    assert all(not c.request.url.startswith(JOURNAL_URL) for c in mocked.calls)


def test_current_fingerprint_answer_without_a_record_is_invalid(make, mocked) -> None:
    mocked.get(PATCH_URL, json={"result": []})
    with pytest.raises(InvalidResponseError, match="no 'result' record"):
        make(write_back=WRITE).current_fingerprint(SID)


def test_current_fingerprint_from_the_newest_marked_work_note(make, mocked) -> None:
    params = {"sysparm_query": f"element_id={SID}^element=work_notes^valueLIKE[gapbridge:^ORDERBYDESCsys_created_on",
              "sysparm_limit": "1", "sysparm_fields": "value,sys_created_on"}
    mocked.get(JOURNAL_URL, match=[matchers.query_param_matcher(params)],
               json={"result": [{"value": "GapBridge: ISO/IEC 27001 check found 2 open gaps.\n...\n\n[gapbridge:fedcba9876543210]",
                                 "sys_created_on": "2024-05-01 10:00:00"}]})
    assert make().current_fingerprint(SID) == "fedcba9876543210"
    assert len(mocked.calls) == 1


@pytest.mark.parametrize(("rows", "expected"), [([], None), ([{"value": "a note without a marker", "sys_created_on": "x"}], None),
                                                ([{"value": "[gapbridge:clean]"}], "clean")])
def test_current_fingerprint_from_the_journal_edge_cases(make, mocked, rows, expected) -> None:
    mocked.get(JOURNAL_URL, json={"result": rows})
    assert make().current_fingerprint(SID) == expected


def test_current_fingerprint_journal_answer_without_a_list_is_invalid(make, mocked) -> None:
    mocked.get(JOURNAL_URL, json={"error": "nope"})
    with pytest.raises(InvalidResponseError, match="sys_journal_field: the body has no 'result' list"):
        make().current_fingerprint(SID)


# --- through the sync service ------------------------------------------------------------------


def _cell(value: Any) -> Any:
    return value.get("value") if isinstance(value, dict) else value


class FakeTable:
    """The Table API list call over rows in memory: evaluates the keyset queries the connector sends."""

    COND = re.compile(r"^(\w+)(>=|>|=)(.*)$")

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.queries: list[str] = []
        self.fail_from: int | None = None  # the list call (1-based) from which every call answers 500

    def _matches(self, query: str, row: dict[str, Any]) -> bool:
        assert query.endswith(ORDER), query
        where = query.removesuffix(ORDER).removesuffix("^")
        if not where:
            return True
        for branch in where.split("^NQ"):
            ok = True
            for cond in branch.split("^"):
                m = self.COND.match(cond)
                assert m, cond
                have, op, want = str(_cell(row.get(m[1])) or ""), m[2], m[3]
                ok = ok and {">=": have >= want, ">": have > want, "=": have == want}[op]
            if ok:
                return True
        return False

    def __call__(self, request: Any) -> tuple[int, dict[str, str], str]:
        params = {k: v[0] for k, v in parse_qs(urlsplit(request.url).query).items()}
        self.queries.append(params["sysparm_query"])
        if self.fail_from is not None and len(self.queries) >= self.fail_from:
            return 500, {}, json.dumps({"error": {"message": "Transaction cancelled: maximum execution time exceeded"}, "status": "failure"})
        found = sorted((r for r in self.rows if self._matches(params["sysparm_query"], r)),
                       key=lambda r: (_cell(r["sys_updated_on"]), _cell(r["sys_id"])))
        return 200, {"X-Total-Count": str(len(found))}, json.dumps({"result": found[: int(params["sysparm_limit"])]})


def count(model: type, *where: Any) -> int:
    from plugin.extensions import db

    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


SYNC_ROWS = [rec(1, "2024-05-01 10:00:00"), rec(2, "2024-05-01 10:00:00"), rec(3, "2024-05-01 10:00:30"),
             rec(4, "2024-05-01 10:05:00"), rec(5, "2024-05-01 11:00:00")]


@pytest.mark.parametrize(("overlap", "resume_query", "refetched"), [
    (60, f"sys_updated_on>=2024-05-01 09:59:00^{ORDER}", 5),
    (0, f"sys_updated_on>2024-05-01 10:00:00^NQsys_updated_on=2024-05-01 10:00:00^sys_id>{SYNC_ROWS[1]['sys_id']}^{ORDER}", 3),
])
def test_sync_fails_on_page_two_keeps_page_one_and_resumes_from_its_bookmark(app_factory, mocked, waits, overlap, resume_query,
                                                                          refetched) -> None:
    from plugin.extensions import db
    from plugin.models import Incident, SyncBookmark, SyncRun
    from plugin.services.sync import sync_source

    tool = FakeTable([dict(r) for r in SYNC_ROWS])
    tool.fail_from = 2
    mocked.add_callback(responses.GET, TABLE_URL, callback=tool)
    app = app_factory()
    with app.app_context():
        first = ServiceNowConnector("sn", load(page_size=2, max_attempts=3, display_value=False, bookmark_overlap_seconds=overlap),
                                    sleep=waits.append)
        try:
            with pytest.raises(ServerError, match=r"HTTP 500 .*maximum execution time exceeded.*\(gave up after 3 attempts\)$"):
                sync_source(first)
        finally:
            first.close()
        assert len(tool.queries) == 1 + 3 and len(waits) == 2
        assert sorted(db.session.scalars(sa.select(Incident.external_id))) == [SYNC_ROWS[0]["sys_id"], SYNC_ROWS[1]["sys_id"]]
        bookmark = {"sys_updated_on": "2024-05-01 10:00:00", "sys_id": SYNC_ROWS[1]["sys_id"]}
        assert db.session.get(SyncBookmark, "sn").value == bookmark
        run = db.session.execute(sa.select(SyncRun)).scalar_one()
        assert (run.status, run.pages, run.fetched, run.stored, run.bookmark_after) == ("failed", 1, 2, 2, bookmark)
        assert "HTTP 500" in run.error and "gave up after 3 attempts" in run.error

        tool.fail_from, tool.queries = None, []
        again = ServiceNowConnector("sn", load(page_size=2, max_attempts=3, display_value=False, bookmark_overlap_seconds=overlap),
                                    sleep=waits.append)
        try:
            summary = sync_source(again)
        finally:
            again.close()
        assert tool.queries[0] == resume_query
        assert (summary.status, summary.fetched, summary.stored, summary.rejected) == ("succeeded", refetched, refetched, 0)
        ids = list(db.session.scalars(sa.select(Incident.external_id)))
        assert sorted(ids) == sorted(r["sys_id"] for r in SYNC_ROWS)  # every incident exactly once
        assert count(Incident, Incident.source == "sn") == 5
        assert db.session.get(SyncBookmark, "sn").value == {"sys_updated_on": "2024-05-01 11:00:00", "sys_id": SYNC_ROWS[4]["sys_id"]}
        runs = db.session.scalars(sa.select(SyncRun).order_by(SyncRun.id)).all()
        assert [r.status for r in runs] == ["failed", "succeeded"] and runs[1].bookmark_before == bookmark
        stored = db.session.execute(sa.select(Incident).where(Incident.external_id == SYNC_ROWS[3]["sys_id"])).scalar_one()
        assert (stored.number, stored.state, stored.severity) == ("INC0000004", "in_progress", "medium")


def test_sync_stores_an_unmappable_record_as_rejected_and_carries_on(app_factory, mocked, waits) -> None:
    from plugin.extensions import db
    from plugin.models import Incident, RejectedRecord
    from plugin.services.sync import sync_source

    rows = [rec(1, "2024-05-01 10:00:00"), rec(2, "2024-05-01 10:01:00", state="42"), rec(3, "2024-05-01 10:02:00"),
            rec(4, "2024-05-01 10:03:00", u_evidence="not json"), rec(5, "2024-05-01 10:04:00")]
    tool = FakeTable(rows)
    mocked.add_callback(responses.GET, TABLE_URL, callback=tool)
    app = app_factory()
    with app.app_context():
        conn = ServiceNowConnector("sn", load(page_size=2, display_value=False), sleep=waits.append)
        try:
            summary = sync_source(conn)
            assert (summary.status, summary.pages, summary.fetched, summary.stored, summary.rejected) == ("succeeded", 3, 5, 3, 2)
            reasons = dict(summary.rejections)
            assert reasons[rows[1]["sys_id"]].startswith("INC0000002: column state (canonical state): state '42' is not in state_map")
            assert reasons[rows[3]["sys_id"]].startswith("INC0000004: column u_evidence (canonical evidence): not a JSON list")
            rejected = {r.external_id: r for r in db.session.scalars(sa.select(RejectedRecord))}
            assert set(rejected) == {rows[1]["sys_id"], rows[3]["sys_id"]}
            assert rejected[rows[1]["sys_id"]].reason == reasons[rows[1]["sys_id"]] and rejected[rows[1]["sys_id"]].raw["state"] == "42"
            assert count(Incident) == 3
            # the record is fixed in the tool: the next sync stores it and clears its rejection
            rows[1].update(state="2", sys_updated_on="2024-05-01 12:00:00")
            sync_source(conn)
            assert set(db.session.scalars(sa.select(RejectedRecord.external_id))) == {rows[3]["sys_id"]}
            assert count(Incident) == 4
        finally:
            conn.close()


def test_sync_rejects_a_display_all_record_under_its_sys_id(app_factory, mocked, waits) -> None:
    from plugin.extensions import db
    from plugin.models import RejectedRecord
    from plugin.services.sync import sync_source

    (record,) = fixture("sn_si_incident_display_all_response.json")["result"]
    record = {**record, "state": {"display_value": "Unknown", "value": "999"}}
    mocked.get(SIR_URL, json={"result": [record]}, headers={"X-Total-Count": "1"})
    app = app_factory()
    with app.app_context():
        conn = ServiceNowConnector("sir", load(table="sn_si_incident"), sleep=waits.append)
        try:
            summary = sync_source(conn)
        finally:
            conn.close()
        assert summary.rejected == 1
        assert list(db.session.scalars(sa.select(RejectedRecord.external_id))) == ["9de5069c5afe602b2ea0a04b66beb2c0"]
