"""The ServiceNow connector: keyset sync over the Table API, normalisation, work-note write-back."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from ..base import (
    AuthenticationError,
    Capabilities,
    Connector,
    Enrichment,
    HttpSession,
    InvalidResponseError,
    KeysetPaginator,
    MappedValues,
    NormalizationError,
    OAuth2TokenAuth,
    Page,
    PermissionDeniedError,
    Stream,
    WriteResult,
    next_link,
)
from ..canonical import BOOL_FIELDS, DATETIME_FIELDS, FIELDS, LIST_FIELDS, empty_incident, object_items, parse_utc
from ..fieldmap import flag_text, flag_value
from .schema import ServiceNowOptionsSchema

SN_TIME = "%Y-%m-%d %H:%M:%S"
_MARKER = re.compile(r"\[gapbridge:([0-9a-z]+)\]")
_REF_SPLIT = re.compile(r"[,;\n]")
# list fields held as JSON arrays of objects; the others are lists of references
_JSON_LISTS = frozenset({"evidence", "notifications", "escalations", "timeline"})
# fields people read by name: references (groups, users, CIs, companies, problems) shown by display value;
# every other field keeps its code (category, contact_type, close_code), which checks compare against
_BY_NAME = frozenset({"business_unit", "assignment_group", "assignee", "reporter", "affected_ci", "problem_ref",
                      "maintenance_ref", "capacity_ref"})
# an instance that wants an interactive login (SSO, expired session) answers its login form, not JSON
_LOGIN_PAGE = re.compile(r"login\.do|name=[\"']?user_(name|password)\b|<title>[^<]*log ?in", re.IGNORECASE)


class ServiceNowConnector(Connector):
    """Incidents from one ServiceNow instance's ``incident`` or ``sn_si_incident`` table."""

    config_schema = ServiceNowOptionsSchema
    capabilities = Capabilities(frozenset({"note", "fields"}))

    def __init__(self, name: str, options: Mapping[str, Any], *, sleep: Any = None) -> None:
        super().__init__(name, options)
        self.base = options["instance_url"]
        self.table = options["table"]
        self.stream = Stream(self.table, ("sys_id",), "sys_updated_on", is_sorted=True,
                             overlap_seconds=options["bookmark_overlap_seconds"])
        self.field_map: dict[str, str] = dict(options["field_map"])
        self.write_options = options["write_back"]
        auth_opts = options["auth"]
        timeout = options["timeout"]
        auth: Any
        if auth_opts["method"] == "basic":
            auth = (auth_opts["username"], auth_opts["password"])
        else:
            auth = OAuth2TokenAuth(f"{self.base}/oauth_token.do",
                                   "password" if auth_opts["method"] == "oauth_password" else "client_credentials",
                                   auth_opts["client_id"], auth_opts["client_secret"], username=auth_opts.get("username"),
                                   password=auth_opts.get("password"), timeout=(timeout["connect"], timeout["read"]))
        extra = {"sleep": sleep} if sleep is not None else {}
        self.http = HttpSession(self.base, auth=auth, connect_timeout=timeout["connect"], read_timeout=timeout["read"],
                                max_attempts=options["max_attempts"], **extra)
        self.columns = self._columns()
        # with a fingerprint column, one list query reads it off many tickets (sys_ids of 32 characters keep the URL short)
        self.fingerprints_per_request = 50 if self.write_options["fingerprint_field"] else 1
        self._converters = [(canonical, column, self._converter(canonical)) for canonical, column in self.field_map.items()]
        self.maps = MappedValues(options, "tables")

    def _json(self, method: str, path: str, **kwargs: Any) -> tuple[Any, Any]:
        """``HttpSession.json``, but a login page (with 200 or 403) is the login refused: an AuthenticationError."""
        what = f"{method} {self.http.url(path).split('?', 1)[0]}"
        try:
            response = self.http.request(method, path, **kwargs)
        except PermissionDeniedError as exc:
            if _LOGIN_PAGE.search(str(exc)):  # the message quotes the start of a body that is not JSON
                raise AuthenticationError(f"{what}: HTTP 403 with a login page: check the credentials") from None
            raise
        if "html" in response.headers.get("Content-Type", "") and _LOGIN_PAGE.search(response.text):
            raise AuthenticationError(f"{what}: HTTP {response.status_code} answered a login page, not JSON: check the credentials")
        return self.http.parsed(method, path, response)

    # --- reading -----------------------------------------------------------------------

    def _columns(self) -> str:
        wanted = {"sys_id", "number", "sys_updated_on", "sys_class_name", *self.field_map.values()}
        for rule in ("is_security", "record_type"):
            if self.options[rule]["field"]:
                wanted.add(self.options[rule]["field"])
        fp = self.write_options["fingerprint_field"]
        # without a fingerprint column, the marker in the newest work note tells what is on the ticket
        wanted.add(fp if fp else "work_notes")
        return ",".join(sorted(wanted))

    def _scoped(self, condition: str) -> str:
        scope = self.options["query"].strip().strip("^")
        return f"{scope}^{condition}" if scope else condition

    def keyset_query(self, after: tuple[str, str] | None) -> str:
        """The encoded query for records after (sys_updated_on, sys_id), in that order."""
        order = "ORDERBYsys_updated_on^ORDERBYsys_id"
        if after is None:
            return self._scoped(order) if self.options["query"].strip() else order
        updated, sys_id = after
        if not sys_id:
            return f"{self._scoped(f'sys_updated_on>={updated}')}^{order}"
        return (f"{self._scoped(f'sys_updated_on>{updated}')}^NQ"
                f"{self._scoped(f'sys_updated_on={updated}^sys_id>{sys_id}')}^{order}")

    def _list(self, after: tuple[str, str] | None, limit: int, offset: int = 0) -> tuple[list[dict[str, Any]], Any]:
        params = {"sysparm_query": self.keyset_query(after), "sysparm_limit": str(limit),
                  "sysparm_display_value": self.options["display_value"], "sysparm_exclude_reference_link": "true",
                  "sysparm_fields": self.columns}
        if offset:
            params["sysparm_offset"] = str(offset)
        body, response = self._json("GET", f"api/now/table/{self.table}", params=params)
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, list):
            raise InvalidResponseError(f"GET api/now/table/{self.table}: the body has no 'result' list")
        return result, response

    def _count(self, query: str) -> int | None:
        """X-Total-Count of a query, reading one sys_id (None when the instance does not say)."""
        params = {"sysparm_limit": "1", "sysparm_fields": "sys_id", "sysparm_exclude_reference_link": "true"}
        if query:
            params["sysparm_query"] = query
        _, response = self._json("GET", f"api/now/table/{self.table}", params=params)
        return _total(response)

    def scope_warnings(self) -> list[str]:
        """What to tell the operator about the scope query before a first sync.

        ServiceNow drops a part of ``sysparm_query`` it cannot read (a misspelt column, a bad
        operator) and answers as if it were not there, unless the system property
        ``glide.invalid_query.returns_no_rows`` is true. A scope that selects every record of the
        table is the sign: the sync would read the whole table.
        """
        scope = self.options["query"].strip().strip("^")
        if not scope:
            return []
        scoped, everything = self._count(scope), self._count("")
        if scoped is None or everything is None or scoped != everything or everything == 0:
            return []
        return [f"connectors.{self.name}.query {scope!r} selects all {everything} records of {self.table}: ServiceNow "
                "ignores a part of the query it cannot read (a misspelt column or operator) unless the system property "
                "glide.invalid_query.returns_no_rows is true. Check the query, and set that property so that a bad "
                "query returns nothing instead of the whole table."]

    def _key(self, record: Mapping[str, Any]) -> tuple[str, str]:
        updated, sys_id = raw_value(record.get("sys_updated_on")), raw_value(record.get("sys_id"))
        if not updated or not sys_id:
            # without them the page cannot be continued; the record itself is rejected in normalize
            raise InvalidResponseError(f"a record without sys_updated_on or sys_id in {self.table}: {sys_id or '?'}")
        return str(updated), str(sys_id)

    def fetch_pages(self, bookmark: Mapping[str, Any] | None) -> Iterator[Page]:
        after: tuple[str, str] | None = None
        if bookmark and bookmark.get("sys_updated_on"):
            overlap = self.stream.overlap_seconds
            if overlap:
                start = parse_utc(bookmark["sys_updated_on"])
                assert start is not None
                after = ((start - timedelta(seconds=overlap)).strftime(SN_TIME), "")
            else:
                after = (str(bookmark["sys_updated_on"]), str(bookmark.get("sys_id") or ""))
        warnings = tuple(self.scope_warnings()) if not bookmark else ()
        limit = self.options["page_size"]
        paginator = KeysetPaginator(self._key, after)
        # ServiceNow applies sysparm_limit before ACLs filter the rows out: a page can come back short, or empty, with
        # more to follow. A short page goes on after its last record; an empty one (every row hidden) skips its
        # window by offset while the instance says more follow (Link rel=next, X-Total-Count).
        hidden_offset, seen = 0, 0
        while not paginator.finished:
            records, response = self._list(paginator.current_value, limit, hidden_offset)
            total = _total(response)
            if not records and _more_follow(response, total, hidden_offset, limit):
                hidden_offset += limit
                continue
            # this window held every row the query matches, hidden or not: nothing follows
            done = bool(records) and _says_what_follows(response, total) and not _more_follow(response, total, hidden_offset, limit)
            hidden_offset = 0
            if records:
                last = self._key(records[-1])
                paginator.check_progress(paginator.current_value, last)  # before the page is stored, not after
                estimate = seen + total if total is not None else None
                seen += len(records)
                yield Page(records, {"sys_updated_on": last[0], "sys_id": last[1]}, estimate, warnings)
                warnings = ()
            if done:
                return
            paginator.advance(records, None, response)

    # --- normalising -------------------------------------------------------------------

    def normalize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        sys_id = raw_value(record.get("sys_id"))
        number = raw_value(record.get("number")) or sys_id
        if not sys_id:
            raise NormalizationError("record has no sys_id")
        incident = empty_incident()
        incident.update(source=self.name, external_id=str(sys_id), url=f"{self.base}/{self.table}.do?sys_id={sys_id}")
        for canonical, column, convert in self._converters:
            try:
                incident[canonical] = convert(record.get(column))
            except (ValueError, TypeError) as exc:
                raise NormalizationError(f"{number}: column {column} (canonical {canonical}): {exc}") from None
        incident["number"] = incident["number"] or str(sys_id)
        incident["is_security"] = self._is_security(record, incident)
        incident["record_type"] = self._record_type(record, incident)
        fp_column = self.write_options["fingerprint_field"]
        if fp_column:
            incident["enrichment_fingerprint"] = str(raw_value(record.get(fp_column)) or "") or None
        else:
            found = _MARKER.search(str(display_value(record.get("work_notes")) or ""))  # journal shows newest first
            incident["enrichment_fingerprint"] = found.group(1) if found else None
        incident["raw"] = dict(record)
        return incident

    def _converter(self, canonical: str) -> Callable[[Any], Any]:
        """The conversion of one column's cell to a canonical value, chosen once per field."""
        kind = FIELDS[canonical]
        if kind == "state":
            return lambda cell: self.maps.state(raw_value(cell))
        if kind == "severity":
            return lambda cell: self.maps.severity(raw_value(cell))
        if canonical in DATETIME_FIELDS:
            return lambda cell: parse_utc(raw_value(cell))
        if canonical in BOOL_FIELDS:
            return _boolean
        if canonical in LIST_FIELDS:
            return functools.partial(_list_value, canonical)
        # references by name when the instance sends names (display_value=all), else the sys_id
        return _shown_text if canonical in _BY_NAME else _stored_text

    def _is_security(self, record: Mapping[str, Any], incident: Mapping[str, Any]) -> bool:
        flag = self.maps.security_field
        return self.maps.is_security(flag=raw_value(record.get(flag)) if flag else None, container=self._table_of(record),
                                     category=incident.get("category")) or self.maps.is_security(container=self.table)

    def _record_type(self, record: Mapping[str, Any], incident: Mapping[str, Any]) -> str:
        rule = self.maps.record_type_field
        return self.maps.record_type(value=raw_value(record.get(rule)) if rule else None, container=self._table_of(record),
                                     category=incident.get("category"), subcategory=incident.get("subcategory"))

    def _table_of(self, record: Mapping[str, Any]) -> str:
        return str(raw_value(record.get("sys_class_name")) or self.table)

    # --- writing -----------------------------------------------------------------------

    def write_back(self, enrichment: Enrichment) -> WriteResult:
        body: dict[str, Any] = {}
        if self.write_options["work_note"] and enrichment.note:
            body["work_notes"] = enrichment.note
        for name, column in self.write_options["columns"].items():
            if name in enrichment.fields:
                body[column] = flag_text(enrichment.fields[name])
        fp_column = self.write_options["fingerprint_field"]
        if fp_column:
            body[fp_column] = enrichment.fingerprint
        if not body:
            return WriteResult(enrichment.external_id, False, detail="nothing configured to write")
        if self.write_options["dry_run"]:
            return WriteResult(enrichment.external_id, False, dry_run=True, detail=f"would PATCH {', '.join(sorted(body))}")
        check = sorted(c for c in body if c != "work_notes")
        params = {"sysparm_fields": ",".join(["sys_id", *check]), "sysparm_display_value": "false",
                  "sysparm_exclude_reference_link": "true"}
        result, _ = self._json("PATCH", f"api/now/table/{self.table}/{enrichment.external_id}", params=params, json=body)
        record = result.get("result") if isinstance(result, dict) else None
        if not isinstance(record, dict):
            raise InvalidResponseError(f"PATCH api/now/table/{self.table}/{enrichment.external_id}: the body has no 'result' record")
        # ServiceNow ignores columns it does not have: a missing one is a configuration fault, say so
        absent = [c for c in check if c not in record]
        if absent:
            raise InvalidResponseError(f"{self.table} has no column {', '.join(absent)}: create it or change write_back in the configuration")
        return WriteResult(enrichment.external_id, True, detail=f"patched {', '.join(sorted(body))}")

    def current_fingerprint(self, external_id: str) -> str | None:
        fp_column = self.write_options["fingerprint_field"]
        if fp_column:
            body, _ = self._json("GET", f"api/now/table/{self.table}/{external_id}",
                                     params={"sysparm_fields": f"sys_id,{fp_column}", "sysparm_display_value": "false"})
            record = body.get("result") if isinstance(body, dict) else None
            if not isinstance(record, dict):
                raise InvalidResponseError(f"GET api/now/table/{self.table}/{external_id}: the body has no 'result' record")
            return str(record.get(fp_column) or "") or None
        query = f"element_id={external_id}^element=work_notes^valueLIKE[gapbridge:^ORDERBYDESCsys_created_on"
        body, _ = self._json("GET", "api/now/table/sys_journal_field",
                                 params={"sysparm_query": query, "sysparm_limit": "1", "sysparm_fields": "value,sys_created_on"})
        rows = body.get("result") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise InvalidResponseError("GET api/now/table/sys_journal_field: the body has no 'result' list")
        found = _MARKER.search(str(rows[0].get("value", ""))) if rows else None
        return found.group(1) if found else None

    def current_fingerprints(self, external_ids: Sequence[str]) -> dict[str, str | None]:
        fp_column = self.write_options["fingerprint_field"]
        if not fp_column or len(external_ids) <= 1:
            return super().current_fingerprints(external_ids)
        ids = sorted(set(external_ids))
        body, _ = self._json("GET", f"api/now/table/{self.table}", params={
            "sysparm_query": f"sys_idIN{','.join(ids)}", "sysparm_fields": f"sys_id,{fp_column}",
            "sysparm_display_value": "false", "sysparm_exclude_reference_link": "true", "sysparm_limit": str(len(ids))})
        rows = body.get("result") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise InvalidResponseError(f"GET api/now/table/{self.table}: the body has no 'result' list")
        found = {str(r.get("sys_id")): str(r.get(fp_column) or "") or None for r in rows if isinstance(r, dict)}
        # a ticket not in the answer carries nothing (deleted, or out of the account's reach: the write says which)
        return {external_id: found.get(external_id) for external_id in external_ids}

    def close(self) -> None:
        self.http.close()


