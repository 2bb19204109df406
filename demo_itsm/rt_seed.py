"""Seed a Request Tracker 5 with the demo incidents over REST2, for ``gapbridge demo --tool rt``.

The same incident stories as the ServiceNow and Jira stand-ins (``demo_itsm.seed``) become tickets
of the queue ``GapBridge Demo``: Subject, the description as the ticket's first message, the caller
as Requestor, the state in RT's default lifecycle, and the rest in ticket custom fields named as an
RT admin would name them ("Severity", "Contained at"). What RT cannot be told over REST2 is kept in
custom fields too: a ticket's Created is always the time of the request (REST2 refuses to set it) and
a change to "rejected" stamps Resolved with the present, so the incident's own opening, resolution
and closing times are "Opened at", "Resolved at" and "Closed at"; and REST2 cannot grant the right
to own tickets, so the handler is "Handler" while Owner stays Nobody. The time work started is RT's
own Started, which a new ticket may be given.

References between incidents (related incidents, weakness refs) name RT ticket numbers, as the
connector's ``number`` is the ticket id. Seeding is idempotent: a queue that holds tickets is left
as it is. As a command: ``python -m demo_itsm.rt_seed URL [--size N]`` (user and password, or a
token, from GAPBRIDGE_RT_USER / GAPBRIDGE_RT_PASSWORD / GAPBRIDGE_RT_TOKEN).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from . import seed as sd

DEMO_QUEUE = "GapBridge Demo"
TICKET_CF = "RT::Queue-RT::Ticket"
# a ticket create costs RT about 0.2 s whatever the batch; a batch this size answers well within the read timeout
BATCH = 25
YES, NO = "Yes", "No"
# ServiceNow state -> (status a ticket is created in, status it is moved to after): a new ticket may only be new,
# open or resolved in RT's default lifecycle, and "rejected" is reached from new, "stalled" from open
STATUSES: dict[str, tuple[str, str | None]] = {"1": ("new", None), "2": ("open", None), "3": ("open", "stalled"),
                                               "6": ("resolved", None), "7": ("resolved", None), "8": ("new", "rejected")}
# ServiceNow priority -> the Severity choice (RT's priority_map reads these names)
SEVERITIES = {"1": "Critical", "2": "High", "3": "Medium", "4": "Low", "5": "Low"}


@dataclass(frozen=True)
class DemoField:
    """A ticket custom field of the demo queue: what GapBridge reads it as, and the demo record's column it is seeded from."""

    name: str
    canonical: str | None  # a canonical incident field, "is_security", or None for one GapBridge writes
    column: str | None = None
    type: str = "Freeform"
    many: bool = False  # several values (RT's "Enter multiple values")
    values: tuple[str, ...] = ()  # the choices of a Select

    @property
    def description(self) -> str:
        if self.canonical is None:
            return "Written by GapBridge"
        return f"GapBridge demo: {self.canonical.replace('_', ' ')}"


