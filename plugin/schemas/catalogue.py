"""Controls, checks and sub-processes, as the mappings define them."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..rules.catalogue import EDITIONS
from ..rules.model import KINDS
from .common import PageArgs


class ControlSummarySchema(Schema):
    id = fields.String(required=True, metadata={"description": "the id in its own edition"})
    edition = fields.String(required=True)
    title = fields.String(required=True)
    kind = fields.String(required=True, metadata={"description": "annex_a or clause"})
    theme = fields.String(allow_none=True)
    ids_2022 = fields.List(fields.String(), required=True, metadata={"description": "its 2022 id(s)"})
    ids_2013 = fields.List(fields.String(), required=True, metadata={"description": "its 2013 id(s)"})


class CheckSummarySchema(Schema):
    id = fields.String(required=True)
    title = fields.String(required=True)
    kind = fields.String(required=True)
    severity = fields.String(required=True)
    subprocess = fields.String(required=True)
    relation = fields.String(required=True)
    controls_2022 = fields.List(fields.String(), required=True)
    controls_2013 = fields.List(fields.String(), required=True)
    overlay = fields.String(allow_none=True, metadata={"description": "the regulatory overlay it comes from, if any"})
    across_incidents = fields.Boolean(required=True)
    clock = fields.Boolean(required=True, metadata={"description": "a time-bound check (pending until due)"})


class CheckDetailSchema(CheckSummarySchema):
    rationale = fields.String(required=True)
    remediation = fields.String(required=True)
    missing = fields.String(required=True)
    fields_ = fields.List(fields.String(), data_key="fields", required=True, metadata={"description": "canonical fields it reads"})
    provenance = fields.Dict(keys=fields.String(), values=fields.String())


class RelationSchema(Schema):
    subprocess = fields.String(allow_none=True)
    subprocess_name = fields.String(allow_none=True)
    control_2022 = fields.String(required=True)
    relation = fields.String(required=True, metadata={"description": "covered, gap or improvement"})
    rationale = fields.String(required=True)
    needs = fields.String(allow_none=True)


class ControlDetailSchema(ControlSummarySchema):
    checks = fields.List(fields.Nested(CheckSummarySchema), required=True)
    relations = fields.List(fields.Nested(RelationSchema), required=True)


class ControlListArgs(PageArgs):
    edition = fields.String(load_default="2022", validate=validate.OneOf(EDITIONS))
    kind = fields.String(validate=validate.OneOf(["annex_a", "clause"]))


class CheckListArgs(PageArgs):
    kind = fields.String(validate=validate.OneOf(KINDS))
    subprocess = fields.String(validate=validate.Length(min=1, max=32))
