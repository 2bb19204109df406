"""The RT connector against a real Request Tracker 5: Debian's request-tracker5 started for the session, or one given.

Given: GAPBRIDGE_RT_URL with GAPBRIDGE_RT_USER and GAPBRIDGE_RT_PASSWORD (and GAPBRIDGE_RT_TOKEN, a REST2 token of
that user, for the token tests); the account must be able to create queues and custom fields. Otherwise the suite
starts a private RT (tests/rt_server.py) when the package is installed, and skips, saying so, when it is not.

The private server runs in America/New_York on purpose: TicketSQL reads dates in the user's zone, so a connector that
sent its bookmark as UTC would miss the changes these tests make.
"""

from __future__ import annotations

import copy
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
import sqlalchemy as sa

from connectors.base import AuthenticationError, ConfigurationError, Enrichment
from connectors.canonical import parse_utc
from connectors.rt import RTConnector
from demo_itsm import rt_seed
from demo_itsm import seed as sd
from plugin.extensions import db
from plugin.models import Incident, RejectedRecord
from plugin.services.assess import assess
from plugin.services.enrich import plan
from plugin.services.outbox import drain
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from . import rt_server

pytestmark = pytest.mark.slow

# read at import: conftest removes every GAPBRIDGE_* variable before each test
GIVEN = {k: os.environ.get(f"GAPBRIDGE_RT_{k}") for k in ("URL", "USER", "PASSWORD", "TOKEN")}
PRIVATE_ZONE = ZoneInfo(rt_server.TIMEZONE)


@dataclass
class LiveRT:
    url: str
    username: str
    password: str
    token: str | None
    private: bool  # started by this suite (its time zone is known)
    workdir: Path | None = None  # the private server's directory
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.auth = (self.username, self.password)

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = self.http.request(method, f"{self.url}/REST/2.0/{path}", timeout=60, **kwargs)
        assert response.status_code == expect, f"{method} {path}: HTTP {response.status_code} {response.text[:300]}"
        return response.json()

    def ticket(self, ticket_id: str) -> dict[str, Any]:
        return self.call("GET", f"ticket/{ticket_id}")

    def history(self, ticket_id: str) -> list[dict[str, Any]]:
        return self.call("GET", f"ticket/{ticket_id}/history",
                         params={"per_page": "100", "fields": "Type,Field,OldValue,NewValue,Data,Created"})["items"]

    def custom_values(self, ticket_id: str) -> dict[str, list[str]]:
        return {cf["name"]: cf["values"] for cf in self.ticket(ticket_id).get("CustomFields") or []}


@pytest.fixture(scope="session")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRT]:
    if GIVEN["URL"]:
        if not (GIVEN["USER"] and GIVEN["PASSWORD"]):
            pytest.fail("GAPBRIDGE_RT_URL is set: set GAPBRIDGE_RT_USER and GAPBRIDGE_RT_PASSWORD too")
        yield LiveRT(GIVEN["URL"].rstrip("/"), str(GIVEN["USER"]), str(GIVEN["PASSWORD"]), GIVEN["TOKEN"], private=False)
        return
    reason = rt_server.missing()
    if reason:
        pytest.skip(f"no RT 5 to test against: {reason}")
    started = time.monotonic()
    server = rt_server.start(tmp_path_factory.mktemp("rt"))
    try:
        live = LiveRT(server.url, server.username, server.password, server.create_token(), private=True,
                      workdir=server.workdir)
        print(f"RT 5 started in {time.monotonic() - started:.1f} s at {server.url}")
        yield live
    finally:
        server.stop()


@dataclass
class World:
    """What the tests made in RT: a queue, its custom fields, tickets."""

    queue: str
    cf: dict[str, str]  # role -> custom field name
    tickets: dict[str, str]  # role -> ticket id