_FLAG = ("Select", False, (YES, NO))
FIELDS: tuple[DemoField, ...] = (
    DemoField("Severity", "severity", "priority", "Select", values=("Critical", "High", "Medium", "Low")),
    DemoField("Security incident", "is_security", "u_security_incident", *_FLAG),
    DemoField("Incident Category", "category", "category"),
    DemoField("Subcategory", "subcategory", "subcategory"),
    DemoField("Business unit", "business_unit", "company"),
    DemoField("Assignment group", "assignment_group", "assignment_group"),
    DemoField("Handler", "assignee", "assigned_to"),
    DemoField("Reported via", "reported_via", "contact_type"),
    DemoField("Affected CI", "affected_ci", "cmdb_ci"),
    DemoField("Problem", "problem_ref", "problem_id"),
    DemoField("Opened at", "opened_at", "opened_at", "DateTime"),
    DemoField("Assessed at", "assessed_at", "u_assessed_at", "DateTime"),
    DemoField("Contained at", "contained_at", "u_contained_at", "DateTime"),
    DemoField("Major incident declared at", "major_declared_at", "u_major_declared_at", "DateTime"),
    DemoField("Resolved at", "resolved_at", "resolved_at", "DateTime"),
    DemoField("Closed at", "closed_at", "closed_at", "DateTime"),
    DemoField("Major incident", "major_incident", "u_major_incident", *_FLAG),
    DemoField("Personal data breach", "personal_data_breach", "u_personal_data_breach", *_FLAG),
    DemoField("Legal hold", "legal_hold", "u_legal_hold", *_FLAG),
    DemoField("Close code", "close_code", "close_code"),
    DemoField("Root cause", "root_cause", "u_root_cause", "Text"),
    DemoField("Lessons learned", "lessons_learned", "u_lessons_learned", "Text"),
    DemoField("Resolution notes", "resolution_notes", "close_notes", "Text"),
    DemoField("Maintenance ref", "maintenance_ref", "u_maintenance_ref"),
    DemoField("Capacity ref", "capacity_ref", "u_capacity_ref"),
    DemoField("Related incidents", "related_refs", "u_related_refs", many=True),
    DemoField("Weakness refs", "weakness_refs", "u_weakness_refs", many=True),
    DemoField("Vulnerability refs", "vulnerability_refs", "u_vulnerability_refs", many=True),
    DemoField("Log refs", "log_refs", "u_log_refs", many=True),
    # lists of objects: the connector reads a JSON array
    DemoField("Evidence", "evidence", "u_evidence", "Text"),
    DemoField("Notifications", "notifications", "u_notifications", "Text"),
    DemoField("Escalations", "escalations", "u_escalations", "Text"),
    DemoField("GapBridge Fingerprint", None),
    DemoField("GapBridge Open Gaps", None),
    DemoField("GapBridge Compliance", None),
)
FINGERPRINT_FIELD = "GapBridge Fingerprint"
WRITE_BACK_FIELDS = {"open_gaps": "GapBridge Open Gaps", "compliance_status": "GapBridge Compliance"}
# references that may name another demo incident: rewritten to its ticket number once it exists
_INCIDENT_REFS = frozenset({"u_related_refs", "u_weakness_refs"})


class SeedError(Exception):
    """RT refused a step of the seeding; the message says which and what RT answered."""


@dataclass(frozen=True)
class DemoQueue:
    """The demo queue as RT holds it: its id, how many tickets, the names of the ticket custom fields it has."""

    id: str
    tickets: int
    fields: frozenset[str]


@dataclass(frozen=True)
class SeedResult:
    created: int  # tickets made now
    tickets: int  # tickets the queue holds after
    fields_created: int
    seconds: float


