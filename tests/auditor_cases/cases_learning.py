"""Learning from incidents (A.5.27): root cause and lessons on serious closed incidents, recurring ones linked."""

from __future__ import annotations

from tests.auditor_cases import NOW, Case, D, H, M, escalation, still_open, well_handled

T0 = NOW - 10 * D


def _brute_force(number: str, opened_days_ago: int, category: str = "unauthorized_access", **overrides: object) -> dict:
    """A closed, well-handled brute-force incident on the VPN gateway (for the recurrence cases)."""
    base: dict = dict(number=number, opened_at=NOW - opened_days_ago * D, category=category, subcategory="brute_force",
                      title="Password spraying against the VPN gateway", affected_ci="vpn-gw-09")
    return well_handled(**{**base, **overrides})


CASES: list[Case] = [
    Case(
        "AC-401", "Closed high incident missing only its root cause",
        well_handled(number="INCAC401", opened_at=T0, root_cause=None),
        must={"A.5.27"},
        why="A.5.27 uses what was learned to reduce recurrence; without a root cause there is nothing to learn from. One "
        "missing thing, one control: nothing else is flagged.",
    ),
    Case(
        "AC-402", "Closed high incident missing only its lessons learned",
        well_handled(number="INCAC402", opened_at=T0, lessons_learned=None),
        must={"A.5.27"},
        why="The cause is known but no lesson was drawn; the post-incident review A.5.27 asks for did not happen.",
    ),
    Case(
        "AC-403", "Closed critical incident with neither root cause nor lessons",
        well_handled(number="INCAC403", opened_at=T0, severity="critical", category="malware", root_cause=None,
                     lessons_learned=None, escalations=[escalation("ciso", T0 + 30 * M)]),
        must={"A.5.27"},
        why="The most serious incidents are the ones A.5.27 most wants learned from.",
    ),
    Case(
        "AC-404", "Closed medium incident with neither root cause nor lessons",
        well_handled(number="INCAC404", opened_at=T0, severity="medium", root_cause=None, lessons_learned=None,
                     contained_at=T0 + 5 * H),
        must=set(),
        why="A review per ticket is asked for critical and high (and major) incidents; medium ones are learned from in "
        "aggregate (trends, recurrence).",
    ),
    Case(
        "AC-405", "Closed medium major incident missing its lessons",
        well_handled(number="INCAC405", opened_at=T0, severity="medium", major_incident=True, major_declared_at=T0 + 2 * H,
                     contained_at=T0 + 8 * H, lessons_learned=None,
                     escalations=[escalation("management", T0 + 2 * H, "major incident")]),
        must={"A.5.27"},
        why="Being major brings a medium incident into the per-ticket review.",
    ),
    Case(
        "AC-406", "High incident in progress, no root cause yet",
        still_open(number="INCAC406", opened_at=NOW - 8 * H),
        must=set(),
        why="The review follows resolution; an open incident owes no root cause yet.",
    ),
    Case(
        "AC-407", "High incident resolved, not yet closed, review pending",
        well_handled(number="INCAC407", opened_at=NOW - 2 * D, state="resolved", closed_at=None, root_cause=None,
                     lessons_learned=None, updated_at=NOW - D),
        must=set(),
        why="Root cause and lessons are asked of closed incidents; the ticket is waiting at resolved for the review. An "
        "engine asking for them at resolution is stricter than findings.md and would be wrong here.",
    ),
    # --- recurrence: 3+ on the same CI and category within 30 days ------------------------------
    Case(
        "AC-410", "Third brute-force incident on the same gateway in 17 days, no problem record",
        _brute_force("INCAC410", 3),
        context=(_brute_force("INCAC410C1", 20), _brute_force("INCAC410C2", 10)),
        must={"A.5.27"},
        why="A.5.27 (and seed 003's level 4) wants recurring incidents analysed for a common cause; three on one CI in "
        "17 days with no problem record means each was fixed alone.",
    ),
    Case(
        "AC-411", "Third brute-force incident on the same gateway, problem record linked",
        _brute_force("INCAC411", 3, affected_ci="vpn-gw-11", problem_ref="PRBAC411"),
        context=(_brute_force("INCAC411C1", 20, affected_ci="vpn-gw-11"), _brute_force("INCAC411C2", 10, affected_ci="vpn-gw-11")),
        must=set(),
        why="The recurrence is handed to problem management.",
    ),
    Case(
        "AC-412", "Three brute-force incidents on one gateway, but spread over 47 days",
        _brute_force("INCAC412", 3, affected_ci="vpn-gw-12"),
        context=(_brute_force("INCAC412C1", 50, affected_ci="vpn-gw-12"), _brute_force("INCAC412C2", 10, affected_ci="vpn-gw-12")),
        must=set(),
        why="No 30-day window holds three of them; two in a month is not yet a recurrence.",
    ),
    Case(
        "AC-413", "Three incidents on one gateway in different categories",
        _brute_force("INCAC413", 3, affected_ci="vpn-gw-13"),
        context=(_brute_force("INCAC413C1", 20, category="malware", affected_ci="vpn-gw-13"),
                 _brute_force("INCAC413C2", 10, category="denial_of_service", affected_ci="vpn-gw-13")),
        must=set(),
        why="Different kinds of incident on one CI do not point at one root cause.",
    ),
]