@pytest.fixture(scope="module")
def world(rt: LiveRT) -> World:
    run = uuid.uuid4().hex[:8]  # names of their own, so a given RT can run the suite again
    queue = f"GapBridge Security {run}"
    rt.call("POST", "queue", 201, json={"Name": queue})
    cf = {role: f"{label} {run}" for role, label in (("severity", "Severity"), ("category", "Incident Category"),
                                                     ("fingerprint", "GapBridge Fingerprint"), ("gaps", "GapBridge Open Gaps"),
                                                     ("status", "GapBridge Compliance"), ("unapplied", "Elsewhere"))}
    for role, name in cf.items():
        body = {"Name": name, "Type": "Freeform", "MaxValues": 1, "LookupType": "RT::Queue-RT::Ticket"}
        if role != "unapplied":  # exists, but not on the queue: RT ignores a value for it
            body["Queue"] = queue
        rt.call("POST", "customfield", 201, json=body)

    def create(subject: str, severity: str, category: str, content: str, **more: Any) -> str:
        body = {"Queue": queue, "Subject": subject, "Requestor": "soc@example.com", "Content": content,
                "ContentType": "text/plain", "CustomFields": {cf["severity"]: severity, cf["category"]: category}, **more}
        return str(rt.call("POST", "ticket", 201, json=body)["id"])

    tickets = {
        "login": create("Suspicious login from 203.0.113.45", "High", "unauthorized_access", "EDR alert: login from 203.0.113.45"),
        "malware": create("Malware detected on ws-042", "Critical", "malware", "AV quarantined a dropper on ws-042"),
        "phish": create("Phishing email reported by finance", "Medium", "phishing", "User forwarded a phishing email"),
        "bogus": create("Ticket with a severity nobody mapped", "Whenever", "phishing", "cannot be normalized"),
    }
    rt.call("POST", f"ticket/{tickets['login']}/comment", 201,
            json={"Subject": "Triage", "Content": "Blocked 203.0.113.45 at the firewall.", "ContentType": "text/plain"})
    rt.call("PUT", f"ticket/{tickets['login']}", json={"Status": "open"})
    rt.call("PUT", f"ticket/{tickets['malware']}", json={"Status": "resolved"})
    tickets["elsewhere"] = str(rt.call("POST", "ticket", 201, json={"Queue": "General", "Subject": "outside the scope"})["id"])
    return World(queue, cf, tickets)


def options(rt: LiveRT, world: World, **overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "type": "rt", "url": rt.url, "auth": {"method": "basic", "username": rt.username, "password": rt.password},
        "query": f"Queue = '{world.queue}'", "per_page": 2,  # two a page: the sync pages, and windows move
        "field_map": {"severity": f"CF.{{{world.cf['severity']}}}", "category": f"CF.{{{world.cf['category']}}}"},
        "is_security": {"queues": [world.queue]},
        "write_back": {"fingerprint_field": world.cf["fingerprint"],
                       "fields": {"open_gaps": world.cf["gaps"], "compliance_status": world.cf["status"]}},
    }
    for key, value in overrides.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and isinstance(raw.get(key), dict) else value
    return RTConnector.config_schema().load(copy.deepcopy(raw))


def incidents(source: str = "rt") -> dict[str, Incident]:
    return {i.external_id: i for i in db.session.scalars(sa.select(Incident).where(Incident.source == source))}


def _ticket_time(rt: LiveRT, ticket_id: str) -> datetime:
    when = parse_utc(rt.ticket(ticket_id)["LastUpdated"])
    assert when is not None
    return when


# --- sync -----------------------------------------------------------------------------------