def is_loopback(url: str) -> bool:
    """Whether the URL names this machine (127.0.0.0/8, ::1, localhost): the only RT the demo seeds."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RT:
    """REST2 calls on one session (RT checks the password, or token, on every request: a few tenths of a second each)."""

    def __init__(self, url: str, auth: Mapping[str, Any], *, timeout: tuple[float, float] = (10, 120)) -> None:
        self.base = url.rstrip("/")
        self.timeout = timeout
        self.username: str | None = auth.get("username")
        self.http = requests.Session()
        if auth.get("method") == "token":
            self.http.headers["Authorization"] = f"token {auth['token']}"
        else:
            self.http.auth = (str(auth.get("username")), str(auth.get("password")))

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, *, expect: Collection[int] = (200, 201), **kwargs: Any) -> Any:
        what = f"{method} {path.split('?')[0]}"
        try:
            response = self.http.request(method, f"{self.base}/REST/2.0/{path}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise SeedError(f"{what}: no answer from {self.base} ({type(exc).__name__})") from None
        if response.status_code not in expect:
            try:
                said = response.json().get("message") or response.text
            except (ValueError, AttributeError):
                said = response.text
            raise SeedError(f"{what}: HTTP {response.status_code} {str(said).strip()[:300]}")
        return response.json() if response.content else None

    def count(self, query: str) -> int:
        body = self.call("GET", "tickets", params={"query": query, "per_page": "1", "fields": "id"})
        return int(body.get("total") or body.get("count") or 0)


def find_queue(rt: RT) -> DemoQueue | None:
    """The demo queue, or None when RT has none."""
    body = rt.call("GET", f"queue/{quote(DEMO_QUEUE)}", expect=(200, 404))
    if not body or not body.get("id"):
        return None
    names = frozenset(str(cf.get("name")) for cf in body.get("TicketCustomFields") or [] if cf.get("name"))
    return DemoQueue(str(body["id"]), rt.count(f"Queue = '{DEMO_QUEUE}'"), names)


def demo_queue(url: str, auth: Mapping[str, Any]) -> DemoQueue | None:
    """The demo queue of the RT at ``url``, or None (no such queue)."""
    rt = RT(url, auth, timeout=(5, 30))
    try:
        return find_queue(rt)
    finally:
        rt.close()


def connector_options(present: Collection[str]) -> dict[str, Any]:
    """The RT connector's mapping of the demo queue's custom fields, of those ``present`` only (it refuses unknown ones)."""
    field_map = {f.canonical: f"CF.{{{f.name}}}" for f in FIELDS
                 if f.canonical not in (None, "is_security") and f.name in present}
    # without the flag, every ticket of the demo queue counts as a security incident
    security = ({"field": "CF.{Security incident}"} if "Security incident" in present else {"queues": [DEMO_QUEUE]})
    write_back: dict[str, Any] = {"comment": True,
                                  "fields": {k: v for k, v in WRITE_BACK_FIELDS.items() if v in present}}
    if FINGERPRINT_FIELD in present:
        write_back["fingerprint_field"] = FINGERPRINT_FIELD
    return {"field_map": field_map, "is_security": security, "write_back": write_back}


# --- seeding ---------------------------------------------------------------------------------


def seed(url: str, auth: Mapping[str, Any], size: int, *, seed: int = 42, now: datetime | None = None,
         progress: Callable[[str], None] | None = None) -> SeedResult:
    """Make the demo queue, its custom fields and ``size`` tickets, unless the queue holds tickets already."""
    started = time.monotonic()
    say = progress or (lambda _: None)
    rt = RT(url, auth)
    try:
        queue = find_queue(rt)
        if queue is not None and queue.tickets:
            return SeedResult(0, queue.tickets, 0, time.monotonic() - started)
        if queue is None:
            rt.call("POST", "queue", json={"Name": DEMO_QUEUE, "Description": "GapBridge demo incidents (demo_itsm.rt_seed)"})
            queue = find_queue(rt)
            assert queue is not None
        say("custom fields and requestors")
        ids, made = _ensure_fields(rt, queue)
        _ensure_users(rt)
        records = list(sd.generate_incidents(size, seed, now))
        with _dates_in_utc(rt):
            created = _create_tickets(rt, ids, records, say)
        return SeedResult(len(created), rt.count(f"Queue = '{DEMO_QUEUE}'"), made, time.monotonic() - started)
    finally:
        rt.close()


def _ticket_fields(rt: RT) -> dict[str, list[str]]:
    """Every ticket custom field RT has, name -> ids (names need not be unique in RT)."""
    found: dict[str, list[str]] = {}
    page = 1
    while True:
        body = rt.call("POST", "customfields", params={"fields": "Name,Disabled", "per_page": "100", "page": str(page)},
                       json=[{"field": "LookupType", "value": TICKET_CF}])
        for item in body.get("items") or []:
            if str(item.get("Disabled", "0")) != "1":
                found.setdefault(str(item.get("Name")), []).append(str(item.get("id")))
        pages = body.get("pages")
        if not body.get("next_page") and not (isinstance(pages, int) and page < pages):
            return found
        page += 1


def _ensure_fields(rt: RT, queue: DemoQueue) -> tuple[dict[str, str], int]:
    """The id of each demo custom field, made and applied to the queue where missing; and how many were made."""
    known = _ticket_fields(rt)
    body = rt.call("GET", f"queue/{queue.id}")
    applied = {str(cf.get("name")): str(cf.get("id")) for cf in body.get("TicketCustomFields") or []}
    # a field of that name elsewhere would be a second one to RT, and the connector reads a name as the first
    clashes = sorted(f.name for f in FIELDS if f.name not in applied and f.name in known)
    if clashes:
        raise SeedError(f"RT has ticket custom fields named {', '.join(clashes)} that are not applied to the queue "
                        f"{DEMO_QUEUE!r}: apply them to it (Admin > Custom Fields > Applies to) or rename them, then run again")
    ids, made = {}, 0
    for field in FIELDS:
        if field.name in applied:
            ids[field.name] = applied[field.name]
            continue
        answer = rt.call("POST", "customfield", json={
            "Name": field.name, "Type": field.type, "MaxValues": 0 if field.many else 1, "LookupType": TICKET_CF,
            "Queue": queue.id, "Description": field.description})
        ids[field.name] = str(answer["id"])
        for order, value in enumerate(field.values, 1):
            rt.call("POST", f"customfield/{ids[field.name]}/value", json={"Name": value, "SortOrder": order})
        made += 1
    return ids, made


def _ensure_users(rt: RT) -> None:
    """The callers as RT users, so that a ticket's Requestor reads as the person's name."""
    for name in (*sd.CALLERS, *sd.SYSTEM_CALLERS):
        address = ".".join(name.lower().replace("'", "").split()) + "@demo.example"  # .example never delivers mail
        answer = rt.call("POST", "user", json={"Name": name, "RealName": name, "EmailAddress": address}, expect=(201, 400))
        said = str((answer or {}).get("message") or "")
        if said and "in use" not in said:  # 400 "Name in use": there from an earlier seeding
            raise SeedError(f"POST user: RT refused the requestor {name!r}: {said}")


@contextlib.contextmanager
def _dates_in_utc(rt: RT) -> Iterator[None]:
    """The seeding user's time zone set to UTC meanwhile, and put back after whatever happens: RT reads the value given
    to a DateTime custom field in the user's zone (else in RT's), and the records' times are UTC."""
    if not rt.username:
        raise SeedError("the RT user's name is needed (GAPBRIDGE_RT_USER) to set its time zone while seeding")
    path = f"user/{quote(rt.username)}"
    previous = str(rt.call("GET", path).get("Timezone") or "")  # REST2 leaves the key out when it is not set
    if previous == "UTC":
        yield
        return
    rt.call("PUT", path, json={"Timezone": "UTC"})
    try:
        yield
    finally:
        rt.call("PUT", path, json={"Timezone": previous})


