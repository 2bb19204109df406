"""A ServiceNow double for the contract suite: the Table API subset the ServiceNow connector uses, served through ``responses``.

It behaves as an instance does where the contract cares: ``sysparm_limit`` applies before ACLs
hide rows (short or empty pages while ``Link: rel="next"`` and ``X-Total-Count`` say more
follow), keyset queries over (sys_updated_on, sys_id), the work-note journal, a fingerprint
column, basic auth or OAuth with refresh tokens. A query it does not understand is a 400: a
double that ignored a condition would hide a connector's bug.

It is also an example of a ``ToolDouble`` for a third party's own tool. It needs ``responses``
(GapBridge's test extra).
"""

from __future__ import annotations

import base64
import hashlib
import json
import operator
import re
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

try:
    import responses
except ImportError as exc:  # a test extra, like pytest
    raise ImportError("connectors.testing.servicenow needs responses: pip install 'gapbridge[test]' (or responses itself)") from exc

from ..servicenow import ServiceNowConnector
from .double import RecordSpec, TicketWrites
from .mocked import Answer, MockedToolDouble

SN_TIME = "%Y-%m-%d %H:%M:%S"
STATE_CODES = {"new": "1", "in_progress": "2", "on_hold": "3", "resolved": "6", "closed": "7", "cancelled": "8"}
# enrichment field -> column, when the double's connector writes fields
FIELD_COLUMNS = {"open_gaps": "u_gapbridge_open_gaps", "compliance_status": "u_gapbridge_status"}
FINGERPRINT_COLUMN = "u_gapbridge_fingerprint"
INCIDENT_COLUMNS = ("sys_id", "number", "short_description", "description", "category", "subcategory", "state", "priority",
                    "opened_at", "resolved_at", "closed_at", "sys_updated_on", "sys_class_name", "company", "assignment_group",
                    "assigned_to", "caller_id", "contact_type", "cmdb_ci", "close_code", "close_notes", "problem_id",
                    "u_major_incident", "u_evidence", "u_notifications", "u_escalations", "work_notes",
                    FINGERPRINT_COLUMN, *FIELD_COLUMNS.values())
JOURNAL_COLUMNS = ("sys_id", "element_id", "element", "value", "sys_created_on", "seq")
_CONDITION = re.compile(r"^([a-z_]+)(>=|<=|!=|>|<|=|IN|LIKE|STARTSWITH)(.*)$", re.DOTALL)
_ORDER = re.compile(r"^ORDERBY(DESC)?([a-z_]+)$")


class QueryError(ValueError):
    pass


def _compile(query: str, columns: Sequence[str]) -> tuple[Callable[[dict[str, str]], bool], list[tuple[str, bool]]]:
    """An encoded query (AND with ^, new query with ^NQ, ORDERBY/ORDERBYDESC) as a predicate and an order."""
    groups: list[list[Callable[[dict[str, str]], bool]]] = []
    order: list[tuple[str, bool]] = []
    for part in query.split("^NQ") if query else []:
        conditions: list[Callable[[dict[str, str]], bool]] = []
        for token in part.split("^"):
            ordered = _ORDER.match(token)
            if ordered:
                if ordered.group(2) not in columns:
                    raise QueryError(f"unknown field in {token!r}")
                order.append((ordered.group(2), bool(ordered.group(1))))
                continue
            found = _CONDITION.match(token)
            if not found or found.group(1) not in columns:
                raise QueryError(f"cannot read condition {token!r}")
            conditions.append(_condition(*found.groups()))
        if conditions:
            groups.append(conditions)
    if not groups:
        return (lambda row: True), order
    return (lambda row: any(all(c(row) for c in group) for group in groups)), order


def _condition(column: str, op: str, value: str) -> Callable[[dict[str, str]], bool]:
    # ServiceNow's times and sys_ids compare as text in this format; seq is the only number
    def cell(row: dict[str, str]) -> Any:
        return row[column]
    if op == "IN":
        wanted = set(value.split(","))
        return lambda row: cell(row) in wanted
    if op == "LIKE":
        return lambda row: value in str(cell(row))
    if op == "STARTSWITH":
        return lambda row: str(cell(row)).startswith(value)
    compare: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b, "!=": lambda a, b: a != b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}
    return lambda row: compare[op](str(cell(row)), value)


