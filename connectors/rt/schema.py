"""The ``options`` of a Request Tracker 5 connector, validated when the configuration loads."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from ..base import ENRICHMENT_FIELDS, MapDefaults, MappedOptionsSchema, ServiceUrl
from ..fieldmap import DEFAULT_WEAKNESS_CATEGORIES
from ..options import TimeoutSchema, require_for_method

# RT caps per_page at 100 (REST2 answers 100 for anything above)
MAX_PER_PAGE = 100

# the ticket fields REST2 returns by these names; users and queues come as {"id": name}
CORE_FIELDS = frozenset({
    "id", "Subject", "Status", "Queue", "Type", "Owner", "Creator", "LastUpdatedBy", "Requestor", "Cc", "AdminCc",
    "Created", "Starts", "Started", "Due", "Resolved", "Told", "LastUpdated", "Priority", "InitialPriority", "FinalPriority",
    "TimeEstimated", "TimeWorked", "TimeLeft",
})
# a custom field by name, as TicketSQL writes it: CF.{Name with spaces} or CF.Name
CUSTOM_FIELD = re.compile(r"^CF\.(?:\{(?P<braced>[^{}]+)\}|(?P<bare>[^\s{}.]+))$")


def custom_field_name(field: str) -> str | None:
    """The custom field a field-map value names (``CF.{Incident Type}`` -> ``Incident Type``); None for a core field."""
    found = CUSTOM_FIELD.match(field)
    return None if found is None else (found.group("braced") or found.group("bare")).strip()


def _field_name(value: str) -> None:
    if value not in CORE_FIELDS and custom_field_name(value) is None:
        raise ValidationError(f"not an RT ticket field: {value!r} (a core field such as Subject, Status, Owner, Requestor, "
                              "Created, Resolved, or a custom field as CF.{Name})")


# canonical field -> RT field. RT has no severity, category or timestamps of the incident process of its own:
# an organisation keeps them in custom fields and maps them here (see config.example.yaml).
DEFAULT_FIELD_MAP: dict[str, str] = {
    "number": "id",
    "title": "Subject",
    "state": "Status",
    "assignment_group": "Queue",
    "assignee": "Owner",
    "reporter": "Requestor",
    "opened_at": "Created",
    "acknowledged_at": "Started",  # set when a ticket first leaves "new"
    "resolved_at": "Resolved",
    "closed_at": "Resolved",  # RT's resolved is its closed: the ticket leaves the active statuses
    "updated_at": "LastUpdated",
}
# RT's default lifecycle; an organisation with its own lifecycle adds its statuses
DEFAULT_STATE_MAP = {"new": "new", "open": "in_progress", "stalled": "on_hold", "resolved": "closed",
                     "rejected": "cancelled", "deleted": "cancelled"}
# RT 5's named priorities (PriorityAsString) and the usual values of a Severity custom field
DEFAULT_PRIORITY_MAP = {"critical": "critical", "high": "high", "medium": "medium", "low": "low", "1": "critical",
                        "2": "high", "3": "medium", "4": "low", "5": "low"}


class AuthSchema(Schema):
    class Meta:
        unknown = RAISE

    method = fields.String(required=True, validate=validate.OneOf(["token", "basic"]))
    token = fields.String(load_default=None)
    # with basic auth the login; with a token, the RT user it belongs to (optional: its time zone is read from it)
    username = fields.String(load_default=None)
    password = fields.String(load_default=None)

    @validates_schema
    def _needs(self, data: dict[str, Any], **_: Any) -> None:
        require_for_method(data, {"token": ("token",), "basic": ("username", "password")})


class TimelineSchema(Schema):
    class Meta:
        unknown = RAISE

    # the ticket's history (one request per 100 transactions of each ticket synced) as the canonical timeline
    enabled = fields.Boolean(load_default=True)
    # the text of comments and correspondence (one more request per ticket), cut to max_chars each
    text = fields.Boolean(load_default=True)
    max_chars = fields.Integer(load_default=4000, validate=validate.Range(min=100, max=100_000))


class WriteBackSchema(Schema):
    class Meta:
        unknown = RAISE

    # the note as a private comment (never correspondence: the requestor is not mailed)
    comment = fields.Boolean(load_default=True)
    # a ticket custom field holding the fingerprint; without it the marker of the newest GapBridge comment tells
    fingerprint_field = fields.String(load_default=None)
    # enrichment field -> ticket custom field name; "fields" in the file
    custom_fields = fields.Dict(keys=fields.String(validate=validate.OneOf(ENRICHMENT_FIELDS)), values=fields.String(),
                                load_default=dict, data_key="fields")
    dry_run = fields.Boolean(load_default=False)
    concurrency = fields.Integer(load_default=2, validate=validate.Range(min=1, max=16))
    max_per_second = fields.Float(load_default=None, allow_none=True,
                                  validate=validate.Range(min=0, min_inclusive=False, max=1000,
                                                          error="must be above 0 and at most 1000 (leave it out for no cap)"))


class TimezoneField(fields.String):
    """``auto`` or an IANA zone name: the zone RT reads the dates of TicketSQL in (the user's, else RT's $Timezone)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = str(super()._deserialize(value, attr, data, **kwargs)).strip()
        if text.lower() == "auto":
            return "auto"
        try:
            ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValidationError(f"not a time zone name: {text!r} (auto, or an IANA name such as Europe/Berlin or UTC)") from None
        return text


class RTOptionsSchema(MappedOptionsSchema):
    map_defaults = MapDefaults(field_map=DEFAULT_FIELD_MAP, state_map=DEFAULT_STATE_MAP, priority_map=DEFAULT_PRIORITY_MAP,
                               container="queues", security_containers=["Security Incidents", "Incidents"],
                               record_type_categories=DEFAULT_WEAKNESS_CATEGORIES, field_name=_field_name)

    type = fields.String(required=True)
    url = ServiceUrl(required=True)  # RT's web address, without /REST/2.0
    auth = fields.Nested(AuthSchema, required=True)
    # TicketSQL selecting the tickets to sync; GapBridge adds the LastUpdated condition and the ordering
    query = fields.String(load_default="")
    per_page = fields.Integer(load_default=MAX_PER_PAGE, validate=validate.Range(
        min=1, max=MAX_PER_PAGE, error=f"must be between 1 and {MAX_PER_PAGE} (RT answers at most {MAX_PER_PAGE} a page)"))
    timezone = TimezoneField(load_default="auto")
    timeline = fields.Nested(TimelineSchema, load_default=lambda: TimelineSchema().load({}))
    timeout = fields.Nested(TimeoutSchema, load_default=lambda: TimeoutSchema().load({}))
    max_attempts = fields.Integer(load_default=5, validate=validate.Range(min=1, max=20))
    # TicketSQL compares LastUpdated to the second: a ticket changed in the bookmark's own second, committed after we
    # read, sorts before it; re-reading this much before the bookmark catches it (stored again only if it changed)
    bookmark_overlap_seconds = fields.Integer(load_default=60, validate=validate.Range(min=0, max=86400))
    write_back = fields.Nested(WriteBackSchema, load_default=lambda: WriteBackSchema().load({}))

    @validates("query")
    def _query(self, value: str, **_: Any) -> None:
        if re.search(r"\bORDER\s+BY\b|\bLIMIT\b", value, re.IGNORECASE):
            raise ValidationError("the scope query is TicketSQL conditions only: GapBridge adds its own ordering and paging")
