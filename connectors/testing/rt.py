"""A Request Tracker 5 double for the contract suite: the REST2 subset the RT connector uses, served through ``responses``.

It behaves as RT 5.0.3 does where the connector depends on it (see tests/test_rt_live.py for the real
server): dates answered in UTC with ``Z`` and RT's 1970 for "never"; TicketSQL dates read in the
user's time zone (America/New_York), to the second, ``=`` meaning the whole day, a trailing ``Z``
read as no date at all; ids as numbers on a ticket and strings in a search; ``per_page`` capped at
100; an ETag on a ticket (its last transaction) honoured by If-Match; a custom field the queue lacks
ignored with a 200. Two set-ups: ``basic`` (a user whose time zone preference is set, counts
visible) and ``token`` (RT's ``Authorization: token``, no user name, so the connector measures the
zone; counts hidden, ``total`` and ``pages`` null and no ``next_page``, as RT 5.0.3 answers an
account without the right to see them).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import requests

try:
    import responses
except ImportError as exc:  # a test extra, like pytest
    raise ImportError("connectors.testing.rt needs responses: pip install 'gapbridge[test]' (or responses itself)") from exc

from ..rt import RTConnector
from .double import RecordSpec, TicketWrites
from .mocked import Answer, MockedToolDouble

ZONE = ZoneInfo("America/New_York")
QUEUE = "Security Incidents"
STATUSES = {"new": "new", "triaged": "triage", "in_progress": "open", "on_hold": "stalled", "resolved": "fixed",
            "closed": "resolved", "cancelled": "rejected"}
# enrichment field (or the fingerprint) -> custom field id, name
CUSTOM_FIELDS = {"open_gaps": ("11", "GapBridge Open Gaps"), "compliance_status": ("12", "GapBridge Compliance"),
                 "fingerprint": ("13", "GapBridge Fingerprint")}
_NEVER = "1970-01-01T00:00:00Z"
_SCOPE = re.compile(r"^(?:\(Queue = 'Security Incidents'\) AND LastUpdated >= '([^']*)'|Queue = 'Security Incidents')$")
_PROBE = re.compile(r"^id = (\d+) AND LastUpdated > '([^']*)'$")
_MARKS = re.compile(r"^ObjectType = 'RT::Ticket' AND ObjectId = (\d+) AND Type = 'Comment' AND Data LIKE '([^'\[]*)'$")


def _error(status: int, message: str) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json; charset=\"utf-8\""}, json.dumps({"message": message})


def _rt_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ticketsql_date(text: str) -> datetime | None:
    """A TicketSQL date as RT reads it: the user's wall clock; what it cannot read (a trailing Z) is no date."""
    try:
        local = datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return local.replace(tzinfo=ZONE).astimezone(UTC)


