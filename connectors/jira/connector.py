"""The Jira connector (Cloud REST v3, Data Center REST v2): JQL sync, normalisation, comment, label and property write-back.

Reading. The scope is the configured JQL; an incremental sync asks for
``(<scope>) AND updated >= "<bookmark>" ORDER BY updated ASC, key ASC``. JQL compares times to
the minute, in the time zone of the API user (``/myself`` ``timeZone``), so the literal is the
bookmark less the overlap, in that zone, cut to the minute; around a DST change an hour repeats,
and the literal steps back until no reading of it is after the time meant (``jql_time``). What is
read twice is dropped: the bookmark keeps the ``updated`` of the records of its last minutes.
Cloud pages by ``nextPageToken`` (``/search/jql``); Data Center by ``startAt`` (``/search``),
starting the query again from the last page's time so that records changed during the sync
cannot shift the offsets and be skipped.

Writing. A GapBridge comment (internal in a service-desk project, so the customer never sees it;
elsewhere a plain comment with the configured visibility), the labels GapBridge owns (added and
removed), mapped fields, and an issue entity property holding the findings and their fingerprint,
written last: when it carries the fingerprint, everything before it was written.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from ..base import (
    AuthenticationError,
    BadRequestError,
    Capabilities,
    ConfigurationError,
    Connector,
    CursorTokenPaginator,
    Enrichment,
    FatalConnectorError,
    GoneError,
    HttpSession,
    InvalidResponseError,
    MappedValues,
    NormalizationError,
    OffsetPaginator,
    Page,
    PermissionDeniedError,
    SchemeTokenAuth,
    Stream,
    WriteResult,
)
from ..canonical import BOOL_FIELDS, DATETIME_FIELDS, FIELDS, LIST_FIELDS, empty_incident, object_items, parse_utc
from ..fieldmap import flag_value
from .adf import adf_to_text, is_adf, text_to_adf
from .schema import JiraOptionsSchema

MARKER = re.compile(r"\[gapbridge:([0-9a-z]+)\]")
#: the most an issue entity property may hold (Jira refuses more)
PROPERTY_LIMIT = 32768
# the issue's own attributes, named in field_map like fields
PSEUDO_FIELDS = frozenset({"key", "id"})
# fields every search asks for, whatever is mapped: the bookmark, the record type, security by label
_ALWAYS = ("updated", "issuetype", "labels")
_REF_SPLIT = re.compile(r"[,;\n]")
_JSON_LISTS = frozenset({"evidence", "notifications", "escalations"})
# a Data Center behind SSO, or a login that failed, answers a login page (or anonymously) with 200
_LOGIN_PAGE = re.compile(r"login\.jsp|name=[\"']?os_username|<title>[^<]*log ?in", re.IGNORECASE)
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# records of the bookmark's last minutes are kept in it to drop them when they are read again; at most this many
_RECENT_MAX = 1000


def jql_time(instant: datetime, zone: tzinfo) -> str:
    """The JQL time literal (``yyyy-MM-dd HH:mm`` in ``zone``) at or before ``instant`` however Jira reads it.

    Cut to the minute, a local time is before the instant; in the hour a DST change repeats, it
    has two readings, and the later may be after the instant: then the literal steps back by the
    difference, out of the repeated hour.
    """
    at = instant.astimezone(timezone.utc)
    t = at
    for _ in range(4):
        local = t.astimezone(zone).replace(second=0, microsecond=0, tzinfo=None)
        latest = max(local.replace(tzinfo=zone, fold=fold).astimezone(timezone.utc) for fold in (0, 1))
        if latest <= at:
            return local.strftime("%Y-%m-%d %H:%M")
        t -= latest - at
    raise ValueError(f"no JQL time at or before {at.isoformat()} in {zone}")  # a zone with changes an hour apart


def utc_text(at: datetime) -> str:
    """A bookmark time: UTC ISO 8601 to the millisecond, as Jira keeps it."""
    at = at.astimezone(timezone.utc)
    return f"{at:%Y-%m-%dT%H:%M:%S}.{at.microsecond // 1000:03d}Z"


def _instance_wide(response: requests.Response) -> bool:
    """Jira's per-issue write limit holds one issue; every other 429 (burst, quota, cost) the whole site."""
    return response.headers.get("RateLimit-Reason", "").strip().lower() != "jira-per-issue-on-write"


