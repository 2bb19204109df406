"""Database models. Table names, constraints and enums are explicit; times are aware UTC."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .extensions import Model


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


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

FINDING_STATUSES = ("pass", "fail", "pending", "not_applicable")
FINDING_KINDS = ("gap", "improvement")
OUTBOX_STATUSES = ("pending", "sent", "failed", "superseded")
# abandoned: the run stopped without finishing (killed, crashed); the sync that took its lease over marked it.
# stopped: a stop was asked for (SIGTERM, Ctrl-C); the pages before it are stored and the next run resumes after them
SYNC_STATUSES = ("running", "succeeded", "failed", "abandoned", "stopped")
# skipped: the job's work was held by another process (a sync run by hand, say); stopped: as a sync's
JOB_OUTCOMES = ("succeeded", "failed", "skipped", "stopped")


# a text column filled (not only blanks), a JSON list column holding something: as the KPIs have always counted them
HAS_TEXT = "length(trim(coalesce({}, ''))) > 0"
HAS_ITEMS = "coalesce(CAST({} AS TEXT), '[]') NOT IN ('[]', 'null')"
SCOPE_COLUMNS = ("assessed_ruleset", "opened_at", "closed_at", "business_unit", "source", "severity", "record_type", "is_security",
                 "category", "first_seen_at", "control_outcomes", "subprocess_outcomes", "cell_outcomes")
SECURITY_COLUMNS = ("assessed_ruleset", "closed_at", "business_unit", "source", "severity", "record_type", "state",
                    "assessed_at", "contained_at", "resolved_at", "reported_via", "problem_ref", "has_root_cause",
                    "has_lessons_learned", "has_timeline")


class Incident(Model):
    __tablename__ = "incidents"
    __table_args__ = (
        sa.UniqueConstraint("source", "external_id", name="uq_incidents_source_external_id"),
        sa.Index("ix_incidents_source_updated", "source", "updated_at"),
        sa.Index("ix_incidents_assessment", "assessed_ruleset", "assessed_revision"),
        # the periods coverage, gaps and exports are asked for
        sa.Index("ix_incidents_opened_at", "opened_at"),
        sa.Index("ix_incidents_closed_at", "closed_at"),
        # PostgreSQL: the dashboard's counts read these alone (index-only), never the wide rows (raw record inline, ~2 KB).
        # Every column a scope filters on, the acceptances' scope, what the trend reads and the outcome masks, by id
        # (merge joins with findings in incident order)
        sa.Index("ix_incidents_scope", "id", postgresql_include=list(SCOPE_COLUMNS)).ddl_if(dialect="postgresql"),
        # the security incidents the KPIs and maturity count, with every column they read; in the order the recurring
        # incidents are looked for (item, category, opening), which then need no sort
        sa.Index("ix_incidents_security", "affected_ci", "category", "opened_at", postgresql_include=list(SECURITY_COLUMNS),
                 postgresql_where=sa.text("is_security IS TRUE")).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    external_id: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    number: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    url: Mapped[str | None] = mapped_column(sa.String(1024))
    title: Mapped[str | None] = mapped_column(sa.Text)
    description: Mapped[str | None] = mapped_column(sa.Text)
    category: Mapped[str | None] = mapped_column(sa.String(128))
    subcategory: Mapped[str | None] = mapped_column(sa.String(128))
    record_type: Mapped[str | None] = mapped_column(sa.String(16))
    is_security: Mapped[bool | None] = mapped_column(sa.Boolean)
    severity: Mapped[str | None] = mapped_column(sa.String(16))
    state: Mapped[str | None] = mapped_column(sa.String(16), index=True)
    business_unit: Mapped[str | None] = mapped_column(sa.String(255))
    assignment_group: Mapped[str | None] = mapped_column(sa.String(255))
    assignee: Mapped[str | None] = mapped_column(sa.String(255))
    reporter: Mapped[str | None] = mapped_column(sa.String(255))
    reported_via: Mapped[str | None] = mapped_column(sa.String(64))
    affected_ci: Mapped[str | None] = mapped_column(sa.String(255))
    major_incident: Mapped[bool | None] = mapped_column(sa.Boolean)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    assessed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    contained_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    major_declared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    close_code: Mapped[str | None] = mapped_column(sa.String(128))
    root_cause: Mapped[str | None] = mapped_column(sa.Text)
    resolution_notes: Mapped[str | None] = mapped_column(sa.Text)
    lessons_learned: Mapped[str | None] = mapped_column(sa.Text)
    problem_ref: Mapped[str | None] = mapped_column(sa.String(128))
    maintenance_ref: Mapped[str | None] = mapped_column(sa.String(128))
    capacity_ref: Mapped[str | None] = mapped_column(sa.String(128))
    related_refs: Mapped[Any] = mapped_column(JSONType, nullable=False, default=list)
    weakness_refs: Mapped[Any] = mapped_column(JSONType, nullable=False, default=list)
    vulnerability_refs: Mapped[Any] = mapped_column(JSONType, nullable=False, default=list)
    log_refs: Mapped[Any] = mapped_column(JSONType, nullable=False, default=list)
    evidence: Mapped[Any] = mapped_column(JSONType, nullable=False, default=list)
    notifications: Mapped[Any] = mapped_column(JSONType, nullable=False, default=list)
    escalations: Mapped[Any] = mapped_column(JSONType, nullable=False, default=list)
    timeline: Mapped[Any] = mapped_column(JSONType, nullable=False, default=list)
    personal_data_breach: Mapped[bool | None] = mapped_column(sa.Boolean)
    legal_hold: Mapped[bool | None] = mapped_column(sa.Boolean)
    enrichment_fingerprint: Mapped[str | None] = mapped_column(sa.String(64))
    # json, not jsonb, on PostgreSQL: kept exactly as the tool sent it, never queried inside, so not worth converting (0011)
    raw: Mapped[Any] = mapped_column(sa.JSON, nullable=False)
    # bookkeeping
    content_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    revision: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=1)
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_synced_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    assessed_revision: Mapped[int | None] = mapped_column(sa.Integer)
    assessed_ruleset: Mapped[str | None] = mapped_column(sa.String(64))
    last_assessed_on: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # the incident's outcome under each control and each sub-process, 4 bits a group (plugin.queries.coverage),
    # written with its findings; coverage reads these instead of every finding
    control_outcomes: Mapped[int | None] = mapped_column(sa.BigInteger)
    subprocess_outcomes: Mapped[int | None] = mapped_column(sa.BigInteger)
    # and under each heatmap cell that is neither a control's nor a sub-process's group (coverage.cell_groups)
    cell_outcomes: Mapped[int | None] = mapped_column(sa.BigInteger)
    # what the KPIs ask of the long text columns, kept by the database (stored on PostgreSQL, computed on read on
    # SQLite) so that they are counted from an index: the text itself is unbounded, too wide for one
    has_root_cause: Mapped[bool | None] = mapped_column(sa.Boolean, sa.Computed(HAS_TEXT.format("root_cause")))
    has_lessons_learned: Mapped[bool | None] = mapped_column(sa.Boolean, sa.Computed(HAS_TEXT.format("lessons_learned")))
    has_timeline: Mapped[bool | None] = mapped_column(sa.Boolean, sa.Computed(HAS_ITEMS.format("timeline")))

    findings: Mapped[list[Finding]] = relationship(
        "Finding", back_populates="incident", cascade="all, delete-orphan", passive_deletes=True)


# implied by an open gap (status and kind) and by the trend's gaps (kind, a first failure): both read ix_findings_gaps
GAPS_INDEXED = "kind = 'gap' AND (status = 'fail' OR first_failed_at IS NOT NULL)"


class Finding(Model):
    """The current outcome of one check on one incident."""

    __tablename__ = "findings"
    __table_args__ = (
        # coverage reads an incident's outcomes from an index alone (no visit to the row): on PostgreSQL this one, which
        # carries kind and status; SQLite has no INCLUDE and keeps a second index for it (migration 0011)
        sa.UniqueConstraint("incident_id", "check_id", name="uq_findings_incident_check", postgresql_include=["kind", "status"]),
        sa.Index("ix_findings_status_check", "status", "check_id"),
        # the running clocks only, keyed as the deadlines list pages them
        sa.Index("ix_findings_pending_due", "due_at", "incident_id", "check_id",
                 sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'")),
        sa.Index("ix_findings_incident_outcome", "incident_id", "kind", "status", "check_id").ddl_if(dialect="sqlite"),
        # PostgreSQL: the gaps that fail or ever failed (the few), with what the open gaps and the weekly trend read
        sa.Index("ix_findings_gaps", "incident_id", postgresql_include=["check_id", "status", "first_failed_at", "resolved_at"],
                 postgresql_where=sa.text(GAPS_INDEXED)).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    check_id: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    status: Mapped[str] = mapped_column(sa.Enum(*FINDING_STATUSES, name="finding_status", native_enum=False, create_constraint=True), nullable=False)
    severity: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    subprocess: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    relation: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    # a gap (a nonconformity) or an improvement (an opportunity for improvement); only failed gaps are open gaps
    kind: Mapped[str] = mapped_column(sa.Enum(*FINDING_KINDS, name="finding_kind", native_enum=False, create_constraint=True), nullable=False)
    controls_2022: Mapped[Any] = mapped_column(JSONType, nullable=False)
    controls_2013: Mapped[Any] = mapped_column(JSONType, nullable=False)
    details: Mapped[Any] = mapped_column(JSONType, nullable=False, default=list)
    ruleset_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    evaluated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    first_failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # when the clock of a time-bound check falls (or fell) due; set for pending findings and failed clocks
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # when a failed gap came to pass (kept while it passes): the resolved gaps an auditor asks about
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    incident: Mapped[Incident] = relationship("Incident", back_populates="findings")

    @hybrid_property
    def is_open_gap(self) -> bool:
        """The one definition of an open gap: a failed gap; an improvement never is one (a SQL expression on the class)."""
        return self.status == "fail" and self.kind == "gap"

    @is_open_gap.inplace.expression
    @classmethod
    def _is_open_gap_expression(cls) -> sa.ColumnElement[bool]:
        return sa.and_(cls.status == "fail", cls.kind == "gap")


class RejectedRecord(Model):
    """A record from the ITSM tool that could not be normalized, with the reason."""

    __tablename__ = "rejected_records"
    __table_args__ = (sa.UniqueConstraint("source", "external_id", name="uq_rejected_source_external_id"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    external_id: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    reason: Mapped[str] = mapped_column(sa.Text, nullable=False)
    raw: Mapped[Any] = mapped_column(JSONType, nullable=False)
    sync_run_id: Mapped[int | None] = mapped_column(sa.Integer, sa.ForeignKey("sync_runs.id", ondelete="SET NULL"))
    rejected_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class SyncBookmark(Model):
    __tablename__ = "sync_bookmarks"

    source: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONType, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class SyncRun(Model):
    __tablename__ = "sync_runs"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    source: Mapped[str] = mapped_column(sa.String(64), nullable=False, index=True)
    full: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False)
    status: Mapped[str] = mapped_column(sa.Enum(*SYNC_STATUSES, name="sync_status", native_enum=False, create_constraint=True), nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pages: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    fetched: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    stored: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    changed: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    rejected: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    bookmark_before: Mapped[Any] = mapped_column(JSONType, nullable=True)
    bookmark_after: Mapped[Any] = mapped_column(JSONType, nullable=True)
    error: Mapped[str | None] = mapped_column(sa.Text)
    holder: Mapped[str | None] = mapped_column(sa.String(128))  # the process that ran it (host:pid), as its lease names it
    abandoned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    abandoned_by: Mapped[str | None] = mapped_column(sa.String(128))  # the process whose sync took the lease over


class OutboxItem(Model):
    """One enrichment waiting to be written onto a ticket."""

    __tablename__ = "outbox"
    __table_args__ = (
        sa.UniqueConstraint("incident_id", "fingerprint", name="uq_outbox_incident_fingerprint"),
        sa.Index("ix_outbox_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    incident_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("incidents.id", ondelete="CASCADE"), nullable=False)
    source: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    external_id: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    fingerprint: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    payload: Mapped[Any] = mapped_column(JSONType, nullable=False)
    status: Mapped[str] = mapped_column(sa.Enum(*OUTBOX_STATUSES, name="outbox_status", native_enum=False, create_constraint=True), nullable=False, default="pending")
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    claimed_by: Mapped[str | None] = mapped_column(sa.String(128))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxBackoff(Model):
    """A wait a tool asked for (Retry-After), per connector instance: every drain on every instance honours it."""

    __tablename__ = "outbox_backoff"

    source: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    until: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    asked_seconds: Mapped[float] = mapped_column(sa.Float, nullable=False)
    message: Mapped[str] = mapped_column(sa.Text, nullable=False)  # what the tool asked, as the drain reports it
    set_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class Lease(Model):
    """Work that must run once across service instances is claimed here."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class ScheduledJob(Model):
    """A job of the schedule (a source's sync, the outbox write-back, ...): when it is next due, who runs it, how it last went.

    Claimed by the lease ``job:<name>`` and a conditional update of ``holder``, so it runs once across every instance.
    """

    __tablename__ = "scheduled_jobs"

    name: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    next_due_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    holder: Mapped[str | None] = mapped_column(sa.String(128))  # the process running it now (host:pid); None between runs
    last_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_outcome: Mapped[str | None] = mapped_column(sa.Enum(*JOB_OUTCOMES, name="job_outcome", native_enum=False, create_constraint=True))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_summary: Mapped[str | None] = mapped_column(sa.Text)  # one line: what the last run did
    # what a job keeps from one run to the next (the audit verify: the head it last found intact)
    memory: Mapped[Any] = mapped_column(JSONType, nullable=True)


