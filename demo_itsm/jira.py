"""DemoJira: the Jira Cloud REST API subset GapBridge's Jira connector uses, over one SQLite file.

Seeded from the same profiles as the ServiceNow stand-in (``demo_itsm.seed``), so the same
incident stories appear: each ServiceNow record becomes an issue of the service-desk project
``INC`` (INC0010042 is INC-10042), its ``u_*`` columns custom fields named as a Jira admin would
name them ("Root cause", "Contained at"). Times are answered in the API user's time zone, and
JQL time literals are read in it, to the minute, as Jira does.

What it serves: ``/rest/api/3/myself``, ``/field``, ``/search/jql`` (GET and POST, ``nextPageToken``;
the old ``/search`` answers 410 Gone), issue GET and PUT (labels through ``update``, fields),
comments (plain, and internal ones through ``/rest/servicedeskapi``), issue properties. A small
JQL subset: ``project = X`` / ``project in (...)``, ``issue|key|id in (...)``, ``issuetype = "..."``,
``updated >= "yyyy-MM-dd HH:mm"``, joined by AND, with ``ORDER BY updated, key``. Test controls
(faults, delay, a per-issue write limit, stats) are methods here and ``/_demo/*`` endpoints.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, Response, request

from . import seed as sd
from .served import ServedTool

EMAIL, API_TOKEN = "gapbridge@demo.example", "demo-jira-token"
PROJECT, PROJECT_NAME = "INC", "IT Service Desk"
TIME_ZONE = "Europe/Berlin"
ACCOUNT_ID = "5b10a2844c20165700ede21a"
PROPERTY_LIMIT = 32768

# custom field name -> (id, schema type, custom type); the ServiceNow column each holds is in _FROM_COLUMN
CUSTOM_FIELDS: dict[str, tuple[str, str, str]] = {
    "Category": ("customfield_10100", "option", "select"),
    "Subcategory": ("customfield_10101", "option", "select"),
    "Security incident": ("customfield_10102", "array", "multicheckboxes"),
    "Business unit": ("customfield_10103", "option", "select"),
    "Assignment group": ("customfield_10104", "group", "grouppicker"),
    "Reported via": ("customfield_10105", "option", "select"),
    "Affected CI": ("customfield_10106", "string", "textfield"),
    "Problem": ("customfield_10107", "string", "textfield"),
    "Root cause": ("customfield_10108", "string", "textarea"),
    "Lessons learned": ("customfield_10109", "string", "textarea"),
    "Resolution notes": ("customfield_10110", "string", "textarea"),
    "Assessed at": ("customfield_10111", "datetime", "datetime"),
    "Acknowledged at": ("customfield_10112", "datetime", "datetime"),
    "Contained at": ("customfield_10113", "datetime", "datetime"),
    "Major incident declared at": ("customfield_10114", "datetime", "datetime"),
    "Closed at": ("customfield_10115", "datetime", "datetime"),
    "Major incident": ("customfield_10116", "array", "multicheckboxes"),
    "Personal data breach": ("customfield_10117", "array", "multicheckboxes"),
    "Legal hold": ("customfield_10118", "array", "multicheckboxes"),
    "Maintenance ref": ("customfield_10119", "string", "textfield"),
    "Capacity ref": ("customfield_10120", "string", "textfield"),
    "Related incidents": ("customfield_10121", "array", "labels"),
    "Weakness refs": ("customfield_10122", "array", "labels"),
    "Vulnerability refs": ("customfield_10123", "array", "labels"),
    "Log refs": ("customfield_10124", "array", "labels"),
    "Evidence": ("customfield_10125", "string", "textarea"),
    "Notifications": ("customfield_10126", "string", "textarea"),
    "Escalations": ("customfield_10127", "string", "textarea"),
    "GapBridge open gaps": ("customfield_10128", "number", "float"),
    "ISO 27001 controls": ("customfield_10129", "array", "labels"),
}
_FROM_COLUMN = {
    "category": "Category", "subcategory": "Subcategory", "u_security_incident": "Security incident", "company": "Business unit",
    "assignment_group": "Assignment group", "contact_type": "Reported via", "cmdb_ci": "Affected CI", "problem_id": "Problem",
    "u_root_cause": "Root cause", "u_lessons_learned": "Lessons learned", "close_notes": "Resolution notes",
    "u_assessed_at": "Assessed at", "u_acknowledged_at": "Acknowledged at", "u_contained_at": "Contained at",
    "u_major_declared_at": "Major incident declared at", "closed_at": "Closed at", "u_major_incident": "Major incident",
    "u_personal_data_breach": "Personal data breach", "u_legal_hold": "Legal hold", "u_maintenance_ref": "Maintenance ref",
    "u_capacity_ref": "Capacity ref", "u_related_refs": "Related incidents", "u_weakness_refs": "Weakness refs",
    "u_vulnerability_refs": "Vulnerability refs", "u_log_refs": "Log refs", "u_evidence": "Evidence",
    "u_notifications": "Notifications", "u_escalations": "Escalations",
}
SYSTEM_FIELDS: dict[str, tuple[str, str]] = {  # id -> (name, schema type)
    "summary": ("Summary", "string"), "description": ("Description", "string"), "status": ("Status", "status"),
    "priority": ("Priority", "priority"), "assignee": ("Assignee", "user"), "reporter": ("Reporter", "user"),
    "created": ("Created", "datetime"), "updated": ("Updated", "datetime"), "resolutiondate": ("Resolved", "datetime"),
    "resolution": ("Resolution", "resolution"), "issuelinks": ("Linked Issues", "array"), "comment": ("Comment", "comments-page"),
    "labels": ("Labels", "array"), "issuetype": ("Issue Type", "issuetype"), "project": ("Project", "project"),
}
STATUSES = {"1": ("Open", "new"), "2": ("Work in progress", "indeterminate"), "3": ("Pending", "indeterminate"),
            "6": ("Resolved", "done"), "7": ("Closed", "done"), "8": ("Canceled", "done")}
PRIORITIES = {"1": "Highest", "2": "High", "3": "Medium", "4": "Low", "5": "Lowest"}
_CHECKBOX = [{"value": "Yes", "id": "10300"}]
_JIRA_TIME = "%Y-%m-%dT%H:%M:%S"
_INC = re.compile(r"^INC(\d{7})$")
_WRITABLE = frozenset({CUSTOM_FIELDS["GapBridge open gaps"][0], CUSTOM_FIELDS["ISO 27001 controls"][0], "summary"})

SCHEMA = """
CREATE TABLE IF NOT EXISTS issue (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, num INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL, fields TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS issue_updated ON issue (updated_ms, num);
CREATE TABLE IF NOT EXISTS comment (id INTEGER PRIMARY KEY AUTOINCREMENT, issue_id INTEGER NOT NULL, created_ms INTEGER NOT NULL,
    author TEXT NOT NULL, body TEXT NOT NULL, public INTEGER NOT NULL, visibility TEXT);
CREATE INDEX IF NOT EXISTS comment_issue ON comment (issue_id, created_ms);
CREATE TABLE IF NOT EXISTS property (issue_id INTEGER NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (issue_id, key));
"""


class JqlError(ValueError):
    """A query this stand-in (or Jira) refuses: 400 with errorMessages."""


def _ms(dt: datetime) -> int:
    return int(dt.replace(tzinfo=UTC).timestamp() * 1000) if dt.tzinfo is None else int(dt.timestamp() * 1000)


def _key(number: str) -> str:
    """INC0010042 -> INC-10042: references between incidents keep pointing at the same story."""
    found = _INC.match(number)
    return f"{PROJECT}-{int(found.group(1))}" if found else number


def _adf(text: str) -> dict[str, Any] | None:
    if not text:
        return None
    blocks = [b for b in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if b.strip()]
    content = []
    for block in blocks:
        inline: list[dict[str, Any]] = []
        for i, line in enumerate(block.split("\n")):
            if i:
                inline.append({"type": "hardBreak"})
            if line:
                inline.append({"type": "text", "text": line})
        content.append({"type": "paragraph", "content": inline})
    return {"type": "doc", "version": 1, "content": content}


def _adf_text(doc: Any) -> str:
    """The text of an ADF document the connector wrote (paragraphs, hard breaks, text)."""
    if not isinstance(doc, dict):
        return str(doc or "")
    parts = []
    for block in doc.get("content") or []:
        line = "".join("\n" if n.get("type") == "hardBreak" else str(n.get("text", "")) for n in block.get("content") or [])
        parts.append(line)
    return "\n\n".join(parts)


def _user(name: str) -> dict[str, Any] | None:
    if not name:
        return None
    return {"accountId": hashlib.md5(name.encode()).hexdigest()[:24], "displayName": name, "active": True}


class DemoJira(ServedTool):
    """A demo Jira Cloud site: ``with DemoJira(tmp / "jira.db", size=300) as jira: requests.get(jira.url + ...)``."""

    thread_name = "demo-jira"

    def __init__(self, db_path: str | Path, size: int | None = None, seed: int = 42, host: str = "127.0.0.1", port: int = 0,
                 now: datetime | None = None, time_zone: str = TIME_ZONE) -> None:
        self._open(db_path, host, port, now)
        self.zone = ZoneInfo(time_zone)
        self.zone_name = time_zone
        self._db.executescript(SCHEMA)
        if size and self.count() == 0:
            with self._lock, self._db:
                self._seed(sd.generate_incidents(size, seed, now))
        # at most (writes, seconds) writes to one issue, like Jira Cloud's per-issue write limit; None: no limit
        self.per_issue_writes: tuple[int, float] | None = None
        self._writes: dict[int, list[float]] = {}
        self.app = _create_app(self)

    def _initial_stats(self) -> dict[str, int]:
        return {"failed_injected": 0, "per_issue_limited": 0}

    def clock(self) -> datetime:
        """Current UTC time (aware, whole milliseconds); with ``now`` given, ``now`` plus the time since construction."""
        t = self._naive_now().replace(tzinfo=UTC)
        return t.replace(microsecond=t.microsecond // 1000 * 1000)

    # --- seeding ---------------------------------------------------------------------------

    def _seed(self, records: Iterable[dict[str, str]]) -> None:
        rows = []
        for rec in records:
            key = _key(rec["number"])
            num = int(key.split("-", 1)[1])
            updated = datetime.strptime(rec["sys_updated_on"], "%Y-%m-%d %H:%M:%S")
            rows.append((10000 + num, key, num, _ms(updated), json.dumps(self._fields_of(rec), separators=(",", ":"))))
        self._db.executemany("INSERT INTO issue (id, key, num, updated_ms, fields) VALUES (?, ?, ?, ?, ?)", rows)

    def _fields_of(self, rec: dict[str, str]) -> dict[str, Any]:
        """A ServiceNow demo record as the fields of a Jira issue (times kept as UTC ms, rendered per request)."""
        names = sd.reference_names()
        status, category = STATUSES.get(rec["state"], ("Open", "new"))
        fields: dict[str, Any] = {
            "summary": rec["short_description"], "description": _adf(rec["description"]),
            "status": {"name": status, "statusCategory": {"key": category}},
            "priority": {"name": PRIORITIES[rec["priority"]]} if rec["priority"] in PRIORITIES else None,
            # a reported weakness is its own issue type in a service desk, as the connector's defaults expect
            "issuetype": {"name": "Vulnerability" if rec["category"] == "vulnerability" else "[System] Incident"}, "labels": [],
            "assignee": _user(names.get(rec["assigned_to"], "")), "reporter": _user(names.get(rec["caller_id"], "")),
            "resolution": {"name": rec["close_code"]} if rec["close_code"] else None,
            "created": _stamp(rec["opened_at"] or rec["sys_created_on"]), "updated": None,
            "resolutiondate": _stamp(rec["resolved_at"]), "issuelinks": [],
        }
        for column, name in _FROM_COLUMN.items():
            fid, kind, custom = CUSTOM_FIELDS[name]
            raw = rec[column]
            if column in sd.REFERENCES:
                raw = names.get(raw, "")
            value: Any
            if not raw or (custom == "multicheckboxes" and raw == "false"):
                value = [] if kind == "array" else None
            elif custom == "multicheckboxes":
                value = list(_CHECKBOX)
            elif kind == "option":
                value = {"value": raw, "id": str(int(hashlib.md5(raw.encode()).hexdigest()[:6], 16))}
            elif kind == "group":
                value = {"name": raw, "groupId": hashlib.md5(raw.encode()).hexdigest()}
            elif kind == "datetime":
                value = _stamp(raw)
            elif custom == "labels":
                value = [_key(r.strip()) for r in raw.split(",") if r.strip()]
            elif custom == "textarea":
                value = _adf(raw)
            else:
                value = raw
            fields[fid] = value
        return fields

    # --- test helpers ----------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM issue").fetchone()[0])

    def keys(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT key FROM issue ORDER BY num")]

    def issue(self, key: str) -> dict[str, Any]:
        """An issue as the API answers it, every field; KeyError when there is none."""
        with self._lock:
            row = self._row(key)
            if row is None:
                raise KeyError(key)
            return self._render([row], None, [])[0]

    def comments(self, key: str) -> list[dict[str, Any]]:
        """Comments of an issue, oldest first: body (plain text), public, visibility, author."""
        with self._lock:
            row = self._row(key)
            if row is None:
                raise KeyError(key)
            rows = self._db.execute("SELECT * FROM comment WHERE issue_id = ? ORDER BY created_ms, id", (row["id"],)).fetchall()
        return [{"id": r["id"], "body": r["body"], "public": bool(r["public"]), "author": r["author"],
                 "visibility": json.loads(r["visibility"]) if r["visibility"] else None} for r in rows]

    def properties(self, key: str) -> dict[str, Any]:
        with self._lock:
            row = self._row(key)
            if row is None:
                raise KeyError(key)
            return {r["key"]: json.loads(r["value"]) for r in self._db.execute("SELECT key, value FROM property WHERE issue_id = ?",
                                                                               (row["id"],))}

    def update(self, key: str, **fields: Any) -> None:
        """Change fields like a user edit (by field id or custom field name); the issue's updated moves on."""
        with self._lock, self._db:
            row = self._row(key)
            if row is None:
                raise KeyError(key)
            stored = json.loads(row["fields"])
            for name, value in fields.items():
                stored[CUSTOM_FIELDS[name][0] if name in CUSTOM_FIELDS else name] = value
            self._touch(row, stored)

    def fail_next(self, count: int, status: int = 503, retry_after: int | float | str | None = None, methods: Iterable[str] | None = None,
                  path_prefix: str | None = None, body: str | None = None, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``count`` matching requests with ``status`` (a Jira error body, or ``body`` verbatim); 0 clears."""
        self._add_fault(count, status, retry_after=retry_after, body=body, methods=methods, path_prefix=path_prefix,
                        headers=dict(headers or {}))

    # --- internals -------------------------------------------------------------------------

    def _row(self, key: str) -> sqlite3.Row | None:
        if key.isdigit():
            row: sqlite3.Row | None = self._db.execute("SELECT * FROM issue WHERE id = ?", (int(key),)).fetchone()
        else:
            row = self._db.execute("SELECT * FROM issue WHERE key = ?", (key,)).fetchone()
        return row

    def _touch(self, row: sqlite3.Row, stored: dict[str, Any]) -> None:
        """Store changed fields; updated moves strictly on, so an incremental sync sees the change."""
        updated = max(_ms(self.clock()), row["updated_ms"] + 1)
        self._db.execute("UPDATE issue SET fields = ?, updated_ms = ? WHERE id = ?", (json.dumps(stored, separators=(",", ":")),
                                                                                     updated, row["id"]))

    def _time(self, ms: int | None) -> str | None:
        if ms is None:
            return None
        local = datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(self.zone)
        offset = local.strftime("%z")
        return f"{local.strftime(_JIRA_TIME)}.{local.microsecond // 1000:03d}{offset}"

    def _render(self, rows: list[sqlite3.Row], wanted: set[str] | None, properties: list[str]) -> list[dict[str, Any]]:
        """Issues as the API answers them: only the fields asked for (None: all), times in the user's zone."""
        base = request.host_url.rstrip("/") if request else (self.url or "")
        ids = [r["id"] for r in rows]
        comments: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        if wanted is None or "comment" in wanted:
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                for c in self._db.execute(f"SELECT * FROM comment WHERE issue_id IN ({','.join('?' * len(chunk))}) "
                                          "ORDER BY created_ms, id", chunk):
                    comments[c["issue_id"]].append(self._comment(c))
        props: dict[int, dict[str, Any]] = {i: {} for i in ids}
        if properties:
            marks = ",".join("?" * len(properties))
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                for p in self._db.execute(f"SELECT * FROM property WHERE issue_id IN ({','.join('?' * len(chunk))}) AND key IN ({marks})",
                                          [*chunk, *properties]):
                    props[p["issue_id"]][p["key"]] = json.loads(p["value"])
        out = []
        for row in rows:
            stored = json.loads(row["fields"])
            stored["updated"] = row["updated_ms"]
            stored["comment"] = {"comments": comments[row["id"]], "maxResults": len(comments[row["id"]]),
                                 "total": len(comments[row["id"]]), "startAt": 0}
            stored["project"] = {"key": PROJECT, "name": PROJECT_NAME, "projectTypeKey": "service_desk"}
            fields = {}
            for fid, value in stored.items():
                if wanted is not None and fid not in wanted:
                    continue
                kind = SYSTEM_FIELDS.get(fid, ("", ""))[1] if fid in SYSTEM_FIELDS else _custom_kind(fid)
                fields[fid] = self._time(value) if kind == "datetime" and isinstance(value, int) else value
            issue: dict[str, Any] = {"id": str(row["id"]), "key": row["key"], "self": f"{base}/rest/api/3/issue/{row['id']}",
                                     "fields": fields}
            if properties:
                issue["properties"] = props[row["id"]]
            out.append(issue)
        return out

    def _comment(self, c: sqlite3.Row) -> dict[str, Any]:
        body = c["body"]
        if body.startswith("{noformat}") and body.rstrip().endswith("{noformat}"):
            # wiki markup from the service desk API: Jira keeps a noformat block as a code block
            text = body.strip()[len("{noformat}"):-len("{noformat}")].strip("\n")
            adf: dict[str, Any] = {"type": "doc", "version": 1, "content": [{"type": "codeBlock", "content": [{"type": "text", "text": text}]}]}
        else:
            adf = _adf(body) or {"type": "doc", "version": 1, "content": []}
        out = {"id": str(c["id"]), "author": {"accountId": ACCOUNT_ID, "displayName": c["author"]}, "body": adf,
               "created": self._time(c["created_ms"]), "updated": self._time(c["created_ms"]), "jsdPublic": bool(c["public"])}
        if c["visibility"]:
            out["visibility"] = json.loads(c["visibility"])
        return out

    def _write_allowed(self, issue_id: int) -> bool:
        """Within the per-issue write limit (if set); a write that is let through counts."""
        if self.per_issue_writes is None:
            return True
        count, seconds = self.per_issue_writes
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._writes.get(issue_id, []) if now - t < seconds]
            if len(recent) >= count:
                self._stats["per_issue_limited"] += 1
                self._writes[issue_id] = recent
                return False
            self._writes[issue_id] = [*recent, now]
        return True

    def search(self, jql: str, fields: set[str] | None, properties: list[str], max_results: int,
               token: str | None) -> dict[str, Any]:
        where, params = self._where(jql)
        if token:
            try:
                after_ms, after_num = json.loads(base64.urlsafe_b64decode(token.encode()).decode())
            except (ValueError, TypeError):
                raise JqlError(f"The nextPageToken {token[:20]!r} is not valid.") from None
            where += " AND (updated_ms > ? OR (updated_ms = ? AND num > ?))"
            params += [after_ms, after_ms, after_num]
        with self._lock:
            rows = self._db.execute(f"SELECT * FROM issue WHERE {where} ORDER BY updated_ms, num LIMIT ?",
                                    [*params, max_results + 1]).fetchall()
            more = len(rows) > max_results
            rows = rows[:max_results]
            issues = self._render(rows, fields, properties)
        body: dict[str, Any] = {"issues": issues, "isLast": not more}
        if more:
            last = rows[-1]
            body["nextPageToken"] = base64.urlsafe_b64encode(json.dumps([last["updated_ms"], last["num"]]).encode()).decode()
        return body

    def _where(self, jql: str) -> tuple[str, list[Any]]:
        """SQL for the JQL subset; JqlError names what it cannot read."""
        text = jql.strip()
        order = re.search(r"\border\s+by\s+(.+)$", text, re.IGNORECASE | re.DOTALL)
        if order:
            text = text[:order.start()].strip()
            for part in order.group(1).split(","):
                if part.strip().split()[0].lower() not in ("updated", "key"):
                    raise JqlError(f"Error in the JQL Query: this demo orders by updated and key only, not {part.strip()!r}.")
        if not text:
            raise JqlError("Unbounded JQL queries are not allowed here. Please add a search restriction to your query.")
        clauses, params = [], []
        for term in _split_and(text):
            sql, values = self._term(term)
            clauses.append(sql)
            params += values
        return " AND ".join(clauses), params

    def _term(self, term: str) -> tuple[str, list[Any]]:
        term = term.strip()
        if term.startswith("(") and term.endswith(")") and _balanced(term[1:-1]):
            where, params = self._where(term[1:-1])
            return f"({where})", params
        found = re.fullmatch(r"(\w+)\s*(>=|>|=|in)\s*(.+)", term, re.IGNORECASE | re.DOTALL)
        if not found:
            raise JqlError(f"Error in the JQL Query: Expecting a field, an operator and a value but got {term!r}.")
        name, op, value = found.group(1).lower(), found.group(2).lower(), found.group(3).strip()
        values = [_unquote(v) for v in value[1:-1].split(",")] if op == "in" and value.startswith("(") else [_unquote(value)]
        if name == "project" and op in ("=", "in"):
            unknown = [v for v in values if v.upper() != PROJECT]
            if unknown:
                raise JqlError(f"The value '{unknown[0]}' does not exist for the field 'project'.")
            return "1 = 1", []
        if name in ("issue", "key", "id", "issuekey") and op in ("=", "in"):
            nums = [int(v) - 10000 if v.isdigit() else int(v.split("-", 1)[1]) if re.fullmatch(rf"{PROJECT}-\d+", v.upper()) else -1
                    for v in values]
            return f"num IN ({','.join('?' * len(nums))})", nums
        if name == "issuetype" and op in ("=", "in"):
            return f"json_extract(fields, '$.issuetype.name') IN ({','.join('?' * len(values))})", values
        if name == "updated" and op in (">=", ">"):
            try:
                local = datetime.strptime(values[0].replace("/", "-"), "%Y-%m-%d %H:%M")
            except ValueError:
                raise JqlError(f"Date value '{values[0]}' for field 'updated' is invalid. Valid formats include: "
                               "'yyyy/MM/dd HH:mm', 'yyyy-MM-dd HH:mm', 'yyyy/MM/dd', 'yyyy-MM-dd'.") from None
            at = _ms(local.replace(tzinfo=self.zone))  # the user's time zone, to the minute
            return ("updated_ms >= ?", [at]) if op == ">=" else ("updated_ms >= ?", [at + 60_000])
        raise JqlError(f"Error in the JQL Query: this demo does not know {name!r} {op!r}.")


def _custom_kind(fid: str) -> str:
    for cid, kind, _ in CUSTOM_FIELDS.values():
        if cid == fid:
            return kind
    return ""


def _stamp(value: str) -> int | None:
    return _ms(datetime.strptime(value, "%Y-%m-%d %H:%M:%S")) if value else None


def _unquote(value: str) -> str:
    value = value.strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def _split_and(text: str) -> Iterator[str]:
    """Top-level terms joined by AND (outside parentheses and quotes)."""
    depth, quote, start, i = 0, "", 0, 0
    while i < len(text):
        ch = text[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and text[i:i + 5].upper() == " AND ":
            yield text[start:i]
            start, i = i + 5, i + 5
            continue
        elif depth == 0 and text[i:i + 4].upper() == " OR ":
            raise JqlError("Error in the JQL Query: this demo does not combine terms with OR.")
        i += 1
    yield text[start:]


def _errors(status: int, *messages: str, errors: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps({"errorMessages": list(messages), "errors": errors or {}}), status=status,
                    mimetype="application/json", headers=headers)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json")


def _create_app(jira: DemoJira) -> Flask:
    app = Flask("demo_jira")

    @app.before_request
    def auth_faults_and_delay() -> Response | None:
        if request.path.startswith("/_demo/"):
            return None
        with jira._lock:
            jira._stats[request.method] = jira._stats.get(request.method, 0) + 1
        if jira.delay > 0:
            time.sleep(jira.delay)
        fault = jira._fault_for(request.method, request.path)
        if fault is not None:
            headers = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
            headers.update(fault["headers"])
            if fault["body"] is not None:
                return Response(fault["body"], status=fault["status"], headers=headers,
                                mimetype="text/html" if fault["body"].lstrip().startswith("<") else "text/plain")
            try:
                phrase = HTTPStatus(fault["status"]).phrase
            except ValueError:
                phrase = "Error"
            return _errors(fault["status"], f"{phrase} (injected by demo_itsm.jira)", headers=headers)
        auth = request.authorization
        if auth is None or auth.type != "basic" or auth.username != EMAIL or auth.password != API_TOKEN:
            return _errors(401, "Client must be authenticated to access this resource.")
        return None

    @app.get("/rest/api/3/myself")
    def myself() -> Response:
        return _json({"accountId": ACCOUNT_ID, "accountType": "atlassian", "emailAddress": EMAIL,
                      "displayName": "GapBridge Integration", "active": True, "timeZone": jira.zone_name, "locale": "en_GB"})

    @app.get("/rest/api/3/field")
    def field_list() -> Response:
        listed = [{"id": fid, "key": fid, "name": name, "custom": False, "orderable": True, "navigable": True, "searchable": True,
                   "schema": {"type": kind, "system": fid}} for fid, (name, kind) in SYSTEM_FIELDS.items()]
        listed += [{"id": fid, "key": fid, "name": name, "custom": True, "orderable": True, "navigable": True, "searchable": True,
                    "schema": {"type": kind, "custom": f"com.atlassian.jira.plugin.system.customfieldtypes:{custom}",
                               "customId": int(fid.rsplit("_", 1)[1])}} for name, (fid, kind, custom) in CUSTOM_FIELDS.items()]
        return _json(listed)

    @app.route("/rest/api/3/search", methods=["GET", "POST"])
    @app.route("/rest/api/2/search", methods=["GET", "POST"])
    def old_search() -> Response:
        return _errors(410, "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API. "
                            "A full migration guideline is available at https://developer.atlassian.com/changelog/#CHANGE-2046")

    @app.route("/rest/api/3/search/jql", methods=["GET", "POST"])
    def search() -> Response:
        if request.method == "POST":
            body = request.get_json(silent=True, force=True)
            if not isinstance(body, dict):
                return _errors(400, "The request body is not valid JSON.")
            jql, named = str(body.get("jql") or ""), [str(f) for f in body.get("fields") or []]
            props = [str(p) for p in body.get("properties") or []]
            limit, token = body.get("maxResults", 50), body.get("nextPageToken")
        else:
            jql = request.args.get("jql", "")
            named = [f.strip() for f in ",".join(request.args.getlist("fields")).split(",") if f.strip()]
            props = [p.strip() for p in ",".join(request.args.getlist("properties")).split(",") if p.strip()]
            limit, token = request.args.get("maxResults", "50"), request.args.get("nextPageToken")
        try:
            max_results = max(1, min(5000, int(limit)))
        except (TypeError, ValueError):
            return _errors(400, f"maxResults {limit!r} is not a number.")
        # no fields named: the new search answers id and key only; *all or *navigable: every field
        fields = None if {"*all", "*navigable"} & set(named) else set(named)
        try:
            return _json(jira.search(jql, fields, props, max_results, token))
        except JqlError as exc:
            return _errors(400, str(exc))

    def found(key: str) -> sqlite3.Row | Response:
        row = jira._row(key)
        if row is None:
            return _errors(404, "Issue does not exist or you do not have permission to see it.")
        return row

    @app.get("/rest/api/3/issue/<key>")
    def get_issue(key: str) -> Response:
        raw = ",".join(request.args.getlist("fields"))
        wanted = {f.strip() for f in raw.split(",") if f.strip()} if raw else None
        if wanted is not None and "*all" in wanted:
            wanted = None
        props = [p.strip() for p in ",".join(request.args.getlist("properties")).split(",") if p.strip()]
        with jira._lock:
            row = found(key)
            if isinstance(row, Response):
                return row
            return _json(jira._render([row], wanted, props)[0])

    @app.put("/rest/api/3/issue/<key>")
    def edit_issue(key: str) -> Response:
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict):
            return _errors(400, "The request body is not valid JSON.")
        with jira._lock, jira._db:
            row = found(key)
            if isinstance(row, Response):
                return row
            if not jira._write_allowed(row["id"]):
                return _errors(429, "Too many writes to this issue; try again later.",
                               headers={"Retry-After": "1", "RateLimit-Reason": "jira-per-issue-on-write"})
            stored = json.loads(row["fields"])
            bad = {f: f"Field '{f}' cannot be set. It is not on the appropriate screen, or unknown."
                   for f in (body.get("fields") or {}) if f not in _WRITABLE}
            bad.update({f: f"Field '{f}' cannot be updated this way." for f in (body.get("update") or {}) if f != "labels"})
            if bad:
                return _errors(400, errors=bad)
            labels = list(stored.get("labels") or [])
            for verb in (body.get("update") or {}).get("labels") or []:
                if "add" in verb and verb["add"] not in labels:
                    if " " in str(verb["add"]):
                        return _errors(400, errors={"labels": "The label 'x' contains spaces which is invalid."})
                    labels.append(str(verb["add"]))
                elif "remove" in verb and verb["remove"] in labels:
                    labels.remove(verb["remove"])
                elif "set" in verb:
                    labels = [str(x) for x in verb["set"]]
            changed = labels != (stored.get("labels") or [])
            stored["labels"] = labels
            for fid, value in (body.get("fields") or {}).items():
                changed = changed or stored.get(fid) != value
                stored[fid] = value
            if changed:
                jira._touch(row, stored)
        return Response(status=204)

    def comment_page(row: sqlite3.Row) -> Response:
        order = "DESC" if request.args.get("orderBy", "created") == "-created" else "ASC"
        limit = int(request.args.get("maxResults", "50") or 50)
        rows = jira._db.execute(f"SELECT * FROM comment WHERE issue_id = ? ORDER BY created_ms {order}, id {order} LIMIT ?",
                                (row["id"], limit)).fetchall()
        total = jira._db.execute("SELECT COUNT(*) FROM comment WHERE issue_id = ?", (row["id"],)).fetchone()[0]
        return _json({"comments": [jira._comment(c) for c in rows], "maxResults": limit, "total": total, "startAt": 0})

    def add_comment(row: sqlite3.Row, text: str, public: bool, visibility: Any) -> int:
        if not jira._write_allowed(row["id"]):
            raise _Limited
        created = max(_ms(jira.clock()), row["updated_ms"] + 1)
        cur = jira._db.execute("INSERT INTO comment (issue_id, created_ms, author, body, public, visibility) VALUES (?, ?, ?, ?, ?, ?)",
                               (row["id"], created, "GapBridge Integration", text, int(public),
                                json.dumps(visibility) if visibility else None))
        jira._touch(row, json.loads(row["fields"]))  # a comment moves the issue's updated
        return int(cur.lastrowid or 0)

    @app.route("/rest/api/3/issue/<key>/comment", methods=["GET", "POST"])
    def issue_comments(key: str) -> Response:
        with jira._lock, jira._db:
            row = found(key)
            if isinstance(row, Response):
                return row
            if request.method == "GET":
                return comment_page(row)
            body = request.get_json(silent=True, force=True)
            if not isinstance(body, dict) or not isinstance(body.get("body"), dict):
                return _errors(400, errors={"comment": "Comment body can not be empty! (an ADF document is expected)"})
            visibility = body.get("visibility")
            if visibility is not None and (not isinstance(visibility, dict) or visibility.get("type") not in ("role", "group")):
                return _errors(400, errors={"visibility": "The visibility type is not valid."})
            try:
                cid = add_comment(row, _adf_text(body["body"]), visibility is None, visibility)
            except _Limited:
                return _limited()
            return _json(jira._comment(jira._db.execute("SELECT * FROM comment WHERE id = ?", (cid,)).fetchone()), 201)

    @app.post("/rest/servicedeskapi/request/<key>/comment")
    def request_comment(key: str) -> Response:
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict) or not isinstance(body.get("body"), str) or not body["body"].strip():
            return _errors(400, "The comment body is required.")
        with jira._lock, jira._db:
            row = found(key)
            if isinstance(row, Response):
                return row
            try:
                cid = add_comment(row, body["body"], bool(body.get("public", True)), None)
            except _Limited:
                return _limited()
            c = jira._db.execute("SELECT * FROM comment WHERE id = ?", (cid,)).fetchone()
        return _json({"id": str(cid), "body": c["body"], "public": bool(c["public"]),
                      "author": {"accountId": ACCOUNT_ID, "displayName": c["author"]},
                      "created": {"iso8601": jira._time(c["created_ms"]), "epochMillis": c["created_ms"]}}, 201)

    @app.route("/rest/api/3/issue/<key>/properties/<prop>", methods=["GET", "PUT", "DELETE"])
    def issue_property(key: str, prop: str) -> Response:
        with jira._lock, jira._db:
            row = found(key)
            if isinstance(row, Response):
                return row
            if request.method == "GET":
                stored = jira._db.execute("SELECT value FROM property WHERE issue_id = ? AND key = ?", (row["id"], prop)).fetchone()
                if stored is None:
                    return _errors(404, f"The property with key '{prop}' does not exist.")
                return _json({"key": prop, "value": json.loads(stored["value"])})
            if request.method == "DELETE":
                jira._db.execute("DELETE FROM property WHERE issue_id = ? AND key = ?", (row["id"], prop))
                return Response(status=204)
            data = request.get_data()
            if len(data) > PROPERTY_LIMIT:
                return _errors(400, f"The property value is too long: it may hold at most {PROPERTY_LIMIT} bytes.")
            try:
                value = json.loads(data)
            except ValueError:
                return _errors(400, "The property value must be valid JSON.")
            existed = jira._db.execute("SELECT 1 FROM property WHERE issue_id = ? AND key = ?", (row["id"], prop)).fetchone()
            jira._db.execute("INSERT INTO property (issue_id, key, value) VALUES (?, ?, ?) ON CONFLICT (issue_id, key) "
                             "DO UPDATE SET value = excluded.value", (row["id"], prop, json.dumps(value)))
        return Response(status=200 if existed else 201)

    # --- controls for a demo in another process (no auth: it is a demo) --------------------

    @app.post("/_demo/faults")
    def demo_faults() -> Response:
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict) or set(body) - {"count", "status", "retry_after", "methods", "path_prefix", "body", "headers"}:
            return _errors(400, "expected an object with count, status, retry_after, methods, path_prefix, body or headers")
        try:
            jira.fail_next(**{"count": 1, **body})
        except (TypeError, ValueError) as e:
            return _errors(400, f"bad fault: {e}")
        return _json({"status": "ok"})

    @app.post("/_demo/per_issue_writes")
    def demo_per_issue() -> Response:
        body = request.get_json(silent=True, force=True)
        if body == {}:
            jira.per_issue_writes = None
        elif isinstance(body, dict) and isinstance(body.get("count"), int) and isinstance(body.get("seconds"), (int, float)):
            jira.per_issue_writes = (body["count"], float(body["seconds"]))
        else:
            return _errors(400, "expected {\"count\": n, \"seconds\": s}, or {} for no limit")
        return _json({"status": "ok"})

    @app.post("/_demo/delay")
    def demo_delay() -> Response:
        body = request.get_json(silent=True, force=True)
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            return _errors(400, "expected {\"seconds\": a number >= 0}")
        jira.delay = float(seconds)
        return _json({"status": "ok", "seconds": jira.delay})

    @app.get("/_demo/stats")
    def demo_stats() -> Response:
        return _json(jira.stats)

    @app.post("/_demo/reset")
    def demo_reset() -> Response:
        with jira._lock:
            jira._faults.clear()
            jira.per_issue_writes = None
        jira.delay = 0.0
        jira.reset_stats()
        return _json({"status": "ok"})

    return app


class _Limited(Exception):
    """A write over the per-issue write limit."""


def _limited() -> Response:
    return _errors(429, "Too many writes to this issue; try again later.",
                   headers={"Retry-After": "1", "RateLimit-Reason": "jira-per-issue-on-write"})