# --- cells -------------------------------------------------------------------------------


def _total(response: Any) -> int | None:
    total = response.headers.get("X-Total-Count") if response is not None else None
    return int(total) if total and total.strip().isdigit() else None


def _more_follow(response: Any, total: int | None, offset: int, limit: int) -> bool:
    """Whether rows follow an empty page: the Link header names a next page, or the count says so."""
    if response is not None and next_link(response):
        return True
    return total is not None and offset + limit < total


def _says_what_follows(response: Any, total: int | None) -> bool:
    """Whether the instance tells what follows a page (a Link header or a count); without either, read until empty."""
    return total is not None or (response is not None and bool(response.headers.get("Link")))


def raw_value(cell: Any) -> Any:
    """The stored value of a cell: codes, sys_ids, UTC times (``{display_value, value}`` unwrapped)."""
    if isinstance(cell, dict):
        return cell.get("value")
    return cell


def display_value(cell: Any) -> Any:
    """What a person sees: the name of a referenced record when the instance sent it."""
    if isinstance(cell, dict):
        shown = cell.get("display_value")
        return shown if shown not in (None, "") else cell.get("value")
    return cell


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


# the conversions of most cells of every record: raw_value or display_value, then _text, in one call
def _stored_text(cell: Any) -> str | None:
    if isinstance(cell, dict):
        cell = cell.get("value")
    if cell is None:
        return None
    text = (cell if isinstance(cell, str) else str(cell)).strip()
    return text or None


def _shown_text(cell: Any) -> str | None:
    if isinstance(cell, dict):
        shown = cell.get("display_value")
        cell = shown if shown not in (None, "") else cell.get("value")
    if cell is None:
        return None
    text = (cell if isinstance(cell, str) else str(cell)).strip()
    return text or None


def _boolean(cell: Any) -> bool | None:
    return flag_value(str(raw_value(cell) or ""))


def _list_value(canonical: str, cell: Any) -> list[Any]:
    value = raw_value(cell)
    if value is None or value == "":
        return []
    if canonical not in _JSON_LISTS:
        if isinstance(value, list):
            return [str(v).strip() for v in value if str(v).strip()]
        return [part.strip() for part in _REF_SPLIT.split(str(value)) if part.strip()]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list ({exc.msg} at character {exc.pos})") from None
    return object_items(value)