class AuditEvent(Model):
    """Append-only and hash-chained: each row carries the hash of the row before it and of its own content.

    Rows are inserted, never updated or deleted (on PostgreSQL a trigger refuses both).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    action: Mapped[str] = mapped_column(sa.String(64), nullable=False, index=True)
    subject_type: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    subject_id: Mapped[str | None] = mapped_column(sa.String(128))
    details: Mapped[Any] = mapped_column(JSONType, nullable=False, default=dict)
    # the chain: sequence numbers 1, 2, 3, ... with no hole; prev_hash of row 1 is the genesis value
    seq: Mapped[int | None] = mapped_column(sa.BigInteger, unique=True)
    prev_hash: Mapped[str | None] = mapped_column(sa.String(64))
    row_hash: Mapped[str | None] = mapped_column(sa.String(64))


TOKEN_ROLES = ("auditor", "isms_manager", "admin")


class ApiToken(Model):
    """An API token: only its SHA-256 is stored (tokens are 256 random bits, so a slow hash adds nothing)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(128), nullable=False, unique=True)
    role: Mapped[str] = mapped_column(sa.Enum(*TOKEN_ROLES, name="token_role", native_enum=False, create_constraint=True), nullable=False)
    # the first characters of the token, shown in listings so an operator can tell tokens apart
    prefix: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    token_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(sa.String(128))
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiTokenUse(Model):
    """Requests per token and hour, rolled up (the audit log gets one row per token and hour, not one per request)."""

    __tablename__ = "api_token_use"

    token_id: Mapped[int] = mapped_column(sa.Integer, sa.ForeignKey("api_tokens.id", ondelete="CASCADE"), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    requests: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    denied: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)


