"""Assessment and decision (A.5.25), the assigned team (A.5.24) and the response (A.5.26)."""

from __future__ import annotations

from tests.auditor_cases import NOW, Case, D, H, M, escalation, security_event, still_open, well_handled

T0 = NOW - 10 * D

# A.5.25 decision clocks from opened_at to assessed_at
_DECISION = {"critical": 1 * H, "high": 4 * H, "medium": 24 * H, "low": 72 * H}
# A.5.26 containment clocks from opened_at to contained_at
_CONTAIN = {"critical": 4 * H, "high": 24 * H, "medium": 72 * H}


def _decided(n: int, severity: str, delta: int) -> Case:
    """A closed incident decided `delta` minutes after its decision clock fell due (negative: before)."""
    assessed = T0 + _DECISION[severity] + delta * M
    extra: dict = {}
    if severity == "critical":
        extra["escalations"] = [escalation("ciso", T0 + 30 * M)]
    if severity == "low":
        extra.update(contained_at=None, evidence=[])
    if severity == "medium":
        extra["contained_at"] = T0 + 30 * H
    if severity in ("medium", "low"):
        # resolution follows the (late) decision, so the record does not contradict itself
        extra.update(resolved_at=assessed + D + 6 * H, closed_at=assessed + 2 * D, updated_at=assessed + 2 * D)
    late = delta > 0
    return Case(
        f"AC-{n:03d}", f"{severity.capitalize()} incident decided {abs(delta)} min {'after' if late else 'before'} its "
        f"{_DECISION[severity] // H} h decision clock",
        well_handled(number=f"INCAC{n:03d}", opened_at=T0, severity=severity, assessed_at=assessed, acknowledged_at=assessed, **extra),
        must={"A.5.25"} if late else set(),
        why=(f"A.5.25 asks for a timely decision on each event; for {severity} the clock is {_DECISION[severity] // H} h and the "
             f"decision came {'late' if late else 'in time'}. Everything else on the record is done."),
    )


