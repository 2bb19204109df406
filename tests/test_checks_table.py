"""Every shipped check, table-driven: an incident that passes, one that fails, one it does not apply to.

Rows are overrides for ``create_incident`` (a closed, complete, high-severity security
incident opened five days before NOW). A new check without rows fails
``test_every_check_has_pass_fail_and_not_applicable_rows``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

import pytest

from plugin.rules import across
from plugin.rules.loader import load_ruleset
from plugin.rules.model import FAIL, NOT_APPLICABLE, PASS, PENDING

from .conftest import NOW, REPO, create_incident

OVERLAYS = ["gdpr", "nis2", "dora"]
OPEN_STATES = ("new", "triaged", "in_progress", "on_hold")

H = timedelta(hours=1)
D = timedelta(days=1)
T0 = NOW - 5 * D  # create_incident's default opening time


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(REPO / "mappings", overlays=OVERLAYS)


@pytest.fixture(scope="module")
def base_ruleset():
    return load_ruleset(REPO / "mappings")


# --- building blocks -----------------------------------------------------------------------


def still_open(age: timedelta = 2 * H, state: str = "in_progress", **kw: Any) -> dict[str, Any]:
    """Overrides for an incident opened ``age`` before NOW and not yet resolved."""
    opened = NOW - age
    base: dict[str, Any] = dict(
        opened_at=opened, state=state, assessed_at=opened + 30 * timedelta(minutes=1), acknowledged_at=opened,
        contained_at=None, resolved_at=None, closed_at=None, updated_at=NOW, close_code=None,
        root_cause=None, resolution_notes=None, lessons_learned=None, notifications=[],
        evidence=[evidence_item(opened)],
    )
    base.update(kw)
    return base


def evidence_item(collected: Any = T0 + 2 * H, **kw: Any) -> dict[str, Any]:
    item = {"what": "Disk image of laptop LT-042", "where": "evidence-store://2026/INC0010001/2",
            "collected_by": "Ana Analyst", "collected_at": collected, "sha256": "cd" * 32,
            "custody": [{"at": collected, "by": "Ana Analyst", "action": "collected"}]}
    item.update(kw)
    return item


def note(to: str, at: Any, kind: str | None = None) -> dict[str, Any]:
    n = {"to": to, "at": at, "channel": "portal", "reference": f"REF-{to}"}
    if kind:
        n["kind"] = kind
    return n


REPORTER_NOTE = note("reporter", T0 + 2 * D)


def notes(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [REPORTER_NOTE, *extra]


def esc(to: str, at: Any = T0 + 2 * H) -> dict[str, Any]:
    return {"to": to, "at": at, "reason": "response time"}


NON_SECURITY = dict(is_security=False)
LOW_PASSWORD_RESET = dict(is_security=False, severity="low", category="access", subcategory="password_reset",
                          evidence=[], title="Password reset", assignment_group="Service Desk")
PDB = dict(personal_data_breach=True, category="data_breach")
WEAKNESS = dict(record_type="weakness", category="vulnerability", title="Outdated TLS on the partner portal",
                contained_at=None, evidence=[], assessed_at=None)
MAJOR = dict(major_incident=True, major_declared_at=T0 + 2 * H,
             escalations=[esc("incident_manager", T0 + 2 * H)])
DECLARED_AGO = NOW - 1 * H  # for open major incidents


def major_open(declared_ago: timedelta, age: timedelta = 3 * H, **kw: Any) -> dict[str, Any]:
    return still_open(age, major_incident=True, major_declared_at=NOW - declared_ago, **kw)


# --- the table ------------------------------------------------------------------------------
# (check id, expected, label, overrides)

CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    # --- A.6.8 event and weakness reporting
    ("REPT-001", PASS, "reporter and channel recorded", {}),
    ("REPT-001", FAIL, "no reporter", dict(reporter=None)),
    ("REPT-001", FAIL, "no channel", dict(reported_via="")),
    ("REPT-001", PASS, "detected by monitoring, no person reported it", dict(reporter=None, reported_via="siem")),
    ("REPT-001", FAIL, "weakness report without a reporter", dict(WEAKNESS, reporter=None)),
    ("REPT-001", NOT_APPLICABLE, "not a security incident", dict(NON_SECURITY, reporter=None)),

    ("REPT-002", PASS, "weakness report linked to its record", dict(WEAKNESS, weakness_refs=["VUL0001"])),
    ("REPT-002", PASS, "tracked in a vulnerability record", dict(WEAKNESS, vulnerability_refs=["VIT0001234"])),
    ("REPT-002", PASS, "tracked in a problem record", dict(WEAKNESS, problem_ref="PRB0040001")),
    ("REPT-002", PASS, "tracked through a related change", dict(WEAKNESS, related_refs=["CHG0030012"])),
    ("REPT-002", FAIL, "weakness report without record", dict(WEAKNESS)),
    ("REPT-002", FAIL, "open weakness report without record", still_open(**WEAKNESS)),
    ("REPT-002", NOT_APPLICABLE, "an incident in a vulnerability category is not a weakness report", dict(category="vulnerability")),
    ("REPT-002", NOT_APPLICABLE, "weakness report not yet triaged", still_open(state="new", **WEAKNESS)),

    ("REPT-003", PASS, "reporter told", {}),
    ("REPT-003", FAIL, "nobody told", dict(notifications=[])),
    ("REPT-003", FAIL, "only the authority told", dict(notifications=[note("authority", T0 + D)])),
    ("REPT-003", NOT_APPLICABLE, "still open", still_open()),
    ("REPT-003", NOT_APPLICABLE, "raised by monitoring", dict(reported_via="monitoring", reporter="SIEM", notifications=[])),
    ("REPT-003", NOT_APPLICABLE, "no reporter to tell", dict(reporter=None, notifications=[])),
    ("REPT-003", NOT_APPLICABLE, "not a security incident", dict(NON_SECURITY, notifications=[])),

    ("REPT-004", PENDING, "weakness report open 10 days", still_open(10 * D, **WEAKNESS)),
    ("REPT-004", FAIL, "weakness report open 45 days", still_open(45 * D, **WEAKNESS)),
    ("REPT-004", FAIL, "weakness on hold 31 days", still_open(31 * D, state="on_hold", **WEAKNESS)),
    ("REPT-004", PASS, "weakness report resolved the next day", dict(WEAKNESS, opened_at=NOW - 90 * D)),
    ("REPT-004", FAIL, "weakness report resolved after 40 days", dict(WEAKNESS, opened_at=NOW - 90 * D, resolved_at=NOW - 50 * D,
                                                                      closed_at=NOW - 49 * D)),
    ("REPT-004", NOT_APPLICABLE, "weakness report dismissed", dict(WEAKNESS, state="cancelled")),
    ("REPT-004", NOT_APPLICABLE, "not a weakness report", still_open(45 * D)),

    ("REPT-005", PASS, "weakness in root cause tracked", dict(root_cause="Unpatched VPN appliance (CVE-2024-3400)", weakness_refs=["VUL0007"])),
    ("REPT-005", FAIL, "weakness in root cause not tracked", dict(root_cause="Unpatched VPN appliance (CVE-2024-3400)")),
    ("REPT-005", FAIL, "misconfiguration not tracked", dict(root_cause="Storage bucket misconfigured as public")),
    ("REPT-005", PASS, "the linked problem record tracks it", dict(root_cause="Unpatched VPN appliance (CVE-2024-3400)", problem_ref="PRB0040007")),
    ("REPT-005", PASS, "a vulnerability record tracks it", dict(root_cause="Unpatched VPN appliance", vulnerability_refs=["VIT0001234"])),
    ("REPT-005", NOT_APPLICABLE, "root cause names no weakness", {}),
    ("REPT-005", NOT_APPLICABLE, "still open", still_open(root_cause="Unpatched VPN appliance")),

    # --- A.5.28 evidence
    ("EVID-001", PASS, "evidence recorded", {}),
    ("EVID-001", FAIL, "high severity, no evidence", dict(evidence=[])),
    ("EVID-001", FAIL, "legal hold on a non-security incident", dict(NON_SECURITY, legal_hold=True, evidence=[])),
    ("EVID-001", NOT_APPLICABLE, "low-severity personal data breach (the breach record is GDPR-003's)", dict(PDB, severity="low", evidence=[])),
    ("EVID-001", NOT_APPLICABLE, "a weakness report is not an incident", dict(WEAKNESS, evidence=[])),
    ("EVID-001", FAIL, "in progress, no evidence yet", still_open(evidence=[])),
    ("EVID-001", NOT_APPLICABLE, "low-severity password reset", LOW_PASSWORD_RESET),
    ("EVID-001", NOT_APPLICABLE, "low-severity security incident", dict(severity="low", evidence=[])),
    ("EVID-001", NOT_APPLICABLE, "just triaged", still_open(state="triaged", evidence=[])),

    ("EVID-002", PASS, "complete item", {}),
    ("EVID-002", FAIL, "no hash", dict(evidence=[evidence_item(sha256=None)])),
    ("EVID-002", FAIL, "not a SHA-256 hash", dict(evidence=[evidence_item(sha256="d41d8cd98f00b204e9800998ecf8427e")])),
    ("EVID-002", FAIL, "no custody", dict(evidence=[evidence_item(custody=[])])),
    ("EVID-002", FAIL, "second item lacks collector", dict(evidence=[evidence_item(), evidence_item(collected_by="")])),
    ("EVID-002", NOT_APPLICABLE, "no evidence", dict(evidence=[])),

    ("EVID-003", PASS, "collected during the response", {}),
    ("EVID-003", PASS, "collection time missing is EVID-002's finding", dict(evidence=[evidence_item(collected_at=None)])),
    ("EVID-003", FAIL, "collected after closure", dict(evidence=[evidence_item(T0 + 3 * D)])),
    ("EVID-003", NOT_APPLICABLE, "no evidence", dict(evidence=[])),
    ("EVID-003", NOT_APPLICABLE, "not closed yet", still_open()),

    # --- logging and categorisation (A.5.24), assessment (A.5.25), roles (5.3)
    ("LOG-001", PASS, "categorised non-security incident", dict(NON_SECURITY, category="network")),
    ("LOG-001", FAIL, "non-security incident without category", dict(NON_SECURITY, category="")),
    ("LOG-001", NOT_APPLICABLE, "security incidents are LOG-002's", dict(category=None)),
    ("LOG-001", NOT_APPLICABLE, "low-severity password reset", dict(LOW_PASSWORD_RESET, category=None)),
    ("LOG-001", NOT_APPLICABLE, "new ticket", still_open(state="new", category=None, **NON_SECURITY)),

    ("LOG-002", PASS, "security category", {}),
    ("LOG-002", FAIL, "generic category", dict(category="network")),
    ("LOG-002", PASS, "a security category of the organisation's own scheme", dict(category="credential_compromise")),
    ("LOG-002", FAIL, "no category", dict(category=None)),
    ("LOG-002", NOT_APPLICABLE, "non-security incident", dict(NON_SECURITY, category="network")),
    ("LOG-002", NOT_APPLICABLE, "new ticket", still_open(state="new", category="network")),

    ("LOG-003", PASS, "security incident response team", {}),
    ("LOG-003", PASS, "CSIRT", dict(assignment_group="CSIRT")),
    ("LOG-003", PASS, "a team whose name says it responds to security incidents", dict(assignment_group="Cyber Defence Centre")),
    ("LOG-003", FAIL, "service desk queue", dict(assignment_group="Service Desk")),
    ("LOG-003", FAIL, "unassigned critical", still_open(severity="critical", assignment_group=None)),
    ("LOG-003", NOT_APPLICABLE, "low-severity security event", dict(severity="low", assignment_group="Service Desk")),
    ("LOG-003", NOT_APPLICABLE, "non-security incident", LOW_PASSWORD_RESET),
    ("LOG-003", NOT_APPLICABLE, "new ticket", still_open(state="new", assignment_group=None)),

    ("LOG-004", PASS, "times in order", {}),
    ("LOG-004", FAIL, "decided before opened", dict(assessed_at=T0 - H)),
    ("LOG-004", FAIL, "contained before opened", dict(contained_at=T0 - 2 * H)),
    ("LOG-004", NOT_APPLICABLE, "no decision or containment yet", still_open(state="new", assessed_at=None)),
    ("LOG-004", NOT_APPLICABLE, "non-security incident", dict(NON_SECURITY, assessed_at=T0 - H)),

    ("ASSESS-001", PASS, "high decided within 4h", {}),
    ("ASSESS-001", PASS, "critical decided within 1h", dict(severity="critical", assessed_at=T0 + 30 * timedelta(minutes=1))),
    ("ASSESS-001", FAIL, "critical decided after 2h", dict(severity="critical", assessed_at=T0 + 2 * H)),
    ("ASSESS-001", FAIL, "high decided after 6h", dict(assessed_at=T0 + 6 * H)),
    ("ASSESS-001", FAIL, "closed without a decision", dict(assessed_at=None)),
    ("ASSESS-001", PENDING, "open, undecided, within time", still_open(2 * H, state="new", assessed_at=None)),
    ("ASSESS-001", FAIL, "cancelled without a decision time", dict(state="cancelled", assessed_at=None)),
    ("ASSESS-001", PASS, "an undecided event decided in time", dict(record_type="event", state="in_progress", assessed_at=T0 + H)),
    ("ASSESS-001", NOT_APPLICABLE, "a weakness report needs no incident decision", dict(WEAKNESS, assessed_at=None)),
    ("ASSESS-001", FAIL, "open, undecided, past time", still_open(6 * H, state="new", assessed_at=None)),
    ("ASSESS-001", FAIL, "open, no severity, undecided for 2 days", still_open(2 * D, state="new", assessed_at=None, severity=None)),
    ("ASSESS-001", NOT_APPLICABLE, "non-security incident", dict(NON_SECURITY, assessed_at=None)),

    ("ASSESS-002", PASS, "severity recorded", {}),
    ("ASSESS-002", FAIL, "closed without severity", dict(severity=None)),
    ("ASSESS-002", FAIL, "assessed without severity", still_open(state="triaged", severity=None)),
    ("ASSESS-002", NOT_APPLICABLE, "new, not assessed yet", still_open(state="new", assessed_at=None, severity=None)),
    ("ASSESS-002", NOT_APPLICABLE, "non-security incident", dict(NON_SECURITY, severity=None)),

    ("ASSESS-003", PASS, "dismissed with a reason", dict(state="cancelled", close_code="False positive", resolution_notes=None)),
    ("ASSESS-003", FAIL, "dismissed without a reason", dict(state="cancelled", close_code=None, resolution_notes=None)),
    ("ASSESS-003", PASS, "dismissed with a note, no decision time (ASSESS-001's finding)", dict(state="cancelled", assessed_at=None, close_code=None)),
    ("ASSESS-003", NOT_APPLICABLE, "not dismissed", {}),
    ("ASSESS-003", NOT_APPLICABLE, "cancelled non-security ticket", dict(NON_SECURITY, state="cancelled", close_code=None, resolution_notes=None)),

    ("ROLE-001", PASS, "business unit named", {}),
    ("ROLE-001", FAIL, "no business unit", dict(business_unit=None)),
    ("ROLE-001", NOT_APPLICABLE, "non-security incident", dict(NON_SECURITY, business_unit=None)),
    ("ROLE-001", NOT_APPLICABLE, "new ticket", still_open(state="new", business_unit=None)),

    # --- A.5.26 response, escalation, major incidents
    ("RESP-001", PASS, "containment and recovery recorded", {}),
    ("RESP-001", FAIL, "no containment time", dict(contained_at=None)),
    ("RESP-001", PASS, "no resolution notes is CLOSE-001's finding", dict(resolution_notes=None)),
    ("RESP-001", NOT_APPLICABLE, "a weakness report is not contained", dict(WEAKNESS, contained_at=None)),
    ("RESP-001", NOT_APPLICABLE, "still open", still_open()),
    ("RESP-001", NOT_APPLICABLE, "low-severity security event", dict(severity="low", contained_at=None)),
    ("RESP-001", NOT_APPLICABLE, "non-security incident", dict(NON_SECURITY, contained_at=None)),

    ("RESP-002", PASS, "high contained in 3h", {}),
    ("RESP-002", FAIL, "high contained after 30h", dict(contained_at=T0 + 30 * H)),
    ("RESP-002", FAIL, "critical contained after 5h", dict(severity="critical", contained_at=T0 + 5 * H)),
    ("RESP-002", PENDING, "open, not contained, within time", still_open(2 * H)),
    ("RESP-002", FAIL, "open, not contained, past time", still_open(30 * H)),
    ("RESP-002", NOT_APPLICABLE, "resolved without containment time (RESP-001)", dict(contained_at=None)),
    ("RESP-002", NOT_APPLICABLE, "low-severity security event", still_open(30 * D, severity="low")),
    ("RESP-002", NOT_APPLICABLE, "non-security incident", dict(NON_SECURITY, contained_at=T0 + 30 * H)),

    ("RESP-003", PASS, "critical escalated", dict(severity="critical", escalations=[esc("incident_manager")])),
    ("RESP-003", FAIL, "critical not escalated", dict(severity="critical")),
    ("RESP-003", FAIL, "high contained late, not escalated", dict(contained_at=T0 + 30 * H)),
    ("RESP-003", PASS, "high contained late, escalated", dict(contained_at=T0 + 30 * H, escalations=[esc("incident_manager", T0 + 25 * H)])),
    ("RESP-003", FAIL, "open, past response time, not escalated", still_open(30 * H)),
    ("RESP-003", NOT_APPLICABLE, "high contained in time", {}),
    ("RESP-003", NOT_APPLICABLE, "open, within response time", still_open(2 * H)),
    ("RESP-003", NOT_APPLICABLE, "critical non-security incident", dict(NON_SECURITY, severity="critical")),

    ("RESP-004", PASS, "major incident declared", MAJOR),
    ("RESP-004", FAIL, "major incident never declared", dict(MAJOR, major_declared_at=None)),
    ("RESP-004", NOT_APPLICABLE, "not a major incident", {}),
    ("RESP-004", NOT_APPLICABLE, "cancelled major incident", dict(MAJOR, state="cancelled", major_declared_at=None)),

    ("RESP-005", PASS, "escalated to the incident manager", MAJOR),
    ("RESP-005", FAIL, "escalated only within support", dict(MAJOR, escalations=[esc("service_desk_l2")])),
    ("RESP-005", FAIL, "never escalated", dict(MAJOR, escalations=[])),
    ("RESP-005", PENDING, "open, declared 30 minutes ago", major_open(30 * timedelta(minutes=1))),
    ("RESP-005", FAIL, "open, declared 5 hours ago", major_open(5 * H)),
    ("RESP-005", FAIL, "escalated to management 6 hours after declaration", dict(MAJOR, escalations=[esc("ciso", T0 + 8 * H)])),
    ("RESP-005", NOT_APPLICABLE, "not a major incident", {}),

    ("RESP-006", PASS, "named handler", {}),
    ("RESP-006", FAIL, "no handler", dict(assignee=None)),
    ("RESP-006", FAIL, "in progress without handler", still_open(assignee="")),
    ("RESP-006", NOT_APPLICABLE, "triaged, not started", still_open(state="triaged", assignee=None)),
    ("RESP-006", NOT_APPLICABLE, "non-security incident", dict(NON_SECURITY, assignee=None)),

    # --- A.5.27 learning
    ("LEARN-001", PASS, "root cause and lessons recorded", {}),
    ("LEARN-001", FAIL, "no root cause", dict(root_cause=None)),
    ("LEARN-001", FAIL, "no lessons learned", dict(lessons_learned="")),
    ("LEARN-001", NOT_APPLICABLE, "still open", still_open()),
    ("LEARN-001", NOT_APPLICABLE, "resolved, review pending", dict(state="resolved", closed_at=None, lessons_learned=None)),
    ("LEARN-001", NOT_APPLICABLE, "medium severity", dict(severity="medium", lessons_learned=None)),
    ("LEARN-001", NOT_APPLICABLE, "non-security incident", dict(NON_SECURITY, lessons_learned=None)),

    ("LEARN-003", PASS, "major outage reviewed", dict(MAJOR, is_security=False)),
    ("LEARN-003", NOT_APPLICABLE, "major security incident is LEARN-001's", dict(MAJOR, lessons_learned=None)),
    ("LEARN-003", FAIL, "non-security major outage closed without root cause", dict(MAJOR, is_security=False, root_cause=None)),
    ("LEARN-003", NOT_APPLICABLE, "major incident still open", major_open(2 * H)),
    ("LEARN-003", NOT_APPLICABLE, "not a major incident", dict(lessons_learned=None)),

    # --- closure and evaluation
    ("CLOSE-001", PASS, "resolved, coded and described", {}),
    ("CLOSE-001", FAIL, "closed without resolution time", dict(resolved_at=None)),
    ("CLOSE-001", PASS, "closed without close code (a tool convention)", dict(close_code=None)),
    ("CLOSE-001", FAIL, "closed without resolution notes", dict(resolution_notes="")),
    ("CLOSE-001", NOT_APPLICABLE, "resolved, not closed", dict(state="resolved", closed_at=None, close_code=None)),
    ("CLOSE-001", NOT_APPLICABLE, "non-security password reset", dict(LOW_PASSWORD_RESET, close_code=None)),

    ("CLOSE-002", PASS, "resolved before closed", {}),
    ("CLOSE-002", PASS, "non-security, in order", LOW_PASSWORD_RESET),
    ("CLOSE-002", FAIL, "resolved after closed", dict(resolved_at=T0 + 3 * D)),
    ("CLOSE-002", NOT_APPLICABLE, "not closed", still_open()),

    ("CLOSE-003", PASS, "opened before resolved", {}),
    ("CLOSE-003", FAIL, "resolved before opened", dict(resolved_at=T0 - H)),
    ("CLOSE-003", NOT_APPLICABLE, "not resolved", still_open()),

    # --- improvements
    ("IMPR-001", PASS, "monitoring alert with log references", dict(reported_via="monitoring", log_refs=["SIEM:search/8812"])),
    ("IMPR-001", FAIL, "monitoring alert without logs", dict(reported_via="monitoring")),
    ("IMPR-001", FAIL, "SIEM alert without logs", still_open(reported_via="siem")),
    ("IMPR-001", NOT_APPLICABLE, "reported by email", {}),
    ("IMPR-001", NOT_APPLICABLE, "new alert", still_open(state="new", reported_via="monitoring")),

    ("IMPR-002", PASS, "hardware failure with maintenance record", dict(NON_SECURITY, category="hardware", maintenance_ref="WO-1182")),
    ("IMPR-002", FAIL, "hardware failure without maintenance record", dict(NON_SECURITY, category="hardware")),
    ("IMPR-002", FAIL, "equipment subcategory", dict(NON_SECURITY, category="facilities", subcategory="equipment")),
    ("IMPR-002", NOT_APPLICABLE, "not equipment", {}),
    ("IMPR-002", NOT_APPLICABLE, "hardware, still open", still_open(category="hardware")),

    ("IMPR-003", PASS, "capacity incident with capacity review", dict(NON_SECURITY, category="performance", capacity_ref="CAP-2026-Q3")),
    ("IMPR-003", FAIL, "capacity incident without review", dict(NON_SECURITY, category="capacity")),
    ("IMPR-003", FAIL, "performance subcategory", dict(NON_SECURITY, category="database", subcategory="performance")),
    ("IMPR-003", NOT_APPLICABLE, "not capacity", {}),
    ("IMPR-003", NOT_APPLICABLE, "capacity, still open", still_open(category="capacity")),

    # --- GDPR overlay (awareness = assessed_at = T0 + 1h)
    ("GDPR-001", PASS, "authority notified after 48h", dict(PDB, notifications=notes(note("authority", T0 + 49 * H)))),
    ("GDPR-001", FAIL, "authority notified after 80h", dict(PDB, notifications=notes(note("authority", T0 + 81 * H)))),
    ("GDPR-001", FAIL, "authority never notified", dict(PDB)),
    ("GDPR-001", FAIL, "resolved quickly, authority not notified", dict(PDB, state="resolved", closed_at=None)),
    ("GDPR-001", PENDING, "open, aware 10h ago", still_open(12 * H, assessed_at=NOW - 10 * H, **PDB)),
    ("GDPR-001", PENDING, "open, not yet decided, opened 10h ago", still_open(10 * H, assessed_at=None, **PDB)),
    ("GDPR-001", PENDING, "closed within a day, report not due yet", dict(PDB, opened_at=NOW - 30 * H, notifications=[])),
    ("GDPR-001", FAIL, "closed, no decision time, 72h from opening passed", dict(PDB, assessed_at=None)),
    ("GDPR-001", FAIL, "open, not yet decided, opened 4 days ago", still_open(4 * D, assessed_at=None, **PDB)),
    ("GDPR-001", FAIL, "open, aware 80h ago", still_open(90 * H, assessed_at=NOW - 80 * H, **PDB)),
    ("GDPR-001", NOT_APPLICABLE, "no personal data breach", {}),
    ("GDPR-001", NOT_APPLICABLE, "breach unlikely to put people at risk", dict(PDB, severity="low")),
    ("GDPR-001", NOT_APPLICABLE, "cancelled", dict(PDB, state="cancelled")),

    ("GDPR-002", PASS, "data subjects told", dict(PDB, notifications=notes(note("data_subjects", T0 + D)))),
    ("GDPR-002", FAIL, "data subjects not told", dict(PDB)),
    ("GDPR-002", FAIL, "critical breach, only the authority told", dict(PDB, severity="critical", notifications=notes(note("authority", T0 + D)))),
    ("GDPR-002", PENDING, "open, aware 10h ago", still_open(12 * H, assessed_at=NOW - 10 * H, **PDB)),
    ("GDPR-002", FAIL, "open, aware 5 days ago", still_open(6 * D, assessed_at=NOW - 5 * D, **PDB)),
    ("GDPR-002", PENDING, "open, not decided yet, opened 10h ago", still_open(10 * H, assessed_at=None, **PDB)),
    ("GDPR-002", NOT_APPLICABLE, "medium-risk breach", dict(PDB, severity="medium")),
    ("GDPR-002", NOT_APPLICABLE, "no personal data breach", {}),

    ("GDPR-003", PASS, "breach documented", dict(PDB)),
    ("GDPR-003", FAIL, "no remedial action", dict(PDB, resolution_notes=None)),
    ("GDPR-003", FAIL, "no facts described", dict(PDB, description="")),
    ("GDPR-003", PASS, "no awareness time is ASSESS-001's finding", dict(PDB, assessed_at=None)),
    ("GDPR-003", NOT_APPLICABLE, "still open", still_open(**PDB)),
    ("GDPR-003", NOT_APPLICABLE, "no personal data breach", dict(root_cause=None)),

    ("GDPR-004", PASS, "DPO informed", dict(PDB, notifications=notes(note("dpo", T0 + 2 * H)))),
    ("GDPR-004", FAIL, "DPO not informed", dict(PDB)),
    ("GDPR-004", NOT_APPLICABLE, "breach just triaged", still_open(state="triaged", **PDB)),
    ("GDPR-004", NOT_APPLICABLE, "no personal data breach", {}),

    # --- NIS2 overlay (awareness = assessed_at = T0 + 1h)
    ("NIS2-001", PASS, "early warning after 20h", dict(notifications=notes(note("csirt", T0 + 21 * H, "early_warning")))),
    ("NIS2-001", PASS, "full notification within 24h", dict(notifications=notes(note("authority", T0 + 10 * H, "notification")))),
    ("NIS2-001", FAIL, "early warning after 30h", dict(notifications=notes(note("csirt", T0 + 31 * H, "early_warning")))),
    ("NIS2-001", FAIL, "final report only", dict(notifications=notes(note("csirt", T0 + 3 * H, "final_report")))),
    ("NIS2-001", FAIL, "nothing sent", {}),
    ("NIS2-001", PENDING, "open, aware 10h ago", still_open(12 * H, assessed_at=NOW - 10 * H)),
    ("NIS2-001", FAIL, "open, aware 30h ago", still_open(31 * H, assessed_at=NOW - 30 * H)),
    ("NIS2-001", PENDING, "open, not decided yet, opened 1h ago", still_open(1 * H, state="new", assessed_at=None)),
    ("NIS2-001", FAIL, "open, not decided yet, opened 2 days ago", still_open(2 * D, state="new", assessed_at=None)),
    ("NIS2-001", FAIL, "medium major incident not reported", dict(severity="medium", major_incident=True, major_declared_at=T0 + H)),
    ("NIS2-001", NOT_APPLICABLE, "not significant", dict(severity="medium")),
    ("NIS2-001", NOT_APPLICABLE, "not a security incident", NON_SECURITY),

    ("NIS2-002", PASS, "notification after 60h", dict(notifications=notes(note("csirt", T0 + 20 * H, "early_warning"), note("csirt", T0 + 61 * H, "notification")))),
    ("NIS2-002", FAIL, "notification after 90h", dict(notifications=notes(note("csirt", T0 + 20 * H, "early_warning"), note("csirt", T0 + 91 * H, "notification")))),
    ("NIS2-002", FAIL, "early warning only", dict(notifications=notes(note("csirt", T0 + 20 * H, "early_warning")))),
    ("NIS2-002", PENDING, "open, aware 40h ago", still_open(2 * D, assessed_at=NOW - 40 * H)),
    ("NIS2-002", FAIL, "open, aware 4 days ago", still_open(5 * D, assessed_at=NOW - 4 * D)),
    ("NIS2-002", NOT_APPLICABLE, "low severity", dict(severity="low")),

    ("NIS2-003", PASS, "final report after 20 days", dict(opened_at=NOW - 40 * D, notifications=notes(note("csirt", NOW - 40 * D + 20 * D, "final_report")))),
    ("NIS2-003", FAIL, "final report after 40 days", dict(opened_at=NOW - 60 * D, notifications=notes(note("csirt", NOW - 60 * D + 41 * D, "final_report")))),
    ("NIS2-003", PENDING, "closed five days in, the month is still running", {}),
    ("NIS2-003", FAIL, "closed 40 days ago without final report", dict(opened_at=NOW - 45 * D)),
    ("NIS2-003", PENDING, "resolved, month still running", dict(state="resolved", closed_at=None)),
    ("NIS2-003", FAIL, "resolved late: the month runs from resolution, and passed",
     dict(opened_at=NOW - 90 * D, resolved_at=NOW - 50 * D, closed_at=NOW - 49 * D)),
    ("NIS2-003", PENDING, "resolved late: the month from resolution still runs",
     dict(opened_at=NOW - 90 * D, resolved_at=NOW - 10 * D, closed_at=NOW - 9 * D)),
    ("NIS2-003", NOT_APPLICABLE, "still being handled", still_open(10 * D, assessed_at=NOW - 10 * D)),
    ("NIS2-003", NOT_APPLICABLE, "not significant", dict(severity="low")),

    # --- DORA overlay (detection = T0, classification = T0 + 2h)
    ("DORA-001", PASS, "initial 2h after classification", dict(MAJOR, notifications=notes(note("authority", T0 + 4 * H, "initial_notification")))),
    ("DORA-001", FAIL, "initial 5h after classification", dict(MAJOR, notifications=notes(note("authority", T0 + 7 * H, "initial_notification")))),
    ("DORA-001", FAIL, "classified late: initial 25h after detection",
     dict(MAJOR, major_declared_at=T0 + 22 * H, notifications=notes(note("authority", T0 + 25 * H, "initial_notification")))),
    ("DORA-001", PASS, "no classification time: the clock starts at detection", dict(MAJOR, major_declared_at=None, notifications=notes(note("authority", T0 + 4 * H, "initial_notification")))),
    ("DORA-001", FAIL, "no classification time, sent 5h after detection", dict(MAJOR, major_declared_at=None, notifications=notes(note("authority", T0 + 5 * H, "initial_notification")))),
    ("DORA-001", FAIL, "nothing sent", MAJOR),
    ("DORA-001", PENDING, "open, classified 1h ago", major_open(1 * H)),
    ("DORA-001", FAIL, "open, classified 5h ago", major_open(5 * H)),
    ("DORA-001", FAIL, "open, classified just now but detected 2 days ago", major_open(1 * H, age=2 * D)),
    ("DORA-001", NOT_APPLICABLE, "not a major incident", {}),
    ("DORA-001", NOT_APPLICABLE, "cancelled", dict(MAJOR, state="cancelled")),

    ("DORA-002", PASS, "intermediate 70h after classification", dict(MAJOR, notifications=notes(note("authority", T0 + 72 * H, "intermediate_report")))),
    ("DORA-002", FAIL, "intermediate 80h after classification", dict(MAJOR, notifications=notes(note("authority", T0 + 82 * H, "intermediate_report")))),
    ("DORA-002", FAIL, "initial only", dict(MAJOR, notifications=notes(note("authority", T0 + 4 * H, "initial_notification")))),
    ("DORA-002", PENDING, "open, classified 2 days ago", major_open(2 * D, age=2 * D + H)),
    ("DORA-002", PASS, "72h after the initial notification sent late",
     dict(MAJOR, notifications=notes(note("authority", T0 + 7 * H, "initial_notification"), note("authority", T0 + 78 * H, "intermediate_report")))),
    ("DORA-002", FAIL, "open, classified 4 days ago", major_open(4 * D, age=4 * D + H)),
    ("DORA-002", NOT_APPLICABLE, "not a major incident", {}),

    ("DORA-003", PASS, "final report after 20 days", dict(MAJOR, notifications=notes(note("authority", T0 + 20 * D, "final_report")))),
    ("DORA-003", FAIL, "final report after 40 days",
     dict(MAJOR, opened_at=NOW - 60 * D, major_declared_at=NOW - 60 * D + 2 * H,
          notifications=notes(note("authority", NOW - 60 * D + 40 * D, "final_report")))),
    ("DORA-003", PENDING, "closed, the month is still running", MAJOR),
    ("DORA-003", FAIL, "closed 40 days ago without final report", dict(MAJOR, opened_at=NOW - 45 * D, major_declared_at=NOW - 45 * D + 2 * H)),
    ("DORA-003", PENDING, "open, classified 10 days ago", major_open(10 * D, age=10 * D + H)),
    ("DORA-003", FAIL, "open, classified 40 days ago", major_open(40 * D, age=40 * D + H)),
    ("DORA-003", NOT_APPLICABLE, "cancelled", dict(MAJOR, state="cancelled")),
    ("DORA-003", NOT_APPLICABLE, "not a major incident", {}),
]


@pytest.mark.parametrize(("check_id", "expected", "overrides"), [(c, e, o) for c, e, _, o in CASES],
                         ids=[f"{c}-{e}-{label}" for c, e, label, _ in CASES])
def test_check_table(ruleset, check_id: str, expected: str, overrides: dict[str, Any]) -> None:
    check = ruleset.check(check_id)
    assert check is not None, f"{check_id} is not in the shipped mappings"
    assert not check.across
    incident = create_incident(**overrides)
    status = check.evaluate(incident, NOW)
    assert status == expected, f"{check_id}: {status}, expected {expected}; missing: {check.explain(incident, NOW)}"


def test_every_check_has_pass_fail_and_not_applicable_rows(ruleset) -> None:
    """And every check with a clock has a pending row."""
    seen: dict[str, set[str]] = defaultdict(set)
    for cid, expected, _, _ in CASES:
        seen[cid].add(expected)
    wanted = {c.id: {PASS, FAIL, NOT_APPLICABLE} | ({PENDING} if c.clock else set()) for c in ruleset.incident_checks}
    lacking = {cid: sorted(want - seen[cid]) for cid, want in wanted.items() if seen[cid] != want}
    assert not lacking, f"add table rows for: {lacking}"
    unknown = set(seen) - {c.id for c in ruleset.incident_checks}
    assert not unknown, f"table rows for checks that are not shipped: {sorted(unknown)}"


def test_a_failing_row_explains_what_is_missing(ruleset) -> None:
    for cid, expected, label, overrides in CASES:
        if expected == FAIL:
            check = ruleset.check(cid)
            assert check.explain(create_incident(**overrides), NOW), f"{cid} ({label}) fails without saying why"


def test_verdicts_on_finished_incidents_change_only_when_a_clock_falls_due(ruleset) -> None:
    """A finished incident is re-assessed when a pending clock falls due, and only then.

    So a pass or a fail on it never changes with time, and a pending finding stays
    pending until its due time and fails after it.
    """
    later = NOW + 400 * D
    rows = [(ruleset.check(cid), label, create_incident(**o)) for cid, _, label, o in CASES]
    rows += [(c, "variant", create_incident(**o)) for c in ruleset.incident_checks
             for o in ({}, dict(NON_SECURITY), dict(MAJOR), dict(PDB), dict(state="resolved", closed_at=None))]
    for check, label, incident in rows:
        if incident["state"] in OPEN_STATES:
            continue
        status, _, due = check.outcome(incident, NOW) or (NOT_APPLICABLE, [], None)
        if status == PENDING:
            assert due is not None and due > NOW, (check.id, label)
            before, after = due - timedelta(seconds=1), due + timedelta(seconds=1)
            assert check.evaluate(incident, before) == PENDING, (check.id, label)
            assert check.evaluate(incident, after) == FAIL, (check.id, label)
        else:
            assert check.evaluate(incident, later) == status, f"{check.id} ({label}) changes with time"


def test_a_pending_clock_is_neither_a_pass_nor_a_fail_and_says_when_it_falls_due(ruleset) -> None:
    opened = NOW - 10 * H
    incident = create_incident(**still_open(10 * H, assessed_at=opened + H, **PDB))
    status, details, due = ruleset.check("GDPR-001").outcome(incident, NOW)
    assert (status, details, due) == (PENDING, [], opened + H + 72 * H)
    # the same breach, closed early: still pending, not failing, until the 72 hours have passed
    closed = create_incident(**dict(PDB, opened_at=opened, assessed_at=opened + H, notifications=[],
                                    resolved_at=opened + 2 * H, closed_at=opened + 3 * H))
    assert ruleset.check("GDPR-001").outcome(closed, NOW)[0] == PENDING
    status, details, due = ruleset.check("GDPR-001").outcome(closed, opened + 74 * H)
    assert status == FAIL and due == opened + 73 * H
    assert details == ["Notification of the supervisory authority (GDPR Art. 33): due at "
                       f"{due:%Y-%m-%d %H:%M} UTC, not recorded"]


@pytest.mark.parametrize(("check_id", "overrides", "due_after_opening"), [
    ("ASSESS-001", dict(severity="critical", assessed_at=None, state="new"), H),
    ("ASSESS-001", dict(severity=None, assessed_at=None, state="new"), 24 * H),
    ("RESP-002", dict(severity="medium"), 72 * H),
    # the decision time starts the GDPR and NIS2 clocks; without one, the opening time does
    ("GDPR-001", dict(PDB, assessed_at=T0 + 2 * H), 74 * H),
    ("GDPR-001", dict(PDB, assessed_at=None), 72 * H),
    ("NIS2-001", dict(assessed_at=None), 24 * H),
    ("NIS2-002", dict(assessed_at=T0 + H), 73 * H),
    # one month after the later of the notification (or when it was due) and the resolution
    ("NIS2-003", dict(assessed_at=T0 + H, resolved_at=T0 + D), 73 * H + 30 * D),
    ("NIS2-003", dict(notifications=[note("csirt", T0 + 50 * H, "notification")], resolved_at=T0 + 20 * D, closed_at=T0 + 21 * D),
     50 * D),
    # the earliest of 4h from classification and 24h from detection
    ("DORA-001", dict(MAJOR, major_declared_at=T0 + 22 * H), 24 * H),
    ("DORA-001", dict(MAJOR, major_declared_at=T0 + 2 * H), 6 * H),
    ("DORA-002", dict(MAJOR, notifications=[note("authority", T0 + 5 * H, "initial_notification")]), 77 * H),
    ("DORA-002", dict(MAJOR), 78 * H),
    ("RESP-005", dict(MAJOR, major_declared_at=None, escalations=[]), 4 * H),
])
def test_due_times(ruleset, check_id: str, overrides: dict[str, Any], due_after_opening: timedelta) -> None:
    outcome = ruleset.check(check_id).outcome(create_incident(**overrides), NOW)
    assert outcome is not None and outcome[2] == T0 + due_after_opening, outcome


def test_a_late_report_fails_and_says_how_late(ruleset) -> None:
    incident = create_incident(**dict(notifications=notes(note("csirt", T0 + 31 * H, "early_warning"))))
    status, details, due = ruleset.check("NIS2-001").outcome(incident, NOW)
    assert status == FAIL and due == T0 + 25 * H
    assert details == [f"NIS2 early warning to the CSIRT or authority: recorded at {T0 + 31 * H:%Y-%m-%d %H:%M} UTC, "
                       f"6 h after it was due at {T0 + 25 * H:%Y-%m-%d %H:%M} UTC"]


def test_the_complete_incident_passes_every_iso_check(base_ruleset) -> None:
    """The conftest incident is complete; without overlays nothing may fail on it (nor on its non-security twin)."""
    for overrides in ({}, dict(NON_SECURITY), dict(NON_SECURITY, evidence=[]), LOW_PASSWORD_RESET):
        incident = create_incident(**overrides)
        failing = [c.id for c in base_ruleset.incident_checks if c.evaluate(incident, NOW) == FAIL]
        assert not failing, (overrides, failing)


def test_a_low_severity_password_reset_is_left_alone(ruleset) -> None:
    incident = create_incident(**LOW_PASSWORD_RESET)
    failing = [c.id for c in ruleset.incident_checks if c.evaluate(incident, NOW) == FAIL]
    assert failing == []


# --- catalogue and shape ---------------------------------------------------------------------


def test_at_least_25_checks_without_overlays(base_ruleset) -> None:
    assert len(base_ruleset.checks) >= 25
    assert not any(c.overlay for c in base_ruleset.checks)


def test_overlays_are_separate_and_complete(ruleset, base_ruleset) -> None:
    by_overlay: dict[str | None, set[str]] = defaultdict(set)
    for c in ruleset.checks:
        by_overlay[c.overlay].add(c.id)
    assert set(by_overlay) == {None, "gdpr", "nis2", "dora"}
    assert by_overlay[None] == {c.id for c in base_ruleset.checks}
    for name in OVERLAYS:
        assert {"A.5.5", "A.5.26"} & {x for c in ruleset.checks if c.overlay == name for x in c.controls_2022}
    assert any("A.5.34" in c.controls_2022 for c in ruleset.checks if c.overlay == "gdpr")


def test_every_check_names_controls_known_in_both_editions(ruleset) -> None:
    cat = ruleset.catalogue
    for c in ruleset.checks:
        assert c.controls_2022 and c.controls_2013, c.id
        for cid in c.controls_2022:
            assert cat.get("2022", cid) is not None, (c.id, cid)
        for cid in c.controls_2013:
            assert cat.get("2013", cid) is not None, (c.id, cid)


def test_every_check_is_fully_described(ruleset) -> None:
    for c in ruleset.checks:
        assert c.relation in {"covered", "gap", "improvement"}, c.id
        assert c.rationale and c.remediation and c.missing and c.title, c.id
        if c.relation == "improvement":
            assert c.severity == "low", c.id


def test_every_finding_resolves_to_both_editions(ruleset) -> None:
    import json

    from plugin.services.assess import FINDING_COLUMNS, check_constants

    for c in ruleset.checks:
        row = dict(zip(FINDING_COLUMNS, check_constants(c, ruleset.hash), strict=False))  # the leading constant columns
        assert json.loads(row["controls_2022"]) and json.loads(row["controls_2013"]), c.id


def test_the_seed_analysis_is_covered(base_ruleset) -> None:
    """Seed 004's relations each have at least one check on the right sub-process."""
    have = {(c.subprocess, x, c.relation) for c in base_ruleset.checks for x in c.controls_2022}
    for expected in [("user_info", "A.6.8", "gap"), ("resolution", "A.5.28", "gap"), ("logging", "A.5.25", "covered"),
                     ("resolution", "A.5.26", "covered"), ("reporting", "A.5.27", "covered"),
                     ("logging", "A.5.24", "covered"), ("closure", "A.5.26", "covered"), ("reporting", "A.8.8", "gap"),
                     ("monitoring", "A.8.15", "improvement"), ("support", "A.8.6", "improvement")]:
        assert expected in have, expected
    assert any("A.7.13" in c.controls_2022 and c.relation == "improvement" for c in base_ruleset.checks)
    assert any(c.controls_2022 == ("5.3",) and c.controls_2013 == ("5.3",) for c in base_ruleset.checks)