class JiraConnector(Connector):
    """Issues of one Jira Cloud or Data Center site selected by a JQL scope."""

    config_schema = JiraOptionsSchema
    capabilities = Capabilities(frozenset({"note", "fields", "labels", "properties"}))
    tool_name = "Jira"

    def __init__(self, name: str, options: Mapping[str, Any], *, sleep: Any = None) -> None:
        super().__init__(name, options)
        self.base = options["url"]
        self.cloud = options["deployment"] == "cloud"
        self.api = "rest/api/3" if self.cloud else "rest/api/2"
        # what is re-read before the bookmark: the overlap asked for, and the minute the JQL literal is cut to
        self.overlap = timedelta(seconds=options["bookmark_overlap_seconds"])
        self.stream = Stream("issues", ("id",), "updated", is_sorted=True, overlap_seconds=options["bookmark_overlap_seconds"] + 60)
        self.field_map: dict[str, str] = dict(options["field_map"])
        self.write_options = options["write_back"]
        self.property: str | None = self.write_options["property"]
        auth_opts, timeout = options["auth"], options["timeout"]
        auth: Any
        # HTTPBasicAuth, not a tuple: a logged or printed session shows no token
        if auth_opts["method"] == "api_token":
            auth = requests.auth.HTTPBasicAuth(auth_opts["email"], auth_opts["token"])
        elif auth_opts["method"] == "personal_access_token":
            auth = SchemeTokenAuth("Bearer", auth_opts["token"])
        else:
            auth = requests.auth.HTTPBasicAuth(auth_opts["username"], auth_opts["password"])
        extra = {"sleep": sleep} if sleep is not None else {}
        self.http = HttpSession(self.base, auth=auth, connect_timeout=timeout["connect"], read_timeout=timeout["read"],
                                max_attempts=options["max_attempts"], instance_wide=_instance_wide, **extra)
        self.maps = MappedValues(options, "issue_types")
        self.status_categories: Mapping[str, str] = options["status_categories"]
        # with the property, one search reads the fingerprints of many issues
        self.fingerprints_per_request = 50 if self.property else 1
        # resolved by check_configuration
        self.zone: tzinfo | None = None
        self.fields: dict[str, dict[str, Any]] = {}  # field id -> Jira's description of it
        self.ids: dict[str, str] = {}  # what the options name (a name or an id) -> field id
        self._converters: list[tuple[str, str, Callable[[Any], Any]]] = []
        self._search_fields = ""

    def key(self, option: str) -> str:
        """The full configuration key of one of this connector's options."""
        return f"connectors.{self.name}.{option}"

    # --- talking to Jira -------------------------------------------------------------------

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The parsed answer; a login page or an anonymous answer to a refused login is an AuthenticationError."""
        what = f"{method} {self.http.url(path).split('?', 1)[0]}"
        try:
            response = self.http.request(method, path, **kwargs)
        except PermissionDeniedError as exc:
            if "captcha" in str(exc).lower():
                raise AuthenticationError(f"{what}: HTTP 403, Jira asks for a CAPTCHA after failed logins: "
                                          "sign in once in a browser, then check the credentials") from None
            raise
        login = response.headers.get("X-Seraph-LoginReason", "")
        if "AUTHENTICATED_FAILED" in login or "AUTHENTICATION_DENIED" in login:
            raise AuthenticationError(f"{what}: Jira refused the login ({login.split(',')[0]}) and answered anonymously: check the credentials")
        if "captcha" in response.headers.get("X-Authentication-Denied-Reason", "").lower():
            raise AuthenticationError(f"{what}: Jira asks for a CAPTCHA after failed logins: sign in once in a browser, then check the credentials")
        if "html" in response.headers.get("Content-Type", "") and _LOGIN_PAGE.search(response.text):
            raise AuthenticationError(f"{what}: HTTP {response.status_code} answered a login page, not JSON: check the credentials")
        if response.status_code == 204 or not response.content:
            return None
        body, _ = self.http.parsed(method, path, response)
        return body

    # --- start-up --------------------------------------------------------------------------

    def _named_fields(self) -> list[tuple[str, str]]:
        """(config key, field name or id) of every Jira field the options name."""
        named = [(f"field_map.{canonical}", field) for canonical, field in self.field_map.items()]
        for rule in ("is_security", "record_type"):
            field = self.options[rule]["field"]
            if field:
                named.append((f"{rule}.field", field))
        named += [(f"write_back.fields.{name}", field) for name, field in self.write_options["columns"].items()]
        return named

    def check_configuration(self) -> None:
        """Find the time zone JQL reads times in, and resolve the fields the options name to Jira's field ids."""
        me = self._json("GET", f"{self.api}/myself")
        zone_name = self.options["timezone"] or (me.get("timeZone") if isinstance(me, dict) else None)
        if not zone_name:
            raise ConfigurationError(f"{self.key('timezone')}: Jira did not say the time zone of the API user (/myself has no "
                                     "timeZone); set it, as the user's profile shows it (e.g. Europe/Berlin)")
        try:
            self.zone = ZoneInfo(str(zone_name))
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"{self.key('timezone')}: the API user's time zone {zone_name!r} is unknown to this "
                                     "system (install tzdata, or set the option to an equivalent IANA name)") from None
        listed = self._json("GET", f"{self.api}/field")
        if not isinstance(listed, list):
            raise InvalidResponseError(f"GET {self.api}/field: expected a list of fields, got {type(listed).__name__}")
        self.fields = {str(f["id"]): f for f in listed if isinstance(f, dict) and f.get("id")}
        self.ids = {}
        for option, named in self._named_fields():
            self.ids[named] = self._resolve(option, named)
        self._converters = [(canonical, self.ids[field], self._converter(canonical, self.ids[field]))
                            for canonical, field in self.field_map.items()]
        wanted = {*_ALWAYS, *(fid for fid in self.ids.values() if fid not in PSEUDO_FIELDS)}
        if not self.property:
            wanted.add("comment")  # the marker in the newest GapBridge comment tells what is on the ticket
        self._search_fields = ",".join(sorted(wanted))

    def _resolve(self, option: str, named: str) -> str:
        """The id of the field ``named`` (an id, or a name as Jira shows it); a ConfigurationError names the nearest."""
        if named in PSEUDO_FIELDS or named in self.fields:
            return named
        by_name = [fid for fid, f in self.fields.items() if str(f.get("name", "")) == named]
        if not by_name:
            by_name = [fid for fid, f in self.fields.items() if str(f.get("name", "")).lower() == named.lower()]
        if len(by_name) == 1:
            return by_name[0]
        if len(by_name) > 1:
            raise ConfigurationError(f"{self.key(option)}: Jira has {len(by_name)} fields named {named!r} "
                                     f"({', '.join(sorted(by_name))}): name the one meant by its id")
        names = sorted({str(f.get("name")) for f in self.fields.values() if f.get("name")})
        near = difflib.get_close_matches(named, names, n=3, cutoff=0.6) or difflib.get_close_matches(
            named.lower(), [n.lower() for n in names], n=3, cutoff=0.6)
        said = f"nearest: {', '.join(repr(n) for n in near)}" if near else f"none of the {len(names)} field names is close"
        raise ConfigurationError(f"{self.key(option)}: Jira has no field named {named!r} ({said})")

    def _ensure_configured(self) -> None:
        if self.zone is None:
            self.check_configuration()

    # --- reading ---------------------------------------------------------------------------

    def jql(self, since: datetime | None) -> str:
        """The search: the scope, records updated at or after ``since`` (to the minute), oldest first."""
        scope = f"({self.options['jql'].strip()})"
        if since is not None:
            assert self.zone is not None
            scope += f' AND updated >= "{jql_time(since, self.zone)}"'
        return f"{scope} ORDER BY updated ASC, key ASC"

    def _search(self, jql: str, **params: Any) -> dict[str, Any]:
        path = f"{self.api}/search/jql" if self.cloud else f"{self.api}/search"
        query = {"jql": jql, "fields": self._search_fields, **params}
        if self.property:
            query["properties"] = self.property
        try:
            body = self._json("GET", path, params=query)
        except BadRequestError as exc:
            raise ConfigurationError(f"{self.key('jql')}: Jira refused the search "
                                     f"({exc.tool_message or 'no reason given'}); the scope is {self.options['jql']!r}") from None
        except GoneError:
            if self.cloud:
                raise ConfigurationError(f"GET {path}: HTTP 410 Gone: this Jira has retired the search API GapBridge uses") from None
            raise ConfigurationError(
                f"{self.key('deployment')}: GET {path} answered HTTP 410 Gone: this is Jira Cloud, which removed the old "
                "search API (/rest/api/2/search and /rest/api/3/search); set deployment: cloud to search through "
                "/rest/api/3/search/jql") from None
        if not isinstance(body, dict) or not isinstance(body.get("issues"), list):
            raise InvalidResponseError(f"GET {path}: the body has no 'issues' list")
        return body

    def fetch_pages(self, bookmark: Mapping[str, Any] | None) -> Iterator[Page]:
        self._ensure_configured()
        since = self.stream.bookmark_time(bookmark)
        recent = (bookmark or {}).get("recent")
        seen = _Seen(self.stream.overlap_seconds, dict(recent) if isinstance(recent, Mapping) else {})
        start = since - self.overlap if since is not None else None
        pages = self._cloud_pages(start) if self.cloud else self._data_center_pages(start)
        for issues, total in pages:
            fresh, bookmark_now = seen.admit(issues)
            if fresh or bookmark_now is not None:
                yield Page(fresh, bookmark_now, total)

    def _cloud_pages(self, start: datetime | None) -> Iterator[tuple[list[dict[str, Any]], int | None]]:
        jql = self.jql(start)
        paginator = CursorTokenPaginator(lambda body: None if body.get("isLast") else body.get("nextPageToken"))
        while not paginator.finished:
            params: dict[str, Any] = {"maxResults": self.options["page_size"]}
            if paginator.current_value:
                params["nextPageToken"] = paginator.current_value
            body = self._search(jql, **params)
            issues = body["issues"]
            yield issues, None
            paginator.advance(issues, body)

    def _data_center_pages(self, start: datetime | None) -> Iterator[tuple[list[dict[str, Any]], int | None]]:
        """Offsets within one query; after each page the query starts again from the page's last time.

        An issue changed during the sync leaves its place for the end of the order: every offset
        after its old place shifts by one and a record would be skipped. Starting again from the
        last time read keeps offsets short-lived (only records of the same minute are paged over by
        offset), and makes no deep offsets, which Data Center serves slowly.
        """
        anchor = start
        total_first: int | None = None
        paginator = _offsets()
        while True:
            body = self._search(self.jql(anchor), startAt=paginator.current_value or 0, maxResults=self.options["page_size"])
            issues = body["issues"]
            if total_first is None and isinstance(body.get("total"), int):
                total_first = body["total"]
            yield issues, total_first
            paginator.advance(issues, body)
            if paginator.finished:
                return
            last = _latest(issues)
            # the query moves on to the last time read (never back); within one minute, offsets page on
            if last is not None and (anchor is None or jql_time(last, self._zone()) != jql_time(anchor, self._zone())) \
                    and (anchor is None or last > anchor):
                anchor = last
                paginator = _offsets()

    def _zone(self) -> tzinfo:
        assert self.zone is not None
        return self.zone

    # --- normalising -----------------------------------------------------------------------

    def normalize(self, record: Mapping[str, Any]) -> dict[str, Any]:
        self._ensure_configured()
        issue_id, key = record.get("id"), record.get("key")
        if issue_id in (None, "") or not key:
            raise NormalizationError("issue has no id or key")
        fields = record.get("fields")
        if not isinstance(fields, Mapping):
            raise NormalizationError(f"{key}: the issue has no fields object")
        incident = empty_incident()
        incident.update(source=self.name, external_id=str(issue_id), url=f"{self.base}/browse/{key}")
        for canonical, field_id, convert in self._converters:
            value = record.get(field_id) if field_id in PSEUDO_FIELDS else fields.get(field_id)
            try:
                incident[canonical] = convert(value)
            except (ValueError, TypeError, KeyError) as exc:
                raise NormalizationError(f"{key}: field {self._field_label(field_id)} (canonical {canonical}): {exc}") from None
        if incident["updated_at"] is None:
            try:
                incident["updated_at"] = parse_utc(fields.get("updated"))
            except ValueError as exc:
                raise NormalizationError(f"{key}: field updated: {exc}") from None
        incident["number"] = incident["number"] or str(key)
        issue_type = _name(fields.get("issuetype"))
        labels = [str(label) for label in fields.get("labels") or () if isinstance(label, str)]
        flag_field = self.options["is_security"]["field"]
        flag = _flag_value(fields.get(self.ids[flag_field])) if flag_field else None
        incident["is_security"] = self.maps.is_security(flag=flag, container=issue_type, category=incident.get("category"),
                                                        labels=labels)
        type_field = self.options["record_type"]["field"]
        incident["record_type"] = self.maps.record_type(
            value=_scalar_text(fields.get(self.ids[type_field])) if type_field else None, container=issue_type,
            category=incident.get("category"), subcategory=incident.get("subcategory"))
        incident["enrichment_fingerprint"] = self._fingerprint_of(record)
        incident["raw"] = dict(record)
        return incident

    def _field_label(self, field_id: str) -> str:
        name = self.fields.get(field_id, {}).get("name")
        return f"{name!r} ({field_id})" if name and name != field_id else field_id

    def _fingerprint_of(self, record: Mapping[str, Any]) -> str | None:
        if self.property:
            properties = record.get("properties")
            value = properties.get(self.property) if isinstance(properties, Mapping) else None
            found = value.get("fingerprint") if isinstance(value, Mapping) else None
            return str(found) if found else None
        fields = record.get("fields")
        return _newest_marker(_comments(fields.get("comment")) if isinstance(fields, Mapping) else [])

    def _converter(self, canonical: str, field_id: str) -> Callable[[Any], Any]:
        """The conversion of one field's value to a canonical value, chosen once per field."""
        kind = FIELDS[canonical]
        if kind == "state":
            return self._state
        if kind == "severity":
            return lambda value: self.maps.severity(_scalar_text(value))
        if canonical == "timeline":
            return self._timeline
        if canonical in DATETIME_FIELDS:
            return _datetime
        if canonical in BOOL_FIELDS:
            return _boolean
        if canonical in LIST_FIELDS:
            return functools.partial(_list_value, canonical)
        return _text

    def _state(self, status: Any) -> str:
        name = _scalar_text(status)
        try:
            return self.maps.state(name)
        except ValueError as exc:
            category = status.get("statusCategory") if isinstance(status, Mapping) else None
            ckey = str(category.get("key") or "") if isinstance(category, Mapping) else ""
            if ckey in self.status_categories:
                return self.status_categories[ckey]
            raise ValueError(f"{exc}, and its status category {ckey or 'is not given'} is not in status_categories") from None

    def _timeline(self, value: Any) -> list[dict[str, Any]]:
        items = []
        for comment in _comments(value):
            public = comment.get("jsdPublic")
            internal = public is False or bool(comment.get("visibility"))
            author = comment.get("author")
            items.append({"at": _soft_time(comment.get("created")), "author": _name(author) if author else None,
                          "kind": "internal_comment" if internal else "comment", "text": _rich_text(comment.get("body"))})
        return sorted(items, key=lambda i: (i["at"] is None, i["at"] or datetime.min.replace(tzinfo=timezone.utc)))

    # --- writing ---------------------------------------------------------------------------

    def _issue_path(self, issue: str) -> str:
        if not _SAFE_ID.match(issue):
            raise FatalConnectorError(f"not a Jira issue id or key: {issue[:40]!r}")
        return f"{self.api}/issue/{issue}"

    def write_back(self, enrichment: Enrichment) -> WriteResult:
        self._ensure_configured()
        issue = enrichment.external_id
        path = self._issue_path(issue)
        options = self.write_options
        findings: dict[str, Any] | None = None
        if self.property:
            findings = {"fingerprint": enrichment.fingerprint, "fields": dict(enrichment.fields)}
            size = len(json.dumps(findings, separators=(",", ":"), default=str).encode())
            if size > PROPERTY_LIMIT:
                # nothing is written: a half-written enrichment (a note without its findings) would be read as current
                raise FatalConnectorError(f"{issue}: the findings are {size} bytes as JSON, more than the {PROPERTY_LIMIT} bytes "
                                          f"a Jira issue property ({self.property}) holds: not written, and not cut short")
        current = self._json("GET", path, params={"fields": "labels,project", **({"properties": self.property} if self.property else {})})
        if not isinstance(current, Mapping):
            raise InvalidResponseError(f"GET {path}: the body is not an issue")
        if self.property and self._fingerprint_of(current) == enrichment.fingerprint:
            return WriteResult(issue, False, detail=f"the issue carries {enrichment.fingerprint} already")
        fields: Mapping[str, Any] = current["fields"] if isinstance(current.get("fields"), Mapping) else {}
        add, remove = self._label_changes(fields.get("labels") or [], enrichment) if options["labels"] else ([], [])
        values = {self.ids[field]: self._field_value(self.ids[field], enrichment.fields[name])
                  for name, field in options["columns"].items() if name in enrichment.fields}
        note = enrichment.note if options["comment"] and enrichment.note else None
        internal = self._internal(fields.get("project")) if note else False
        if note and self._has_marker(issue, enrichment.fingerprint):
            note = None  # written before an interruption: never twice
        plan = [what for what, needed in (
            (f"add labels {', '.join(add)}", add), (f"remove labels {', '.join(remove)}", remove),
            (f"set {', '.join(sorted(values))}", values), ("add an internal comment" if internal else "add a comment", note),
            (f"set property {self.property}", findings)) if needed]
        if not plan:
            return WriteResult(issue, False, detail="nothing configured to write")
        if options["dry_run"]:
            return WriteResult(issue, False, dry_run=True, detail="would " + "; ".join(plan))
        if add or remove or values:
            body: dict[str, Any] = {}
            if add or remove:
                body["update"] = {"labels": [*({"add": label} for label in add), *({"remove": label} for label in remove)]}
            if values:
                body["fields"] = values
            self._json("PUT", path, json=body)
        if note:
            self._comment(issue, note, internal)
        if findings is not None:
            self._json("PUT", f"{path}/properties/{self.property}", json=findings)
        return WriteResult(issue, True, detail="; ".join(plan))

    def _label_changes(self, labels: Sequence[Any], enrichment: Enrichment) -> tuple[list[str], list[str]]:
        """Labels to add and to remove: GapBridge's own (its prefixes), never one a person set."""
        prefix = self.write_options["label_prefix"]
        controls = str(enrichment.fields.get("controls_2022") or "")
        wanted = {_label(f"{prefix}{c.strip()}") for c in controls.split(",") if c.strip()}
        wanted |= {_label(label) for label in enrichment.labels if str(label).strip()}
        now = {str(label) for label in labels}
        owned = {label for label in now if label.startswith((prefix, "gapbridge-"))}
        return sorted(wanted - now), sorted(owned - wanted)

    def _field_value(self, field_id: str, value: Any) -> Any:
        """An enrichment value in the shape the Jira field takes (by the field's schema)."""
        schema = self.fields.get(field_id, {}).get("schema") or {}
        kind, custom = schema.get("type"), str(schema.get("custom") or "")
        if kind == "number":
            try:
                return float(value) if value not in (None, "") else None
            except (TypeError, ValueError):
                raise FatalConnectorError(f"{self._field_label(field_id)} is a number field; {value!r} is not a number") from None
        if kind == "array":
            return [_label(v) for v in str(value or "").split(",") if v.strip()]
        if kind == "option":
            return {"value": str(value)} if value not in (None, "") else None
        text = "" if value is None else str(value)
        if self.cloud and custom.endswith(":textarea"):
            return text_to_adf(text)  # a paragraph field takes ADF in REST v3
        return text

    def _internal(self, project: Any) -> bool:
        mode = self.write_options["comment_mode"]
        if mode != "auto":
            return bool(mode == "internal")
        return isinstance(project, Mapping) and project.get("projectTypeKey") == "service_desk"

    def _comment(self, issue: str, note: str, internal: bool) -> None:
        if internal:
            # Jira Service Management: public false is an internal note, shown to agents only. The body is wiki
            # markup; noformat keeps the note (its numbered lines, its [brackets]) as written.
            self._json("POST", f"rest/servicedeskapi/request/{issue}/comment",
                       json={"body": "{noformat}\n" + note + "\n{noformat}", "public": False})
            return
        body: dict[str, Any] = {"body": text_to_adf(note) if self.cloud else "{noformat}\n" + note + "\n{noformat}"}
        if self.write_options["visibility"]:
            body["visibility"] = dict(self.write_options["visibility"])
        self._json("POST", f"{self._issue_path(issue)}/comment", json=body)

    def _newest_comments(self, issue: str) -> list[Mapping[str, Any]]:
        body = self._json("GET", f"{self._issue_path(issue)}/comment", params={"orderBy": "-created", "maxResults": "50"})
        if not isinstance(body, Mapping) or not isinstance(body.get("comments"), list):
            raise InvalidResponseError(f"GET {self._issue_path(issue)}/comment: the body has no 'comments' list")
        return [c for c in body["comments"] if isinstance(c, Mapping)]

    def _has_marker(self, issue: str, fingerprint: str) -> bool:
        return any(fingerprint in MARKER.findall(_rich_text(c.get("body"))) for c in self._newest_comments(issue))

    def current_fingerprint(self, external_id: str) -> str | None:
        self._ensure_configured()
        if not self.property:
            return _newest_marker(self._newest_comments(external_id))
        body = self._json("GET", self._issue_path(external_id), params={"fields": "labels", "properties": self.property})
        if not isinstance(body, Mapping):
            raise InvalidResponseError(f"GET {self._issue_path(external_id)}: the body is not an issue")
        return self._fingerprint_of(body)

    def current_fingerprints(self, external_ids: Sequence[str]) -> dict[str, str | None]:
        ids = sorted({i for i in external_ids if _SAFE_ID.match(i)})
        if not self.property or len(external_ids) <= 1 or len(ids) != len(set(external_ids)):
            return super().current_fingerprints(external_ids)
        self._ensure_configured()
        body = self._json("GET", f"{self.api}/search/jql" if self.cloud else f"{self.api}/search",
                          params={"jql": f"issue in ({', '.join(ids)})", "fields": "labels", "properties": self.property,
                                  "maxResults": str(len(ids))})
        issues = body.get("issues") if isinstance(body, Mapping) else None
        if not isinstance(issues, list):
            raise InvalidResponseError("GET search: the body has no 'issues' list")
        found: dict[str, str | None] = {}
        for issue in issues:
            if isinstance(issue, Mapping):
                fp = self._fingerprint_of(issue)
                found[str(issue.get("id"))] = fp
                found[str(issue.get("key"))] = fp
        # an issue not in the answer carries nothing (deleted, or out of the account's reach: the write says which)
        return {external_id: found.get(external_id) for external_id in external_ids}