CASES: list[Case] = [
    # --- A.5.25: decision in time, for every severity, just before and just after ----------
    _decided(101, "critical", +1),
    _decided(102, "critical", -1),
    _decided(103, "high", +1),
    _decided(104, "high", -1),
    _decided(105, "medium", +60),
    _decided(106, "medium", -60),
    _decided(107, "low", +60),
    _decided(108, "low", -60),
    Case(
        "AC-109", "Closed high incident with no decision time",
        well_handled(number="INCAC109", opened_at=T0, assessed_at=None),
        must={"A.5.25"},
        why="No record that anyone decided the event was an incident: ASSESS-001 owns the missing decision time (findings "
        "table). Containment and the other clocks run from opened_at and were met, so nothing else.",
    ),
    Case(
        "AC-110", "Security event reported five days ago, never decided",
        security_event(number="INCAC110", opened_at=NOW - 5 * D, state="new"),
        must={"A.5.25"},
        why="An event left undecided for five days: even low's 72 h decision clock has passed, whatever severity it gets.",
    ),
    Case(
        "AC-111", "Closed incident assessed but never given a severity",
        well_handled(number="INCAC111", opened_at=T0, severity=None),
        must={"A.5.25"},
        why="A.5.25 classifies and prioritises the event; a decision without a severity leaves that undone (ASSESS-002). "
        "Checks that scale with severity treat the absence as not their finding.",
    ),
    Case(
        "AC-112", "Security event cancelled with no reason recorded",
        security_event(
            number="INCAC112", opened_at=NOW - 3 * D, state="cancelled", severity="low", assessed_at=NOW - 3 * D + H,
            close_code=None, resolution_notes=None, updated_at=NOW - 3 * D + H,
        ),
        must={"A.5.25"},
        why="Dismissing an event is a decision A.5.25 wants on record with its reason; neither a close code nor a note "
        "says why this one was cancelled.",
    ),
    Case(
        "AC-113", "Security event cancelled with the reason in the notes, no close code",
        security_event(
            number="INCAC113", opened_at=NOW - 3 * D, state="cancelled", severity="low", assessed_at=NOW - 3 * D + H,
            close_code=None, resolution_notes="Benign: traffic from the scheduled external penetration test (change CHG0042).",
            updated_at=NOW - 3 * D + H,
        ),
        must=set(),
        why="Any record of the reason counts (findings rule 2): a note is as good as a close code.",
    ),
    Case(
        "AC-114", "Closed security incident with no category",
        well_handled(number="INCAC114", opened_at=T0, category=None, subcategory=None),
        must={"A.5.25"},
        why="A.5.25 includes classifying the incident; a security incident with no category cannot be counted or trended. "
        "If the engine leaves a blank category to LOG-001 (an improvement, for non-security incidents), it is wrong: "
        "blank is no more a security classification than 'network' (AC-115).",
    ),
    Case(
        "AC-115", "Security incident filed under a generic IT category",
        well_handled(number="INCAC115", opened_at=T0, category="network", subcategory="firewall",
                     title="Firewall rule changed by an unknown admin account"),
        must={"A.5.25"},
        why="Flagged as security but classified as 'network': the classification A.5.25 asks for is missing, and the "
        "security team's queues and statistics will not see it.",
    ),
    # --- A.5.24: a competent security team on serious incidents ------------------------------
    Case(
        "AC-120", "High security incident handled by the service desk",
        well_handled(number="INCAC120", opened_at=T0, assignment_group="Service Desk"),
        must={"A.5.24"},
        why="A.5.24 wants serious incidents handled by competent, designated responders; the general service desk is not "
        "a security response team.",
    ),
    Case(
        "AC-121", "Medium security incident with no assignment group",
        well_handled(number="INCAC121", opened_at=T0, severity="medium", assignment_group=None, assignee=None, contained_at=T0 + 20 * H),
        must={"A.5.24"},
        why="Nobody designated responded to a medium security incident. The missing named handler alone would only be an "
        "improvement; the missing team is the gap.",
    ),
    Case(
        "AC-122", "Low security incident handled by the service desk",
        well_handled(number="INCAC122", opened_at=T0, severity="low", assignment_group="Service Desk", contained_at=None, evidence=[]),
        must=set(),
        why="A low phishing report can be handled at the desk under the procedure; A.5.24 asks for the security team on "
        "serious (medium and above) incidents.",
    ),
    Case(
        "AC-123", "Critical incident handled by the group CERT",
        well_handled(number="INCAC123", opened_at=T0, severity="critical", assignment_group="Group CERT",
                     escalations=[escalation("ciso", T0 + 30 * M)]),
        must=set(),
        why="A CERT is a security response team; critical escalated and contained in 3 h.",
    ),
    Case(
        "AC-124", "Medium incident handled by Incident Response",
        well_handled(number="INCAC124", opened_at=T0, severity="medium", assignment_group="Incident Response", contained_at=T0 + 5 * H),
        must=set(),
        why="'Incident Response' names a security response team.",
    ),
    Case(
        "AC-125", "High incident handled by the SOC",
        well_handled(number="INCAC125", opened_at=T0, assignment_group="SOC Tier 2"),
        must=set(),
        why="A SOC is a security response team.",
    ),
    # --- A.5.26: containment recorded, in time, escalation -----------------------------------
    Case(
        "AC-130", "Closed high incident with no containment time",
        well_handled(number="INCAC130", opened_at=T0, contained_at=None),
        must={"A.5.26"},
        why="A.5.26 is about containing the incident; a resolved high incident that never records containment does not "
        "show it was contained (RESP-001). Any related clock or escalation finding is also A.5.26.",
    ),
    Case(
        "AC-131", "Closed low incident with no containment time",
        well_handled(number="INCAC131", opened_at=T0, severity="low", contained_at=None, evidence=[]),
        must=set(),
        why="Containment is asked of critical, high and medium incidents; a low one is resolved without a separate phase.",
    ),
    Case(
        "AC-132", "High incident contained 23 h after opening",
        well_handled(number="INCAC132", opened_at=T0, contained_at=T0 + 23 * H, resolved_at=T0 + 30 * H),
        must=set(),
        why="Inside high's 24 h containment clock, so no escalation is owed either.",
    ),
    Case(
        "AC-133", "High incident contained 25 h after opening, escalated",
        well_handled(number="INCAC133", opened_at=T0, contained_at=T0 + 25 * H, resolved_at=T0 + 30 * H,
                     escalations=[escalation("incident_manager", T0 + 20 * H, "containment overdue")]),
        must={"A.5.26"},
        why="Containment came after high's 24 h: the response was late (RESP-002) even though it was escalated.",
    ),
    Case(
        "AC-134", "Medium incident contained 73 h after opening, not escalated",
        well_handled(number="INCAC134", opened_at=T0, severity="medium", contained_at=T0 + 73 * H, resolved_at=T0 + 4 * D,
                     closed_at=T0 + 5 * D, updated_at=T0 + 5 * D),
        must={"A.5.26"},
        why="Past medium's 72 h and nobody escalated the overdue response: both are A.5.26.",
    ),
    Case(
        "AC-135", "Medium incident contained 71 h after opening",
        well_handled(number="INCAC135", opened_at=T0, severity="medium", contained_at=T0 + 71 * H, resolved_at=T0 + 4 * D,
                     closed_at=T0 + 5 * D, updated_at=T0 + 5 * D),
        must=set(),
        why="Inside medium's 72 h.",
    ),
    Case(
        "AC-136", "Critical incident contained 3 h 59 min after opening, escalated",
        well_handled(number="INCAC136", opened_at=T0, severity="critical", contained_at=T0 + 4 * H - M,
                     escalations=[escalation("ciso", T0 + 30 * M)]),
        must=set(),
        why="Inside critical's 4 h and escalated as every critical incident must be.",
    ),
    Case(
        "AC-137", "Critical incident contained 4 h 1 min after opening, escalated",
        well_handled(number="INCAC137", opened_at=T0, severity="critical", contained_at=T0 + 4 * H + M,
                     escalations=[escalation("ciso", T0 + 30 * M)]),
        must={"A.5.26"},
        why="One minute past critical's 4 h containment clock: the response was late.",
    ),
    Case(
        "AC-138", "Critical incident contained in time but never escalated",
        well_handled(number="INCAC138", opened_at=T0, severity="critical", escalations=[]),
        must={"A.5.26"},
        why="A critical incident is escalated as part of the response (A.5.26; escalation is response, not planning).",
    ),
    Case(
        "AC-139", "Open high incident, 30 h old, still not contained",
        still_open(number="INCAC139", opened_at=NOW - 30 * H, contained_at=None, updated_at=NOW - 2 * H,
                   escalations=[escalation("incident_manager", NOW - 8 * H, "containment overdue")]),
        must={"A.5.26"},
        why="The 24 h containment clock fell due six hours ago without containment: a fail while the ticket is still open "
        "(findings rule 5).",
    ),
    Case(
        "AC-140", "Open high incident, 10 h old, not yet contained",
        still_open(number="INCAC140", opened_at=NOW - 10 * H, contained_at=None),
        must=set(),
        why="The 24 h containment clock is running: pending, not a fail.",
    ),
    Case(
        "AC-141", "Major incident with no declaration time",
        well_handled(number="INCAC141", opened_at=T0, major_incident=True, major_declared_at=None,
                     escalations=[escalation("management", T0 + H, "major incident")]),
        must={"A.5.26"},
        why="A major incident is declared as part of the response; without the declaration time nobody can show when the "
        "major-incident procedure started.",
    ),
    Case(
        "AC-142", "Major high incident declared and escalated to management",
        well_handled(number="INCAC142", opened_at=T0, major_incident=True, major_declared_at=T0 + H,
                     escalations=[escalation("management", T0 + H, "major incident")]),
        must=set(),
        why="Declared at 1 h, escalated to management, reviewed at closure: the major-incident response is shown.",
    ),
    Case(
        "AC-143", "Major incident escalated only to the service desk lead",
        well_handled(number="INCAC143", opened_at=T0, major_incident=True, major_declared_at=T0 + H,
                     escalations=[escalation("service_desk_lead", T0 + H, "major incident")]),
        must={"A.5.26"},
        why="A major incident needs management's attention; escalating within the desk is not that.",
    ),
    Case(
        "AC-144", "Major critical incident escalated to the crisis team",
        well_handled(number="INCAC144", opened_at=T0, severity="critical", category="malware", major_incident=True,
                     major_declared_at=T0 + 45 * M, escalations=[escalation("crisis_team", T0 + 45 * M, "major incident")]),
        must=set(),
        why="Crisis team counts as management; the escalation also covers the one every critical incident needs.",
    ),
    Case(
        "AC-145", "Major medium incident escalated to the executive, reviewed",
        well_handled(number="INCAC145", opened_at=T0, severity="medium", major_incident=True, major_declared_at=T0 + 2 * H,
                     contained_at=T0 + 10 * H, escalations=[escalation("executive", T0 + 2 * H, "major incident")]),
        must=set(),
        why="Declared, escalated to the executive, root cause and lessons recorded.",
    ),
    Case(
        "AC-146", "Closed high incident with no resolution time",
        well_handled(number="INCAC146", opened_at=T0, resolved_at=None),
        must={"A.5.26"},
        why="Formal closure (A.5.26) shows when the incident was resolved; the record says only when the ticket was closed "
        "(CLOSE-001).",
    ),
    Case(
        "AC-147", "Closed high incident with no resolution notes",
        well_handled(number="INCAC147", opened_at=T0, resolution_notes=None),
        must={"A.5.26"},
        why="The response has to be recorded: without notes nobody can tell what was done to resolve it (CLOSE-001).",
    ),
    Case(
        "AC-148", "Closed medium incident with no close code",
        well_handled(number="INCAC148", opened_at=T0, severity="medium", close_code=None, contained_at=T0 + 6 * H),
        must=set(),
        why="Resolution time and notes are there; the close code is the tool's field, not the standard's (CLOSE-001's "
        "require_close_code is off in the shipped mappings).",
    ),
    Case(
        "AC-149", "Major incident declared 30 minutes ago, management not escalated to yet",
        still_open(number="INCAC149", opened_at=NOW - 2 * H, major_incident=True, major_declared_at=NOW - 30 * M,
                   severity="critical", contained_at=NOW - 20 * M, escalations=[escalation("soc_lead", NOW - H, "critical incident")]),
        must=set(),
        why="The escalation to management is due within 4 h of the declaration and that has not passed: a pending "
        "deadline for the desk, not a gap yet (findings rule 5).",
    ),
]