def test_sync_through_gapbridge_stores_the_canonical_tickets(rt: LiveRT, world: World, app_factory: Any) -> None:
    app = app_factory(connectors={"rt": options(rt, world)})
    t = world.tickets
    with app.app_context():
        state = gapbridge()
        summary = sync_source(state.connector("rt"), ruleset=state.ruleset)
        assert summary.status == "succeeded" and summary.pages >= 2  # two a page
        stored = incidents()
        assert set(stored) == {t["login"], t["malware"], t["phish"]}  # the General queue is out of scope
        rejected = db.session.scalars(sa.select(RejectedRecord)).all()
        assert [(r.external_id, "Whenever" in r.reason) for r in rejected] == [(t["bogus"], True)]

        login, malware = stored[t["login"]], stored[t["malware"]]
        assert (login.title, login.state, login.severity, login.category) == (
            "Suspicious login from 203.0.113.45", "in_progress", "high", "unauthorized_access")
        assert login.reporter == "soc@example.com" and login.assignment_group == world.queue and login.assignee == "Nobody"
        assert login.is_security and login.record_type == "incident" and login.number == t["login"]
        assert login.url == f"{rt.url}/Ticket/Display.html?id={t['login']}"
        assert login.description == "EDR alert: login from 203.0.113.45"
        assert login.opened_at == parse_utc(rt.ticket(t["login"])["Created"])
        assert login.acknowledged_at is not None and login.resolved_at is None  # RT's 1970 (never) is none
        assert malware.state == "closed" and malware.resolved_at is not None and malware.severity == "critical"
        kinds = [(e["kind"], e["author"]) for e in login.timeline]
        assert kinds[0] == ("created", rt.username) and ("comment", rt.username) in kinds and ("status", rt.username) in kinds
        comment = next(e for e in login.timeline if e["kind"] == "comment")
        assert comment["text"] == "Blocked 203.0.113.45 at the firewall."
        assert any(e["text"] == "Status: new -> open" for e in login.timeline)


def test_incremental_sync_reads_what_changed_since_the_bookmark(rt: LiveRT, world: World, app_factory: Any) -> None:
    app = app_factory(connectors={"rt": options(rt, world)})
    phish = world.tickets["phish"]
    with app.app_context():
        state = gapbridge()
        sync_source(state.connector("rt"), ruleset=state.ruleset)
        rt.call("PUT", f"ticket/{phish}", json={"Subject": "Phishing email reported by finance (confirmed)"})
        again = sync_source(state.connector("rt"), ruleset=state.ruleset)
        db.session.expire_all()
        assert incidents()[phish].title == "Phishing email reported by finance (confirmed)"
        assert again.changed == 1


def _fetch_ids(connector: RTConnector, since: datetime) -> set[str]:
    bookmark = {"LastUpdated": since.strftime("%Y-%m-%dT%H:%M:%SZ"), "id": 0}
    return {str(r["id"]) for page in connector.fetch_pages(bookmark) for r in page.records}


def _boundaries_hold(connector: RTConnector, rt: LiveRT, ticket: str) -> None:
    """A ticket updated at T is read from a bookmark at T and not from one a second later (no overlap)."""
    when = _ticket_time(rt, ticket)
    assert ticket in _fetch_ids(connector, when)
    later = _fetch_ids(connector, when + timedelta(seconds=1 + connector.stream.overlap_seconds))
    if connector.zone_source.startswith("measured"):
        return  # a measured offset re-reads an hour more: nothing to say about the second after
    assert ticket not in later


def test_the_time_zone_is_measured_when_neither_the_options_nor_the_user_say_it(rt: LiveRT, world: World) -> None:
    connector = RTConnector("rt", options(rt, world, bookmark_overlap_seconds=0))
    connector.check_configuration()
    if rt.private:
        assert connector.zone.utcoffset(None) == datetime.now(PRIVATE_ZONE).utcoffset()
    assert connector.zone_source.startswith("measured")
    _boundaries_hold(connector, rt, world.tickets["phish"])


def test_a_configured_time_zone_is_read_to_the_second(rt: LiveRT, world: World) -> None:
    if not rt.private:
        pytest.skip("the zone of a given RT is not known to the suite")
    connector = RTConnector("rt", options(rt, world, bookmark_overlap_seconds=0, timezone=rt_server.TIMEZONE))
    connector.check_configuration()
    _boundaries_hold(connector, rt, world.tickets["phish"])
    # UTC, the wrong zone here, misses a ticket changed in the last hours: why the zone matters
    wrong = RTConnector("rt", options(rt, world, bookmark_overlap_seconds=0, timezone="UTC"))
    wrong.check_configuration()
    assert world.tickets["phish"] not in _fetch_ids(wrong, _ticket_time(rt, world.tickets["phish"]) - timedelta(minutes=5))