def test_the_override_example_loads_and_shows_each_kind_of_override() -> None:
    rs = load_ruleset(REPO / "mappings", overlays=OVERLAYS, overrides=REPO / "mappings" / "overrides.example.yaml")
    assert rs.disabled and all(rs.check(c) is None for c in rs.disabled)
    assert rs.check("EVID-001").severity == "critical"
    assert rs.check("ASSESS-001").params["decision_time"]["critical"] == "30m"
    added = [c for c in rs.checks if c.provenance.get("definition", "").find("overrides.example.yaml") >= 0]
    assert added, "the example adds a check"


# --- checks across incidents -----------------------------------------------------------------


def test_across_checks_are_shipped(base_ruleset) -> None:
    assert {"LEARN-002", "REPT-006"} <= {c.id for c in base_ruleset.checks}


def recurring(n: int, spacing: timedelta, **kw: Any) -> list[dict[str, Any]]:
    return [create_incident(number=f"INC{i:07d}", external_id=f"{i:032x}", opened_at=NOW - 10 * D + i * spacing, **kw)
            for i in range(n)]


def test_learn_002_recurring_incidents_need_a_problem_record(ruleset) -> None:
    check = ruleset.check("LEARN-002")
    # three on the same item and category within 30 days: each needs the problem record
    group = recurring(3, D)
    group[0]["problem_ref"] = group[1]["problem_ref"] = "PRB0001"
    assert across.evaluate_across(check, group, NOW) == [PASS, PASS, FAIL]
    # two are not a pattern
    assert across.evaluate_across(check, recurring(2, D), NOW) == [NOT_APPLICABLE] * 2
    # three spread over 90 days are not recurring within the window
    assert across.evaluate_across(check, recurring(3, 45 * D), NOW) == [NOT_APPLICABLE] * 3
    # a different item breaks the group
    mixed = recurring(3, D)
    mixed[2]["affected_ci"] = "vpn-01"
    assert across.evaluate_across(check, mixed, NOW) == [NOT_APPLICABLE] * 3
    # non-security and cancelled incidents are not counted
    others = recurring(3, D)
    others[1]["is_security"] = False
    others[2]["state"] = "cancelled"
    assert across.evaluate_across(check, others, NOW) == [NOT_APPLICABLE] * 3


def test_rept_006_referenced_weakness_open_too_long(ruleset) -> None:
    check = ruleset.check("REPT-006")
    weakness = create_incident(number="VUL0001", **still_open(45 * D, category="vulnerability"))
    young = create_incident(number="VUL0002", **still_open(10 * D, category="vulnerability"))
    fixed = create_incident(number="VUL0003", category="vulnerability", opened_at=NOW - 90 * D)
    incidents = [
        weakness, young, fixed,
        create_incident(number="INC0000001", weakness_refs=["VUL0001"]),
        create_incident(number="INC0000002", weakness_refs=["VUL0002"]),
        create_incident(number="INC0000003", weakness_refs=["VUL0003"]),
        create_incident(number="INC0000004", weakness_refs=["VUL9999"]),  # not stored
        create_incident(number="INC0000005"),
    ]
    statuses = across.evaluate_across(check, incidents, NOW)
    assert statuses[3:] == [FAIL, PASS, PASS, NOT_APPLICABLE, NOT_APPLICABLE]