class RTDouble(MockedToolDouble):
    """An RT 5 instance for the contract suite; ``auth``: ``basic`` or ``token``."""

    # a proxy in front of RT answers a rate limit: RT itself has none; RT sends no WWW-Authenticate with its 401
    maintenance_page = ("text/html", "<html><head><title>RT: maintenance</title></head><body>Back soon</body></html>")

    def _error(self, status: int, *messages: str) -> Answer:
        return _error(status, " ".join(messages))

    def __init__(self, auth: str = "basic") -> None:
        super().__init__()
        if auth not in ("basic", "token"):
            raise ValueError(f"auth must be basic or token, not {auth!r}")
        self.token_auth = auth == "token"
        self.name = f"rt-{auth}"
        self.unsupported = {
            "token_expired": "RT's auth tokens do not expire during a sync",
            "hidden_records": "RT 5 checks rights in SQL before it pages: a page is never short for tickets the user may not see",
        }
        self.url = "https://rt.contract-suite.example"
        self.user, self.password = "gapbridge", "pw-" + secrets.token_urlsafe(12)
        self.token = f"1-21-{secrets.token_hex(16)}"
        self.tickets: dict[str, dict[str, Any]] = {}  # id -> {subject, status, created, updated, values, txn}
        self.transactions: list[dict[str, Any]] = []  # {id, ticket, type, data, content}
        self.mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        rest = re.escape(self.url) + "/REST/2.0"
        self._route("GET", rest + r"/user/([\w@.-]+)(\?.*)?$", self._user_record)
        self._route("POST", rest + r"/customfields(\?.*)?$", self._custom_fields)
        self._route("GET", rest + r"/tickets(\?.*)?$", self._search)
        self._route("GET", rest + r"/ticket/(\d+)(\?.*)?$", self._ticket)
        self._route("PUT", rest + r"/ticket/(\d+)(\?.*)?$", self._update, "write")
        self._route("POST", rest + r"/ticket/(\d+)/comment(\?.*)?$", self._comment, "write")
        self._route("GET", rest + r"/transactions(\?.*)?$", self._transactions)
        self.mock.start()

    # --- the ToolDouble interface ----------------------------------------------------------------

    def seed(self, specs: Sequence[RecordSpec]) -> list[str]:
        ids = []
        for i, spec in enumerate(specs):
            ticket_id = str(i + 1)
            # a date a scrip wrote as text: the connector must refuse it
            created: Any = "yesterday" if spec.unnormalizable else _rt_time(spec.updated_at - timedelta(hours=1))
            self.tickets[ticket_id] = {"subject": spec.title, "status": STATUSES[spec.state], "created": created,
                                       "updated": spec.updated_at.astimezone(UTC), "values": {}, "txn": 100 + i}
            ids.append(ticket_id)
        return ids

    def edit(self, external_id: str, title: str) -> None:
        self.tickets[external_id].update(subject=title, updated=self._tick())

    def connector(self, page_size: int) -> RTConnector:
        auth = ({"method": "token", "token": self.token} if self.token_auth
                else {"method": "basic", "username": self.user, "password": self.password})
        options = RTConnector.config_schema().load({
            "type": "rt", "url": self.url, "auth": auth, "query": f"Queue = '{QUEUE}'", "per_page": page_size,
            "max_attempts": 3, "timeout": {"connect": 0.5, "read": 0.5}, "timeline": {"enabled": False},
            "state_map": {**{status: state for state, status in STATUSES.items()}},
            "write_back": {"fingerprint_field": CUSTOM_FIELDS["fingerprint"][1],
                           "fields": {name: CUSTOM_FIELDS[name][1] for name in ("open_gaps", "compliance_status")}}})
        return RTConnector(f"contract-{self.name}", options, sleep=self.sleep)

    def secrets(self) -> list[str]:
        return [self.token] if self.token_auth else [self.password]

    def writes(self, external_id: str) -> TicketWrites:
        ticket = self.tickets[external_id]
        notes = tuple(t["content"] for t in self.transactions if t["ticket"] == external_id and t["type"] == "Comment")
        fields = {name: ticket["values"][cf] for name, (cf, _) in CUSTOM_FIELDS.items()
                  if name != "fingerprint" and cf in ticket["values"]}
        properties = {CUSTOM_FIELDS["fingerprint"][1]: ticket["values"][CUSTOM_FIELDS["fingerprint"][0]]} \
            if CUSTOM_FIELDS["fingerprint"][0] in ticket["values"] else {}
        return TicketWrites(notes=notes, fields=fields, properties=properties)

    # --- serving ---------------------------------------------------------------------------------

    def _route(self, method: str, pattern: str, handler: Callable[..., tuple[int, dict[str, str], str]],
               target: str | None = None) -> None:
        compiled = re.compile(pattern)

        def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
            found = compiled.match(str(request.url))
            assert found is not None
            args = self._args(request)
            page = target or ("page" if handler == self._search and args.get("order") == ["ASC", "ASC"] else None)
            groups = [g for g in found.groups() if g and not g.startswith("?")]
            return self._serve(request, page, lambda: handler(request, args, *groups))

        self.mock.add_callback(method, compiled, callback=callback)

    def _authenticated(self, request: requests.PreparedRequest) -> bool:
        header = str(request.headers.get("Authorization", ""))
        if self.token_auth:
            return header == f"token {self.token}"
        return header == requests.auth._basic_auth_str(self.user, self.password)

    def _user_record(self, request: requests.PreparedRequest, args: dict[str, list[str]], name: str) -> tuple[int, dict[str, str], str]:
        if name != self.user:
            return _error(404, "Not Found")
        return self._json({"id": 21, "Name": self.user, "Timezone": str(ZONE), "Privileged": 1})

    def _custom_fields(self, request: requests.PreparedRequest, args: dict[str, list[str]]) -> tuple[int, dict[str, str], str]:
        items = [{"id": cf, "Name": name, "LookupType": "RT::Queue-RT::Ticket", "Disabled": "0"} for cf, name in CUSTOM_FIELDS.values()]
        return self._json({"items": items, "count": len(items), "total": len(items), "page": 1, "per_page": 100, "pages": 1})

    def _render(self, ticket_id: str, search: bool) -> dict[str, Any]:
        t = self.tickets[ticket_id]
        values = [{"id": cf, "name": name, "type": "customfield", "values": [t["values"][cf]] if t["values"].get(cf) else []}
                  for cf, name in CUSTOM_FIELDS.values()]
        return {"id": ticket_id if search else int(ticket_id), "type": "ticket", "Subject": t["subject"], "Status": t["status"],
                "Queue": {"id": "3", "type": "queue", **({"Name": QUEUE} if search else {})},
                "Owner": {"id": "Nobody", "type": "user"}, "Requestor": [{"id": "soc@example.com", "type": "user"}],
                "Created": t["created"], "Started": _NEVER, "Resolved": _NEVER, "LastUpdated": _rt_time(t["updated"]),
                "Priority": "0", "CustomFields": values}

    def _search(self, request: requests.PreparedRequest, args: dict[str, list[str]]) -> tuple[int, dict[str, str], str]:
        query = args.get("query", [""])[0]
        page, per_page = int(args.get("page", ["1"])[0]), min(int(args.get("per_page", ["20"])[0]), 100)
        probe = _PROBE.match(query)
        if probe:  # the connector measuring the zone: id = N AND LastUpdated > 'local'
            when, t = _ticketsql_date(probe.group(2)), self.tickets.get(probe.group(1))
            hit = t is not None and (when is None or t["updated"] > when)
            return self._json({"items": [{"id": probe.group(1), "type": "ticket"}] if hit else [], "count": int(hit),
                               "page": 1, "per_page": per_page, **self._counts(int(hit), per_page)})
        if query == "id > 0" and args.get("order") == ["DESC"]:  # the newest ticket
            rows = sorted(self.tickets, key=lambda i: (self.tickets[i]["updated"], int(i)), reverse=True)[:1]
            return self._json({"items": [{"id": i, "LastUpdated": _rt_time(self.tickets[i]["updated"])} for i in rows],
                               "count": len(rows), "page": 1, "per_page": 1, **self._counts(len(self.tickets), 1)})
        scope = _SCOPE.match(query)
        if not scope or args.get("orderby") != ["LastUpdated", "id"]:
            return _error(400, f"Couldn't parse query: the contract double cannot read {query!r}")
        since = _ticketsql_date(scope.group(1)) if scope.group(1) is not None else None
        rows = sorted((i for i, t in self.tickets.items() if since is None or t["updated"] >= since),
                      key=lambda i: (self.tickets[i]["updated"], int(i)))
        window = rows[(page - 1) * per_page: page * per_page]
        body: dict[str, Any] = {"items": [self._render(i, True) for i in window], "count": len(window), "page": page,
                                "per_page": per_page, **self._counts(len(rows), per_page)}
        if body["pages"] and page < body["pages"]:
            body["next_page"] = f"{self.url}/REST/2.0/tickets?page={page + 1}"
        return self._json(body)

    def _counts(self, total: int, per_page: int) -> dict[str, Any]:
        if self.token_auth:
            return {"total": None, "pages": None}
        return {"total": total, "pages": -(-total // per_page) if total else 0.0}

    def _ticket(self, request: requests.PreparedRequest, args: dict[str, list[str]], ticket_id: str) -> tuple[int, dict[str, str], str]:
        if ticket_id not in self.tickets:
            return _error(404, "Not Found")
        status, headers, body = self._json(self._render(ticket_id, False))
        return status, {**headers, "ETag": f'"{self.tickets[ticket_id]["txn"]}"'}, body

    def _update(self, request: requests.PreparedRequest, args: dict[str, list[str]], ticket_id: str) -> tuple[int, dict[str, str], str]:
        t = self.tickets.get(ticket_id)
        if t is None:
            return _error(404, "Not Found")
        match = request.headers.get("If-Match")
        if match is not None and match != f'"{t["txn"]}"':
            return _error(412, "Precondition Failed")
        sent = json.loads(request.body or b"{}")
        said = []
        known = {cf for cf, _ in CUSTOM_FIELDS.values()}
        for cf, value in (sent.get("CustomFields") or {}).items():
            if cf in known and t["values"].get(cf) != value:  # RT ignores a field the queue lacks, and says nothing
                said.append(f"{cf} {t['values'].get(cf) or '(no value)'} changed to {value}")
                t["values"][cf] = str(value)
                self._transaction(ticket_id, "CustomField", "", "")
        return self._json(said)

    def _comment(self, request: requests.PreparedRequest, args: dict[str, list[str]], ticket_id: str) -> tuple[int, dict[str, str], str]:
        if ticket_id not in self.tickets:
            return _error(404, "Not Found")
        sent = json.loads(request.body or b"{}")
        txn = self._transaction(ticket_id, "Comment", f"{sent.get('Subject') or 'No Subject'}\n", str(sent.get("Content") or ""))
        return 201, {"Content-Type": "application/json", "Location": f"/REST/2.0/transaction/{txn}"}, json.dumps(["Comments added"])

    def _transactions(self, request: requests.PreparedRequest, args: dict[str, list[str]]) -> tuple[int, dict[str, str], str]:
        query = args.get("query", [""])[0]
        if "[" in query:  # RT 5.0.3 takes any query with "[" for its JSON form, and fails on it
            return _error(500, "Internal Server Error")
        found = _MARKS.match(query)
        if not found:
            return _error(400, f"the contract double cannot read {query!r}")
        rows = [t for t in self.transactions if t["ticket"] == found.group(1) and t["type"] == "Comment"
                and found.group(2).lower() in t["data"].lower()]
        rows.sort(key=lambda t: t["id"], reverse=args.get("order") == ["DESC"])
        per_page = min(int(args.get("per_page", ["20"])[0]), 100)
        items = [{"id": str(t["id"]), "type": "transaction", "Data": t["data"]} for t in rows[:per_page]]
        return self._json({"items": items, "count": len(items), "page": 1, "per_page": per_page, **self._counts(len(rows), per_page)})

    def _transaction(self, ticket_id: str, kind: str, data: str, content: str) -> int:
        txn = 1000 + len(self.transactions)
        self.transactions.append({"id": txn, "ticket": ticket_id, "type": kind, "data": data, "content": content})
        self.tickets[ticket_id].update(txn=txn, updated=self._tick())
        return txn

    def _tick(self) -> datetime:
        """The time of a change now: a second after the latest change, so it sorts after every ticket."""
        latest = max((t["updated"] for t in self.tickets.values()), default=datetime(2024, 1, 1, tzinfo=UTC))
        return latest + timedelta(seconds=1)

    @staticmethod
    def _args(request: requests.PreparedRequest) -> dict[str, list[str]]:
        return parse_qs(urlsplit(str(request.url)).query, keep_blank_values=True)

    @staticmethod
    def _json(body: Any) -> tuple[int, dict[str, str], str]:
        return 200, {"Content-Type": "application/json; charset=\"utf-8\""}, json.dumps(body)
