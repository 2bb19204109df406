"""An assessment as plain data: what the query layer reads from the database and every export writes out.

No database, no Flask: the exports are pure functions of these values, so they are tested without an app.
All datetimes are aware and in UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ObservedFinding:
    check_id: str
    check_title: str
    status: str  # "pass" | "fail" | "accepted" | "pending"  (accepted = a failed gap under an accepted risk)
    controls_2022: tuple[str, ...]
    details: tuple[str, ...]  # what the check found missing
    risk_ids: tuple[int, ...] = ()  # for an accepted finding: the acceptances in force that cover it


@dataclass(frozen=True)
class ObservedIncident:
    id: int
    source: str
    number: str | None
    url: str | None
    title: str | None
    severity: str | None
    opened_at: datetime | None
    closed_at: datetime | None
    findings: tuple[ObservedFinding, ...]


@dataclass(frozen=True)
class ControlResult:
    control_2022: str
    title: str
    controls_2013: tuple[str, ...]
    in_scope: int
    passed: int
    failed: int
    accepted: int
    pending: int
    not_applicable: int
    incident_ids: tuple[int, ...]  # the incidents in scope of this control (its population)


@dataclass(frozen=True)
class AcceptedRisk:
    id: int
    check_id: str
    check_title: str
    controls_2022: tuple[str, ...]
    incident_id: int | None
    scope: Mapping[str, str]  # {"source": .., "business_unit": .., "category": ..}, only the set ones
    justification: str
    approver: str
    created_at: datetime
    expires_at: datetime
    status: str  # "active" | "expired" | "revoked"
    revoked_at: datetime | None
    created_by: str = ""  # who recorded it (the approver owns the risk)
    incident_number: str | None = None  # of ``incident_id``


@dataclass(frozen=True)
class Assessment:
    title: str  # e.g. "GapBridge assessment 2026-Q3"
    period_start: datetime
    period_end: datetime
    period_by: str  # "opened_at" | "closed_at"
    generated_at: datetime
    ruleset_hash: str
    overlays: tuple[str, ...]
    gapbridge_version: str
    controls: tuple[ControlResult, ...]
    incidents: tuple[ObservedIncident, ...]
    risks: tuple[AcceptedRisk, ...]
