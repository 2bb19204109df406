"""The ``options`` of a ServiceNow connector, validated when the configuration loads."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates, validates_schema

from ..base import ENRICHMENT_FIELDS, MapDefaults, MappedOptionsSchema, ServiceUrl
from ..fieldmap import DEFAULT_WEAKNESS_CATEGORIES
from ..options import TimeoutSchema, require_for_method

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

DEFAULT_STATE_MAPS: dict[str, dict[str, str]] = {
    "incident": {"1": "new", "2": "in_progress", "3": "on_hold", "6": "resolved", "7": "closed", "8": "cancelled"},
    # Security Incident Response: Draft, Analysis, Contain, Eradicate, Recover, Review, Closed, Cancelled
    "sn_si_incident": {"10": "new", "16": "triaged", "18": "in_progress", "19": "in_progress", "20": "in_progress",
                       "100": "resolved", "3": "closed", "7": "cancelled"},
}
DEFAULT_PRIORITY_MAP = {"1": "critical", "2": "high", "3": "medium", "4": "low", "5": "low"}


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
        require_for_method(data, {"basic": ("username", "password"), "oauth_password": ("client_id", "client_secret", "username", "password"),
                "oauth_client_credentials": ("client_id", "client_secret")})


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


class ServiceNowOptionsSchema(MappedOptionsSchema):
    map_defaults = MapDefaults(field_map=DEFAULT_FIELD_MAP, state_map=DEFAULT_STATE_MAPS["incident"], priority_map=DEFAULT_PRIORITY_MAP,
                               container="tables", security_containers=["sn_si_incident"],
                               record_type_categories=DEFAULT_WEAKNESS_CATEGORIES, field_name=_COLUMN)

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
    write_back = fields.Nested(WriteBackSchema, load_default=lambda: WriteBackSchema().load({}))

    def default_state_map(self, data: Mapping[str, Any]) -> Mapping[str, str]:
        return DEFAULT_STATE_MAPS[data["table"]]

    @validates("query")
    def _query(self, value: str, **_: Any) -> None:
        if _FORBIDDEN_IN_QUERY.search(value):
            raise ValidationError("the scope query may not contain ^NQ, ^EQ, GROUPBY or ORDERBY: GapBridge adds its own ordering and paging")
