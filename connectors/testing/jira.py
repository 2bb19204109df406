"""A Jira double for the contract suite: the REST API subset the Jira connector uses, served through ``responses``.

``cloud``: Jira Cloud (REST v3, ``/search/jql`` with ``nextPageToken``, an email and API token, ADF
bodies); ``data_center``: Data Center (REST v2, ``/search`` with ``startAt`` and ``total``, a
personal access token, wiki-markup strings). Both answer times in the API user's time zone
(Europe/Berlin) and read JQL time literals in it, to the minute, as Jira does; the issues live in a
service-desk project, so notes go in as internal comments. A JQL it does not understand is a 400:
a double that ignored a condition would hide a connector's bug.

Jira Cloud's token paging may answer a page shorter than asked, even an empty one, with a token
for more (the ``hidden_records`` case); Data Center filters by permission before it pages, so its
pages are never short for hidden issues and the case does not apply.
"""

from __future__ import annotations

import base64
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
    raise ImportError("connectors.testing.jira needs responses: pip install 'gapbridge[test]' (or responses itself)") from exc

from ..jira import JiraConnector
from ..jira.adf import adf_to_text
from .double import RecordSpec, TicketWrites
from .mocked import Answer, MockedToolDouble

ZONE = ZoneInfo("Europe/Berlin")
PROJECT = "CS"
PROPERTY = "gapbridge.findings"
STATUSES = {"new": ("Open", "new"), "triaged": ("Under investigation", "indeterminate"), "in_progress": ("Work in progress", "indeterminate"),
            "on_hold": ("Pending", "indeterminate"), "resolved": ("Resolved", "done"), "closed": ("Closed", "done"),
            "cancelled": ("Canceled", "done")}
# enrichment field -> (custom field id, name, schema type)
FIELD_IDS = {"open_gaps": ("customfield_10200", "GapBridge open gaps", "number"),
             "compliance_status": ("customfield_10201", "GapBridge status", "string")}
_SYSTEM = ("summary", "description", "status", "priority", "assignee", "reporter", "created", "updated", "resolutiondate",
           "resolution", "issuelinks", "comment", "labels", "issuetype", "project")
_SCOPE = re.compile(r'^\(project = CS\)(?: AND updated >= "(\d{4}-\d\d-\d\d \d\d:\d\d)")? ORDER BY updated ASC, key ASC$')
_ISSUES = re.compile(r"^issue in \(([\w\s,-]+)\)$")


def _error(status: int, *messages: str) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json"}, json.dumps({"errorMessages": list(messages), "errors": {}})


