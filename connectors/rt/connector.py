"""The Request Tracker 5 connector: TicketSQL sync over REST2, history as timeline, comment and custom-field write-back.

Time zones: REST2 answers every date in UTC (``2026-11-22T13:57:48Z``), but TicketSQL reads a
date such as ``LastUpdated >= '2026-11-22 08:57:48'`` in the time zone of the user making the
request (its Timezone preference, else RT's ``$Timezone``), to the second. A trailing ``Z`` is not
understood: RT reads no date at all and the condition matches every ticket. So the bookmark is
sent as the user's local time, and the zone is found in ``check_configuration``: the option
``timezone``, else the user's preference (GET /user/<name>), else measured on a ticket (see
``_measure_offset``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from ..base import (
    BadRequestError,
    Capabilities,
    ConfigurationError,
    Connector,
    Enrichment,
    HttpSession,
    InvalidResponseError,
    MappedValues,
    NormalizationError,
    NotFoundError,
    Page,
    PermissionDeniedError,
    PreconditionFailedError,
    RetriableConnectorError,
    SchemeTokenAuth,
    Stream,
    WriteResult,
)
from ..canonical import BOOL_FIELDS, DATETIME_FIELDS, FIELDS, LIST_FIELDS, empty_incident, object_items, parse_utc
from ..fieldmap import flag_text, flag_value
from .schema import CORE_FIELDS, RTOptionsSchema, custom_field_name

log = logging.getLogger("connectors.rt")

RT_LOCAL = "%Y-%m-%d %H:%M:%S"
# RT's "never set": every date column holds it until the date happens
UNSET = datetime(1970, 1, 1, tzinfo=timezone.utc)
MARKER = re.compile(r"\[gapbridge:([0-9a-z]+)\]")
TICKET_CF = "RT::Queue-RT::Ticket"
_HISTORY_FIELDS = "Type,Created,Creator,Field,OldValue,NewValue,Data,Description"
# transactions that are RT's own bookkeeping, not something a person did
_QUIET = frozenset({"EmailRecord", "CommentEmailRecord", "SystemError", "Forward Transaction", "Forward Ticket"})
_KINDS = {"Create": "created", "Comment": "comment", "Correspond": "correspondence", "Status": "status",
          "Set": "change", "CustomField": "change", "Give": "assignment", "Take": "assignment", "Steal": "assignment",
          "Untake": "assignment", "AddWatcher": "watcher", "DelWatcher": "watcher", "AddLink": "link", "DeleteLink": "link"}
_WITH_TEXT = frozenset({"Create", "Comment", "Correspond"})
_REF_SPLIT = re.compile(r"[,;\n]")
_JSON_LISTS = frozenset({"evidence", "notifications", "escalations", "timeline"})
# the perl source location RT appends to a TicketSQL error ("... at /usr/share/.../Tickets.pm line 3187.")
_PERL_AT = re.compile(r"\s+at\s+/\S+\s+line\s+\d+\.?\s*$")
# offsets from UTC a zone can have, in quarter hours (UTC-12 to UTC+14)
_QUARTERS = range(-48, 57)


class RTConnector(Connector):
    """Tickets of one RT 5 instance selected by a TicketSQL scope, through REST2."""

    config_schema = RTOptionsSchema
    capabilities = Capabilities(frozenset({"note", "fields"}))

    def __init__(self, name: str, options: Mapping[str, Any], *, sleep: Any = None) -> None:
        super().__init__(name, options)
        self.base = options["url"]
        self.username: str | None = options["auth"].get("username")
        # without a zone by name the offset is measured, blind to daylight saving: an hour more is re-read (see _find_zone)
        measured = options["timezone"] == "auto" and not self.username
        self.stream = Stream("tickets", ("id",), "LastUpdated", is_sorted=True,
                             overlap_seconds=options["bookmark_overlap_seconds"] + (3600 if measured else 0))
        self.field_map: dict[str, str] = dict(options["field_map"])
        self.write_options = options["write_back"]
        self.timeline_options = options["timeline"]
        auth_opts, timeout = options["auth"], options["timeout"]
        auth: Any = (SchemeTokenAuth("token", auth_opts["token"]) if auth_opts["method"] == "token"
                     else (auth_opts["username"], auth_opts["password"]))
        extra = {"sleep": sleep} if sleep is not None else {}
        self.http = HttpSession(f"{self.base}/REST/2.0", auth=auth, connect_timeout=timeout["connect"],
                                read_timeout=timeout["read"], max_attempts=options["max_attempts"], **extra)
        self.maps = MappedValues(options, "queues")
        self.per_page = min(int(options["per_page"]), 100)
        self.custom_fields: dict[str, str] | None = None  # name -> id, from check_configuration
        self.zone: tzinfo | None = None
        self.zone_source = ""
        self._converters: list[tuple[str, str, Callable[[Any], Any]]] = []

    # --- start-up ------------------------------------------------------------------------

    def _wanted_custom_fields(self) -> list[tuple[str, str]]:
        """(config key, custom field name) of every custom field the options name."""
        wanted = [(f"field_map.{canonical}", cf) for canonical, field in self.field_map.items()
                  if (cf := custom_field_name(field)) is not None]
        for rule in ("is_security", "record_type"):
            field = self.options[rule]["field"]
            if field and (cf := custom_field_name(field)) is not None:
                wanted.append((f"{rule}.field", cf))
        if self.write_options["fingerprint_field"]:
            wanted.append(("write_back.fingerprint_field", _bare(self.write_options["fingerprint_field"])))
        wanted += [(f"write_back.fields.{name}", _bare(cf)) for name, cf in self.write_options["custom_fields"].items()]
        return wanted

    def check_configuration(self) -> None:
        """Resolve custom field names to ids and find the time zone TicketSQL dates are read in."""
        wanted = self._wanted_custom_fields()
        known = self._ticket_custom_fields() if wanted else {}
        lowered = {k.lower(): k for k in known}
        resolved: dict[str, str] = {}
        for key, cf in wanted:
            name = cf if cf in known else lowered.get(cf.lower())
            if name is None:
                near = difflib.get_close_matches(cf, list(known), n=3, cutoff=0.5) or sorted(known)[:5]
                said = f"nearest: {', '.join(near)}" if near else "RT has no ticket custom fields this account can see"
                raise ConfigurationError(f"connectors.{self.name}.{key}: RT has no ticket custom field named {cf!r} ({said})")
            resolved[cf] = known[name]
        self.custom_fields = resolved
        self._converters = [(canonical, field, self._converter(canonical)) for canonical, field in self.field_map.items()]
        self.zone, self.zone_source = self._find_zone()
        if self.zone_source.startswith("measured"):
            # a fixed offset measured today may be an hour off at a bookmark across a daylight saving change: re-read it
            self.stream = dataclasses.replace(self.stream, overlap_seconds=self.options["bookmark_overlap_seconds"] + 3600)

    def _configured(self) -> None:
        if self.custom_fields is None:
            self.check_configuration()

    def _ticket_custom_fields(self) -> dict[str, str]:
        """Every enabled ticket custom field this account can see, name -> id."""
        found: dict[str, str] = {}
        page = 1
        while True:
            body = self._json("POST", "customfields", params={"fields": "Name,LookupType,Disabled", "per_page": "100",
                                                              "page": str(page)},
                              json=[{"field": "LookupType", "value": TICKET_CF}])
            items = _items(body, "POST customfields")
            for item in items:
                if str(item.get("Disabled", "0")) != "1" and item.get("Name"):
                    found.setdefault(str(item["Name"]), str(item.get("id")))
            if not _more(body, items):
                return found
            page += 1

    def _find_zone(self) -> tuple[tzinfo, str]:
        configured = self.options["timezone"]
        if configured != "auto":
            return ZoneInfo(configured), f"connectors.{self.name}.timezone"
        if self.username:
            try:
                body = self._json("GET", f"user/{self.username}")
            except (NotFoundError, PermissionDeniedError):
                body = None  # an account that may not read its own record: measure instead
            preference = str(body.get("Timezone") or "").strip() if isinstance(body, dict) else ""
            if preference:
                try:
                    return ZoneInfo(preference), f"the Timezone preference of RT user {self.username!r}"
                except (ValueError, KeyError):
                    log.warning("RT user %r has time zone %r, which Python does not know; measuring it", self.username, preference)
        offset = self._measure_offset()
        if offset is None:
            log.warning("%s: no ticket to measure RT's time zone on and none configured: taking UTC; set connectors.%s.timezone "
                        "to RT's $Timezone (or the user's preference) if it is not UTC", self.name, self.name)
            return timezone.utc, "assumed (no ticket to measure on)"
        return timezone(offset), "measured on a ticket (daylight saving unknown: an hour more is re-read)"

    def _measure_offset(self) -> timedelta | None:
        """The offset from UTC RT reads TicketSQL dates in, measured on the newest ticket this account can see.

        With the ticket's LastUpdated T (UTC) and a candidate offset k, ``LastUpdated > 'T+k'`` (local) holds exactly
        when the real offset is above k: a binary search over quarter hours takes seven requests.
        """
        body = self._json("GET", "tickets", params=[("query", "id > 0"), ("orderby", "LastUpdated"), ("order", "DESC"),
                                                     ("per_page", "1"), ("fields", "LastUpdated")])
        items = _items(body, "GET tickets")
        if not items:
            return None
        ticket, updated = str(items[0].get("id")), _time(items[0].get("LastUpdated"))
        if updated is None:
            return None
        low, high = 0, len(_QUARTERS) - 1  # find the first quarter k for which the condition fails
        while low < high:
            middle = (low + high) // 2
            shifted = (updated + timedelta(minutes=15 * _QUARTERS[middle])).strftime(RT_LOCAL)
            probe = self._json("GET", "tickets", params={"query": f"id = {ticket} AND LastUpdated > '{shifted}'", "per_page": "1"})
            if _items(probe, "GET tickets"):
                low = middle + 1
            else:
                high = middle
        return timedelta(minutes=15 * _QUARTERS[low])

    # --- reading -------------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        body, _ = self.http.json(method, path, **kwargs)
        return body

    def _local(self, when: datetime) -> tuple[str, int]:
        """``when`` as TicketSQL reads it (the zone's wall clock), and seconds more to re-read where that is unsure."""
        assert self.zone is not None
        local = when.astimezone(self.zone)
        slack = 0
        if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():
            slack = 3600  # an hour the clock shows twice: RT may read it as the later one
        if slack:
            local = (when - timedelta(seconds=slack)).astimezone(self.zone)
        return local.strftime(RT_LOCAL), slack

    def search_query(self, since: datetime | None) -> str:
        scope = self.options["query"].strip()
        condition = f"LastUpdated >= '{self._local(since)[0]}'" if since is not None else ""
        if scope and condition:
            return f"({scope}) AND {condition}"
        return scope or condition or "id > 0"

    def _search_fields(self) -> str:
        wanted = {"Subject", "Status", "Queue", "LastUpdated", "Created"}
        wanted |= {f for f in self.field_map.values() if f in CORE_FIELDS and f != "id"}
        for rule in ("is_security", "record_type"):
            field = self.options[rule]["field"]
            if field in CORE_FIELDS:
                wanted.add(field)
        wanted.discard("id")
        if self.custom_fields:
            wanted.add("CustomFields")
        return ",".join(sorted(wanted))

    def _search(self, query: str, page: int) -> Any:
        params = [("query", query), ("orderby", "LastUpdated"), ("order", "ASC"), ("orderby", "id"), ("order", "ASC"),
                  ("page", str(page)), ("per_page", str(self.per_page)), ("fields", self._search_fields()),
                  ("fields[Queue]", "Name")]
        try:
            return self._json("GET", "tickets", params=params)
        except BadRequestError as exc:
            said = _PERL_AT.sub("", exc.tool_message).strip() or str(exc)
            scope = self.options["query"].strip()
            raise ConfigurationError(f"connectors.{self.name}.query {scope!r}: RT refused the TicketSQL: {said}") from None

    def fetch_pages(self, bookmark: Mapping[str, Any] | None) -> Iterator[Page]:
        """Tickets in (LastUpdated, id) order from the bookmark, minus the overlap, each read once.

        Each window asks for LastUpdated >= its start; when a page ends past the start, the next
        window starts at the page's last second (keyset), and only a page all of one second goes
        on to the next page number. What was read already is skipped by its key.
        """
        self._configured()
        stored = self.stream.bookmark_time(bookmark)
        start = stored - timedelta(seconds=self.stream.overlap_seconds) if stored is not None else None
        last_key: tuple[datetime, int] | None = None
        high = _bookmark_key(bookmark) if stored is not None else None  # the bookmark never moves back
        page_number, seen = 1, 0
        asked: set[tuple[datetime | None, int]] = set()
        while True:
            if (start, page_number) in asked:
                raise InvalidResponseError(f"{self.name}: RT answered the same tickets again for LastUpdated >= {start} "
                                           f"page {page_number}: stopped instead of reading them forever")
            asked.add((start, page_number))
            body = self._search(self.search_query(start), page_number)
            items = _items(body, "GET tickets")
            fresh = []
            for item in items:
                key = _ticket_key(item)
                if key is None:
                    fresh.append(item)  # rejected in normalize, under its id
                    continue
                if last_key is None or key > last_key:
                    fresh.append(item)
                    last_key = key
            if fresh:
                self._add_history(fresh)
                if last_key is not None and (high is None or last_key > high):
                    high = last_key
                total = body.get("total") if isinstance(body.get("total"), int) else None
                seen += len(fresh)
                if total is not None:
                    # RT counts this window (LastUpdated >= its start): what follows this page, plus what was read
                    total = seen + max(0, total - (page_number - 1) * self.per_page - len(items))
                yield Page(fresh, _bookmark(high), total)
            if not _more(body, items):
                return
            last_time = _time(items[-1].get("LastUpdated"))
            if last_time is not None and (start is None or last_time > start):
                start, page_number = last_time, 1
            else:
                page_number += 1

    def _add_history(self, tickets: list[dict[str, Any]]) -> None:
        """Put each ticket's transactions (and the text of its messages) beside it, under ``_history``."""
        if not self.timeline_options["enabled"]:
            return
        for ticket in tickets:
            ticket_id = ticket.get("id")
            if ticket_id in (None, ""):
                continue
            history = self._all(f"ticket/{ticket_id}/history", {"fields": _HISTORY_FIELDS})
            texts: dict[str, str] = {}
            if self.timeline_options["text"] and any(t.get("Type") in _WITH_TEXT for t in history):
                for part in self._all(f"ticket/{ticket_id}/attachments", {"fields": "TransactionId,ContentType,Filename,Content"}):
                    if str(part.get("ContentType", "")).startswith("text/plain") and not part.get("Filename"):
                        tid = str(part.get("TransactionId") or "")
                        if tid and tid not in texts and isinstance(part.get("Content"), str):
                            texts[tid] = part["Content"][: self.timeline_options["max_chars"]]
            ticket["_history"] = [{**t, "_text": texts.get(str(t.get("id")))} if str(t.get("id")) in texts else t for t in history]

    def _all(self, path: str, params: dict[str, str], limit: int = 50) -> list[dict[str, Any]]:
        """Every item of a collection (at most ``limit`` pages of 100)."""
        out: list[dict[str, Any]] = []
        for page in range(1, limit + 1):
            body = self._json("GET", path, params={**params, "per_page": "100", "page": str(page)})
            items = _items(body, f"GET {path}")
            out += items
            if not _more(body, items):
                break
        return out

    # --- normalising ---------------------------------------------------------------------

    def normalize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        self._configured()
        ticket_id = self.record_id(record)
        if ticket_id is None:
            raise NormalizationError("ticket has no id")
        incident = empty_incident()
        incident.update(source=self.name, external_id=ticket_id, url=f"{self.base}/Ticket/Display.html?id={ticket_id}")
        for canonical, field, convert in self._converters:
            try:
                incident[canonical] = convert(self._value(record, field))
            except (ValueError, TypeError) as exc:
                raise NormalizationError(f"ticket {ticket_id}: {field} (canonical {canonical}): {exc}") from None
        incident["number"] = incident["number"] or ticket_id
        history = record.get("_history")
        if isinstance(history, list):
            if "timeline" not in self.field_map:
                incident["timeline"] = self._timeline(history)
            if not incident["description"]:
                incident["description"] = next((str(t.get("_text")).strip() or None for t in history
                                                 if isinstance(t, Mapping) and t.get("Type") == "Create" and t.get("_text")), None)
        queue = _name(record.get("Queue"))
        security_field = self.maps.security_field
        type_field = self.maps.record_type_field
        incident["is_security"] = self.maps.is_security(
            flag=_text(self._value(record, security_field)) if security_field else None, container=queue,
            category=incident.get("category"))
        incident["record_type"] = self.maps.record_type(
            value=_text(self._value(record, type_field)) if type_field else None, container=queue,
            category=incident.get("category"), subcategory=incident.get("subcategory"))
        incident["enrichment_fingerprint"] = self._fingerprint_on(record)
        incident["raw"] = dict(record)
        return incident

    def _value(self, record: Mapping[str, Any], field: str) -> Any:
        """A field of a ticket as REST2 gave it: core fields by name, custom fields by their resolved id (a list)."""
        cf = custom_field_name(field)
        if cf is None:
            return record.get(field)
        cf_id = (self.custom_fields or {}).get(cf)
        for item in record.get("CustomFields") or []:  # "" when the ticket's queue has none
            if isinstance(item, Mapping) and (str(item.get("id")) == cf_id or item.get("name") == cf):
                values = item.get("values")
                return [v for v in values if v not in (None, "")] if isinstance(values, list) else values
        return None

    def _fingerprint_on(self, record: Mapping[str, Any]) -> str | None:
        fp_field = self.write_options["fingerprint_field"]
        if fp_field:
            return _text(self._value(record, f"CF.{{{_bare(fp_field)}}}"))
        found = None
        for t in record.get("_history") or []:  # oldest first: the last marker is the newest
            if isinstance(t, Mapping) and t.get("Type") == "Comment":
                match = MARKER.search(f"{t.get('Data') or ''} {t.get('_text') or ''}")
                found = match.group(1) if match else found
        return found

    def _converter(self, canonical: str) -> Callable[[Any], Any]:
        kind = FIELDS[canonical]
        if kind == "state":
            return lambda value: self.maps.state(_text(value))
        if kind == "severity":
            return lambda value: self.maps.severity(_text(value))
        if canonical in DATETIME_FIELDS:
            return _date
        if canonical in BOOL_FIELDS:
            return _boolean
        if canonical in LIST_FIELDS:
            return functools.partial(_list_value, canonical)
        return _text

    def _timeline(self, history: Sequence[Any]) -> list[dict[str, Any]]:
        names = {v: k for k, v in (self.custom_fields or {}).items()}
        items = []
        for t in history:
            if not isinstance(t, Mapping) or t.get("Type") in _QUIET:
                continue
            kind = str(t.get("Type") or "")
            text = t.get("_text")
            if not text:
                field = str(t.get("Field") or "")
                if kind == "CustomField":
                    field = names.get(field, f"custom field {field}")
                old, new = t.get("OldValue") or "", t.get("NewValue") or ""
                if field and (old or new):
                    text = f"{field}: {old or '(none)'} -> {new or '(none)'}"
                else:
                    text = str(t.get("Description") or t.get("Data") or "").strip() or None
            items.append({"at": _time(t.get("Created")), "author": _name(t.get("Creator")),
                          "kind": _KINDS.get(kind, kind.lower() or "change"), "text": text})
        return items

    # --- writing -------------------------------------------------------------------------

    def _custom_field_values(self, enrichment: Enrichment) -> dict[str, str]:
        """Custom field id -> the value to write, the fingerprint's own field included."""
        ids = self.custom_fields or {}
        values = {ids[_bare(cf)]: flag_text(enrichment.fields[name])
                  for name, cf in self.write_options["custom_fields"].items() if name in enrichment.fields}
        if self.write_options["fingerprint_field"]:
            values[ids[_bare(self.write_options["fingerprint_field"])]] = enrichment.fingerprint
        return values

    def write_back(self, enrichment: Enrichment) -> WriteResult:
        """A private comment with the marker, and the custom fields, each only if the ticket lacks it.

        What ``current_fingerprint`` reads is written last (the fingerprint field after the comment;
        without one, the comment after the fields), so a write cut short is finished, not doubled.
        """
        self._configured()
        ticket = _ticket_id(enrichment.external_id)
        note = enrichment.note if self.write_options["comment"] and enrichment.note else None
        values = self._custom_field_values(enrichment)
        if note is None and not values:
            return WriteResult(ticket, False, detail="nothing configured to write")
        if self.write_options["dry_run"]:
            parts = (["comment"] if note else []) + ([f"custom fields {', '.join(sorted(values))}"] if values else [])
            return WriteResult(ticket, False, dry_run=True, detail=f"would write {' and '.join(parts)} on ticket {ticket}")
        done = []
        steps = [("comment", note is not None), ("fields", bool(values))]
        if not self.write_options["fingerprint_field"]:
            steps.reverse()
        for step, wanted in steps:
            if not wanted:
                continue
            if step == "comment":
                assert note is not None
                if self.newest_marker(ticket) != enrichment.fingerprint:
                    self._comment(ticket, note, enrichment.fingerprint)
                    done.append("comment")
            elif self._set_custom_fields(ticket, values):
                done.append("custom fields")
        return WriteResult(ticket, bool(done), detail=f"wrote {' and '.join(done)}" if done else "already on the ticket")

    def _comment(self, ticket: str, note: str, fp: str) -> None:
        # the marker in the subject too: RT keeps a comment's subject on its transaction (Data), which one search reads
        body = {"Subject": f"GapBridge ISO 27001 check [gapbridge:{fp}]", "Content": note, "ContentType": "text/plain"}
        self._json("POST", f"ticket/{ticket}/comment", json=body)

    def _read_ticket(self, ticket: str) -> tuple[dict[str, Any], str | None]:
        body, response = self.http.json("GET", f"ticket/{ticket}")
        if not isinstance(body, dict):
            raise InvalidResponseError(f"GET ticket/{ticket}: the body is not a ticket")
        return body, response.headers.get("ETag")

    def _set_custom_fields(self, ticket: str, values: Mapping[str, str]) -> bool:
        """PUT the values that differ, guarded by the ticket's ETag; a 412 reads again and retries once."""
        for attempt in (1, 2):
            current, etag = self._read_ticket(ticket)
            now = _custom_values(current)
            changes = {cf: v for cf, v in values.items() if now.get(cf) != v}
            if not changes:
                return False
            headers = {"If-Match": etag} if etag else {}
            try:
                self._json("PUT", f"ticket/{ticket}", json={"CustomFields": changes}, headers=headers)
            except PreconditionFailedError:
                if attempt == 2:
                    raise RetriableConnectorError(f"PUT ticket/{ticket}: the ticket changed while GapBridge wrote its custom "
                                                  "fields (HTTP 412 twice); the outbox tries again later") from None
                continue
            break
        # RT answers 200 and ignores a custom field the ticket's queue does not have: read back to be sure
        after = _custom_values(self._read_ticket(ticket)[0])
        names = {v: k for k, v in (self.custom_fields or {}).items()}
        missing = [names.get(cf, cf) for cf, v in changes.items() if after.get(cf) != v]
        if missing:
            raise InvalidResponseError(f"ticket {ticket}: RT did not take the custom field(s) {', '.join(sorted(missing))}: "
                                       "apply them to the ticket's queue, and give the account ModifyCustomField on it")
        return True

    def newest_marker(self, ticket: str) -> str | None:
        """The fingerprint in the newest GapBridge comment of a ticket."""
        # no "[" in it: REST2 takes a query with a "[" anywhere for its JSON form (and fails on it)
        query = f"ObjectType = 'RT::Ticket' AND ObjectId = {_ticket_id(ticket)} AND Type = 'Comment' AND Data LIKE 'gapbridge:'"
        body = self._json("GET", "transactions", params=[("query", query), ("orderby", "id"), ("order", "DESC"),
                                                          ("per_page", "1"), ("fields", "Data")])
        items = _items(body, "GET transactions")
        found = MARKER.search(str(items[0].get("Data") or "")) if items else None
        return found.group(1) if found else None

    def current_fingerprint(self, external_id: str) -> str | None:
        self._configured()
        external_id = _ticket_id(external_id)
        fp_field = self.write_options["fingerprint_field"]
        if fp_field:
            cf_id = (self.custom_fields or {})[_bare(fp_field)]
            return _custom_values(self._read_ticket(external_id)[0]).get(cf_id) or None
        return self.newest_marker(external_id)


# --- values ------------------------------------------------------------------------------


def _ticket_id(external_id: str) -> str:
    """An RT ticket number as GapBridge stores it; anything else names no ticket (RT would read "007" as 7)."""
    text = str(external_id).strip()
    if not text.isdigit() or text != str(int(text)) or int(text) == 0:
        raise NotFoundError(f"{external_id!r} is not an RT ticket number")
    return text


def _bare(name: str) -> str:
    """A custom field name given as ``Name`` or ``CF.{Name}``."""
    return custom_field_name(name) or name.strip()


def _items(body: Any, what: str) -> list[dict[str, Any]]:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise InvalidResponseError(f"{what}: the body has no 'items' list")
    return [i for i in items if isinstance(i, dict)]


def _more(body: Mapping[str, Any], items: Sequence[Any]) -> bool:
    """Whether a page follows: RT says next_page; without counts (total null: no right to see them) until a page is empty."""
    if body.get("next_page"):
        return True
    return body.get("total") is None and bool(items)


def _time(value: Any) -> datetime | None:
    """A REST2 date in UTC; RT's 1970-01-01 (never set) is none."""
    when = parse_utc(value)
    return None if when is None or when <= UNSET else when


def _date(value: Any) -> datetime | None:
    """A core date, or the value of a date custom field: REST2 gives a custom field's values as a list."""
    if isinstance(value, list):
        if len(value) > 1:
            raise ValueError(f"{len(value)} values where one date was expected")
        value = value[0] if value else None
    return _time(value)


def _ticket_key(item: Mapping[str, Any]) -> tuple[datetime, int] | None:
    updated = _time(item.get("LastUpdated"))
    try:
        ticket = int(str(item.get("id")))
    except ValueError:
        return None
    return (updated, ticket) if updated is not None else None


def _bookmark(key: tuple[datetime, int] | None) -> dict[str, Any] | None:
    if key is None:
        return None
    return {"LastUpdated": key[0].strftime("%Y-%m-%dT%H:%M:%SZ"), "id": key[1]}


def _bookmark_key(bookmark: Mapping[str, Any] | None) -> tuple[datetime, int] | None:
    if not bookmark:
        return None
    when = parse_utc(bookmark.get("LastUpdated"))
    try:
        ticket = int(bookmark.get("id") or 0)
    except (TypeError, ValueError):
        ticket = 0
    return (when, ticket) if when is not None else None


def _name(value: Any) -> str | None:
    """A user, queue or list of users as a name: REST2 gives {"id": name} (and Name when asked)."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, Mapping):
        value = value.get("Name") or value.get("id")
    text = str(value).strip() if value is not None else ""
    return text or None


def _text(value: Any) -> str | None:
    """A value as text: a user or queue by name (the first of a list of users), the values of a custom field joined."""
    if isinstance(value, Mapping) or (isinstance(value, list) and value and isinstance(value[0], Mapping)):
        return _name(value)
    if isinstance(value, list):
        value = ", ".join(str(v).strip() for v in value if v not in (None, ""))
    text = str(value).strip() if value is not None else ""
    return text or None


def _boolean(value: Any) -> bool | None:
    return flag_value(_text(value) or "")


def _custom_values(ticket: Mapping[str, Any]) -> dict[str, str]:
    """Custom field id -> its value (values of a multi-value field joined) on a ticket as GET /ticket/:id gives it."""
    out = {}
    for item in ticket.get("CustomFields") or []:
        if isinstance(item, Mapping):
            values = item.get("values")
            if not isinstance(values, list):
                values = []
            out[str(item.get("id"))] = "\n".join(str(v) for v in values if v not in (None, ""))
    return out


def _list_value(canonical: str, value: Any) -> list[Any]:
    """A list field from a custom field: references from its values (or one text split at , ; and newlines);
    evidence, notifications and escalations from a JSON array of objects."""
    values = value if isinstance(value, list) else ([] if value in (None, "") else [value])
    if canonical not in _JSON_LISTS:
        return [part.strip() for v in values for part in _REF_SPLIT.split(str(v)) if part.strip()]
    if not values:
        return []
    try:
        parsed = json.loads("\n".join(str(v) for v in values)) if len(values) == 1 else [json.loads(str(v)) for v in values]
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON list ({exc.msg} at character {exc.pos})") from None
    return object_items(parsed)
