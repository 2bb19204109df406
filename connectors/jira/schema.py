"""The ``options`` of a Jira connector (Cloud or Data Center), validated when the configuration loads.

Fields are named as Jira shows them: a system field by its id (``summary``, ``priority``) and a
custom field by its name (``Root cause``) or its id (``customfield_10042``). Names are resolved
to ids through ``/rest/api/<v>/field`` when a sync starts (``JiraConnector.check_configuration``).
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from ..base import ENRICHMENT_FIELDS, MapDefaults, MappedOptionsSchema, ServiceUrl
from ..canonical import STATES
from ..fieldmap import DEFAULT_WEAKNESS_CATEGORIES
from ..options import TimeoutSchema, require_for_method

# canonical field -> Jira system field (or the issue's own ``key``). Custom fields differ between sites: map them
# by name in field_map. Every entry can be changed or switched off (null).
DEFAULT_FIELD_MAP: dict[str, str] = {
    "number": "key",
    "title": "summary",
    "description": "description",
    "state": "status",
    "severity": "priority",
    "assignee": "assignee",
    "reporter": "reporter",
    "opened_at": "created",
    "updated_at": "updated",
    "resolved_at": "resolutiondate",
    "close_code": "resolution",
    "related_refs": "issuelinks",
    "timeline": "comment",
}

# Jira Service Management's default workflows (IT service management project), by status name
DEFAULT_STATE_MAP: dict[str, str] = {
    "Open": "new", "To Do": "new", "Waiting for support": "new", "Waiting for triage": "new",
    "Under investigation": "triaged", "Assessment": "triaged", "Planning": "triaged",
    "Work in progress": "in_progress", "In Progress": "in_progress", "Escalated": "in_progress",
    "Implementing": "in_progress", "Under review": "in_progress",
    "Pending": "on_hold", "Waiting for customer": "on_hold", "Waiting for approval": "on_hold", "Awaiting implementation": "on_hold",
    "Resolved": "resolved", "Completed": "resolved",
    "Closed": "closed", "Done": "closed",
    "Canceled": "cancelled", "Cancelled": "cancelled", "Declined": "cancelled", "Rejected": "cancelled",
}
# a status that is not in state_map falls back on its category (every Jira status has one of these three)
DEFAULT_STATUS_CATEGORIES: dict[str, str] = {"new": "new", "indeterminate": "in_progress", "done": "closed"}
DEFAULT_PRIORITY_MAP: dict[str, str] = {
    "Highest": "critical", "Critical": "critical", "Blocker": "critical",
    "High": "high", "Major": "high",
    "Medium": "medium",
    "Low": "low", "Minor": "low", "Lowest": "low", "Trivial": "low",
}
# issue type -> record type. Problems and changes are no incidents; "request" keeps the incident checks off them.
DEFAULT_ISSUE_TYPES: dict[str, str] = {
    "[System] Incident": "incident", "Incident": "incident", "Security incident": "incident",
    "[System] Service request": "request", "[System] Service request with approvals": "request", "Service request": "request",
    "[System] Problem": "request", "Problem": "request", "[System] Change": "request", "Change": "request",
    "Vulnerability": "weakness", "Security weakness": "weakness",
    "Event": "event", "Security event": "event",
}
# a reported weakness is no security incident (its record type says what it is)
DEFAULT_SECURITY_ISSUE_TYPES = ("Security incident", "Security event")


_ORDER_BY = re.compile(r"\border\s+by\b", re.IGNORECASE)
_PROPERTY_KEY = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$",
                                error="an issue property key: letters, digits, '.', '_' and '-', at most 255 characters")
_LABEL = validate.Regexp(r"^\S{1,200}$", error="a label prefix has no spaces")
_FIELD = validate.Length(min=1, max=255, error="a Jira field id or name")


class AuthSchema(Schema):
    """``api_token`` (Cloud: the account's email and an API token), ``personal_access_token`` (Data Center, bearer),
    ``basic`` (Data Center: user name and password)."""

    class Meta:
        unknown = RAISE

    method = fields.String(required=True, validate=validate.OneOf(["api_token", "personal_access_token", "basic"]))
    email = fields.String(load_default=None)
    token = fields.String(load_default=None)
    username = fields.String(load_default=None)
    password = fields.String(load_default=None)

    @validates_schema
    def _needs(self, data: dict[str, Any], **_: Any) -> None:
        require_for_method(data, {"api_token": ("email", "token"), "personal_access_token": ("token",), "basic": ("username", "password")})


class VisibilitySchema(Schema):
    """Who may read a plain comment: a project role or a group (Jira's comment ``visibility``)."""

    class Meta:
        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(["role", "group"]))
    value = fields.String(required=True, validate=validate.Length(min=1, max=255))


class WriteBackSchema(Schema):
    class Meta:
        unknown = RAISE

    comment = fields.Boolean(load_default=True)
    # auto: an internal comment (never shown to the customer) in a service-desk project, a plain comment elsewhere
    comment_mode = fields.String(load_default="auto", validate=validate.OneOf(["auto", "internal", "plain"]))
    visibility = fields.Nested(VisibilitySchema, load_default=None, allow_none=True)
    labels = fields.Boolean(load_default=True)
    label_prefix = fields.String(load_default="iso27001-gap-", validate=_LABEL)
    # the issue entity property holding the structured findings; null: none (the comment's marker tells what is on the ticket)
    property = fields.String(load_default="gapbridge.findings", allow_none=True, validate=_PROPERTY_KEY)
    # enrichment field -> Jira field (name or id), written with the labels
    columns = fields.Dict(keys=fields.String(validate=validate.OneOf(ENRICHMENT_FIELDS)), values=fields.String(validate=_FIELD),
                          load_default=dict, data_key="fields")
    dry_run = fields.Boolean(load_default=False)
    concurrency = fields.Integer(load_default=4, validate=validate.Range(min=1, max=32))
    max_per_second = fields.Float(load_default=None, allow_none=True,
                                  validate=validate.Range(min=0, min_inclusive=False, max=1000,
                                                          error="must be above 0 and at most 1000 (leave it out for no cap)"))

    @validates_schema
    def _visibility(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("visibility") and data.get("comment_mode") == "internal":
            raise ValidationError({"visibility": ["only for plain comments: an internal comment is visible to agents only already"]})


class TimezoneField(fields.String):
    """An IANA time zone name (``Europe/Berlin``): overrides the API user's ``timeZone``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = str(super()._deserialize(value, attr, data, **kwargs)).strip()
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"not a time zone this system knows: {text!r} (an IANA name such as Europe/Berlin)") from None
        return text


class JiraOptionsSchema(MappedOptionsSchema):
    map_defaults = MapDefaults(field_map=DEFAULT_FIELD_MAP, state_map=DEFAULT_STATE_MAP, priority_map=DEFAULT_PRIORITY_MAP,
                               container="issue_types", security_containers=DEFAULT_SECURITY_ISSUE_TYPES,
                               record_type_categories=DEFAULT_WEAKNESS_CATEGORIES, record_type_containers=DEFAULT_ISSUE_TYPES,
                               field_name=_FIELD)

    type = fields.String(required=True)
    url = ServiceUrl(required=True)
    deployment = fields.String(load_default="cloud", validate=validate.OneOf(["cloud", "data_center"]))
    auth = fields.Nested(AuthSchema, required=True)
    # the scope: the issues GapBridge reads, e.g. project = SEC AND issuetype in ("[System] Incident", Problem)
    jql = fields.String(required=True, validate=validate.Length(min=1, max=4000))
    page_size = fields.Integer(load_default=100, validate=validate.Range(min=1, max=5000))
    timezone = TimezoneField(load_default=None, allow_none=True)
    status_categories = fields.Dict(keys=fields.String(validate=validate.OneOf(["new", "indeterminate", "done"])),
                                    values=fields.String(validate=validate.OneOf(STATES)),
                                    load_default=lambda: dict(DEFAULT_STATUS_CATEGORIES))
    timeout = fields.Nested(TimeoutSchema, load_default=lambda: TimeoutSchema().load({}))
    max_attempts = fields.Integer(load_default=5, validate=validate.Range(min=1, max=20))
    # JQL compares times to the minute: re-read this much before the bookmark (records seen before are dropped)
    bookmark_overlap_seconds = fields.Integer(load_default=120, validate=validate.Range(min=0, max=86400))
    write_back = fields.Nested(WriteBackSchema, load_default=lambda: WriteBackSchema().load({}))

    @validates("jql")
    def _jql(self, value: str, **_: Any) -> None:
        if not value.strip():
            raise ValidationError("the scope may not be empty: Jira Cloud refuses an unbounded search (e.g. project = SEC)")
        if _ORDER_BY.search(value):
            raise ValidationError("the scope may not contain ORDER BY: GapBridge orders by updated and key itself")

    @validates_schema
    def _auth_fits(self, data: dict[str, Any], **_: Any) -> None:
        method = (data.get("auth") or {}).get("method")
        if data.get("deployment", "cloud") == "cloud" and method not in (None, "api_token"):
            raise ValidationError({"auth": {"method": [f"Jira Cloud takes api_token (an email and an API token), not {method}"]}})
        if data.get("deployment") == "data_center" and method == "api_token":
            raise ValidationError({"auth": {"method": ["Jira Data Center takes personal_access_token or basic, not api_token"]}})