def test_the_users_time_zone_preference_is_used(rt: LiveRT, world: World) -> None:
    rt.call("PUT", f"user/{rt.username}", json={"Timezone": "Asia/Kolkata"})  # UTC+05:30
    try:
        connector = RTConnector("rt", options(rt, world, bookmark_overlap_seconds=0))
        connector.check_configuration()
        assert connector.zone == ZoneInfo("Asia/Kolkata") and "preference" in connector.zone_source
        _boundaries_hold(connector, rt, world.tickets["phish"])
    finally:
        rt.call("PUT", f"user/{rt.username}", json={"Timezone": ""})


def test_token_auth_reads_tickets_and_a_bad_token_is_refused_without_showing_it(rt: LiveRT, world: World,
                                                                                 caplog: pytest.LogCaptureFixture) -> None:
    if not rt.token:
        pytest.skip("no REST2 token given (GAPBRIDGE_RT_TOKEN)")
    good = RTConnector("rt", options(rt, world, auth={"method": "token", "token": rt.token, "username": rt.username}))
    assert {str(r["id"]) for p in good.fetch_pages(None) for r in p.records} >= {world.tickets["login"], world.tickets["phish"]}
    bad_token = "1-14-" + "f" * 32
    bad = RTConnector("rt", options(rt, world, auth={"method": "token", "token": bad_token}))
    with pytest.raises(AuthenticationError) as refused:
        next(iter(bad.fetch_pages(None)))
    assert bad_token not in str(refused.value) and bad_token not in caplog.text and rt.token not in caplog.text


def test_a_ticketsql_rt_rejects_stops_the_sync_naming_the_key(rt: LiveRT, world: World) -> None:
    connector = RTConnector("rt", options(rt, world, query="NoSuchField = 'x'"))
    with pytest.raises(ConfigurationError) as refused:
        next(iter(connector.fetch_pages(None)))
    assert str(refused.value) == """connectors.rt.query "NoSuchField = 'x'": RT refused the TicketSQL: Unknown field: NoSuchField"""


def test_an_unknown_custom_field_names_the_key_and_the_nearest_names(rt: LiveRT, world: World) -> None:
    typo = world.cf["severity"].replace("Severity", "Severty")
    connector = RTConnector("rt", options(rt, world, field_map={"severity": f"CF.{{{typo}}}"}))
    with pytest.raises(ConfigurationError) as failed:
        connector.check_configuration()
    assert f"connectors.rt.field_map.severity: RT has no ticket custom field named {typo!r}" in str(failed.value)
    assert world.cf["severity"] in str(failed.value)


# --- write-back -----------------------------------------------------------------------------


def test_write_back_through_the_outbox_lands_in_the_history_once(rt: LiveRT, world: World, app_factory: Any) -> None:
    app = app_factory(connectors={"rt": options(rt, world)})
    with app.app_context():
        state = gapbridge()
        sync_source(state.connector("rt"), ruleset=state.ruleset)
        assess(state.ruleset)
        planned = plan(state.ruleset)
        drained = drain({"rt": state.connector("rt")}, backoff_base=60)
        assert planned.queued >= 1 and drained.written == planned.queued and not drained.failed
        written = [e for e, i in incidents().items() if i.id in _sent_incident_ids()]
        ticket = written[0]
        history = rt.history(ticket)
        comments = [t for t in history if t["Type"] == "Comment" and "[gapbridge:" in t["Data"]]
        assert len(comments) == 1
        fingerprint = comments[0]["Data"].split("[gapbridge:")[1].split("]")[0]
        values = rt.custom_values(ticket)
        assert values[world.cf["fingerprint"]] == [fingerprint]
        assert values[world.cf["status"]] == ["gaps"] and int(values[world.cf["gaps"]][0]) >= 1
        cf_changes = [t for t in history if t["Type"] == "CustomField"]
        assert len(cf_changes) >= 3  # fingerprint, open gaps, compliance: recorded in the history
        attachments = rt.call("GET", f"ticket/{ticket}/attachments",
                              params={"fields": "TransactionId,Content", "per_page": "100"})["items"]
        note = next(a["Content"] for a in attachments if a["TransactionId"] == comments[0]["id"])
        assert f"[gapbridge:{fingerprint}]" in note

        # the next pass: the tool shows the fingerprint, nothing is queued or written, the history does not grow
        sync_source(state.connector("rt"), ruleset=state.ruleset)
        assess(state.ruleset)
        assert plan(state.ruleset).queued == 0
        assert drain({"rt": state.connector("rt")}, backoff_base=60).written == 0
        assert len(rt.history(ticket)) == len(history)


