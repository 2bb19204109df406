"""The RT connector over recorded REST2 answers (tests/fixtures/rt, from RT 5.0.3): paging, dates, ids, custom fields,
history, errors, If-Match, secrets. The same connector against a running RT: tests/test_rt_live.py."""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from marshmallow import ValidationError

from connectors.base import (
    AuthenticationError,
    ConfigurationError,
    Enrichment,
    InvalidResponseError,
    NormalizationError,
    RetriableConnectorError,
    connector_class,
)
from connectors.rt import RTConnector

BASE = "https://rt.example.test"
REST = f"{BASE}/REST/2.0"
FIXTURES = Path(__file__).parent / "fixtures" / "rt"
PASSWORD = "s3cret-rt-pass"
TOKEN = "1-14-0123456789abcdef0123456789abcdef"
CUSTOM_FIELDS = [{"id": "2", "Name": "Severity", "LookupType": "RT::Queue-RT::Ticket", "Disabled": "0"},
                 {"id": "7", "Name": "GapBridge Fingerprint", "LookupType": "RT::Queue-RT::Ticket", "Disabled": "0"},
                 {"id": "8", "Name": "Open Gaps", "LookupType": "RT::Queue-RT::Ticket", "Disabled": "0"},
                 {"id": "9", "Name": "Old Severity", "LookupType": "RT::Queue-RT::Ticket", "Disabled": "1"}]


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def options(**over: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"type": "rt", "url": BASE, "auth": {"method": "basic", "username": "root", "password": PASSWORD},
                           "timezone": "UTC", "per_page": 2, "max_attempts": 2, "timeline": {"enabled": False}}
    raw.update(over)
    return RTConnector.config_schema().load(raw)


def connector(**over: Any) -> RTConnector:
    return RTConnector("rt", options(**over), sleep=lambda _s: None)


def ticket(ticket_id: int | str, updated: str, **fields: Any) -> dict[str, Any]:
    """A ticket as GET /ticket/:id answers it (tests/fixtures/rt/ticket_1.json), with another id and LastUpdated."""
    t = copy.deepcopy(fixture("ticket_1"))
    t.update(id=ticket_id, LastUpdated=updated, **fields)
    return t


