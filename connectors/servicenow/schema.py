"""The ``options`` of a ServiceNow connector, validated when the configuration loads."""

from __future__ import annotations

import re
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates, validates_schema

from ..base import ServiceUrl
from ..canonical import FIELDS, RECORD_TYPES, SEVERITIES, STATES

# canonical field -> column, for an instance that follows the naming in config.example.yaml.
# Every entry can be changed or switched off (set to null) in the connector's field_map.
DEFAULT_FIELD_MAP: dict[str, str] = {
    "number": "number",
    "title": "short_description",
    "description": "description",
    "category": "category",
    "subcategory": "subcategory",
    "state": "state",
    "severity": "priority",
    "business_unit": "company",
    "assignment_group": "assignment_group",
    "assignee": "assigned_to",
    "reporter": "caller_id",
    "reported_via": "contact_type",
    "affected_ci": "cmdb_ci",
    "opened_at": "opened_at",
    "resolved_at": "resolved_at",
    "closed_at": "closed_at",
    "updated_at": "sys_updated_on",
    "close_code": "close_code",
    "resolution_notes": "close_notes",
    "problem_ref": "problem_id",
    "major_incident": "u_major_incident",
    "major_declared_at": "u_major_declared_at",
    "assessed_at": "u_assessed_at",
    "acknowledged_at": "u_acknowledged_at",
    "contained_at": "u_contained_at",
    "root_cause": "u_root_cause",
    "lessons_learned": "u_lessons_learned",
    "maintenance_ref": "u_maintenance_ref",
    "capacity_ref": "u_capacity_ref",
    "related_refs": "u_related_refs",
    "weakness_refs": "u_weakness_refs",
    "vulnerability_refs": "u_vulnerability_refs",
    "log_refs": "u_log_refs",
    "evidence": "u_evidence",
    "notifications": "u_notifications",
    "escalations": "u_escalations",
    "personal_data_breach": "u_personal_data_breach",
    "legal_hold": "u_legal_hold",
}
# identity and bookkeeping fields the connector fills itself
NOT_MAPPABLE = frozenset({"source", "external_id", "url", "is_security", "record_type", "enrichment_fingerprint"})

DEFAULT_STATE_MAPS: dict[str, dict[str, str]] = {
    "incident": {"1": "new", "2": "in_progress", "3": "on_hold", "6": "resolved", "7": "closed", "8": "cancelled"},
    # Security Incident Response: Draft, Analysis, Contain, Eradicate, Recover, Review, Closed, Cancelled
    "sn_si_incident": {"10": "new", "16": "triaged", "18": "in_progress", "19": "in_progress", "20": "in_progress",
                       "100": "resolved", "3": "closed", "7": "cancelled"},
}
DEFAULT_PRIORITY_MAP = {"1": "critical", "2": "high", "3": "medium", "4": "low", "5": "low"}
DEFAULT_SECURITY_CATEGORIES = ["security", "malware", "phishing", "data_breach", "unauthorized_access", "denial_of_service"]
# a reported weakness is filed under these categories (or subcategories) on the incident form
DEFAULT_WEAKNESS_CATEGORIES = {"vulnerability": "weakness", "weakness": "weakness"}

# what the write-back may put into the ticket's own columns (see plugin.services.enrich and .outbox)
ENRICHMENT_FIELDS = ("open_gaps", "gap_checks", "controls_2022", "controls_2013", "compliance_status", "worst_severity",
                     "improvements", "improvement_checks", "pending_clocks", "next_due_at", "accepted_risks", "accepted_checks", "ruleset")

