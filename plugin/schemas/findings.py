"""Findings, incidents and what was written back onto a ticket."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from connectors.redact import redact_urls

from ..queries.gaps import SORTS, STATUSES
from ..rules.model import GAP, KINDS, SEVERITIES
from .common import PageArgs, ScopeArgs, UtcDateTime, text


class FindingSchema(Schema):
    check_id = fields.String(required=True)
    status = fields.String(required=True, metadata={"description": "pass, fail or pending (not applicable is no finding)"})
    kind = fields.String(required=True, metadata={"description": "gap (a nonconformity) or improvement"})
    severity = fields.String(required=True)
    subprocess = fields.String(required=True)
    relation = fields.String(required=True)
    controls_2022 = fields.List(fields.String(), required=True)
    controls_2013 = fields.List(fields.String(), required=True)
    details = fields.List(fields.String(), required=True, metadata={"description": "what the check found missing"})
    ruleset_hash = fields.String(required=True)
    evaluated_at = fields.AwareDateTime(required=True)
    first_failed_at = fields.AwareDateTime(allow_none=True)
    resolved_at = fields.AwareDateTime(allow_none=True)
    due_at = fields.AwareDateTime(allow_none=True, metadata={"description": "when a clock falls (or fell) due"})


class LinkField(fields.String):
    """A URL as shown: never with user:password@ or a credential parameter, whatever an older row holds."""

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else redact_urls(str(value))


class TicketSchema(Schema):
    """What identifies an incident and links to its ticket."""

    id = fields.Integer(required=True)
    source = fields.String(required=True)
    external_id = fields.String(required=True)
    number = fields.String(allow_none=True)
    url = LinkField(allow_none=True, metadata={"description": "the ticket in the ITSM tool"})
    title = fields.String(allow_none=True)
    severity = fields.String(allow_none=True)
    business_unit = fields.String(allow_none=True)
    assignment_group = fields.String(allow_none=True)
    record_type = fields.String(allow_none=True)
    opened_at = fields.AwareDateTime(allow_none=True)
    closed_at = fields.AwareDateTime(allow_none=True)


class AcceptanceRefSchema(Schema):
    id = fields.Integer(required=True)
    approver = fields.String(required=True)
    expires_at = fields.AwareDateTime(required=True)


class GapSchema(FindingSchema):
    gap_status = fields.String(required=True, metadata={"description": "open, accepted or resolved"})
    check_title = fields.String(allow_none=True)
    incident = fields.Nested(TicketSchema, required=True)
    acceptance = fields.Nested(AcceptanceRefSchema, allow_none=True)


class GapFilterArgs(ScopeArgs):
    control = text(max=32, metadata={"description": "a control of either edition: A.5.26, 5.26, A.16.1.5, 2013:A.16.1.5"})
    check = text(max=64)
    subprocess = text(max=32)
    gap_severity = fields.String(validate=validate.OneOf(SEVERITIES), metadata={"description": "the check's severity"})
    status = fields.String(load_default="open", validate=validate.OneOf(STATUSES))
    assignment_group = text()
    kind = fields.String(load_default=GAP, validate=validate.OneOf(KINDS),
                         metadata={"description": "gaps by default; improvements are listed apart and never count as open gaps"})
    sort = fields.String(load_default="severity", validate=validate.OneOf(SORTS))


class GapArgs(GapFilterArgs, PageArgs):
    pass


class WriteBackSchema(Schema):
    """One enrichment queued for the ticket: what, when, with which fingerprint."""

    fingerprint = fields.String(required=True)
    status = fields.String(required=True)
    attempts = fields.Integer(required=True)
    created_at = fields.AwareDateTime(required=True)
    sent_at = fields.AwareDateTime(allow_none=True)
    last_error = fields.String(allow_none=True)
    note = fields.String(allow_none=True)
    fields_ = fields.Dict(data_key="fields", allow_none=True)
    labels = fields.List(fields.String(), allow_none=True)


class IncidentSchema(TicketSchema):
    description = fields.String(allow_none=True)
    category = fields.String(allow_none=True)
    subcategory = fields.String(allow_none=True)
    is_security = fields.Boolean(allow_none=True)
    state = fields.String(allow_none=True)
    assignee = fields.String(allow_none=True)
    reporter = fields.String(allow_none=True)
    reported_via = fields.String(allow_none=True)
    affected_ci = fields.String(allow_none=True)
    major_incident = fields.Boolean(allow_none=True)
    assessed_at = fields.AwareDateTime(allow_none=True)
    acknowledged_at = fields.AwareDateTime(allow_none=True)
    contained_at = fields.AwareDateTime(allow_none=True)
    major_declared_at = fields.AwareDateTime(allow_none=True)
    resolved_at = fields.AwareDateTime(allow_none=True)
    updated_at = fields.AwareDateTime(allow_none=True)
    close_code = fields.String(allow_none=True)
    root_cause = fields.String(allow_none=True)
    resolution_notes = fields.String(allow_none=True)
    lessons_learned = fields.String(allow_none=True)
    problem_ref = fields.String(allow_none=True)
    related_refs = fields.Raw()
    weakness_refs = fields.Raw()
    vulnerability_refs = fields.Raw()
    log_refs = fields.Raw()
    evidence = fields.Raw(metadata={"description": "evidence items with their chain of custody"})
    notifications = fields.Raw()
    escalations = fields.Raw()
    personal_data_breach = fields.Boolean(allow_none=True)
    legal_hold = fields.Boolean(allow_none=True)
    assessed_ruleset = fields.String(allow_none=True)
    enrichment_fingerprint = fields.String(allow_none=True, metadata={"description": "the fingerprint on the ticket now"})
    first_seen_at = fields.AwareDateTime()
    last_synced_at = fields.AwareDateTime()


class IncidentDetailSchema(IncidentSchema):
    findings = fields.List(fields.Nested(FindingSchema), required=True)
    open_gaps = fields.Integer(required=True)
    accepted = fields.Integer(required=True)
    improvements = fields.Integer(required=True)
    pending = fields.Integer(required=True)
    not_applicable = fields.List(fields.String(), allow_none=True,
                                 metadata={"description": "checks that do not apply; null until assessed under the loaded mappings"})
    write_backs = fields.List(fields.Nested(WriteBackSchema), required=True, metadata={"description": "the enrichment history"})
    raw = fields.Raw(metadata={"description": "the record exactly as the tool returned it"})


class IncidentListArgs(ScopeArgs, PageArgs):
    number = text(max=64)


class DeadlineArgs(PageArgs):
    source = text(max=64)
    check = text(max=64)
    due_before = UtcDateTime()


class DeadlineSchema(FindingSchema):
    incident = fields.Nested(TicketSchema, required=True)
    what = fields.String(allow_none=True, metadata={"description": "what the clock waits for"})