def _sorted(rows: list[dict[str, str]], order: list[tuple[str, bool]], tiebreak: str) -> list[dict[str, str]]:
    keys = list(order)
    if not any(column == tiebreak for column, _ in keys):
        keys.append((tiebreak, keys[-1][1] if keys else False))
    for column, descending in reversed(keys):  # stable sorts, last key first
        rows = sorted(rows, key=operator.itemgetter(column), reverse=descending)
    return rows


def _error(status: int, message: str, detail: str = "") -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json"}, json.dumps({"error": {"message": message, "detail": detail}, "status": "failure"})


class ServiceNowDouble(MockedToolDouble):
    """A ServiceNow instance for the contract suite.

    ``auth``: ``basic`` or ``oauth_password`` (tokens, refreshed). ``fingerprint_column``: the
    connector keeps the fingerprint in a column (else the marker in the newest work note tells it).
    Either way it writes the enrichment fields ``open_gaps`` and ``compliance_status`` to columns. ``display_value``: what the connector asks for (``all`` or ``false``).
    """

    rate_limit_message = ("Too Many Requests", "Rate limit exceeded")
    unauthorized_message = ("User Not Authenticated", "Required to provide Auth information")
    maintenance_page = ("text/plain", "This instance is being upgraded. Please try again in a few minutes.")

    def _error(self, status: int, *messages: str) -> Answer:
        return _error(status, *messages[:2])

    def _expire_tokens(self) -> None:
        self._live_tokens.clear()

    def __init__(self, auth: str = "basic", *, fingerprint_column: bool = False, display_value: str = "all") -> None:
        super().__init__()
        if auth not in ("basic", "oauth_password"):
            raise ValueError(f"auth must be basic or oauth_password, not {auth!r}")
        self.auth, self.fingerprint_column, self.display_value = auth, fingerprint_column, display_value
        self.name = f"servicenow-{auth}{'-column' if fingerprint_column else ''}"
        self.unsupported = {} if auth != "basic" else {"token_expired": "with basic auth the connector holds no token to expire"}
        self.url = "https://contract-suite.service-now.example"
        self.username = "gapbridge.integration"
        self.password = "pw-" + secrets.token_urlsafe(12)
        self.client_id = "gapbridge-contract-suite"
        self.client_secret = "cs-" + secrets.token_urlsafe(12)
        self.rows: dict[str, dict[str, str]] = {}
        self.hidden: set[str] = set()
        self.journal: list[dict[str, str]] = []
        self._live_tokens: set[str] = set()
        self._refresh_tokens: set[str] = set()
        self._issued: list[str] = []
        self.mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        table = re.compile(re.escape(self.url) + r"/api/now/table/(\w+)(?:/(\w+))?(\?.*)?$")
        self.mock.add_callback("POST", f"{self.url}/oauth_token.do", callback=self._token)
        self.mock.add_callback("GET", table, callback=lambda r: self._serve(r, "page" if _is_list(r) else None, lambda: self._read(r)))
        self.mock.add_callback("PATCH", table, callback=lambda r: self._serve(r, "write", lambda: self._patch(r)))
        self.mock.start()

    # --- the ToolDouble interface ----------------------------------------------------------------

    def seed(self, specs: Sequence[RecordSpec]) -> list[str]:
        ids = []
        for i, spec in enumerate(specs):
            # sys_ids in no relation to the seed order: records sharing a time must be ordered by sys_id
            sys_id = hashlib.sha256(f"contract-{i}".encode()).hexdigest()[:32]
            if spec.state not in STATE_CODES:
                raise ValueError(f"the incident table has no {spec.state!r} state")
            row = dict.fromkeys(INCIDENT_COLUMNS, "")
            row.update(sys_id=sys_id, number=f"INC{10000 + i:07d}", short_description=spec.title, state=STATE_CODES[spec.state],
                       priority="3", sys_class_name="incident", u_major_incident="false",
                       opened_at=_sn(spec.updated_at - timedelta(hours=1)), sys_updated_on=_sn(spec.updated_at))
            if spec.unnormalizable:
                row["opened_at"] = "yesterday"  # a time column a form customisation filled with text
            self.rows[sys_id] = row
            if spec.hidden:
                self.hidden.add(sys_id)
            ids.append(sys_id)
        return ids

    def edit(self, external_id: str, title: str) -> None:
        row = self.rows[external_id]
        row.update(short_description=title, sys_updated_on=self._tick())

    def connector(self, page_size: int) -> ServiceNowConnector:
        auth: dict[str, str] = {"method": self.auth, "username": self.username, "password": self.password}
        if self.auth == "oauth_password":
            auth.update(client_id=self.client_id, client_secret=self.client_secret)
        write_back: dict[str, Any] = {"work_note": True, "fields": dict(FIELD_COLUMNS)}
        if self.fingerprint_column:
            write_back["fingerprint_field"] = FINGERPRINT_COLUMN
        options = ServiceNowConnector.config_schema().load({
            "type": "servicenow", "instance_url": self.url, "auth": auth, "page_size": page_size, "max_attempts": 3,
            "display_value": self.display_value, "timeout": {"connect": 0.5, "read": 0.5}, "write_back": write_back})
        return ServiceNowConnector("contract-sn", options, sleep=self.sleep)

    def secrets(self) -> list[str]:
        return [self.password, *([self.client_secret] if self.auth != "basic" else []), *self._issued]

    def writes(self, external_id: str) -> TicketWrites:
        row = self.rows[external_id]
        notes = tuple(j["value"] for j in self.journal if j["element_id"] == external_id)
        fields = {name: row[column] for name, column in FIELD_COLUMNS.items() if row[column] != ""}
        properties = {FINGERPRINT_COLUMN: row[FINGERPRINT_COLUMN]} if row[FINGERPRINT_COLUMN] else {}
        return TicketWrites(notes=notes, fields=fields, properties=properties)

    # --- serving -----------------------------------------------------------------------------------

    def _authenticated(self, request: requests.PreparedRequest) -> bool:
        header = str(request.headers.get("Authorization", ""))
        if self.auth == "basic" and header.startswith("Basic "):
            given = base64.b64decode(header[6:]).decode()
            return given == f"{self.username}:{self.password}"
        if self.auth == "oauth_password" and header.startswith("Bearer "):
            return header[7:] in self._live_tokens
        return False

    def _token(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
        form = {k: v[0] for k, v in parse_qs(body).items()}
        client = form.get("client_id") == self.client_id and form.get("client_secret") == self.client_secret
        grant = form.get("grant_type")
        ok = client and ((grant == "password" and form.get("username") == self.username and form.get("password") == self.password)
                         or (grant == "refresh_token" and form.get("refresh_token") in self._refresh_tokens))
        if self.auth != "oauth_password" or not ok:
            return 401, {"Content-Type": "application/json"}, json.dumps({"error": "server_error", "error_description": "access_denied"})
        access = "at-" + secrets.token_urlsafe(16)
        refresh = form["refresh_token"] if grant == "refresh_token" else "rt-" + secrets.token_urlsafe(16)
        self._live_tokens.add(access)
        self._refresh_tokens.add(refresh)
        self._issued += [access, refresh]
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"access_token": access, "refresh_token": refresh, "token_type": "Bearer", "expires_in": 1800})

    def _read(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        table, sys_id, args = self._parts(request)
        if table == "sys_journal_field" and sys_id is None:
            return self._list(args, self.journal, JOURNAL_COLUMNS, "seq", hide=False)
        if table != "incident":
            return _error(404, f"Invalid table {table}")
        if sys_id is None:
            return self._list(args, list(self.rows.values()), INCIDENT_COLUMNS, "sys_id", hide=True)
        row = self.rows.get(sys_id)
        if row is None or sys_id in self.hidden:
            return _error(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
        return self._json({"result": self._render([row], args)[0]})

    def _list(self, args: dict[str, str], rows: list[dict[str, str]], columns: Sequence[str], tiebreak: str,
              hide: bool) -> tuple[int, dict[str, str], str]:
        try:
            limit, offset = int(args.get("sysparm_limit", "10000")), int(args.get("sysparm_offset", "0"))
            match, order = _compile(args.get("sysparm_query", ""), columns)
        except (ValueError, QueryError) as exc:
            return _error(400, f"Invalid query: {exc}")
        matching = _sorted([r for r in rows if match(r)], order, tiebreak)
        window = matching[offset:offset + limit]
        if hide:  # ACLs filter after the limit: the page comes back short, or empty
            window = [r for r in window if r["sys_id"] not in self.hidden]
        links = [f'<{self.url}/api/now/table/x?{urlencode({**args, "sysparm_offset": 0})}>;rel="first"']
        if offset + limit < len(matching):
            links.append(f'<{self.url}/api/now/table/x?{urlencode({**args, "sysparm_offset": offset + limit})}>;rel="next"')
        return self._json({"result": self._render(window, args)}, {"X-Total-Count": str(len(matching)), "Link": ",".join(links)})

    def _patch(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        table, sys_id, args = self._parts(request)
        if table != "incident" or sys_id is None:
            return _error(403, "Operation not permitted")
        row = self.rows.get(sys_id)
        if row is None or sys_id in self.hidden:
            return _error(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
        try:
            body = json.loads(request.body or b"")
        except ValueError:
            return _error(400, "Exception while reading request", "The payload is not valid JSON.")
        stamp = self._tick()
        for column, value in body.items():  # like ServiceNow: unknown and system columns are ignored
            if column in INCIDENT_COLUMNS and not column.startswith("sys_") and column != "work_notes":
                row[column] = str(value)
        if body.get("work_notes"):
            self.journal.append({"sys_id": secrets.token_hex(16), "element_id": sys_id, "element": "work_notes",
                                 "value": str(body["work_notes"]), "sys_created_on": stamp, "seq": f"{len(self.journal):08d}"})
        row["sys_updated_on"] = stamp
        return self._json({"result": self._render([row], args)[0]})

    def _render(self, rows: list[dict[str, str]], args: dict[str, str]) -> list[dict[str, Any]]:
        wanted = [f for f in args.get("sysparm_fields", "").split(",") if f] or list(rows[0] if rows else ())
        display = args.get("sysparm_display_value", "false")
        out = []
        for row in rows:
            record: dict[str, Any] = {}
            for column in wanted:
                if column not in row:
                    continue  # ServiceNow leaves out a field the table does not have
                value = self._notes(row["sys_id"]) if column == "work_notes" and display != "false" else row[column]
                record[column] = {"display_value": value, "value": "" if column == "work_notes" else value} if display == "all" else value
            out.append(record)
        return out

    def _notes(self, sys_id: str) -> str:
        """The work_notes display value: the journal, newest first."""
        notes = [j for j in self.journal if j["element_id"] == sys_id]
        return "".join(f"{j['sys_created_on']} - GapBridge Integration (Work notes)\n{j['value']}\n\n" for j in reversed(notes))

    def _parts(self, request: requests.PreparedRequest) -> tuple[str, str | None, dict[str, str]]:
        split = urlsplit(str(request.url))
        parts = split.path.split("/")[4:]  # /api/now/table/<table>[/<sys_id>]
        args = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        return parts[0], (parts[1] if len(parts) > 1 else None), args

    def _tick(self) -> str:
        """The time of a change now: a second after the latest change, so it sorts after every record."""
        latest = max((r["sys_updated_on"] for r in self.rows.values()), default=_sn(datetime(2024, 1, 1, tzinfo=UTC)))
        return _sn(datetime.strptime(latest, SN_TIME).replace(tzinfo=UTC) + timedelta(seconds=1))

    @staticmethod
    def _json(body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        return 200, {"Content-Type": "application/json", **(headers or {})}, json.dumps(body)


def _is_list(request: requests.PreparedRequest) -> bool:
    """A read of a page of incidents (not one record, not the journal): what the suite's ``page`` faults count."""
    path = urlsplit(str(request.url)).path.rstrip("/")
    return path.endswith("/api/now/table/incident")


def _sn(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(SN_TIME)