def _sent_incident_ids() -> set[int]:
    from plugin.models import OutboxItem

    return set(db.session.scalars(sa.select(OutboxItem.incident_id).where(OutboxItem.status == "sent")))


def test_write_back_directly_is_not_doubled_and_the_marker_is_read_back(rt: LiveRT, world: World) -> None:
    ticket = world.tickets["phish"]
    # no fingerprint field: the marker of the newest GapBridge comment is what the ticket carries
    connector = RTConnector("rt", options(rt, world, write_back={"fingerprint_field": None}))
    enrichment = Enrichment(ticket, "fp0direct1", "GapBridge note\n\n[gapbridge:fp0direct1]",
                            fields={"open_gaps": 2, "compliance_status": "gaps"})
    first = connector.write_back(enrichment)
    assert first.written and first.detail == "wrote custom fields and comment"
    assert connector.current_fingerprint(ticket) == "fp0direct1"
    before = len(rt.history(ticket))
    second = connector.write_back(enrichment)
    assert not second.written and len(rt.history(ticket)) == before
    assert rt.custom_values(ticket)[world.cf["gaps"]] == ["2"]
    # a dry run writes nothing and says what it would
    dry = RTConnector("rt", options(rt, world, write_back={"dry_run": True}))
    result = dry.write_back(Enrichment(ticket, "fp0other22", "other", fields={"open_gaps": 1}))
    assert result.dry_run and not result.written and len(rt.history(ticket)) == before


def test_a_custom_field_the_queue_lacks_is_reported_not_dropped(rt: LiveRT, world: World) -> None:
    connector = RTConnector("rt", options(rt, world, write_back={"fingerprint_field": None,
                                                                  "fields": {"open_gaps": world.cf["unapplied"]}}))
    with pytest.raises(Exception, match=f"did not take the custom field.*{world.cf['unapplied']}"):
        connector.write_back(Enrichment(world.tickets["login"], "fp0unapplied", None, fields={"open_gaps": 3}))


def test_the_private_server_leaves_no_process(tmp_path: Path) -> None:
    if rt_server.missing() or GIVEN["URL"]:
        pytest.skip("needs the request-tracker5 package to start a second server")
    server = rt_server.start(tmp_path / "rt2")
    pid = server.pid
    assert pid is not None and rt_server.answers(server.url, server.username, server.password)
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not rt_server.answers(server.url, server.username, server.password)