# --- paging helpers ---------------------------------------------------------------------------


def _offsets() -> OffsetPaginator:
    return OffsetPaginator(0, total=lambda body, _response: body.get("total") if isinstance(body.get("total"), int) else None)


def _updated(issue: Any) -> datetime | None:
    fields = issue.get("fields") if isinstance(issue, Mapping) else None
    try:
        return parse_utc(fields.get("updated")) if isinstance(fields, Mapping) else None
    except ValueError:
        return None


def _latest(issues: Sequence[Any]) -> datetime | None:
    times = [t for t in map(_updated, issues) if t is not None]
    return max(times) if times else None


class _Seen:
    """The (id, updated) of records read in the last minutes before the bookmark: read again, they are dropped.

    It starts from the bookmark's ``recent`` (the previous sync's last minutes) and keeps, after each
    page, the records whose time is within what the next sync re-reads (the overlap, and the minute
    JQL cuts off) of the newest.
    """

    def __init__(self, reread_seconds: int, recent: dict[str, Any]) -> None:
        self.window = timedelta(seconds=reread_seconds)
        self.seen: dict[str, str] = {str(k): str(v) for k, v in recent.items()}
        self.latest: datetime | None = None
        for stamp in self.seen.values():
            try:
                at = parse_utc(stamp)
            except ValueError:
                continue
            if at is not None and (self.latest is None or at > self.latest):
                self.latest = at

    def admit(self, issues: Sequence[Any]) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The records not read before, and the bookmark after this page (None: it stays)."""
        fresh: list[dict[str, Any]] = []
        page_latest: datetime | None = None
        for issue in issues:
            at = _updated(issue)
            issue_id = issue.get("id") if isinstance(issue, Mapping) else None
            if at is None or issue_id in (None, ""):
                fresh.append(issue)  # rejected by normalize, under its id; it cannot move the bookmark
                continue
            stamp = utc_text(at)
            if self.seen.get(str(issue_id)) == stamp:
                continue
            self.seen[str(issue_id)] = stamp
            fresh.append(issue)
            page_latest = at if page_latest is None or at > page_latest else page_latest
        if page_latest is None:
            return fresh, None
        if self.latest is None or page_latest > self.latest:
            self.latest = page_latest
        floor = utc_text(self.latest - self.window)
        kept = sorted(((stamp, key) for key, stamp in self.seen.items() if stamp >= floor), reverse=True)[:_RECENT_MAX]
        self.seen = {key: stamp for stamp, key in kept}
        return fresh, {"updated": utc_text(self.latest), "recent": dict(sorted(self.seen.items()))}


# --- values -----------------------------------------------------------------------------------


def _comments(value: Any) -> list[Mapping[str, Any]]:
    """The comments of a ``comment`` field: ``{"comments": [...]}`` (search, issue) or a bare list."""
    if isinstance(value, Mapping):
        value = value.get("comments")
    return [c for c in value if isinstance(c, Mapping)] if isinstance(value, list) else []


def _newest_marker(comments: Sequence[Mapping[str, Any]]) -> str | None:
    """The fingerprint in the newest comment that carries a GapBridge marker."""
    def created(c: Mapping[str, Any]) -> datetime:
        try:
            return parse_utc(c.get("created")) or datetime.min.replace(tzinfo=timezone.utc)
        except ValueError:
            return datetime.min.replace(tzinfo=timezone.utc)
    for comment in sorted(comments, key=created, reverse=True):
        found = MARKER.findall(_rich_text(comment.get("body")))
        if found:
            return str(found[-1])
    return None


def _rich_text(value: Any) -> str:
    """A text field's content: ADF (Cloud) as plain text, a string (Data Center, wiki markup) as it is."""
    if is_adf(value):
        return adf_to_text(value)
    return "" if value is None else str(value)