def _value(field: DemoField, rec: Mapping[str, str], names: Mapping[str, str]) -> str | list[str] | None:
    """A record's column as the custom field's value; None leaves the field empty."""
    assert field.column is not None
    raw = rec[field.column]
    if field.column in sd.BOOL_COLUMNS:
        return YES if raw == "true" else NO
    if not raw:
        return None
    if field.column in sd.REFERENCES:
        return names.get(raw) or None
    if field.column == "priority":
        return SEVERITIES.get(raw)
    if field.column in sd.JSON_COLUMNS:
        return json.dumps(json.loads(raw), indent=2)  # an agent reads it in the ticket; the connector parses it
    if field.many:
        return [part.strip() for part in raw.split(",") if part.strip()]
    return raw


def ticket_of(rec: Mapping[str, str], ids: Mapping[str, str], names: Mapping[str, str]) -> dict[str, Any]:
    """The REST2 body creating the ticket of one demo record (references to other incidents left out: see ``seed``)."""
    status = STATUSES.get(rec["state"], ("new", None))[0]
    values: dict[str, Any] = {}
    for field in FIELDS:
        if field.column is None or field.column in _INCIDENT_REFS:
            continue
        value = _value(field, rec, names)
        if value:
            values[ids[field.name]] = value
    body: dict[str, Any] = {"Queue": DEMO_QUEUE, "Subject": rec["short_description"], "Status": status,
                            "Content": rec["description"] or rec["short_description"], "ContentType": "text/plain",
                            "CustomFields": values}
    caller = names.get(rec["caller_id"])
    if caller:
        body["Requestor"] = caller
    if rec["u_acknowledged_at"]:
        body["Started"] = rec["u_acknowledged_at"]  # UTC, as RT reads a core date given at create
    if status == "resolved" and (rec["resolved_at"] or rec["closed_at"]):
        body["Resolved"] = rec["closed_at"] or rec["resolved_at"]
    return body


