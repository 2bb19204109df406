"""Collection of evidence (A.5.28): an item where one is due, complete, and taken before closure."""

from __future__ import annotations

from tests.auditor_cases import NOW, Case, D, H, M, escalation, evidence_item, still_open, well_handled

T0 = NOW - 10 * D


def _with_item(n: int, title: str, why: str, must: set[str], severity: str = "high", **item: object) -> Case:
    """A closed incident whose one evidence item is changed by `item`."""
    number = f"INCAC{n:03d}"
    extra: dict = {"contained_at": T0 + 6 * H} if severity == "medium" else {}
    return Case(
        f"AC-{n:03d}", title,
        well_handled(number=number, opened_at=T0, severity=severity, evidence=[evidence_item(T0 + 2 * H, number, **item)], **extra),
        must=must, why=why,
    )


_CHAIN = ("Evidence is kept so it stays admissible: A.5.28 asks for what it is, where it is, who collected it and "
          "when, its integrity (a SHA-256 hash) and its chain of custody. ")

CASES: list[Case] = [
    Case(
        "AC-201", "Closed high incident with no evidence item",
        well_handled(number="INCAC201", opened_at=T0, evidence=[]),
        must={"A.5.28"},
        why="Seed 004's gap: incident resolution does not say how evidence is kept. A high security incident that went "
        "through a response with nothing preserved cannot support disciplinary or legal action (EVID-001).",
    ),
    Case(
        "AC-202", "Closed medium incident with no evidence item",
        well_handled(number="INCAC202", opened_at=T0, severity="medium", evidence=[], contained_at=T0 + 6 * H),
        must=set(),
        why="Evidence is asked on critical and high incidents (or under legal hold); a medium one may be closed without it.",
    ),
    Case(
        "AC-203", "Critical incident in progress with no evidence item",
        still_open(number="INCAC203", opened_at=NOW - 2 * H, severity="critical", category="malware", contained_at=None,
                   assessed_at=NOW - 2 * H + 15 * M, evidence=[], escalations=[escalation("ciso", NOW - 2 * H + 20 * M)]),
        must={"A.5.28"},
        why="Once the response is under way, volatile evidence is lost by waiting; a critical incident in progress must "
        "already show what was preserved. Its 4 h containment clock is still pending.",
    ),
    Case(
        "AC-204", "High incident only triaged, no evidence yet",
        still_open(number="INCAC204", opened_at=NOW - H, state="triaged", assessed_at=NOW - 30 * M, contained_at=None, evidence=[]),
        must=set(),
        why="Evidence is asked from the response phase on; a triaged ticket has not started it.",
    ),
    Case(
        "AC-205", "Low incident under legal hold with no evidence",
        well_handled(number="INCAC205", opened_at=T0, severity="low", category="policy_violation", subcategory="data_handling",
                     title="Employee copied client files to a personal drive", legal_hold=True, evidence=[], contained_at=None),
        must={"A.5.28"},
        why="A legal hold means legal action is expected; whatever the severity, evidence has to be identified and kept.",
    ),
    Case(
        "AC-206", "Low incident under legal hold with a complete evidence item",
        well_handled(number="INCAC206", opened_at=T0, severity="low", category="policy_violation", subcategory="data_handling",
                     title="Employee emailed client list to a personal address", legal_hold=True, contained_at=None),
        must=set(),
        why="The held record preserves its evidence with hash and custody.",
    ),
    _with_item(207, "Evidence item without a hash", _CHAIN + "This item has no hash.", {"A.5.28"}, sha256=None),
    _with_item(208, "Evidence item hashed with MD5, not SHA-256", _CHAIN + "A 32-character MD5 digest is not the integrity "
               "record asked for.", {"A.5.28"}, sha256="d41d8cd98f00b204e9800998ecf8427e"),
    _with_item(209, "Evidence item with no custody events", _CHAIN + "Nobody recorded who held it.", {"A.5.28"}, custody=[]),
    _with_item(210, "Evidence item with no collector", _CHAIN + "Who collected it is unknown.", {"A.5.28"}, collected_by=None),
    _with_item(211, "Evidence item with no location", _CHAIN + "Where it is kept is unknown.", {"A.5.28"}, where=None),
    Case(
        "AC-212", "Evidence collected after the incident was closed",
        well_handled(number="INCAC212", opened_at=T0,
                     evidence=[evidence_item(T0 + 2 * D + 3 * H, "INCAC212", what="Mail gateway log export")]),
        must={"A.5.28"},
        why="Evidence gathered after closure was not preserved during the response; the closure lost its chance to keep it.",
    ),
    Case(
        "AC-213", "Critical incident with two complete evidence items",
        well_handled(number="INCAC213", opened_at=T0, severity="critical", category="malware",
                     escalations=[escalation("ciso", T0 + 30 * M)],
                     evidence=[evidence_item(T0 + H, "INCAC213", 1, what="Memory image of fs-fin-01"),
                               evidence_item(T0 + 2 * H, "INCAC213", 2, what="EDR timeline export")]),
        must=set(),
        why="Both items complete and taken during the response.",
    ),
    _with_item(214, "Medium incident with an evidence item lacking its hash",
               "Evidence was not required on a medium incident, but once collected it must be preserved with integrity "
               "and custody (A.5.28's purpose is admissibility); an unhashed item is a gap whatever the severity. If EVID-002 "
               "only looks at critical/high incidents, the engine is the one to change.",
               {"A.5.28"}, severity="medium", sha256=None),
    Case(
        "AC-215", "Resolved (not closed) high incident with no evidence item",
        well_handled(number="INCAC215", opened_at=T0, state="resolved", closed_at=None, evidence=[],
                     root_cause=None, lessons_learned=None, updated_at=T0 + D),
        must={"A.5.28"},
        why="Resolved is past the response phase; a high incident there with nothing preserved fails A.5.28. Root cause "
        "and lessons are owed at closure, so A.5.27 is not raised yet.",
    ),
]