def _name(value: Any) -> str | None:
    """What a person reads of a Jira object: a user's display name, an option's value, a status's name."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        for key in ("displayName", "value", "name", "key", "emailAddress", "accountId"):
            if value.get(key) not in (None, ""):
                named = str(value[key])
                child = value.get("child")  # a cascading select: "Parent / Child"
                return f"{named} / {_name(child)}" if isinstance(child, Mapping) and _name(child) else named
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, list):
        names = [n for n in map(_name, value) if n]
        return ", ".join(names) or None
    if is_adf(value):
        return adf_to_text(value).strip() or None
    text = (_name(value) or "").strip()
    return text or None


def _text(value: Any) -> str | None:
    return _scalar_text(value)


def _datetime(value: Any) -> datetime | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"not a timestamp: {value!r}")
    return parse_utc(value)


def _soft_time(value: Any) -> datetime | None:
    """A time inside a list item: unreadable counts as missing (the raw record keeps the text)."""
    try:
        return parse_utc(value)
    except ValueError:
        return None


def _flag_value(value: Any) -> Any:
    """A security flag as MappedValues reads it: a checkbox with its box ticked, a Yes option, a true."""
    if isinstance(value, list):
        return any(_boolean(v) for v in value) if value else False
    if isinstance(value, Mapping):
        return _name(value)
    return value


def _boolean(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, list):
        # a checkbox field: ticked when it holds an option that does not say no
        return any(_boolean(v) is not False for v in value)
    return flag_value(_name(value) or "")


def _list_value(canonical: str, value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if canonical in _JSON_LISTS:
        return _json_items(value)
    if isinstance(value, list):
        refs = []
        for item in value:
            if isinstance(item, Mapping) and ("inwardIssue" in item or "outwardIssue" in item):  # an issue link
                linked = item.get("inwardIssue") or item.get("outwardIssue")
                ref = linked.get("key") if isinstance(linked, Mapping) else None
            else:
                ref = _name(item)
            if ref and str(ref).strip():
                refs.append(str(ref).strip())
        return refs
    text = _rich_text(value) if is_adf(value) else str(_name(value) or "")
    return [part.strip() for part in _REF_SPLIT.split(text) if part.strip()]


def _json_items(value: Any) -> list[dict[str, Any]]:
    """A list of objects kept as JSON in a text field (evidence, notifications, escalations)."""
    if isinstance(value, str) or is_adf(value):
        text = _rich_text(value).strip()
        if not text:
            return []
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON list ({exc.msg} at character {exc.pos})") from None
    return object_items(value)


def _label(text: str) -> str:
    """A Jira label: no spaces."""
    return re.sub(r"\s+", "-", str(text).strip())