class JiraDouble(MockedToolDouble):
    """A Jira site for the contract suite; ``deployment``: ``cloud`` or ``data_center``."""

    rate_limit_message = ("Rate limit exceeded.",)
    rate_limit_headers = {"RateLimit-Reason": "jira-burst-based"}
    unauthorized_message = ("Client must be authenticated to access this resource.",)
    maintenance_page = ("text/plain", "Jira is undergoing maintenance. Please try again in a few minutes.")

    def _error(self, status: int, *messages: str) -> Answer:
        return _error(status, *messages)

    def __init__(self, deployment: str = "cloud") -> None:
        super().__init__()
        if deployment not in ("cloud", "data_center"):
            raise ValueError(f"deployment must be cloud or data_center, not {deployment!r}")
        self.cloud = deployment == "cloud"
        self.name = f"jira-{deployment}"
        self.unsupported = {"token_expired": "Jira's API tokens and personal access tokens do not expire during a sync"}
        if not self.cloud:
            self.unsupported = {**self.unsupported, "hidden_records": "Data Center filters issues by permission before it pages"}
        self.api = "rest/api/3" if self.cloud else "rest/api/2"
        self.url = "https://contract-suite.atlassian.example" if self.cloud else "https://jira.contract-suite.example"
        self.email = "gapbridge@contract-suite.example"
        self.token = ("ATATT-" if self.cloud else "pat-") + secrets.token_urlsafe(16)
        self.issues: dict[str, dict[str, Any]] = {}  # id -> {num, updated, summary, status, created, labels, values, hidden}
        self.comments: list[dict[str, Any]] = []
        self.properties: dict[tuple[str, str], Any] = {}
        self.mock = responses.RequestsMock(assert_all_requests_are_fired=False)
        base = re.escape(self.url)
        api = re.escape(self.api)
        search = f"{base}/{api}/search/jql" if self.cloud else f"{base}/{api}/search"
        issue = base + "/" + api + r"/issue/(\w+)"
        self._route("GET", f"{base}/{api}/myself(\\?.*)?$", self._myself)
        self._route("GET", f"{base}/{api}/field(\\?.*)?$", self._fields)
        self._route("GET", search + r"(\?.*)?$", self._search)
        self._route("GET", issue + r"(\?.*)?$", self._issue)
        self._route("PUT", issue + r"(\?.*)?$", self._edit, "write")
        self._route("GET", issue + r"/comment(\?.*)?$", self._comment_page)
        self._route("POST", issue + r"/comment(\?.*)?$", self._plain_comment, "write")
        self._route("POST", base + r"/rest/servicedeskapi/request/(\w+)/comment$", self._request_comment, "write")
        self._route("PUT", issue + r"/properties/([\w.-]+)$", self._set_property, "write")
        self.mock.start()

    # --- the ToolDouble interface ----------------------------------------------------------------

    def seed(self, specs: Sequence[RecordSpec]) -> list[str]:
        ids = []
        for i, spec in enumerate(specs):
            issue_id = str(30000 + i)
            self.issues[issue_id] = {
                "num": i + 1, "updated": spec.updated_at.astimezone(UTC), "summary": spec.title, "status": STATUSES[spec.state],
                # a date field a form customisation filled with text: the connector must refuse it
                "created": "yesterday" if spec.unnormalizable else spec.updated_at - timedelta(hours=1),
                "labels": [], "values": {}, "hidden": spec.hidden}
            ids.append(issue_id)
        return ids

    def edit(self, external_id: str, title: str) -> None:
        self.issues[external_id].update(summary=title, updated=self._tick())

    def connector(self, page_size: int) -> JiraConnector:
        auth = ({"method": "api_token", "email": self.email, "token": self.token} if self.cloud
                else {"method": "personal_access_token", "token": self.token})
        options = JiraConnector.config_schema().load({
            "type": "jira", "url": self.url, "deployment": "cloud" if self.cloud else "data_center", "auth": auth,
            "jql": f"project = {PROJECT}", "page_size": page_size, "max_attempts": 3, "timeout": {"connect": 0.5, "read": 0.5},
            "write_back": {"fields": {name: label for name, (_, label, _) in FIELD_IDS.items()}}})
        return JiraConnector(f"contract-{self.name}", options, sleep=self.sleep)

    def secrets(self) -> list[str]:
        return [self.token]

    def writes(self, external_id: str) -> TicketWrites:
        issue = self.issues[external_id]
        notes = tuple(c["text"] for c in self.comments if c["issue"] == external_id)
        fields = {name: _shown(issue["values"][fid]) for name, (fid, _, _) in FIELD_IDS.items() if fid in issue["values"]}
        properties = {key: json.dumps(value) for (iid, key), value in self.properties.items() if iid == external_id}
        return TicketWrites(notes=notes, fields=fields, labels=frozenset(issue["labels"]), properties=properties)

    # --- serving ---------------------------------------------------------------------------------

    def _route(self, method: str, pattern: str, handler: Callable[..., tuple[int, dict[str, str], str]],
               target: str | None = None) -> None:
        compiled = re.compile(pattern)

        def callback(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
            found = compiled.match(str(request.url))
            assert found is not None
            page = target or ("page" if handler == self._search and "ORDER BY" in self._args(request).get("jql", "") else None)
            return self._serve(request, page, lambda: handler(request, *[g for g in found.groups() if g and not g.startswith("?")]))

        self.mock.add_callback(method, compiled, callback=callback)

    def _authenticated(self, request: requests.PreparedRequest) -> bool:
        header = str(request.headers.get("Authorization", ""))
        if self.cloud and header.startswith("Basic "):
            return base64.b64decode(header[6:]).decode() == f"{self.email}:{self.token}"
        return not self.cloud and header == f"Bearer {self.token}"

    def _myself(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        return self._json({"accountId": "5b10ac8d82e05b22cc7d4ef5", "displayName": "GapBridge", "timeZone": "Europe/Berlin"})

    def _fields(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        listed = [{"id": f, "name": f.capitalize(), "custom": False, "schema": {"type": "string"}} for f in _SYSTEM]
        listed += [{"id": fid, "name": label, "custom": True, "schema": {"type": kind}} for fid, label, kind in FIELD_IDS.values()]
        return self._json(listed)

    def _search(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        args = self._args(request)
        jql, wanted = args.get("jql", ""), {f for f in args.get("fields", "").split(",") if f}
        props = [p for p in args.get("properties", "").split(",") if p]
        listed = _ISSUES.match(jql)
        if listed:
            keys = {k.strip() for k in listed.group(1).split(",")}
            found = [i for i, issue in self.issues.items() if i in keys or f"{PROJECT}-{issue['num']}" in keys]
            return self._json({"issues": [self._render(i, wanted, props) for i in found], "isLast": True})
        scope = _SCOPE.match(jql)
        if not scope:
            return _error(400, f"Error in the JQL Query: the contract double cannot read {jql!r}.")
        since = datetime.strptime(scope.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=ZONE) if scope.group(1) else None
        matching = sorted((i for i, issue in self.issues.items() if since is None or issue["updated"] >= since),
                          key=lambda i: (self.issues[i]["updated"], self.issues[i]["num"]))
        limit = int(args.get("maxResults", "50"))
        if not self.cloud:
            visible = [i for i in matching if not self.issues[i]["hidden"]]
            start = int(args.get("startAt", "0"))
            window = visible[start:start + limit]
            return self._json({"startAt": start, "maxResults": limit, "total": len(visible),
                               "issues": [self._render(i, wanted, props) for i in window]})
        token = args.get("nextPageToken")
        if token:
            after = tuple(json.loads(base64.urlsafe_b64decode(token)))
            matching = [i for i in matching if (self.issues[i]["updated"].timestamp(), self.issues[i]["num"]) > after]
        window = matching[:limit]  # the page limit first, then what the user may not see leaves it: short or empty pages
        body: dict[str, Any] = {"issues": [self._render(i, wanted, props) for i in window if not self.issues[i]["hidden"]],
                                "isLast": len(matching) <= limit}
        if not body["isLast"]:
            last = self.issues[window[-1]]
            body["nextPageToken"] = base64.urlsafe_b64encode(json.dumps([last["updated"].timestamp(), last["num"]]).encode()).decode()
        return self._json(body)

    def _render(self, issue_id: str, wanted: set[str] | None, properties: Sequence[str]) -> dict[str, Any]:
        issue = self.issues[issue_id]
        status, category = issue["status"]
        comments = [self._comment(c) for c in self.comments if c["issue"] == issue_id]
        fields: dict[str, Any] = {
            "summary": issue["summary"], "status": {"name": status, "statusCategory": {"key": category}},
            "updated": _jira_time(issue["updated"]), "issuetype": {"name": "[System] Incident"}, "labels": list(issue["labels"]),
            "created": issue["created"] if isinstance(issue["created"], str) else _jira_time(issue["created"]),
            "priority": {"name": "Medium"}, "description": None, "resolution": None, "resolutiondate": None, "issuelinks": [],
            "assignee": None, "reporter": None, "project": {"key": PROJECT, "projectTypeKey": "service_desk"},
            "comment": {"comments": comments, "total": len(comments), "startAt": 0, "maxResults": len(comments)},
            **issue["values"]}
        out: dict[str, Any] = {"id": issue_id, "key": f"{PROJECT}-{issue['num']}",
                               "fields": {k: v for k, v in fields.items() if wanted is None or k in wanted}}
        if properties:
            out["properties"] = {p: self.properties[(issue_id, p)] for p in properties if (issue_id, p) in self.properties}
        return out

    def _comment(self, c: dict[str, Any]) -> dict[str, Any]:
        body: Any = c["body"]
        return {"id": c["id"], "author": {"displayName": "GapBridge"}, "created": _jira_time(c["created"]), "body": body,
                "jsdPublic": c["public"]}

    def _found(self, issue_id: str) -> dict[str, Any] | None:
        issue = self.issues.get(issue_id)
        return None if issue is None or issue["hidden"] else issue

    def _issue(self, request: requests.PreparedRequest, issue_id: str) -> tuple[int, dict[str, str], str]:
        if self._found(issue_id) is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        args = self._args(request)
        wanted = {f for f in args.get("fields", "").split(",") if f} or None
        return self._json(self._render(issue_id, wanted, [p for p in args.get("properties", "").split(",") if p]))

    def _edit(self, request: requests.PreparedRequest, issue_id: str) -> tuple[int, dict[str, str], str]:
        issue = self._found(issue_id)
        if issue is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        body = json.loads(request.body or b"{}")
        known = {fid for fid, _, _ in FIELD_IDS.values()}
        unknown = [f for f in body.get("fields") or {} if f not in known]
        if unknown or set(body.get("update") or {}) - {"labels"}:
            return _error(400, f"Field '{(unknown or list(body['update']))[0]}' cannot be set.")
        for verb in (body.get("update") or {}).get("labels") or []:
            if "add" in verb and verb["add"] not in issue["labels"]:
                issue["labels"].append(verb["add"])
            if "remove" in verb and verb["remove"] in issue["labels"]:
                issue["labels"].remove(verb["remove"])
        issue["values"].update(body.get("fields") or {})
        issue["updated"] = self._tick()
        return 204, {}, ""

    def _comment_page(self, request: requests.PreparedRequest, issue_id: str) -> tuple[int, dict[str, str], str]:
        if self._found(issue_id) is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        mine = [self._comment(c) for c in self.comments if c["issue"] == issue_id]
        if self._args(request).get("orderBy") == "-created":
            mine.reverse()
        return self._json({"comments": mine, "total": len(mine), "startAt": 0, "maxResults": 50})

    def _add(self, issue_id: str, text: str, body: Any, public: bool) -> tuple[int, dict[str, str], str]:
        issue = self._found(issue_id)
        if issue is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        stamp = self._tick()
        comment = {"id": str(len(self.comments) + 1), "issue": issue_id, "text": text, "body": body, "public": public, "created": stamp}
        self.comments.append(comment)
        issue["updated"] = stamp  # a comment moves the issue's updated
        return 201, {"Content-Type": "application/json"}, json.dumps(self._comment(comment))

    def _plain_comment(self, request: requests.PreparedRequest, issue_id: str) -> tuple[int, dict[str, str], str]:
        body = json.loads(request.body or b"{}").get("body")
        text = adf_to_text(body) if isinstance(body, dict) else _unwrap(str(body or ""))
        return self._add(issue_id, text, body, public="visibility" not in json.loads(request.body or b"{}"))

    def _request_comment(self, request: requests.PreparedRequest, issue_id: str) -> tuple[int, dict[str, str], str]:
        sent = json.loads(request.body or b"{}")
        text = _unwrap(str(sent.get("body") or ""))
        # Cloud answers the comment as ADF, Data Center as the wiki markup it was given; a noformat block is a code block
        body: Any = ({"type": "doc", "version": 1, "content": [{"type": "codeBlock", "content": [{"type": "text", "text": text}]}]}
                     if self.cloud else sent.get("body"))
        return self._add(issue_id, text, body, public=bool(sent.get("public", True)))

    def _set_property(self, request: requests.PreparedRequest, issue_id: str, key: str) -> tuple[int, dict[str, str], str]:
        if self._found(issue_id) is None:
            return _error(404, "Issue does not exist or you do not have permission to see it.")
        if len(request.body or b"") > 32768:
            return _error(400, "The property value is too long.")
        existed = (issue_id, key) in self.properties
        self.properties[(issue_id, key)] = json.loads(request.body or b"null")
        return (200 if existed else 201), {}, ""

    def _tick(self) -> datetime:
        """The time of a change now: a second after the latest change, so it sorts after every issue."""
        latest = max((i["updated"] for i in self.issues.values()), default=datetime(2024, 1, 1, tzinfo=UTC))
        return latest + timedelta(seconds=1)

    @staticmethod
    def _args(request: requests.PreparedRequest) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query, keep_blank_values=True).items()}

    @staticmethod
    def _json(body: Any) -> tuple[int, dict[str, str], str]:
        return 200, {"Content-Type": "application/json"}, json.dumps(body)


def _jira_time(moment: datetime) -> str:
    local = moment.astimezone(ZONE)
    return f"{local:%Y-%m-%dT%H:%M:%S}.{local.microsecond // 1000:03d}{local:%z}"


def _unwrap(text: str) -> str:
    """The note inside a ``{noformat}`` block, as the agent reads it."""
    found = re.fullmatch(r"\{noformat\}\n?(.*?)\n?\{noformat\}", text.strip(), re.DOTALL)
    return found.group(1) if found else text


def _shown(value: Any) -> str:
    """A field value as Jira shows it: a whole number without its ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)
