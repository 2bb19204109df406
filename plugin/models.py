"""Database models. Table names, constraints and enums are explicit; times are aware UTC."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

from .extensions import db


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Stores UTC, returns aware UTC datetimes on SQLite (naive there) and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


JSONType = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")

FINDING_STATUSES = ("pass", "fail", "not_applicable")
OUTBOX_STATUSES = ("pending", "sent", "failed", "superseded")
SYNC_STATUSES = ("running", "succeeded", "failed")


class Incident(db.Model):
    __tablename__ = "incidents"
    __table_args__ = (
        sa.UniqueConstraint("source", "external_id", name="uq_incidents_source_external_id"),
        sa.Index("ix_incidents_source_updated", "source", "updated_at"),
        sa.Index("ix_incidents_assessment", "assessed_ruleset", "assessed_revision"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    source = sa.Column(sa.String(64), nullable=False)
    external_id = sa.Column(sa.String(128), nullable=False)
    number = sa.Column(sa.String(64), index=True)
    url = sa.Column(sa.String(1024))
    title = sa.Column(sa.Text)
    description = sa.Column(sa.Text)
    category = sa.Column(sa.String(128))
    subcategory = sa.Column(sa.String(128))
    is_security = sa.Column(sa.Boolean)
    severity = sa.Column(sa.String(16))
    state = sa.Column(sa.String(16), index=True)
    business_unit = sa.Column(sa.String(255))
    assignment_group = sa.Column(sa.String(255))
    assignee = sa.Column(sa.String(255))
    reporter = sa.Column(sa.String(255))
    reported_via = sa.Column(sa.String(64))
    affected_ci = sa.Column(sa.String(255))
    major_incident = sa.Column(sa.Boolean)
    opened_at = sa.Column(UTCDateTime)
    assessed_at = sa.Column(UTCDateTime)
    acknowledged_at = sa.Column(UTCDateTime)
    contained_at = sa.Column(UTCDateTime)
    major_declared_at = sa.Column(UTCDateTime)
    resolved_at = sa.Column(UTCDateTime)
    closed_at = sa.Column(UTCDateTime)
    updated_at = sa.Column(UTCDateTime)
    close_code = sa.Column(sa.String(128))
    root_cause = sa.Column(sa.Text)
    resolution_notes = sa.Column(sa.Text)
    lessons_learned = sa.Column(sa.Text)
    problem_ref = sa.Column(sa.String(128))
    maintenance_ref = sa.Column(sa.String(128))
    capacity_ref = sa.Column(sa.String(128))
    related_refs = sa.Column(JSONType, nullable=False, default=list)
    weakness_refs = sa.Column(JSONType, nullable=False, default=list)
    log_refs = sa.Column(JSONType, nullable=False, default=list)
    evidence = sa.Column(JSONType, nullable=False, default=list)
    notifications = sa.Column(JSONType, nullable=False, default=list)
    escalations = sa.Column(JSONType, nullable=False, default=list)
    timeline = sa.Column(JSONType, nullable=False, default=list)
    personal_data_breach = sa.Column(sa.Boolean)
    legal_hold = sa.Column(sa.Boolean)
    enrichment_fingerprint = sa.Column(sa.String(64))
    raw = sa.Column(JSONType, nullable=False)
    # bookkeeping
    content_hash = sa.Column(sa.String(64), nullable=False)
    revision = sa.Column(sa.Integer, nullable=False, default=1)
    first_seen_at = sa.Column(UTCDateTime, nullable=False, default=utcnow)
    last_synced_at = sa.Column(UTCDateTime, nullable=False, default=utcnow)
    assessed_revision = sa.Column(sa.Integer)
    assessed_ruleset = sa.Column(sa.String(64))
    last_assessed_on = sa.Column(UTCDateTime)

    findings = db.relationship("Finding", back_populates="incident", cascade="all, delete-orphan", passive_deletes=True)


class Finding(db.Model):
    """The current outcome of one check on one incident."""

    __tablename__ = "findings"
    __table_args__ = (
        sa.UniqueConstraint("incident_id", "check_id", name="uq_findings_incident_check"),
        sa.Index("ix_findings_status_check", "status", "check_id"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    incident_id = sa.Column(sa.Integer, sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    check_id = sa.Column(sa.String(64), nullable=False)
    status = sa.Column(sa.Enum(*FINDING_STATUSES, name="finding_status", native_enum=False, create_constraint=True), nullable=False)
    severity = sa.Column(sa.String(16), nullable=False)
    subprocess = sa.Column(sa.String(32), nullable=False)
    relation = sa.Column(sa.String(16), nullable=False)
    controls_2022 = sa.Column(JSONType, nullable=False)
    controls_2013 = sa.Column(JSONType, nullable=False)
    details = sa.Column(JSONType, nullable=False, default=list)
    ruleset_hash = sa.Column(sa.String(64), nullable=False)
    evaluated_at = sa.Column(UTCDateTime, nullable=False)
    first_failed_at = sa.Column(UTCDateTime)

    incident = db.relationship("Incident", back_populates="findings")


class RejectedRecord(db.Model):
    """A record from the ITSM tool that could not be normalized, with the reason."""

    __tablename__ = "rejected_records"
    __table_args__ = (sa.UniqueConstraint("source", "external_id", name="uq_rejected_source_external_id"),)

    id = sa.Column(sa.Integer, primary_key=True)
    source = sa.Column(sa.String(64), nullable=False)
    external_id = sa.Column(sa.String(128), nullable=False)
    reason = sa.Column(sa.Text, nullable=False)
    raw = sa.Column(JSONType, nullable=False)
    sync_run_id = sa.Column(sa.Integer, sa.ForeignKey("sync_runs.id", ondelete="SET NULL"))
    rejected_at = sa.Column(UTCDateTime, nullable=False, default=utcnow)


class SyncBookmark(db.Model):
    __tablename__ = "sync_bookmarks"

    source = sa.Column(sa.String(64), primary_key=True)
    value = sa.Column(JSONType, nullable=False)
    updated_at = sa.Column(UTCDateTime, nullable=False, default=utcnow)


class SyncRun(db.Model):
    __tablename__ = "sync_runs"

    id = sa.Column(sa.Integer, primary_key=True)
    source = sa.Column(sa.String(64), nullable=False, index=True)
    full = sa.Column(sa.Boolean, nullable=False, default=False)
    status = sa.Column(sa.Enum(*SYNC_STATUSES, name="sync_status", native_enum=False, create_constraint=True), nullable=False)
    started_at = sa.Column(UTCDateTime, nullable=False, default=utcnow)
    finished_at = sa.Column(UTCDateTime)
    pages = sa.Column(sa.Integer, nullable=False, default=0)
    fetched = sa.Column(sa.Integer, nullable=False, default=0)
    stored = sa.Column(sa.Integer, nullable=False, default=0)
    changed = sa.Column(sa.Integer, nullable=False, default=0)
    rejected = sa.Column(sa.Integer, nullable=False, default=0)
    bookmark_before = sa.Column(JSONType)
    bookmark_after = sa.Column(JSONType)
    error = sa.Column(sa.Text)


class OutboxItem(db.Model):
    """One enrichment waiting to be written onto a ticket."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.UniqueConstraint("incident_id", "fingerprint", name="uq_outbox_incident_fingerprint"),
        sa.Index("ix_outbox_due", "status", "next_attempt_at"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    incident_id = sa.Column(sa.Integer, sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    source = sa.Column(sa.String(64), nullable=False)
    external_id = sa.Column(sa.String(128), nullable=False)
    fingerprint = sa.Column(sa.String(64), nullable=False)
    payload = sa.Column(JSONType, nullable=False)
    status = sa.Column(sa.Enum(*OUTBOX_STATUSES, name="outbox_status", native_enum=False, create_constraint=True), nullable=False, default="pending")
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    next_attempt_at = sa.Column(UTCDateTime, nullable=False, default=utcnow)
    last_error = sa.Column(sa.Text)
    claimed_by = sa.Column(sa.String(128))
    claimed_until = sa.Column(UTCDateTime)
    created_at = sa.Column(UTCDateTime, nullable=False, default=utcnow)
    sent_at = sa.Column(UTCDateTime)


class Lease(db.Model):
    """Work that must run once across service instances is claimed here."""

    __tablename__ = "leases"

    name = sa.Column(sa.String(128), primary_key=True)
    holder = sa.Column(sa.String(128), nullable=False)
    expires_at = sa.Column(UTCDateTime, nullable=False)


class AuditEvent(db.Model):
    """Append-only: rows are inserted, never updated or deleted."""

    __tablename__ = "audit_log"

    id = sa.Column(sa.Integer, primary_key=True)
    at = sa.Column(UTCDateTime, nullable=False, default=utcnow, index=True)
    actor = sa.Column(sa.String(128), nullable=False)
    action = sa.Column(sa.String(64), nullable=False, index=True)
    subject_type = sa.Column(sa.String(32), nullable=False)
    subject_id = sa.Column(sa.String(128))
    details = sa.Column(JSONType, nullable=False, default=dict)
