"""Event and weakness reporting (A.6.8) and weaknesses tracked to their fix in time (A.8.8)."""

from __future__ import annotations

from tests.auditor_cases import NOW, Case, D, it_incident, security_event, weakness_report, well_handled

T0 = NOW - 10 * D


def _referenced_weakness(number: str, opened_days_ago: int, closed_after_days: int | None) -> dict:
    """The weakness record an incident's weakness_refs points to (a context record)."""
    opened = NOW - opened_days_ago * D
    closed = dict(state="closed", resolved_at=opened + closed_after_days * D, closed_at=opened + closed_after_days * D,
                  updated_at=opened + closed_after_days * D, resolution_notes="Fixed and verified by rescan.") if closed_after_days else {}
    return weakness_report(number=number, opened_at=opened, title="VPN appliance firmware below vendor baseline",
                           affected_ci="vpn-gw-01", vulnerability_refs=[], problem_ref=f"PRB-{number}", **closed)


_ROOT_CAUSE_WEAKNESS = "Vulnerability in the VPN appliance's web interface was exploited before the vendor fix was applied."

CASES: list[Case] = [
    # --- A.6.8: who reported the event, through which channel --------------------------------
    Case(
        "AC-301", "High incident with no reporter",
        well_handled(number="INCAC301", opened_at=T0, reporter=None),
        must={"A.6.8"},
        why="A.6.8 is about events being reported through channels by people; with no reporter the record cannot show "
        "the reporting worked, nor whom to ask or tell.",
    ),
    Case(
        "AC-302", "High incident with no reporting channel",
        well_handled(number="INCAC302", opened_at=T0, reported_via=None),
        must={"A.6.8"},
        why="The channel is what shows the reporting route of A.6.8 is in place and used.",
    ),
    Case(
        "AC-303", "Weakness report with no reporter",
        weakness_report(number="INCAC303", reporter=None),
        must={"A.6.8"},
        why="A.6.8 covers weaknesses as well as events (2013's A.16.1.3); the reporter is missing.",
    ),
    Case(
        "AC-304", "Security event with no reporting channel",
        security_event(number="INCAC304", reported_via=None),
        must={"A.6.8"},
        why="An event reported through an unknown route; the decision clock itself is still pending.",
    ),
    Case(
        "AC-305", "Non-security incident with no reporter",
        it_incident(number="INCAC305", reporter=None),
        must=set(),
        why="A.6.8 is information security event reporting; a printer jam logged without a reporter is not its concern.",
    ),
    # --- A.8.8: weakness reports tracked, in time ----------------------------------------------
    Case(
        "AC-306", "Weakness report not linked to any record",
        weakness_report(number="INCAC306", vulnerability_refs=[]),
        must={"A.8.8"},
        why="A.8.8 asks that a technical weakness be evaluated and tracked to remediation; nothing links this report to "
        "a weakness, vulnerability, problem or related record.",
    ),
    Case(
        "AC-307", "Weakness report tracked in a problem record",
        weakness_report(number="INCAC307", vulnerability_refs=[], problem_ref="PRBAC307"),
        must=set(),
        why="Any record of the tracking counts (findings rule 2): a problem record is one.",
    ),
    Case(
        "AC-308", "Weakness report tracked through a related change",
        weakness_report(number="INCAC308", vulnerability_refs=[], related_refs=["CHGAC308"]),
        must=set(),
        why="A related record (the change that fixes it) also tracks it.",
    ),
    Case(
        "AC-309", "Weakness report linked to an existing weakness record",
        weakness_report(number="INCAC309", vulnerability_refs=[], weakness_refs=["WKAC309"]),
        context=(_referenced_weakness("WKAC309", 5, None),),
        must=set(),
        why="A duplicate report linked to the weakness record already being worked (five days old).",
    ),
    Case(
        "AC-310", "High weakness report: no decision, containment, escalation or evidence",
        weakness_report(number="INCAC310", severity="high", assignment_group="Vulnerability Management",
                        title="Default admin password on the badge controller"),
        must=set(),
        why="A weakness is not an incident: A.5.24-A.5.28 (team, decision, containment, escalation, evidence) are not "
        "about it. It is reported and tracked, which is what A.6.8 and A.8.8 ask.",
    ),
    Case(
        "AC-311", "Weakness report open 31 days",
        weakness_report(number="INCAC311", opened_at=NOW - 31 * D),
        must={"A.8.8"},
        why="Tracked, but A.8.8 wants timely remediation; past 30 days it is overdue whatever the ticket's state.",
    ),
    Case(
        "AC-312", "Weakness report open 29 days",
        weakness_report(number="INCAC312", opened_at=NOW - 29 * D),
        must=set(),
        why="The 30-day clock is still running: pending.",
    ),
    Case(
        "AC-313", "Weakness report closed 40 days after it was raised",
        weakness_report(number="INCAC313", opened_at=NOW - 90 * D, state="closed", resolved_at=NOW - 50 * D,
                        closed_at=NOW - 50 * D, updated_at=NOW - 50 * D, resolution_notes="Firmware upgraded."),
        must={"A.8.8"},
        why="Fixed, but late: a clock fails when its stop was recorded after the due time (findings rule 5). "
            "Disagreed at first: REPT-004 looked only at open weakness reports, so a late fix vanished once closed. "
            "The engine was wrong (A.8.8 asks for timely remediation, not only an open ticket's age); REPT-004 is now a clock.",
    ),
    # --- A.8.8: an incident caused by a weakness links it ---------------------------------------
    Case(
        "AC-314", "Incident caused by an unpatched CVE, nothing linked",
        well_handled(number="INCAC314", opened_at=T0, category="unauthorized_access", subcategory="exploit", affected_ci="vpn-gw-01",
                     title="Attacker reached the internal network through the VPN appliance",
                     root_cause="Unpatched VPN appliance: CVE-2024-3400 exploited from the internet."),
        must={"A.8.8"},
        why="The root cause is a technical weakness; A.8.8 wants it tracked to its fix, and no weakness, vulnerability, "
        "problem or related record is linked.",
    ),
    Case(
        "AC-315", "Incident caused by an unpatched system, problem record linked",
        well_handled(number="INCAC315", opened_at=T0, category="malware", affected_ci="srv-legacy-07",
                     root_cause="Unpatched Windows Server 2012 host infected by a worm.", problem_ref="PRBAC315"),
        must=set(),
        why="A linked problem record is enough to show the weakness is tracked (findings rule 2).",
    ),
    Case(
        "AC-316", "Incident caused by a misconfiguration, vulnerability record linked",
        well_handled(number="INCAC316", opened_at=T0, category="data_breach", subcategory="cloud_storage",
                     affected_ci="s3-marketing", title="Marketing bucket readable from the internet",
                     root_cause="Misconfiguration: public-read ACL left on a storage bucket.", vulnerability_refs=["VULAC316"]),
        must=set(),
        why="The weakness is tracked in the vulnerability record.",
    ),
    Case(
        "AC-317", "Incident caused by a misconfiguration, related change linked",
        well_handled(number="INCAC317", opened_at=T0, category="unauthorized_access", affected_ci="fw-edge-02",
                     root_cause="Firewall misconfiguration exposed RDP to the internet.", related_refs=["CHGAC317"]),
        must=set(),
        why="The corrective change is a related record tracking the weakness.",
    ),
    Case(
        "AC-318", "Incident caused by a misconfiguration, nothing linked",
        well_handled(number="INCAC318", opened_at=T0, category="unauthorized_access", affected_ci="fw-edge-03",
                     root_cause="Firewall misconfiguration exposed SSH to the internet."),
        must={"A.8.8"},
        why="Same as AC-317 without the link: the weakness behind the incident is not tracked anywhere.",
    ),
    # --- A.8.8: the referenced weakness record itself in time (across records) ------------------
    Case(
        "AC-319", "Incident linked to a weakness record open for 45 days",
        well_handled(number="INCAC319", opened_at=T0, category="unauthorized_access", affected_ci="vpn-gw-01",
                     root_cause=_ROOT_CAUSE_WEAKNESS, weakness_refs=["WKAC319"]),
        context=(_referenced_weakness("WKAC319", 45, None),),
        must={"A.8.8"},
        why="The weakness is linked, but the record it points to has been open 45 days: the fix A.8.8 asks for is overdue "
        "and has now been exploited.",
    ),
    Case(
        "AC-320", "Incident linked to a weakness record open for 20 days",
        well_handled(number="INCAC320", opened_at=T0, category="unauthorized_access", affected_ci="vpn-gw-02",
                     root_cause=_ROOT_CAUSE_WEAKNESS, weakness_refs=["WKAC320"]),
        context=(_referenced_weakness("WKAC320", 20, None),),
        must=set(),
        why="Linked, and the weakness record is within its 30 days.",
    ),
    Case(
        "AC-321", "Incident linked to a weakness record fixed within 30 days",
        well_handled(number="INCAC321", opened_at=T0, category="unauthorized_access", affected_ci="vpn-gw-03",
                     root_cause=_ROOT_CAUSE_WEAKNESS, weakness_refs=["WKAC321"]),
        context=(_referenced_weakness("WKAC321", 60, 25),),
        must=set(),
        why="Linked, and the weakness was fixed 25 days after it was reported.",
    ),
    Case(
        "AC-322", "Security incident reported by monitoring: the tool is reporter and channel",
        well_handled(number="INCAC322", opened_at=T0, category="denial_of_service", subcategory="ddos",
                     reporter="DDoS protection service", reported_via="monitoring", affected_ci="web-portal-01",
                     log_refs=["SIEM-QUERY-AC322"]),
        must=set(),
        why="Events detected by monitoring are reported events too (A.6.8); reporter and channel are recorded.",
    ),
]