class SearchDouble:
    """GET /tickets over a list of tickets, reading ``LastUpdated >= '...'`` in a zone at ``offset``, as RT does.

    ``counts``: False answers total and pages as null (an account without the right to see counts);
    ``next_page`` then says whether a page follows, as RT versions after 5.0.3 do, or nothing, as 5.0.3 does.
    """

    def __init__(self, tickets: list[dict[str, Any]], *, counts: bool = True, next_page: bool = True,
                 offset: timedelta = timedelta(0)) -> None:
        self.tickets, self.counts, self.next_page, self.offset = tickets, counts, next_page, offset
        self.asked: list[dict[str, list[str]]] = []

    def __call__(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        params = parse_qs(urlsplit(str(request.url)).query)
        self.asked.append(params)
        query = params["query"][0]
        rows = sorted(self.tickets, key=lambda t: (t["LastUpdated"], int(t["id"])))
        since = re.search(r"LastUpdated >= '([^']+)'", query)
        if since:
            start = datetime.fromisoformat(since.group(1)).replace(tzinfo=timezone.utc) - self.offset
            rows = [t for t in rows if datetime.fromisoformat(t["LastUpdated"].replace("Z", "+00:00")) >= start]
        page, per_page = int(params["page"][0]), min(int(params["per_page"][0]), 100)
        items = rows[(page - 1) * per_page: page * per_page]
        body: dict[str, Any] = {"page": page, "per_page": per_page, "count": len(items),
                                "items": [{**t, "id": str(t["id"])} for t in items]}  # ids are strings in a search
        more = page * per_page < len(rows)
        if self.counts:
            body.update(total=len(rows), pages=-(-len(rows) // per_page))
        else:
            body.update(total=None, pages=None)
        if more and (self.counts or self.next_page):
            body["next_page"] = f"{REST}/tickets?page={page + 1}"
        return 200, {"Content-Type": "application/json"}, json.dumps(body)


@pytest.fixture
def rt() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.add(responses.POST, f"{REST}/customfields", json={"items": CUSTOM_FIELDS, "total": 4, "count": 4, "page": 1,
                                                                "per_page": 100, "pages": 1})
        yield mock


def fetched(c: RTConnector, bookmark: dict[str, Any] | None = None) -> list[str]:
    return [str(r["id"]) for page in c.fetch_pages(bookmark) for r in page.records]


# --- paging ---------------------------------------------------------------------------------

THREE = [ticket(1, "2026-11-22T13:57:48Z"), ticket(2, "2026-11-22T13:57:49Z"), ticket(3, "2026-11-22T13:57:50Z")]


@pytest.mark.parametrize("next_page", [True, False], ids=["next_page given", "no next_page (RT 5.0.3)"])
def test_paging_goes_on_when_rt_hides_the_counts(rt: responses.RequestsMock, next_page: bool) -> None:
    tool = SearchDouble(copy.deepcopy(THREE), counts=False, next_page=next_page)
    rt.add_callback(responses.GET, f"{REST}/tickets", callback=tool)
    assert fetched(connector()) == ["1", "2", "3"]  # each once, in (LastUpdated, id) order
    first = tool.asked[0]
    assert first["query"] == ["id > 0"] and first["orderby"] == ["LastUpdated", "id"] and first["order"] == ["ASC", "ASC"]
    # the next window starts at the last second read (keyset), not at an offset that shifts when tickets change
    assert tool.asked[1]["query"] == ["LastUpdated >= '2026-11-22 13:57:49'"] and tool.asked[1]["page"] == ["1"]


def test_each_page_says_the_total_of_the_scope_not_of_its_window(rt: responses.RequestsMock) -> None:
    five = [ticket(i, f"2026-11-22T13:57:{47 + i}Z") for i in range(1, 6)]
    rt.add_callback(responses.GET, f"{REST}/tickets", callback=SearchDouble(five))
    pages = list(connector().fetch_pages(None))
    # a window starts at the last second read (one ticket again) and RT counts from there; each page says all five
    assert [len(p.records) for p in pages] == [2, 1, 1, 1] and [p.total for p in pages] == [5, 5, 5, 5]


def test_a_page_all_of_one_second_goes_on_by_page_number(rt: responses.RequestsMock) -> None:
    same = [ticket(i, "2026-11-22T13:57:48Z") for i in (4, 5, 6, 7, 8)]
    tool = SearchDouble(same)
    rt.add_callback(responses.GET, f"{REST}/tickets", callback=tool)
    assert fetched(connector(bookmark_overlap_seconds=0), {"LastUpdated": "2026-11-22T13:57:48Z", "id": 0}) == ["4", "5", "6", "7", "8"]
    assert [p["page"][0] for p in tool.asked] == ["1", "2", "3"]


def test_pages_carry_a_bookmark_that_never_moves_back_and_the_overlap_is_deduplicated(rt: responses.RequestsMock) -> None:
    tool = SearchDouble(copy.deepcopy(THREE))
    rt.add_callback(responses.GET, f"{REST}/tickets", callback=tool)
    c = connector(bookmark_overlap_seconds=60)
    pages = list(c.fetch_pages({"LastUpdated": "2026-11-22T13:57:50Z", "id": 3}))
    assert tool.asked[0]["query"] == ["LastUpdated >= '2026-11-22 13:56:50'"]  # the overlap re-read
    assert [str(r["id"]) for p in pages for r in p.records] == ["1", "2", "3"]
    assert all(p.bookmark == {"LastUpdated": "2026-11-22T13:57:50Z", "id": 3} for p in pages)


def test_per_page_is_capped_at_rts_hundred() -> None:
    with pytest.raises(ValidationError, match="at most 100"):
        options(per_page=500)
    assert connector(per_page=100).per_page == 100


def test_the_scope_is_anded_with_the_bookmark_condition() -> None:
    c = connector(query="Queue = 'Security Incidents' OR Queue = 'SOC'", bookmark_overlap_seconds=0)
    c.zone = timezone.utc
    assert c.search_query(datetime(2026, 11, 22, 13, 57, 48, tzinfo=timezone.utc)) == (
        "(Queue = 'Security Incidents' OR Queue = 'SOC') AND LastUpdated >= '2026-11-22 13:57:48'")
    assert c.search_query(None) == "Queue = 'Security Incidents' OR Queue = 'SOC'"


# --- time zones ------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [timedelta(hours=-5), timedelta(hours=5, minutes=30), timedelta(0), timedelta(hours=13)])
def test_the_time_zone_is_measured_as_rt_reads_ticketsql_dates(rt: responses.RequestsMock, offset: timedelta) -> None:
    updated = datetime(2026, 11, 22, 13, 57, 48, tzinfo=timezone.utc)

    def search(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        query = parse_qs(urlsplit(str(request.url)).query)["query"][0]
        if query == "id > 0":  # the newest ticket
            return 200, {}, json.dumps({"items": [{"id": "3", "LastUpdated": "2026-11-22T13:57:48Z"}], "total": 3})
        said = re.fullmatch(r"id = 3 AND LastUpdated > '([^']+)'", query)
        assert said, query
        # RT reads the date as the user's wall clock: in UTC it is that time minus the zone's offset
        as_utc = datetime.fromisoformat(said.group(1)).replace(tzinfo=timezone.utc) - offset
        return 200, {}, json.dumps({"items": [{"id": "3"}] if updated > as_utc else [], "total": None})

    rt.add_callback(responses.GET, f"{REST}/tickets", callback=search)
    rt.add(responses.GET, f"{REST}/user/root", json={"Name": "root", "id": 14})  # no Timezone preference
    c = connector(timezone="auto")
    c.check_configuration()
    assert c.zone.utcoffset(None) == offset and c.zone_source.startswith("measured")
    assert c.search_query(updated) == f"LastUpdated >= '{(updated + offset):%Y-%m-%d %H:%M:%S}'"
    # a measured offset cannot know daylight saving: an hour more is re-read before each bookmark
    assert c.stream.overlap_seconds == 60 + 3600


def test_the_users_time_zone_preference_wins_over_measuring(rt: responses.RequestsMock) -> None:
    rt.add(responses.GET, f"{REST}/user/root", json={"Name": "root", "Timezone": "Europe/Berlin"})
    c = connector(timezone="auto", bookmark_overlap_seconds=0)
    c.check_configuration()
    assert "preference" in c.zone_source
    assert c.search_query(datetime(2026, 11, 22, 13, 57, 48, tzinfo=timezone.utc)) == "LastUpdated >= '2026-11-22 14:57:48'"
    assert [call.request.url.split("?")[0] for call in rt.calls] == [f"{REST}/user/root"]  # nothing measured


def test_an_hour_the_clock_shows_twice_is_read_from_its_first_time() -> None:
    c = connector(timezone="Europe/Berlin", bookmark_overlap_seconds=0)
    c.check_configuration()
    # 2026-10-25 01:30 UTC is 02:30 CET, the second 02:30 of that night; RT may read 02:30 as the first (00:30 UTC)
    assert c.search_query(datetime(2026, 10, 25, 1, 30, tzinfo=timezone.utc)) == "LastUpdated >= '2026-10-25 02:30:00'"
    assert c._local(datetime(2026, 10, 25, 1, 30, tzinfo=timezone.utc))[1] == 3600
    # an ordinary hour: no slack
    assert c._local(datetime(2026, 11, 22, 13, 0, tzinfo=timezone.utc)) == ("2026-11-22 14:00:00", 0)


def test_a_bad_time_zone_name_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="not a time zone name: 'Mars/Olympus'"):
        options(timezone="Mars/Olympus")


# --- normalising -----------------------------------------------------------------------------


def test_dates_never_set_are_none_and_numeric_ids_are_strings(rt: responses.RequestsMock) -> None:
    c = connector(field_map={"severity": "CF.{Severity}"})
    incident = c.normalize(fixture("ticket_1"))  # id 1: a number on GET /ticket/:id
    assert incident["external_id"] == "1" and incident["number"] == "1" and c.record_id(fixture("ticket_1")) == "1"
    assert incident["opened_at"] == datetime(2026, 11, 22, 13, 57, 48, tzinfo=timezone.utc)
    assert incident["acknowledged_at"] is None and incident["resolved_at"] is None and incident["closed_at"] is None
    assert (incident["title"], incident["state"], incident["severity"]) == ("Suspicious login from 203.0.113.45", "new", "high")
    assert incident["reporter"] == "soc@example.com" and incident["assignee"] == "Nobody"
    assert incident["url"] == f"{BASE}/Ticket/Display.html?id=1"
    assert incident["raw"]["id"] == 1


def test_search_items_with_string_ids_and_queue_names_normalize(rt: responses.RequestsMock) -> None:
    c = connector(field_map={"severity": "CF.{Severity}"}, is_security={"queues": ["Security Incidents"]})
    items = fixture("tickets_search_fields")["items"]  # ids "3" and "2", Queue with its Name
    normalized = [c.normalize(i) for i in items]
    assert [(n["external_id"], n["severity"], n["assignment_group"], n["is_security"]) for n in normalized] == [
        ("3", "medium", "Security Incidents", True), ("2", "critical", "Security Incidents", True)]


def test_custom_fields_are_resolved_by_name_and_read_by_id(rt: responses.RequestsMock) -> None:
    c = connector(field_map={"severity": "CF.{severity}", "related_refs": "CF.{Open Gaps}"})
    c.check_configuration()
    assert c.custom_fields == {"severity": "2", "Open Gaps": "8"}  # names matched case-insensitively, disabled ones left out
    record = ticket(1, "2026-11-22T13:57:48Z", CustomFields=[
        {"id": "2", "name": "SEVERITY renamed", "values": ["Critical"]}, {"id": "8", "name": "Open Gaps", "values": ["A, B", "C"]}])
    incident = c.normalize(record)
    assert incident["severity"] == "critical" and incident["related_refs"] == ["A", "B", "C"]
    # a ticket whose queue has no custom fields: REST2 answers "" for them
    assert c.normalize(ticket(2, "2026-11-22T13:57:48Z", CustomFields=""))["severity"] is None


def test_a_date_custom_field_is_read_from_its_one_value() -> None:
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, f"{REST}/customfields", json={"items": [
            {"id": "12", "Name": "Contained at", "LookupType": "RT::Queue-RT::Ticket", "Disabled": "0"}], "total": 1, "page": 1})
        c = connector(field_map={"contained_at": "CF.{Contained at}"})
        c.check_configuration()

    def contained(values: list[str]) -> Any:
        return c.normalize(ticket(1, "2026-11-22T13:57:48Z", CustomFields=[
            {"id": "12", "name": "Contained at", "values": values}]))["contained_at"]

    # REST2 answers a DateTime custom field's value in UTC, as a list of one
    assert contained(["2026-11-22T15:30:00Z"]) == datetime(2026, 11, 22, 15, 30, tzinfo=timezone.utc)
    assert contained([]) is None
    with pytest.raises(NormalizationError, match=r"CF.\{Contained at\} \(canonical contained_at\): 2 values"):
        contained(["2026-11-22T15:30:00Z", "2026-11-23T15:30:00Z"])


def test_an_unknown_custom_field_names_the_config_key_and_the_nearest_names(rt: responses.RequestsMock) -> None:
    c = connector(field_map={"severity": "CF.{Severty}"})
    with pytest.raises(ConfigurationError) as failed:
        c.check_configuration()
    assert str(failed.value) == "connectors.rt.field_map.severity: RT has no ticket custom field named 'Severty' (nearest: Severity)"
    wb = connector(write_back={"fingerprint_field": "GapBridge Fingerprnt"})
    with pytest.raises(ConfigurationError, match=r"connectors\.rt\.write_back\.fingerprint_field: .*nearest: GapBridge Fingerprint"):
        wb.check_configuration()


def test_a_field_that_is_not_an_rt_field_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="not an RT ticket field: 'Sevrity'"):
        options(field_map={"severity": "Sevrity"})


def test_history_becomes_the_timeline(rt: responses.RequestsMock) -> None:
    c = connector(field_map={"severity": "CF.{Severity}"})
    c.check_configuration()
    history = fixture("ticket_history_after_comment")["items"]
    comment = next(t for t in history if t["Type"] == "Comment")
    comment["_text"] = "Blocked 203.0.113.45 at the firewall."
    create = next(t for t in history if t["Type"] == "Create")
    create["_text"] = "EDR alert: login from 203.0.113.45"
    incident = c.normalize({**fixture("ticket_1"), "_history": history})
    timeline = incident["timeline"]
    assert all(e["kind"] != "emailrecord" for e in timeline)  # RT's own mail records are left out
    assert timeline[0] == {"at": datetime(2026, 11, 22, 13, 57, 48, tzinfo=timezone.utc), "author": "root", "kind": "created",
                           "text": "EDR alert: login from 203.0.113.45"}
    assert {"at": datetime(2026, 11, 22, 13, 57, 56, tzinfo=timezone.utc), "author": "RT_System", "kind": "status",
            "text": "Status: new -> open"} in timeline
    assert any(e["kind"] == "change" and e["text"] == "Severity: High -> Critical" for e in timeline)  # CF by its name
    assert any(e["kind"] == "comment" and e["text"] == "Blocked 203.0.113.45 at the firewall." for e in timeline)
    assert incident["description"] == "EDR alert: login from 203.0.113.45"


def test_history_and_message_texts_are_fetched_beside_each_ticket(rt: responses.RequestsMock) -> None:
    tool = SearchDouble([ticket(1, "2026-11-22T13:57:48Z")])
    rt.add_callback(responses.GET, f"{REST}/tickets", callback=tool)
    rt.add(responses.GET, f"{REST}/ticket/1/history", json=fixture("ticket_history_fields"))
    attachments = fixture("transaction_comment_attachments")
    attachments["items"][0].update(TransactionId="38", Content="first message")
    rt.add(responses.GET, f"{REST}/ticket/1/attachments", json=attachments)
    c = connector(timeline={"enabled": True, "text": True, "max_chars": 100})
    record = next(iter(c.fetch_pages(None))).records[0]
    assert [t["Type"] for t in record["_history"]] == ["Create", "EmailRecord"]
    assert c.normalize(record)["timeline"] == [{"at": datetime(2026, 11, 22, 13, 57, 48, tzinfo=timezone.utc), "author": "root",
                                                 "kind": "created", "text": "first message"}]


def test_a_record_that_cannot_be_normalized_is_rejected_and_the_sync_goes_on(rt: responses.RequestsMock, app_factory: Any) -> None:
    from plugin.extensions import db
    from plugin.models import Incident, RejectedRecord
    from plugin.services.sync import sync_source

    odd = ticket(2, "2026-11-22T13:57:49Z", Status="escalated-to-legal")  # a status the state map does not know
    rt.add_callback(responses.GET, f"{REST}/tickets", callback=SearchDouble([ticket(1, "2026-11-22T13:57:48Z"), odd,
                                                                             ticket(3, "2026-11-22T13:57:50Z")]))
    app = app_factory(connectors={"rt": options()})
    with app.app_context():
        from plugin.state import gapbridge

        summary = sync_source(gapbridge().connector("rt"))
        assert (summary.status, summary.stored, summary.rejected) == ("succeeded", 2, 1)
        assert sorted(i.external_id for i in db.session.query(Incident)) == ["1", "3"]
        rejected = db.session.query(RejectedRecord).one()
        assert rejected.external_id == "2" and "'escalated-to-legal' is not in state_map" in rejected.reason
    with pytest.raises(NormalizationError, match="ticket 2: Status"):
        connector().normalize(odd)
    with pytest.raises(NormalizationError, match="no id"):
        connector().normalize({"Subject": "no id"})


# --- errors ----------------------------------------------------------------------------------


def test_ticketsql_rt_rejects_stops_the_sync_with_rts_message_and_the_key(rt: responses.RequestsMock) -> None:
    rt.add(responses.GET, f"{REST}/tickets", status=400, json=fixture("error_400_bad_ticketsql"))
    with pytest.raises(ConfigurationError) as failed:
        fetched(connector(query="NoSuchField = 'x'"))
    assert str(failed.value) == """connectors.rt.query "NoSuchField = 'x'": RT refused the TicketSQL: Unknown field: NoSuchField"""
    assert len(rt.calls) == 1  # not retried


def test_401_is_an_authentication_error_not_retried(rt: responses.RequestsMock) -> None:
    rt.add(responses.GET, f"{REST}/tickets", status=401, json=fixture("error_401_bad_password"))
    with pytest.raises(AuthenticationError, match="HTTP 401.*Unauthorized.*check the credentials"):
        fetched(connector())
    assert len(rt.calls) == 1


def test_a_body_that_is_not_json_is_an_invalid_response(rt: responses.RequestsMock) -> None:
    rt.add(responses.GET, f"{REST}/tickets", body="<html><title>RT at a glance</title></html>", content_type="text/html")
    with pytest.raises(InvalidResponseError, match="answered text/html, not JSON"):
        fetched(connector())
    rt.replace(responses.GET, f"{REST}/tickets", json=["not", "a", "collection"])
    with pytest.raises(InvalidResponseError, match="no 'items' list"):
        fetched(connector())


def test_no_token_or_password_in_errors_or_logs(rt: responses.RequestsMock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rt.add(responses.GET, f"{REST}/tickets", status=401, json=fixture("error_401_no_auth"))
    token = connector(auth={"method": "token", "token": TOKEN})
    with pytest.raises(AuthenticationError) as refused:
        fetched(token)
    assert rt.calls[0].request.headers["Authorization"] == f"token {TOKEN}"  # sent, as RT wants it
    rt.replace(responses.GET, f"{REST}/tickets", status=503, body="down")
    with pytest.raises(RetriableConnectorError) as down:
        fetched(connector())
    errors = [str(refused.value), str(down.value), repr(token.http._auth), caplog.text]
    assert caplog.text and not [e for e in errors if TOKEN in e or PASSWORD in e]


# --- write-back ------------------------------------------------------------------------------


def _ticket_with(values: dict[str, str]) -> dict[str, Any]:
    t = fixture("ticket_1")
    t["CustomFields"] = [{"id": cf, "name": cf, "values": [v] if v else []} for cf, v in values.items()]
    return t


def test_custom_fields_are_written_with_if_match_and_a_412_reads_again_once(rt: responses.RequestsMock) -> None:
    c = connector(write_back={"fingerprint_field": "GapBridge Fingerprint", "fields": {"open_gaps": "Open Gaps"}, "comment": False})
    rt.add(responses.GET, f"{REST}/ticket/1", json=_ticket_with({"7": "", "8": "1"}), headers={"ETag": '"39"'})
    rt.add(responses.GET, f"{REST}/ticket/1", json=_ticket_with({"7": "", "8": "1"}), headers={"ETag": '"40"'})
    rt.add(responses.GET, f"{REST}/ticket/1", json=_ticket_with({"7": "fp1", "8": "3"}), headers={"ETag": '"41"'})
    rt.add(responses.PUT, f"{REST}/ticket/1", status=412, json=fixture("error_412_if_match"))
    rt.add(responses.PUT, f"{REST}/ticket/1", json=fixture("ticket_cf_updated"))
    result = c.write_back(Enrichment("1", "fp1", None, fields={"open_gaps": 3}))
    assert result.written and result.detail == "wrote custom fields"
    puts = [call.request for call in rt.calls if call.request.method == "PUT"]
    assert [p.headers["If-Match"] for p in puts] == ['"39"', '"40"']
    assert json.loads(puts[1].body) == {"CustomFields": {"7": "fp1", "8": "3"}}


def test_a_412_twice_is_reported_for_a_later_retry(rt: responses.RequestsMock) -> None:
    c = connector(write_back={"fingerprint_field": "GapBridge Fingerprint", "comment": False})
    rt.add(responses.GET, f"{REST}/ticket/1", json=_ticket_with({"7": ""}), headers={"ETag": '"39"'})
    rt.add(responses.PUT, f"{REST}/ticket/1", status=412, json=fixture("error_412_if_match"))
    with pytest.raises(RetriableConnectorError, match="changed while GapBridge wrote its custom fields"):
        c.write_back(Enrichment("1", "fp1", None))
    assert sum(call.request.method == "PUT" for call in rt.calls) == 2


def test_a_custom_field_rt_ignored_is_an_error_naming_it(rt: responses.RequestsMock) -> None:
    c = connector(write_back={"fields": {"open_gaps": "Open Gaps"}, "comment": False})
    rt.add(responses.GET, f"{REST}/ticket/1", json=_ticket_with({}), headers={"ETag": '"39"'})
    rt.add(responses.PUT, f"{REST}/ticket/1", json=[])  # RT says nothing and sets nothing
    with pytest.raises(InvalidResponseError, match="did not take the custom field.*Open Gaps"):
        c.write_back(Enrichment("1", "fp1", None, fields={"open_gaps": 3}))


def test_the_comment_carries_the_marker_and_is_not_written_twice(rt: responses.RequestsMock) -> None:
    c = connector()
    found = fixture("transactions_search_comments")
    rt.add(responses.GET, f"{REST}/transactions", json={**found, "items": []})
    rt.add(responses.POST, f"{REST}/ticket/1/comment", status=201, json=fixture("comment_created"),
           headers={"Location": "/REST/2.0/transaction/54"})
    note = "GapBridge: 2 open gaps\n\n[gapbridge:fp1]"
    assert c.write_back(Enrichment("1", "fp1", note)).written
    posted = json.loads(next(call.request.body for call in rt.calls if call.request.method == "POST"
                             and "comment" in call.request.url))
    assert posted == {"Subject": "GapBridge ISO 27001 check [gapbridge:fp1]", "Content": note, "ContentType": "text/plain"}
    search = parse_qs(urlsplit(rt.calls[-2].request.url).query)["query"][0]
    assert "[" not in search  # REST2 takes a query with "[" for its JSON form
    # the ticket now shows the marker in its newest GapBridge comment: nothing more is written
    marked = copy.deepcopy(found)
    marked["items"] = [{**marked["items"][1], "Data": "GapBridge ISO 27001 check [gapbridge:fp1]\n"}]
    rt.replace(responses.GET, f"{REST}/transactions", json=marked)
    assert c.current_fingerprint("1") == "fp1"
    again = c.write_back(Enrichment("1", "fp1", note))
    assert not again.written and again.detail == "already on the ticket"
    assert sum("comment" in call.request.url for call in rt.calls) == 1


def test_a_dry_run_writes_nothing(rt: responses.RequestsMock) -> None:
    c = connector(write_back={"dry_run": True, "fields": {"open_gaps": "Open Gaps"}})
    result = c.write_back(Enrichment("1", "fp1", "note", fields={"open_gaps": 1}))
    assert result.dry_run and not result.written and result.detail == "would write comment and custom fields 8 on ticket 1"
    assert [call.request.method for call in rt.calls] == ["POST"]  # the custom fields listing only
    assert "customfields" in rt.calls[0].request.url


def test_the_fingerprint_field_is_read_from_the_ticket(rt: responses.RequestsMock) -> None:
    c = connector(write_back={"fingerprint_field": "CF.{GapBridge Fingerprint}"})
    rt.add(responses.GET, f"{REST}/ticket/1", json=_ticket_with({"7": "fp9"}), headers={"ETag": '"39"'})
    assert c.current_fingerprint("1") == "fp9"
    assert c.normalize(_ticket_with({"7": "fp9"}))["enrichment_fingerprint"] == "fp9"


def test_the_connector_is_registered_as_rt() -> None:
    assert connector_class("rt") is RTConnector


def test_the_demo_over_rt_says_how_to_start_one_when_none_answers(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from plugin.cli import main

    free = __import__("socket").socket()
    free.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{free.getsockname()[1]}"
    free.close()
    result = CliRunner().invoke(main, ["demo", "--tool", "rt", "--once", "--workdir", str(tmp_path)],
                                env={"GAPBRIDGE_RT_URL": url, "GAPBRIDGE_RT_PASSWORD": PASSWORD})
    assert result.exit_code == 2
    assert f"No Request Tracker 5 answers at {url}" in result.output and "python -m tests.rt_server start" in result.output
    assert PASSWORD not in result.output