def _create_tickets(rt: RT, ids: Mapping[str, str], records: list[dict[str, str]], say: Callable[[str], None]) -> list[str]:
    names = sd.reference_names()
    created: list[str] = []
    for start in range(0, len(records), BATCH):
        batch = records[start:start + BATCH]
        answers = rt.call("POST", "tickets/bulk", json=[ticket_of(rec, ids, names) for rec in batch])
        for rec, answer in zip(batch, answers, strict=True):
            if not isinstance(answer, dict) or not answer.get("id"):
                said = answer.get("message") if isinstance(answer, dict) else answer
                raise SeedError(f"RT did not create the ticket of {rec['number']}: {said}")
            created.append(str(answer["id"]))
        say(f"{len(created)}/{len(records)} tickets")
    ticket = dict(zip((rec["number"] for rec in records), created, strict=True))
    say("statuses and references")
    _finish(rt, ids, records, created, ticket)
    return created


def _finish(rt: RT, ids: Mapping[str, str], records: list[dict[str, str]], created: list[str], ticket: Mapping[str, str]) -> None:
    """What a ticket can only be given once it and the others exist: its final status, references to other tickets, notes."""
    updates: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    refs = [f for f in FIELDS if f.column in _INCIDENT_REFS]
    for rec, ticket_id in zip(records, created, strict=True):
        update: dict[str, Any] = {}
        later = STATUSES.get(rec["state"], ("new", None))[1]
        if later:
            update["Status"] = later
        values = {ids[f.name]: [ticket.get(r, r) for r in rec[f.column].split(",") if r.strip()]
                  for f in refs if f.column and rec[f.column]}
        if values:
            update["CustomFields"] = values
        if update:
            updates.append({"id": int(ticket_id), **update})
        if rec.get("work_notes"):
            notes.append({"id": int(ticket_id), "Subject": "Work note", "Content": rec["work_notes"], "ContentType": "text/plain"})
    for start in range(0, len(updates), BATCH):
        _check_bulk(rt.call("PUT", "tickets/bulk", json=updates[start:start + BATCH]), updates[start:start + BATCH])
    for start in range(0, len(notes), BATCH):
        rt.call("POST", "tickets/bulk/comment", json=notes[start:start + BATCH])
    _check_statuses(rt, records)


def _check_bulk(answers: Iterable[Any], sent: list[dict[str, Any]]) -> None:
    """RT answers a bulk update 200 with [id, message, ...] per ticket: a ticket it could not find says so."""
    for answer, body in zip(answers, sent, strict=True):
        messages = [str(m) for m in (answer[1:] if isinstance(answer, list) else [answer])]
        if "Resource does not exist" in messages:
            raise SeedError(f"RT did not update ticket {body['id']}: {'; '.join(messages)}")


def _check_statuses(rt: RT, records: list[dict[str, str]]) -> None:
    """Each status as often as the records have it: RT words a refused change in many ways, counting is plain."""
    wanted: dict[str, int] = {}
    for rec in records:
        first, later = STATUSES.get(rec["state"], ("new", None))
        wanted[later or first] = wanted.get(later or first, 0) + 1
    for status, count in sorted(wanted.items()):
        found = rt.count(f"Queue = '{DEMO_QUEUE}' AND Status = '{status}'")
        if found != count:
            raise SeedError(f"{count} tickets should be {status!r}, RT has {found}: see its log for the refused changes")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser(prog="python -m demo_itsm.rt_seed", description=f"seed an RT 5's queue {DEMO_QUEUE!r}")
    parser.add_argument("url", help="RT's web address, e.g. http://127.0.0.1:8095")
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    user = os.environ.get("GAPBRIDGE_RT_USER") or "root"
    token = os.environ.get("GAPBRIDGE_RT_TOKEN")
    auth = ({"method": "token", "token": token, "username": user} if token else
            {"method": "basic", "username": user, "password": os.environ.get("GAPBRIDGE_RT_PASSWORD") or ""})
    try:
        result = seed(args.url, auth, args.size, seed=args.seed, progress=lambda text: print(text, file=sys.stderr))
    except SeedError as exc:
        print(f"seeding failed: {exc}", file=sys.stderr)
        return 1
    print(describe(result))
    return 0


def describe(result: SeedResult) -> str:
    if not result.created:
        return f"the queue {DEMO_QUEUE!r} already holds {result.tickets} tickets: nothing seeded"
    return (f"seeded {result.created} tickets into the queue {DEMO_QUEUE!r} ({result.fields_created} custom fields made) "
            f"in {result.seconds:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
