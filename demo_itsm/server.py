"""DemoITSM: the ServiceNow Table API subset GapBridge's connector uses, over one SQLite file.

One SQLite connection behind a lock serves every request thread: the demo is small and
the lock keeps reads and writes simple. Test controls (faults, delay, stats) are methods
here and, for a demo running in another process, the ``/_demo/*`` endpoints.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, Response, g, request

from . import seed as sd
from .query import UNKNOWN_FIELD_MODES, QueryError, translate
from .served import ServedTool

USER, PASSWORD = "admin", "admin"
CLIENT_ID, CLIENT_SECRET = "gapbridge", "demo-secret"
JOURNAL_COLUMNS = ("sys_id", "element_id", "element", "name", "value", "sys_created_on", "sys_created_by")
AUTHOR_NAMES = {"admin": "System Administrator"}
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_TS = "%Y-%m-%d %H:%M:%S"


def _error(status: int, message: str, detail: str | None = None) -> Response:
    body = {"error": {"message": message, "detail": detail}, "status": "failure"}
    return Response(json.dumps(body), status=status, mimetype="application/json")


class DemoITSM(ServedTool):
    """A demo ServiceNow instance: ``with DemoITSM(tmp / "sn.db", size=300) as sn: requests.get(sn.url + ...)``."""

    thread_name = "demo-itsm"

    def __init__(self, db_path: str | Path, size: int | None = None, seed: int = 42, host: str = "127.0.0.1", port: int = 0,
                 now: datetime | None = None) -> None:
        self._open(db_path, host, port, now)
        self.token_lifetime = 1799
        sd.create_schema(self._db)
        if size and self.count() == 0:
            with self._lock, self._db:
                sd.insert_records(self._db, sd.generate_incidents(size, seed, now))
        self._names = {r[0]: r[1] for r in self._db.execute("SELECT sys_id, name FROM sys_reference")}
        self._tokens: dict[str, float] = {}  # access token -> monotonic expiry
        self._refresh_tokens: set[str] = set()
        # what a real instance does that a strict demo would not: ACLs that hide rows after the page limit is applied
        # (short or empty pages with more to follow), and conditions on unknown fields dropped from a query
        self.hidden: set[str] = set()  # sys_ids the integration user may not read
        self.unknown_query_fields = "error"  # error | ignore (ServiceNow's default) | no_rows (glide.invalid_query.returns_no_rows)
        self.app = _create_app(self)

    # --- clock -------------------------------------------------------------------------------

    def clock(self) -> datetime:
        """Current UTC time (naive, whole seconds); with ``now`` given, ``now`` plus the time since construction."""
        return self._naive_now().replace(microsecond=0)

    # --- test helpers ------------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM incident").fetchone()[0]

    def sys_ids(self) -> list[str]:
        """Every incident's sys_id, in number order."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT sys_id FROM incident ORDER BY number, sys_id")]

    def record(self, sys_id: str) -> dict[str, str]:
        """The stored raw record; KeyError when there is none."""
        with self._lock:
            row = self._db.execute("SELECT * FROM incident WHERE sys_id = ?", (sys_id,)).fetchone()
        if row is None:
            raise KeyError(sys_id)
        return dict(row)

    def journal(self, sys_id: str) -> list[dict[str, str]]:
        """Work notes of an incident, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT value, sys_created_on, sys_created_by FROM sys_journal_field WHERE element_id = ? "
                                    "AND element = 'work_notes' ORDER BY seq", (sys_id,)).fetchall()
        return [dict(r) for r in rows]

    def update(self, sys_id: str, **columns: Any) -> dict[str, str]:
        """Change columns like a user edit (work_notes appends); returns the stored record."""
        with self._lock, self._db:
            row = self._db.execute("SELECT * FROM incident WHERE sys_id = ?", (sys_id,)).fetchone()
            if row is None:
                raise KeyError(sys_id)
            return self._apply(dict(row), columns, USER)

    def insert(self, record: dict[str, Any]) -> str:
        """Insert one incident (raw values, or Python values and reference names); returns its sys_id."""
        now = sd.sn_time(self.clock())
        with self._lock, self._db:
            rec = {c: "" for c in sd.COLUMNS}
            rec.update(sys_id=uuid.uuid4().hex, state="1", opened_at=now, sys_created_on=now, sys_updated_on=now,
                       sys_created_by=USER, sys_updated_by=USER, sys_mod_count="0")
            for key, value in record.items():
                if key in rec:
                    rec[key] = self._raw(key, value)
            if not rec["number"]:
                last = self._db.execute("SELECT MAX(number) FROM incident WHERE number LIKE 'INC%'").fetchone()[0]
                rec["number"] = f"INC{(int(last[3:]) if last else 10000) + 1:07d}"
            rec["active"] = "false" if rec["state"] in sd.CLOSED_STATES else "true"
            for flag in sd.BOOL_COLUMNS:
                rec[flag] = rec[flag] or "false"
            sd.insert_records(self._db, [rec])
        return rec["sys_id"]

    def fail_next(self, count: int, status: int = 503, retry_after: int | float | str | None = None, methods: Iterable[str] | None = None,
                  path_prefix: str | None = None, body: str | None = None, rate_limit: dict[str, str] | None = None,
                  cut_body: bool = False) -> None:
        """Answer the next ``count`` matching requests with ``status`` (a ServiceNow error body, or ``body`` verbatim).

        ``rate_limit``: X-RateLimit-* headers to send with it (``{"Limit": "100", "Reset": "<epoch>", "Rule": "..."}``).
        ``cut_body``: answer the request for real but close the connection halfway through the body (``status`` unused).
        ``count=0`` clears every pending fault.
        """
        if rate_limit is not None and not (isinstance(rate_limit, dict) and set(rate_limit) <= {"Limit", "Remaining", "Reset", "Rule"}):
            raise ValueError("rate_limit takes Limit, Remaining, Reset and Rule")
        self._add_fault(count, status, retry_after=retry_after, body=body, methods=methods, path_prefix=path_prefix,
                        rate_limit=dict(rate_limit or {}), cut_body=bool(cut_body))

    def hide(self, sys_ids: Iterable[str]) -> None:
        """Rows the integration user's ACLs hide from now on: counted and paged over, never answered."""
        with self._lock:
            self.hidden.update(sys_ids)

    def expire_tokens(self) -> None:
        """Make every issued access token expired (refresh tokens stay valid)."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    # --- internals ---------------------------------------------------------------------------

    def _raw(self, column: str, value: Any) -> str:
        """A Python or raw value as the stored string; reference names resolve to (new) sys_ids."""
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, datetime):
            return sd.sn_time(sd.utc_naive(value))
        if isinstance(value, list) and column in sd.LIST_COLUMNS:
            return ",".join(map(str, value))
        if isinstance(value, list) and column in sd.JSON_COLUMNS:
            return sd.json_items(value)
        if isinstance(value, (list, dict)):
            return json.dumps(value)
        value = str(value)
        if column in sd.REFERENCES and value and not (_HEX32.match(value) and value in self._names):
            table = sd.REFERENCES[column]
            sys_id = sd.ref_id(table, value)
            if sys_id not in self._names:
                self._db.execute("INSERT OR IGNORE INTO sys_reference (sys_id, tbl, name) VALUES (?, ?, ?)", (sys_id, table, value))
                self._names[sys_id] = value
            return sys_id
        return value

    def _apply(self, row: dict[str, str], changes: dict[str, Any], user: str) -> dict[str, str]:
        """Apply a PATCH body to a stored row (caller holds the lock and the transaction)."""
        new: dict[str, str] = {}
        for key, value in changes.items():
            # like ServiceNow: unknown columns are ignored, system columns are not client-writable
            if key in sd.COLUMNS and not key.startswith("sys_") and key != "work_notes":
                raw = self._raw(key, value)
                if raw != row[key]:
                    new[key] = raw
        note = changes.get("work_notes")
        note = "" if note is None else str(note)
        if not new and not note:
            return row  # ServiceNow skips an update that changes nothing
        if "state" in new:
            new["active"] = "false" if new["state"] in sd.CLOSED_STATES else "true"
        # strictly later than before, so an incremental sync always sees the edit
        previous = datetime.strptime(row["sys_updated_on"], _TS) if row["sys_updated_on"] else datetime.min
        stamp = sd.sn_time(max(self.clock(), previous + timedelta(seconds=1)))
        new.update(sys_updated_on=stamp, sys_updated_by=user, sys_mod_count=str(int(row["sys_mod_count"] or 0) + 1))
        self._db.execute(f"UPDATE incident SET {', '.join(f'{k} = ?' for k in new)} WHERE sys_id = ?", (*new.values(), row["sys_id"]))
        if note:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM sys_journal_field").fetchone()[0]
            self._db.execute("INSERT INTO sys_journal_field (sys_id, element_id, value, sys_created_on, sys_created_by, seq) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (uuid.uuid4().hex, row["sys_id"], note, stamp, user, seq))
        row.update(new)
        return row

    def _journals(self, ids: list[str]) -> dict[str, str]:
        """The work_notes display value per incident: the journal, newest first."""
        out: dict[str, str] = dict.fromkeys(ids, "")
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            rows = self._db.execute(f"SELECT element_id, value, sys_created_on, sys_created_by FROM sys_journal_field "
                                    f"WHERE element_id IN ({', '.join('?' * len(chunk))}) ORDER BY seq DESC", chunk)
            for eid, value, created, by in rows:
                out[eid] += f"{created} - {AUTHOR_NAMES.get(by, by)} (Work notes)\n{value}\n\n"
        return out

    def _issue_token(self) -> dict[str, Any]:
        access, refresh = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[access] = time.monotonic() + self.token_lifetime
            self._refresh_tokens.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "scope": "useraccount", "token_type": "Bearer",
                "expires_in": self.token_lifetime}

    def _user(self) -> str | None:
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            with self._lock:
                expiry = self._tokens.get(header[7:].strip())
            return USER if expiry is not None and time.monotonic() < expiry else None
        auth = request.authorization
        if auth is not None and auth.type == "basic" and auth.username == USER and auth.password == PASSWORD:
            return USER
        return None

    def _render(self, rows: list[dict[str, str]], fields: list[str], display: str, no_links: bool) -> list[dict[str, Any]]:
        base = request.host_url.rstrip("/")
        notes = self._journals([r["sys_id"] for r in rows]) if display != "false" and "work_notes" in fields else {}
        names = self._names
        # one converter per field, chosen once per page: rendering is the hot loop of a 500-row page
        convert: list[tuple[str, Any]] = []
        for f in fields:
            fn: Callable[..., Any] | None
            if f in sd.REFERENCES:
                prefix = f"{base}/api/now/table/{sd.REFERENCES[f]}/"
                if display == "true":
                    fn = lambda v, r: names.get(v, "") if v else ""  # noqa: E731
                elif display == "all":
                    fn = (lambda v, r: {"display_value": names.get(v, "") if v else "", "value": v}) if no_links else \
                        (lambda v, r, p=prefix: {"display_value": names.get(v, ""), "link": p + v, "value": v} if v
                         else {"display_value": "", "value": ""})
                else:
                    fn = (lambda v, r: v) if no_links else (lambda v, r, p=prefix: {"link": p + v, "value": v} if v else "")
            elif f == "work_notes":
                fn = (lambda v, r: {"display_value": notes[r["sys_id"]], "value": ""}) if display == "all" else \
                    (lambda v, r: notes.get(r["sys_id"], ""))
            elif display == "false":
                fn = None
            elif f in sd.CHOICE_COLUMNS:
                fn = (lambda v, r, f=f: sd.choice_label(f, v)) if display == "true" else \
                    (lambda v, r, f=f: {"display_value": sd.choice_label(f, v), "value": v})
            else:
                fn = None if display == "true" else (lambda v, r: {"display_value": v, "value": v})
            convert.append((f, fn))
        return [{f: (row[f] if fn is None else fn(row[f], row)) for f, fn in convert} for row in rows]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json", headers=headers)


def _create_app(sn: DemoITSM) -> Flask:
    app = Flask("demo_itsm")
    tables = {"incident": sd.COLUMNS, "sys_journal_field": JOURNAL_COLUMNS}

    @app.before_request
    def faults_and_delay() -> Response | None:
        if request.path.startswith("/_demo/"):
            return None
        with sn._lock:
            sn._stats[request.method] = sn._stats.get(request.method, 0) + 1
        if sn.delay > 0:
            time.sleep(sn.delay)
        fault = sn._fault_for(request.method, request.path)
        if fault is None:
            return None
        if fault["cut_body"]:
            g.cut_body = True  # answered by the view, then cut (after_request)
            return None
        headers = {"Retry-After": str(fault["retry_after"])} if fault["retry_after"] is not None else {}
        headers.update({f"X-RateLimit-{k}": str(v) for k, v in fault["rate_limit"].items()})
        if fault["body"] is not None:
            return Response(fault["body"], status=fault["status"], headers=headers,
                            mimetype="text/html" if fault["body"].lstrip().startswith("<") else "text/plain")
        try:
            phrase = HTTPStatus(fault["status"]).phrase
        except ValueError:
            phrase = "Error"
        return _json({"error": {"message": phrase, "detail": "injected by demo_itsm"}, "status": "failure"}, fault["status"], headers)

    @app.after_request
    def cut_the_body(response: Response) -> Response:
        if not g.get("cut_body"):
            return response
        whole = response.get_data()

        def half_then_close() -> Iterator[bytes]:
            yield whole[: max(1, len(whole) // 2)]
            raise ConnectionAbortedError("demo_itsm: connection closed mid-body, as asked")

        # chunked, without a length: the client sees the stream end before its last chunk
        cut = Response(half_then_close(), status=response.status_code, mimetype=response.mimetype)
        for key, value in response.headers.items():
            if key.lower() not in ("content-length", "content-type"):
                cut.headers[key] = value
        return cut

    def authenticated() -> str | None:
        return sn._user()

    unauthenticated = ("User Not Authenticated", "Required to provide Auth information")

    @app.post("/oauth_token.do")
    def oauth_token() -> Response:
        form = request.form
        grant = form.get("grant_type", "")
        client_ok = form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET
        ok = client_ok and (
            (grant == "password" and form.get("username") == USER and form.get("password") == PASSWORD)
            or grant == "client_credentials"
            or (grant == "refresh_token" and form.get("refresh_token", "") in sn._refresh_tokens)
        )
        if not ok:
            return _json({"error_description": "access_denied", "error": "server_error"}, 401)
        body = sn._issue_token()
        if grant == "refresh_token":  # ServiceNow hands the same refresh token back
            with sn._lock:
                sn._refresh_tokens.discard(body["refresh_token"])
            body["refresh_token"] = form["refresh_token"]
        return _json(body)

    def readable(table: str, authenticated_already: bool = False) -> tuple[list[str] | None, str, bool, tuple[str, ...]] | Response:
        """Auth, table and display options of a read; an error response when any is wrong."""
        if not authenticated_already and authenticated() is None:
            return _error(401, *unauthenticated)
        if table not in tables:
            return _error(404, f"Invalid table {table}")
        opts = options()
        if isinstance(opts, Response):
            return opts
        return (*opts, tables[table])

    def options() -> tuple[list[str] | None, str, bool] | Response:
        display = request.args.get("sysparm_display_value", "false").lower()
        if display not in ("false", "true", "all"):
            return _error(400, f"Invalid sysparm_display_value {display!r}: expected false, true or all")
        raw = request.args.get("sysparm_fields", "")
        fields = [f.strip() for f in raw.split(",") if f.strip()] if raw else None
        no_links = request.args.get("sysparm_exclude_reference_link", "false").lower() == "true"
        return fields, display, no_links

    @app.get("/api/now/table/<table>")
    def list_records(table: str) -> Response:
        request_ = readable(table)
        if isinstance(request_, Response):
            return request_
        fields, display, no_links, columns = request_
        try:
            limit = int(request.args.get("sysparm_limit", "10000"))
            offset = int(request.args.get("sysparm_offset", "0"))
            if limit < 1 or offset < 0:
                raise ValueError
        except ValueError:
            return _error(400, "Invalid sysparm_limit or sysparm_offset: expected whole numbers, limit >= 1, offset >= 0")
        try:
            where, params, order = translate(request.args.get("sysparm_query", ""), columns,
                                             sd.INTEGER_COLUMNS if table == "incident" else (),
                                             tiebreak="sys_id" if table == "incident" else "seq",
                                             unknown_fields=sn.unknown_query_fields)
        except QueryError as e:
            return _json({"error": {"message": f"Invalid query: {e}"}, "status": "failure"}, 400)
        fields = [f for f in fields if f in columns] if fields else list(columns)
        select = ", ".join(dict.fromkeys(["sys_id", *fields]))
        with sn._lock:
            total = sn._db.execute(f"SELECT COUNT(*) FROM {table} WHERE {where}", params).fetchone()[0]
            # pick the page's rowids first, ordering by "+column" so SQLite filters through the indexes and sorts
            # the few matches, instead of walking an ORDER BY index past thousands of non-matching rows
            unindexed = ", ".join(f"+{o}" for o in order.split(", "))
            rows = [dict(r) for r in sn._db.execute(
                f"SELECT {select} FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {where} ORDER BY {unindexed} "
                f"LIMIT ? OFFSET ?) ORDER BY {order}", [*params, limit, offset])]
            if sn.hidden and table == "incident":  # ACLs filter after the limit: the page comes back short
                rows = [r for r in rows if r["sys_id"] not in sn.hidden]
            result = sn._render(rows, fields, display, no_links) if table == "incident" else _plain_rows(rows, fields, display)
        return _json({"result": result}, headers={"X-Total-Count": str(total), "Link": _links(limit, offset, total)})

    @app.get("/api/now/table/<table>/<sys_id>")
    def get_record(table: str, sys_id: str) -> Response:
        if authenticated() is None:
            return _error(401, *unauthenticated)
        if table in sd.CATALOGUE:  # the targets of reference links
            name = sn._names.get(sys_id)
            if name is None:
                return _error(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
            return _json({"result": {"sys_id": sys_id, "number" if table == "problem" else "name": name}})
        request_ = readable(table, authenticated_already=True)
        if isinstance(request_, Response):
            return request_
        fields, display, no_links, columns = request_
        with sn._lock:
            row = sn._db.execute(f"SELECT {', '.join(columns)} FROM {table} WHERE sys_id = ?", (sys_id,)).fetchone()
            if row is None:
                return _error(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
            fields = [f for f in fields if f in columns] if fields else list(columns)
            result = sn._render([dict(row)], fields, display, no_links) if table == "incident" else _plain_rows([dict(row)], fields, display)
        return _json({"result": result[0]})

    @app.route("/api/now/table/<table>/<sys_id>", methods=["PATCH", "PUT"])
    def update_record(table: str, sys_id: str) -> Response:
        user = authenticated()
        if user is None:
            return _error(401, *unauthenticated)
        if table != "incident":
            return _error(404 if table not in tables else 403, f"Invalid table {table}" if table not in tables else "Operation not permitted")
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict):
            return _error(400, "Exception while reading request", "The payload is not valid JSON.")
        opts = options()
        if isinstance(opts, Response):
            return opts
        fields, display, no_links = opts
        with sn._lock, sn._db:
            row = sn._db.execute("SELECT * FROM incident WHERE sys_id = ?", (sys_id,)).fetchone()
            if row is None:
                return _error(404, "No Record found", "Record doesn't exist or ACL restricts the record retrieval")
            row = sn._apply(dict(row), body, user)
            fields = [f for f in fields if f in sd.COLUMNS] if fields else list(sd.COLUMNS)
            result = sn._render([row], fields, display, no_links)
        return _json({"result": result[0]})

    # --- controls for a demo in another process (no auth: it is a demo) --------------------

    @app.post("/_demo/faults")
    def demo_faults() -> Response:
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict):
            return _error(400, "expected a JSON object")
        allowed = {"count", "status", "retry_after", "methods", "path_prefix", "body", "rate_limit", "cut_body"}
        unknown = sorted(set(body) - allowed)
        if unknown:
            return _error(400, f"unknown keys: {', '.join(unknown)}")
        try:
            sn.fail_next(**{"count": 1, **body})
        except (TypeError, ValueError) as e:
            return _error(400, f"bad fault: {e}")
        return _json({"status": "ok"})

    @app.post("/_demo/instance")
    def demo_instance() -> Response:
        """How the instance behaves: {"hide": [sys_id, ...], "hide_every": n, "unknown_query_fields": error|ignore|no_rows}."""
        body = request.get_json(silent=True, force=True)
        if not isinstance(body, dict) or set(body) - {"hide", "hide_every", "unknown_query_fields"}:
            return _error(400, "expected an object with hide, hide_every or unknown_query_fields")
        mode = body.get("unknown_query_fields")
        if mode is not None and mode not in UNKNOWN_FIELD_MODES:
            return _error(400, f"unknown_query_fields must be one of {', '.join(UNKNOWN_FIELD_MODES)}")
        every = body.get("hide_every")
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            return _error(400, "hide_every must be a whole number >= 1")
        if mode is not None:
            sn.unknown_query_fields = mode
        if body.get("hide"):
            sn.hide(str(i) for i in body["hide"])
        if every:
            sn.hide(sid for n, sid in enumerate(sn.sys_ids()) if n % every == 0)
        return _json({"status": "ok", "hidden": len(sn.hidden), "unknown_query_fields": sn.unknown_query_fields})

    @app.post("/_demo/delay")
    def demo_delay() -> Response:
        body = request.get_json(silent=True, force=True)
        seconds = body.get("seconds") if isinstance(body, dict) else None
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            return _error(400, "expected {\"seconds\": a number >= 0}")
        sn.delay = float(seconds)
        return _json({"status": "ok", "seconds": sn.delay})

    @app.get("/_demo/stats")
    def demo_stats() -> Response:
        return _json(sn.stats)

    @app.post("/_demo/reset")
    def demo_reset() -> Response:
        with sn._lock:
            sn._faults.clear()
            sn.hidden.clear()
        sn.unknown_query_fields = "error"
        sn.delay = 0.0
        sn.reset_stats()
        return _json({"status": "ok"})

    return app


def _plain_rows(rows: list[dict[str, str]], fields: list[str], display: str) -> list[dict[str, Any]]:
    if display == "all":
        return [{f: {"display_value": r[f], "value": r[f]} for f in fields} for r in rows]
    return [{f: r[f] for f in fields} for r in rows]


def _links(limit: int, offset: int, total: int) -> str:
    """The Link header: first, prev (offset > 0), next (more to come), last; same query, other offsets."""
    def url(off: int) -> str:
        args = request.args.to_dict(flat=False)
        args.update(sysparm_limit=[str(limit)], sysparm_offset=[str(off)])
        return f"<{request.base_url}?{urlencode(args, doseq=True)}>"
    last = max(0, (total - 1) // limit * limit)
    links = [f'{url(0)};rel="first"']
    if offset > 0:
        links.append(f'{url(max(0, offset - limit))};rel="prev"')
    if offset + limit < total:
        links.append(f'{url(offset + limit)};rel="next"')
    links.append(f'{url(last)};rel="last"')
    return ",".join(links)