_COLUMN = validate.Regexp(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$", error="not a ServiceNow column name: {input}")
# keyset pagination appends its own ^NQ and ORDERBY: a scope that has them would change meaning
_FORBIDDEN_IN_QUERY = re.compile(r"\^NQ|ORDERBY|\^EQ|\^GROUPBY", re.IGNORECASE)


class DisplayValueField(fields.Field):
    """``false`` (codes and sys_ids only) or ``all`` (also display names). YAML may say false as a bool."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = str(value).lower()
        if text not in ("false", "all"):
            raise ValidationError("must be false or all (true would replace codes and UTC times with user-formatted labels)")
        return text


class AuthSchema(Schema):
    class Meta:
        unknown = RAISE

    method = fields.String(required=True, validate=validate.OneOf(["basic", "oauth_password", "oauth_client_credentials"]))
    username = fields.String(load_default=None)
    password = fields.String(load_default=None)
    client_id = fields.String(load_default=None)
    client_secret = fields.String(load_default=None)

    @validates_schema
    def _needs(self, data: dict[str, Any], **_: Any) -> None:
        need = {"basic": ("username", "password"), "oauth_password": ("client_id", "client_secret", "username", "password"),
                "oauth_client_credentials": ("client_id", "client_secret")}[data["method"]]
        missing = {k: [f"required for method {data['method']}"] for k in need if not data.get(k)}
        if missing:
            raise ValidationError(missing)


class TimeoutSchema(Schema):
    class Meta:
        unknown = RAISE

    connect = fields.Float(load_default=5.0, validate=validate.Range(min=0.1, max=300))
    read = fields.Float(load_default=60.0, validate=validate.Range(min=0.1, max=3600))


class IsSecuritySchema(Schema):
    class Meta:
        unknown = RAISE

    field = fields.String(load_default=None, validate=_COLUMN)
    categories = fields.List(fields.String(), load_default=lambda: list(DEFAULT_SECURITY_CATEGORIES))
    tables = fields.List(fields.String(), load_default=lambda: ["sn_si_incident"])


class RecordTypeSchema(Schema):
    """What each record is (event, incident, weakness, request): the first rule that matches decides.

    ``field``: a column whose value names the record type, mapped through ``values`` (or already
    canonical); ``tables``: by the record's table (sys_class_name); ``categories``: by category,
    then subcategory; else ``default``.
    """

    class Meta:
        unknown = RAISE

    field = fields.String(load_default=None, validate=_COLUMN)
    values = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(RECORD_TYPES)), load_default=dict)
    tables = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(RECORD_TYPES)), load_default=dict)
    categories = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(RECORD_TYPES)),
                             load_default=lambda: dict(DEFAULT_WEAKNESS_CATEGORIES))
    default = fields.String(load_default="incident", validate=validate.OneOf(RECORD_TYPES))


class WriteBackSchema(Schema):
    class Meta:
        unknown = RAISE

    work_note = fields.Boolean(load_default=True)
    fingerprint_field = fields.String(load_default=None, validate=_COLUMN)
    # enrichment field -> column; "fields" in the file
    columns = fields.Dict(keys=fields.String(validate=validate.OneOf(ENRICHMENT_FIELDS)), values=fields.String(validate=_COLUMN),
                          load_default=dict, data_key="fields")
    dry_run = fields.Boolean(load_default=False)
    # notes written at once to this instance (each by its own thread), and at most this many a second (none: no cap)
    concurrency = fields.Integer(load_default=4, validate=validate.Range(min=1, max=32))
    max_per_second = fields.Float(load_default=None, allow_none=True,
                                  validate=validate.Range(min=0, min_inclusive=False, max=1000,
                                                          error="must be above 0 and at most 1000 (leave it out for no cap)"))


class ServiceNowOptionsSchema(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True)
    instance_url = ServiceUrl(required=True)
    auth = fields.Nested(AuthSchema, required=True)
    table = fields.String(load_default="incident", validate=validate.OneOf(["incident", "sn_si_incident"]))
    query = fields.String(load_default="")
    page_size = fields.Integer(load_default=200, validate=validate.Range(min=1, max=10000))
    display_value = DisplayValueField(load_default="all")
    timeout = fields.Nested(TimeoutSchema, load_default=lambda: TimeoutSchema().load({}))
    max_attempts = fields.Integer(load_default=5, validate=validate.Range(min=1, max=20))
    # a record committed in the same second as the bookmark but after we read can sort before it;
    # re-reading this much before the bookmark catches it (stored again only if it changed)
    bookmark_overlap_seconds = fields.Integer(load_default=60, validate=validate.Range(min=0, max=86400))
    is_security = fields.Nested(IsSecuritySchema, load_default=lambda: IsSecuritySchema().load({}))
    record_type = fields.Nested(RecordTypeSchema, load_default=lambda: RecordTypeSchema().load({}))
    field_map = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True, validate=_COLUMN), load_default=dict)
    state_map = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(STATES)), load_default=None)
    priority_map = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.OneOf(SEVERITIES)), load_default=None)
    write_back = fields.Nested(WriteBackSchema, load_default=lambda: WriteBackSchema().load({}))

    @validates("query")
    def _query(self, value: str, **_: Any) -> None:
        if _FORBIDDEN_IN_QUERY.search(value):
            raise ValidationError("the scope query may not contain ^NQ, ^EQ, GROUPBY or ORDERBY: GapBridge adds its own ordering and paging")

    @validates("field_map")
    def _field_map(self, value: dict[str, Any], **_: Any) -> None:
        bad = {k: [f"not a canonical incident field (one of: {', '.join(sorted(set(FIELDS) - NOT_MAPPABLE))})"]
               for k in value if k not in FIELDS or k in NOT_MAPPABLE}
        if bad:
            raise ValidationError(bad)

    @post_load
    def _effective(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        mapped = {**DEFAULT_FIELD_MAP, **data["field_map"]}
        data["field_map"] = {k: v for k, v in mapped.items() if v}
        if data["state_map"] is None:
            data["state_map"] = dict(DEFAULT_STATE_MAPS[data["table"]])
        if data["priority_map"] is None:
            data["priority_map"] = dict(DEFAULT_PRIORITY_MAP)
        return data
