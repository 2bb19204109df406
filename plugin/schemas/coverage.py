"""Coverage per control and per ITIL sub-process, and the populations behind the numbers."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..queries.coverage import OUTCOMES
from .common import PageArgs, ScopeArgs
from .findings import TicketSchema


class ScopeEchoSchema(Schema):
    period = fields.String(allow_none=True)
    start = fields.AwareDateTime(allow_none=True)
    end = fields.AwareDateTime(allow_none=True)
    by = fields.String(required=True)
    business_unit = fields.String(allow_none=True)
    source = fields.String(allow_none=True)
    severity = fields.String(allow_none=True)
    record_type = fields.String(allow_none=True)


class CoverageRowSchema(Schema):
    key = fields.String(required=True, metadata={"description": "the control id (2022, or the 2013 id asked for) or sub-process id"})
    title = fields.String(required=True)
    ids_2022 = fields.List(fields.String(), metadata={"description": "controls only"})
    ids_2013 = fields.List(fields.String(), metadata={"description": "controls only"})
    checks = fields.List(fields.String(), required=True, metadata={"description": "the gap checks that decide it"})
    in_scope = fields.Integer(required=True, metadata={"description": "incidents at least one of its checks applies to"})
    passed = fields.Integer(required=True)
    failed = fields.Integer(required=True, metadata={"description": "a failed gap no accepted risk covers"})
    accepted = fields.Integer(required=True, metadata={"description": "failed, but under an accepted risk"})
    pending = fields.Integer(required=True, metadata={"description": "a clock still running, nothing failed"})
    not_applicable = fields.Integer(required=True)
    pass_rate = fields.Float(allow_none=True, metadata={"description": "(passed + accepted) / (in_scope - pending); null when none"})


class CoveragePageSchema(Schema):
    scope = fields.Nested(ScopeEchoSchema, required=True)
    ruleset = fields.String(required=True)
    incidents_in_scope = fields.Integer(required=True, metadata={"description": "assessed incidents the filters select"})
    items = fields.List(fields.Nested(CoverageRowSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)


class CoverageOneSchema(CoverageRowSchema):
    scope = fields.Nested(ScopeEchoSchema, required=True)
    ruleset = fields.String(required=True)


class CoverageArgs(ScopeArgs, PageArgs):
    pass


class OneCoverageArgs(ScopeArgs):
    pass


class PopulationArgs(ScopeArgs, PageArgs):
    outcome = fields.String(validate=validate.OneOf(OUTCOMES), metadata={"description": "one number's incidents; all in scope if absent"})


class MemberSchema(Schema):
    incident = fields.Nested(TicketSchema, required=True)
    outcome = fields.String(required=True)
    checks = fields.Dict(keys=fields.String(), values=fields.String(), required=True,
                         metadata={"description": "each applicable check's outcome on this incident"})


class PopulationPageSchema(Schema):
    key = fields.String(required=True)
    outcome = fields.String(allow_none=True)
    scope = fields.Nested(ScopeEchoSchema, required=True)
    items = fields.List(fields.Nested(MemberSchema), required=True)
    next_cursor = fields.String(allow_none=True, required=True)