class DashboardUser(Model):
    """A person who signs in to the dashboard (plugin.services.users); the roles are the API tokens'.

    ``username`` is stored lowercased, so the unique constraint makes names unique without regard to case.
    ``session_generation`` is written into each session: raising it (new password, disabled, signed out) ends them all.
    """

    __tablename__ = "dashboard_users"
    __table_args__ = (sa.CheckConstraint("username = lower(username)", name="username_lowercase"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)
    role: Mapped[str] = mapped_column(sa.Enum(*TOKEN_ROLES, name="dashboard_user_role", native_enum=False, create_constraint=True),
                                      nullable=False)
    password_hash: Mapped[str] = mapped_column(sa.String(255), nullable=False)  # argon2id, in its PHC string form
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    created_by: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # consecutive failed sign-ins; from the fifth on each one locks the account (1 min, doubling, at most 1 h)
    failed_attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_sign_in_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    session_generation: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=1)


class RiskAcceptance(Model):
    """An ISMS manager's acceptance of a gap: one incident's finding of a check, or a check over a scope.

    A scope column left empty matches every value. It never deletes a finding: a failed gap under an
    active acceptance counts as accepted instead of failing, until it expires or is revoked.
    """

    __tablename__ = "risk_acceptances"
    __table_args__ = (sa.Index("ix_risk_acceptances_check", "check_id", "expires_at"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    check_id: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    # one incident's finding; else the scope below (no ondelete: an acceptance is never lost with its incident)
    incident_id: Mapped[int | None] = mapped_column(sa.Integer, sa.ForeignKey("incidents.id"), index=True)
    scope_source: Mapped[str | None] = mapped_column(sa.String(64))
    scope_business_unit: Mapped[str | None] = mapped_column(sa.String(255))
    scope_category: Mapped[str | None] = mapped_column(sa.String(128))
    justification: Mapped[str] = mapped_column(sa.Text, nullable=False)
    approver: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    created_by: Mapped[str] = mapped_column(sa.String(128), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by: Mapped[str | None] = mapped_column(sa.String(128))
    revoke_reason: Mapped[str | None] = mapped_column(sa.Text)
    # set by the expiry job once the tickets concerned were told it ran out
    expiry_recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