def test_the_demo_syncs_and_writes_back_over_a_running_rt(rt: LiveRT, world: World, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from plugin.cli import main

    env = {"GAPBRIDGE_RT_URL": rt.url, "GAPBRIDGE_RT_USER": rt.username, "GAPBRIDGE_RT_PASSWORD": rt.password,
           "GAPBRIDGE_RT_QUERY": f"Queue = '{world.queue}'", "DATABASE_URL": None, "GAPBRIDGE_DATABASE_URL": None}
    result = CliRunner().invoke(main, ["demo", "--tool", "rt", "--once", "--workdir", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    assert "Demo ITSM (Request Tracker 5 REST2)" in result.output and "Write-back outbox: sent" in result.output
    assert rt.password not in result.output


# --- the demo's seeding (demo_itsm.rt_seed) and the demo over it: after the demo test above, which syncs without it ---

SEEDED = 16  # the first profiles: resolved, open, new and rejected tickets, security incidents with gaps and without


@dataclass
class Seeded:
    result: rt_seed.SeedResult
    tickets: dict[str, str]  # demo incident number -> ticket id


def _auth(rt: LiveRT) -> dict[str, Any]:
    return {"method": "basic", "username": rt.username, "password": rt.password}


def _demo_tickets(rt: LiveRT) -> list[dict[str, Any]]:
    return rt.call("GET", "tickets", params={"query": f"Queue = '{rt_seed.DEMO_QUEUE}'", "orderby": "id", "per_page": "100",
                                            "fields": "Subject,Status,Started,Requestor"})["items"]


@pytest.fixture(scope="module")
def seeded(rt: LiveRT) -> Seeded:
    if not rt_seed.is_loopback(rt.url):
        pytest.skip(f"{rt.url} is not on loopback: the demo seeds only a local RT")
    result = rt_seed.seed(rt.url, _auth(rt), SEEDED)
    records = list(sd.generate_incidents(SEEDED))
    ids = [str(t["id"]) for t in _demo_tickets(rt)]
    return Seeded(result, dict(zip((r["number"] for r in records), ids, strict=False)))


def test_seeding_makes_the_demo_queue_its_custom_fields_and_one_ticket_per_incident(rt: LiveRT, seeded: Seeded) -> None:
    if not seeded.result.created:
        pytest.skip(f"the given RT's queue {rt_seed.DEMO_QUEUE!r} held tickets already")
    assert (seeded.result.created, seeded.result.tickets) == (SEEDED, SEEDED)
    queue = rt.call("GET", f"queue/{rt_seed.DEMO_QUEUE}")
    assert {cf["name"] for cf in queue["TicketCustomFields"]} >= {f.name for f in rt_seed.FIELDS}
    records = {r["number"]: r for r in sd.generate_incidents(SEEDED)}
    tickets = {str(t["id"]): t for t in _demo_tickets(rt)}
    statuses = [tickets[seeded.tickets[n]]["Status"] for n in records]
    assert statuses.count("resolved") and statuses.count("open") and statuses.count("new") and statuses.count("rejected")
    assert all(tickets[seeded.tickets[n]]["Subject"] == r["short_description"] for n, r in records.items())

    phishing = records["INC0010001"]  # "complete phishing": every field filled
    ticket = seeded.tickets["INC0010001"]
    values = rt.custom_values(ticket)
    assert (values["Severity"], values["Security incident"], values["Incident Category"]) == (["High"], ["Yes"], ["phishing"])
    assert values["Handler"] == ["Ana Analyst"] and values["Assignment group"] == ["Security Incident Response Team"]
    # DateTime values in UTC, whatever the zone of the server (five hours west here) or of the user
    assert values["Opened at"] == [phishing["opened_at"].replace(" ", "T") + "Z"]
    assert values["Contained at"] == [phishing["u_contained_at"].replace(" ", "T") + "Z"]
    assert json.loads(values["Evidence"][0])[0]["sha256"] == json.loads(phishing["u_evidence"])[0]["sha256"]
    assert [r["id"] for r in rt.ticket(ticket)["Requestor"]] == ["Rita Reporter"]
    assert rt.ticket(ticket)["Started"] == phishing["u_acknowledged_at"].replace(" ", "T") + "Z"
    assert not rt.call("GET", f"user/{rt.username}").get("Timezone")  # the seeding user's zone is put back
    first = rt.history(ticket)[0]
    assert first["Type"] == "Create"


def test_seeding_again_adds_nothing_and_the_test_server_command_seeds_the_running_one(
        rt: LiveRT, seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    held = seeded.result.tickets
    again = rt_seed.seed(rt.url, _auth(rt), SEEDED)
    assert (again.created, again.tickets, again.fields_created) == (0, held, 0)
    if rt.workdir is None:
        return
    port = str(rt.url.rsplit(":", 1)[1])
    assert rt_server.main(["start", "--dir", str(rt.workdir), "--port", port, "--seed", "5"]) == 0
    said = capsys.readouterr().out
    assert "already running" in said and f"already holds {held} tickets: nothing seeded" in said
    assert len(_demo_tickets(rt)) == held


def test_the_mapping_names_only_the_custom_fields_rt_has() -> None:
    options = rt_seed.connector_options({"Severity", "Opened at", "GapBridge Open Gaps"})
    assert options["field_map"] == {"severity": "CF.{Severity}", "opened_at": "CF.{Opened at}"}
    assert options["is_security"] == {"queues": [rt_seed.DEMO_QUEUE]}  # no flag: the queue decides
    assert options["write_back"] == {"comment": True, "fields": {"open_gaps": "GapBridge Open Gaps"}}
    full = rt_seed.connector_options({f.name for f in rt_seed.FIELDS})
    assert full["is_security"] == {"field": "CF.{Security incident}"}
    assert full["write_back"]["fingerprint_field"] == rt_seed.FINGERPRINT_FIELD
    RTConnector.config_schema().load({"type": "rt", "url": "http://127.0.0.1:1", "auth": {"method": "token", "token": "t"},
                                      **full})  # every canonical name is one the connector takes


def test_only_an_rt_on_loopback_is_seeded() -> None:
    assert all(rt_seed.is_loopback(u) for u in ("http://127.0.0.1:8095", "http://127.8.0.1", "http://localhost:8095/",
                                                 "http://[::1]:8095", "https://rt.localhost"))
    assert not any(rt_seed.is_loopback(u) for u in ("https://rt.example.com", "http://10.0.0.5:8095", "http://0.0.0.0",
                                                     "http://localhost.example.com"))


def test_the_demo_syncs_the_seeded_queue_and_writes_back_once(rt: LiveRT, seeded: Seeded, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from plugin.cli import main

    env = {"GAPBRIDGE_RT_URL": rt.url, "GAPBRIDGE_RT_USER": rt.username, "GAPBRIDGE_RT_PASSWORD": rt.password,
           "GAPBRIDGE_RT_QUERY": None, "DATABASE_URL": None, "GAPBRIDGE_DATABASE_URL": None}
    args = ["demo", "--tool", "rt", "--once", "--workdir", str(tmp_path)]
    first = CliRunner().invoke(main, args, env=env)
    assert first.exit_code == 0, first.output
    held = seeded.result.tickets
    assert f"with {held} incidents in the queue {rt_seed.DEMO_QUEUE!r}" in first.output
    stored = re.search(r"Incidents stored: (\d+) \((\d+) security\), (\d+) with open gaps, (\d+) rejected", first.output)
    assert stored is not None, first.output
    assert int(stored[1]) == held and int(stored[2]) > 0 and int(stored[3]) > 0 and stored[4] == "0"

    gapped = rt.call("GET", "tickets", params={
        "query": f"Queue = '{rt_seed.DEMO_QUEUE}' AND 'CF.{{GapBridge Compliance}}' = 'gaps'", "per_page": "100"})["items"]
    assert len(gapped) == int(stored[3])
    ticket = str(gapped[0]["id"])
    history = rt.history(ticket)
    comments = [t for t in history if t["Type"] == "Comment" and "[gapbridge:" in (t["Data"] or "")]
    assert len(comments) == 1
    fingerprint = comments[0]["Data"].split("[gapbridge:")[1].split("]")[0]
    values = rt.custom_values(ticket)
    assert values["GapBridge Fingerprint"] == [fingerprint] and int(values["GapBridge Open Gaps"][0]) >= 1
    note = next(a["Content"] for a in rt.call("GET", f"ticket/{ticket}/attachments", params={
        "fields": "TransactionId,Content", "per_page": "100"})["items"] if a["TransactionId"] == comments[0]["id"])
    assert "open gap" in note and f"[gapbridge:{fingerprint}]" in note

    second = CliRunner().invoke(main, args, env=env)
    assert second.exit_code == 0, second.output
    assert "write-back: 0 queued, 0 written" in second.output and "Seeding" not in second.output
    assert len(rt.history(ticket)) == len(history)
