"""Complete records of every severity and record type, records no check is about, and improvements.

None of these is a nonconformity: must and may are empty throughout. Improvement controls
(A.8.15, A.7.13, A.8.6, clause 5.3, A.5.24 for reporter feedback) must never be flagged.
"""

from __future__ import annotations

from tests.auditor_cases import (
    NOW,
    Case,
    D,
    H,
    M,
    escalation,
    evidence_item,
    it_incident,
    security_event,
    service_request,
    still_open,
    weakness_report,
    well_handled,
)

T0 = NOW - 10 * D  # opened_at of the closed cases

CASES: list[Case] = [
    # --- complete incidents, every severity -----------------------------------------------
    Case(
        "AC-001", "Complete critical ransomware incident, closed",
        well_handled(
            number="INCAC001", opened_at=T0, severity="critical", category="malware", subcategory="ransomware",
            title="Ransomware on a finance file server", assignment_group="CSIRT", affected_ci="fs-fin-01",
            assessed_at=T0 + 20 * M, contained_at=T0 + 3 * H, escalations=[escalation("ciso", T0 + 40 * M)],
            root_cause="A user opened a malicious attachment from a spoofed supplier address; the payload spread over a shared drive.",
            resolution_notes="Server isolated, restored from the offline backup, accounts reset, indicators blocked.",
            lessons_learned="Restrict write access to shared drives; rehearse restore of finance servers quarterly.",
        ),
        must=set(),
        why="Decided in 20 min, contained in 3 h, escalated to the CISO, evidence hashed with custody, reviewed: every "
        "A.5.24-A.5.28 purpose is met. No close code and no reporter feedback, neither of which the standard asks for.",
    ),
    Case(
        "AC-002", "Complete high phishing incident, closed, no close code",
        well_handled(number="INCAC002", opened_at=T0),
        must=set(),
        why="The reference record: decided in time, contained in 3 h by the security team, evidence with custody, root cause "
        "and lessons. The missing close code is a tool convention (findings rule 1), not a gap.",
    ),
    Case(
        "AC-003", "Complete medium unauthorised-access incident, closed",
        well_handled(
            number="INCAC003", opened_at=T0, severity="medium", category="unauthorized_access", subcategory="account_compromise",
            title="Shared mailbox accessed from an unknown IP", assignment_group="Security Operations", affected_ci="exo-tenant",
            assessed_at=T0 + 10 * H, contained_at=T0 + 30 * H, resolved_at=T0 + 2 * D, closed_at=T0 + 3 * D, updated_at=T0 + 3 * D,
        ),
        must=set(),
        why="Medium: decided within 24 h, contained within 72 h, security team assigned; root cause and evidence are not "
        "required below high but are present. Nothing an auditor could raise.",
    ),
    Case(
        "AC-004", "Complete low phishing report, closed",
        well_handled(
            number="INCAC004", opened_at=T0, severity="low", title="Suspicious email reported, not clicked",
            assignment_group="SOC Tier 1", assessed_at=T0 + 60 * H, contained_at=None, resolved_at=T0 + 61 * H,
            closed_at=T0 + 3 * D, updated_at=T0 + 3 * D, evidence=[],
        ),
        must=set(),
        why="Low: the decision came within its 72 h; containment time and evidence are not asked of a low incident (A.5.26 "
        "and A.5.28 scale with severity).",
    ),
    # --- open incidents -------------------------------------------------------------------
    Case(
        "AC-005", "High incident in progress, contained, evidence taken",
        still_open(number="INCAC005", opened_at=NOW - 6 * H),
        must=set(),
        why="Open and going well: decided, contained within 3 h, evidence already preserved. Resolution, root cause and "
        "lessons are due at closure, not before.",
    ),
    Case(
        "AC-006", "Critical incident triaged 40 minutes ago, escalated, not yet contained",
        still_open(
            number="INCAC006", opened_at=NOW - 40 * M, state="triaged", severity="critical", category="malware",
            assessed_at=NOW - 20 * M, acknowledged_at=NOW - 20 * M, contained_at=None, evidence=[],
            escalations=[escalation("ciso", NOW - 15 * M)], updated_at=NOW - 15 * M,
        ),
        must=set(),
        why="The 4 h containment clock runs (pending, not a fail); the escalation a critical incident needs is done; "
        "evidence is asked once the response is in progress, and this one is only triaged.",
    ),
    Case(
        "AC-007", "Medium incident logged 30 minutes ago, not yet assessed",
        still_open(
            number="INCAC007", opened_at=NOW - 30 * M, state="new", severity="medium", assessed_at=None,
            acknowledged_at=None, contained_at=None, evidence=[], updated_at=NOW - 30 * M,
        ),
        must=set(),
        why="The 24 h decision clock and the 72 h containment clock are both pending. A clock fails only when it has "
        "fallen due (findings rule 5).",
    ),
    Case(
        "AC-008", "Low incident on hold, decided",
        still_open(
            number="INCAC008", opened_at=NOW - 3 * D, state="on_hold", severity="low", assessed_at=NOW - 3 * D + 2 * H,
            contained_at=None, evidence=[], updated_at=NOW - D,
        ),
        must=set(),
        why="Low and waiting on the user: decided in 2 h; nothing else is asked of an open low incident.",
    ),
    # --- other record types -----------------------------------------------------------------
    Case(
        "AC-009", "Security event reported 20 minutes ago, not yet decided",
        security_event(number="INCAC009", opened_at=NOW - 20 * M),
        must=set(),
        why="An event is decided under A.5.25; 20 minutes in, no decision clock (even critical's 1 h) has fallen due, and "
        "severity is only expected once assessed.",
    ),
    Case(
        "AC-010", "Security event triaged: decided and rated medium in 2 hours",
        security_event(
            number="INCAC010", opened_at=NOW - D, state="triaged", severity="medium", assessed_at=NOW - D + 2 * H,
            acknowledged_at=NOW - D + 2 * H, updated_at=NOW - D + 2 * H,
        ),
        must=set(),
        why="Decision and severity recorded within 24 h; reporter and channel known (A.6.8). Response checks are for "
        "incidents, not events.",
    ),
    Case(
        "AC-011", "Security event dismissed as a false positive, close code recorded",
        security_event(
            number="INCAC011", opened_at=NOW - 3 * D, state="cancelled", severity="low", assessed_at=NOW - 3 * D + H,
            close_code="false_positive", updated_at=NOW - 3 * D + H,
        ),
        must=set(),
        why="A.5.25 wants a decision on every event; dismissing it with a recorded reason (the close code) is that "
        "decision. A cancelled event is not a closed incident, so no resolution record is due.",
    ),
    Case(
        "AC-012", "Weakness report in progress, linked to a vulnerability record",
        weakness_report(number="INCAC012"),
        must=set(),
        why="Reported by a named person through self-service (A.6.8) and tracked in the vulnerability record (A.8.8), "
        "five days old. A weakness is not an incident: no decision, containment or escalation is due.",
    ),
    Case(
        "AC-013", "Weakness report fixed and closed within 30 days",
        weakness_report(
            number="INCAC013", opened_at=NOW - 40 * D, state="closed", resolved_at=NOW - 28 * D, closed_at=NOW - 27 * D,
            updated_at=NOW - 27 * D, resolution_notes="TLS 1.0 and 1.1 disabled on the portal; scan confirms TLS 1.2+ only.",
        ),
        must=set(),
        why="Tracked and fixed in 12 days, inside the 30 days A.8.8's timely remediation asks. Root cause and lessons "
        "belong to incidents (A.5.27), not weakness reports.",
    ),
    Case(
        "AC-014", "Service request, closed",
        service_request(number="INCAC014"),
        must=set(),
        why="A request is not an information security event; no check is about it (findings rule 4).",
    ),
    Case(
        "AC-015", "Service request in progress with nearly everything blank",
        service_request(
            number="INCAC015", opened_at=NOW - 9 * D, state="in_progress", severity=None, reporter=None, reported_via=None,
            assignment_group=None, assignee=None, business_unit=None, category=None, resolved_at=None, closed_at=None,
            resolution_notes=None, acknowledged_at=None, updated_at=NOW - 9 * D,
        ),
        must=set(),
        why="Even a sloppy request is outside every control here: no reporter, severity or decision is asked of it.",
    ),
    Case(
        "AC-019", "Service request in progress, well kept",
        service_request(number="INCAC019", opened_at=NOW - 5 * H, state="in_progress", resolved_at=None, closed_at=None,
                        resolution_notes=None, updated_at=NOW - 4 * H),
        must=set(),
        why="An open request; nothing is asked of it by the information security controls.",
    ),
    Case(
        "AC-016", "Low non-security printer jam, no maintenance reference",
        it_incident(number="INCAC016"),
        must=set(),
        why="Equipment maintenance (A.7.13) is an improvement, and findings rule 4 says a low printer jam is not even an "
        "occasion for it. Not a security incident, so A.5.24-A.5.28 and A.6.8 do not apply.",
    ),
    Case(
        "AC-017", "Medium non-security Wi-Fi incident in progress",
        it_incident(
            number="INCAC017", opened_at=NOW - 5 * H, category="network", subcategory="wifi", severity="medium",
            title="Wi-Fi drops on floor 3", assignment_group="Network Operations", state="in_progress",
            assessed_at=NOW - 4 * H, resolved_at=None, closed_at=None, root_cause=None, resolution_notes=None, updated_at=NOW - 4 * H,
        ),
        must=set(),
        why="An ordinary IT incident being worked; security response controls are not about it.",
    ),
    Case(
        "AC-018", "Closed high incident that happens to carry a close code",
        well_handled(number="INCAC018", opened_at=T0, close_code="Solved (Permanently)"),
        must=set(),
        why="With or without a close code the record is the same to an auditor: resolution time and notes are what "
        "A.5.26's formal closure needs.",
    ),
    # --- improvements: never a gap ----------------------------------------------------------
    Case(
        "AC-020", "High security incident with no named individual handler",
        well_handled(number="INCAC020", opened_at=T0, assignee=None),
        must=set(),
        why="The security team is assigned (A.5.24's competent team); a named individual is good practice only (RESP-006).",
    ),
    Case(
        "AC-021", "High security incident with no business unit",
        well_handled(number="INCAC021", opened_at=T0, business_unit=None),
        must=set(),
        why="Naming the business role (clause 5.3) is an improvement per seed 004, never a nonconformity on a ticket.",
    ),
    Case(
        "AC-022", "Monitoring alert incident with no logs attached",
        well_handled(
            number="INCAC022", opened_at=T0, category="malware", subcategory="trojan", title="EDR alert: trojan on laptop-2231",
            reporter="EDR (Defender for Endpoint)", reported_via="monitoring", affected_ci="laptop-2231", log_refs=[],
        ),
        must=set(),
        why="Logs behind a monitoring alert are seed 004's A.8.15 improvement. The monitoring tool counts as reporter and "
        "channel for A.6.8.",
    ),
    Case(
        "AC-023", "Medium equipment failure with no maintenance record",
        it_incident(
            number="INCAC023", severity="medium", subcategory="storage", title="Disk failure in storage array SA-3",
            affected_ci="sa-3", assignment_group="Storage Team", root_cause="Disk at end of life.", resolution_notes="Disk replaced; array rebuilt.",
        ),
        must=set(),
        why="A.7.13 equipment maintenance is an improvement (seed 004, 'not critical'); medium makes it an occasion to "
        "improve, never a gap.",
    ),
    Case(
        "AC-024", "Medium capacity incident with no capacity review",
        it_incident(
            number="INCAC024", severity="medium", category="capacity", subcategory="storage_full",
            title="File share full, users cannot save", affected_ci="fs-01", assignment_group="Storage Team",
            root_cause="Growth of project archives.", resolution_notes="Quota raised; archive moved.",
        ),
        must=set(),
        why="A.8.6 capacity management is an improvement per seed 004; a missing capacity review is not a nonconformity.",
    ),
    Case(
        "AC-025", "Closed high incident resolved after it was closed",
        well_handled(number="INCAC025", opened_at=T0, resolved_at=T0 + 2 * D + 2 * H),
        must=set(),
        why="Contradictory timestamps are data quality (CLOSE-002), an observation, not a nonconformity. Resolution time "
        "and notes are recorded, so formal closure is shown.",
    ),
    Case(
        "AC-026", "Closed high incident decided before it was opened",
        well_handled(number="INCAC026", opened_at=T0, assessed_at=T0 - H),
        must=set(),
        why="A decision time before opening is a clock-sync or data-entry slip (LOG-004), an observation; the decision "
        "is recorded and not late.",
    ),
    Case(
        "AC-027", "Non-security incident with no category",
        it_incident(number="INCAC027", category=None, subcategory=None, severity="medium"),
        must=set(),
        why="Categorising a non-security incident is good practice (LOG-001); A.5.25's classification is of security events.",
    ),
    Case(
        "AC-028", "Critical non-security major outage closed without a review",
        it_incident(
            number="INCAC028", opened_at=NOW - 20 * D, severity="critical", category="network", subcategory="wan",
            title="Branch network down after a carrier fault", assignment_group="Network Operations", major_incident=True,
            major_declared_at=NOW - 20 * D + H, assessed_at=NOW - 20 * D + 30 * M,
            escalations=[escalation("incident_manager", NOW - 20 * D + H, "major incident")],
            root_cause=None, lessons_learned=None, resolution_notes="Traffic moved to the backup carrier; carrier repaired fibre.",
        ),
        must=set(),
        why="Reviewing a major outage that was not a security incident is LEARN-003, an improvement; A.5.27 learns from "
        "information security incidents.",
    ),
    Case(
        "AC-029", "Closed high incident, reporter never told the outcome",
        well_handled(
            number="INCAC029", opened_at=T0, notifications=[],
            evidence=[evidence_item(T0 + H, "INCAC029")],
        ),
        must=set(),
        why="Feedback to the reporter (seed 000) is REPT-003, an improvement: no A.5.24 or A.6.8 gap for it.",
    ),
    # --- improvements that are met: nothing to flag either way
    Case(
        "AC-030", "Closed high incident, reporter told the outcome",
        well_handled(number="INCAC030", opened_at=T0,
                     notifications=[{"to": "reporter", "kind": "update", "at": T0 + 2 * D, "channel": "email", "reference": "MSG-30"}]),
        must=set(),
        why="The feedback loop of the reporting procedure is closed (REPT-003 passes); nothing else is missing.",
    ),
    Case(
        "AC-031", "Medium server disk failure linked to its maintenance record",
        it_incident(number="INCAC031", severity="medium", subcategory="disk", title="Disk failure in the backup server RAID set",
                    maintenance_ref="CHG0031234", affected_ci="srv-bkp-01"),
        must=set(),
        why="Equipment maintenance (A.7.13) is an improvement, and it is there: the repair is linked to its maintenance record.",
    ),
    Case(
        "AC-032", "Medium storage capacity incident linked to a capacity review",
        it_incident(number="INCAC032", severity="medium", category="capacity", subcategory="storage",
                    title="Mail archive volume at 95%", capacity_ref="CAP-2026-07", affected_ci="srv-arch-01"),
        must=set(),
        why="Capacity management (A.8.6) is an improvement, and it is there: the incident feeds the capacity review.",
    ),
    Case(
        "AC-033", "Ticket resolved before it was opened",
        it_incident(number="INCAC033", severity="medium", opened_at=NOW - 4 * D, resolved_at=NOW - 4 * D - 2 * H),
        must=set(),
        why="A ticket raised after the fact with the real resolution time is a record to put right (CLOSE-003), not a "
        "nonconformity of any control.",
    ),
    Case(
        "AC-034", "Security incident detected by the SIEM, no person reported it",
        well_handled(number="INCAC034", opened_at=T0, reporter=None, reported_via="siem", category="malware",
                     subcategory="trojan", title="EDR alert: trojan beaconing from a finance laptop",
                     log_refs=["siem:search/4411"]),
        must=set(),
        why="A.6.8 asks that people can report events; an event the monitoring detected is recorded with its channel, "
        "and no reporter is missing.",
    ),
]
