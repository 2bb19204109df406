"""Risk acceptances: what an ISMS manager sends to accept, amend or revoke, and what the API shows."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..services.risk import STATUSES
from .common import MAX_ID, PageArgs, Strict, UtcDateTime, text


class ScopeSchema(Strict):
    source = text(max=64)
    business_unit = text()
    category = text(max=128)


class AcceptSchema(Strict):
    check_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    incident_id = fields.Integer(validate=validate.Range(min=1, max=MAX_ID),
                                 metadata={"description": "accept this incident's finding; or give scope"})
    scope = fields.Nested(ScopeSchema, metadata={"description": "accept the check on every incident the scope matches"})
    justification = fields.String(required=True, validate=validate.Length(max=10_000))
    approver = fields.String(required=True, validate=validate.Length(max=255), metadata={"description": "the risk owner who approved it"})
    expires_at = UtcDateTime(required=True, metadata={"description": "required; at most risk.max_acceptance_days ahead"})


class AmendSchema(Strict):
    justification = fields.String(validate=validate.Length(max=10_000))
    approver = fields.String(validate=validate.Length(max=255))
    expires_at = UtcDateTime()


class RevokeSchema(Strict):
    reason = fields.String(required=True, validate=validate.Length(max=10_000))


class AcceptanceListArgs(PageArgs):
    status = fields.String(validate=validate.OneOf(STATUSES))
    check = text(max=64)
    incident_id = fields.Integer(validate=validate.Range(min=1, max=MAX_ID))


class AcceptanceSchema(Schema):
    id = fields.Integer(required=True)
    check_id = fields.String(required=True)
    check_title = fields.String(allow_none=True)
    controls_2022 = fields.List(fields.String())
    controls_2013 = fields.List(fields.String())
    incident_id = fields.Integer(allow_none=True)
    scope = fields.Dict(keys=fields.String(), values=fields.String(), allow_none=True)
    justification = fields.String(required=True)
    approver = fields.String(required=True)
    created_by = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True)
    updated_at = fields.AwareDateTime(required=True)
    expires_at = fields.AwareDateTime(required=True)
    status = fields.String(required=True, metadata={"description": "active, expired or revoked"})
    revoked_at = fields.AwareDateTime(allow_none=True)
    revoked_by = fields.String(allow_none=True)
    revoke_reason = fields.String(allow_none=True)
    covered_gaps = fields.Integer(metadata={"description": "failed gaps it covers now"})
