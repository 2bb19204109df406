"""Sync runs and the audit log."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from ..models import SYNC_STATUSES
from .common import PageArgs, UtcDateTime, text


class SyncRunSchema(Schema):
    id = fields.Integer(required=True)
    source = fields.String(required=True)
    full = fields.Boolean(required=True)
    status = fields.String(required=True)
    started_at = fields.AwareDateTime(required=True)
    finished_at = fields.AwareDateTime(allow_none=True)
    duration_s = fields.Float(allow_none=True)
    pages = fields.Integer(required=True)
    fetched = fields.Integer(required=True)
    stored = fields.Integer(required=True)
    changed = fields.Integer(required=True)
    rejected = fields.Integer(required=True)
    error = fields.String(allow_none=True)
    holder = fields.String(allow_none=True, metadata={"description": "the process (host:pid) that ran it"})
    abandoned_at = fields.AwareDateTime(allow_none=True, metadata={"description": "when a later sync found it killed and took over"})
    abandoned_by = fields.String(allow_none=True)


class SyncRunArgs(PageArgs):
    source = text(max=64)
    status = fields.String(validate=validate.OneOf(SYNC_STATUSES))


class AuditEventSchema(Schema):
    id = fields.Integer(required=True)
    seq = fields.Integer(allow_none=True)
    at = fields.AwareDateTime(required=True)
    actor = fields.String(required=True)
    action = fields.String(required=True)
    subject_type = fields.String(required=True)
    subject_id = fields.String(allow_none=True)
    details = fields.Raw(required=True)
    prev_hash = fields.String(allow_none=True)
    row_hash = fields.String(allow_none=True)


class AuditArgs(PageArgs):
    action = text(max=64)
    actor = text(max=128)
    subject_type = text(max=32)
    subject_id = text(max=128)
    since = UtcDateTime()
    until = UtcDateTime()
