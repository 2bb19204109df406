"""Regulatory clocks under the overlays: GDPR Art. 33/34, NIS2 Art. 23, DORA Art. 19.

Reporting to authorities and CSIRTs in time is A.5.5; what a personal data breach owes the
supervisory authority, data subjects, DPO and breach record is A.5.34 (the authority both).
Edges sit one hour either side of hour clocks and a few days either side of month clocks (a
month is 28 to 31 days, so nothing is labelled inside that ambiguity).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tests.auditor_cases import NOW, Case, D, H, M, escalation, it_incident, notice, still_open, well_handled

GDPR, NIS2, DORA = ("gdpr",), ("nis2",), ("dora",)
T0 = NOW - 10 * D   # recent: month clocks not yet due
OLD = NOW - 60 * D  # long enough ago for every clock to have fallen due
Hours = float | None


def _aware(inc: dict[str, Any]) -> datetime:
    """When the organisation became aware: the decision time, else opening (findings rule 5)."""
    return inc["assessed_at"] or inc["opened_at"]


def gdpr_notices(aware: datetime, authority: Hours = 30, subjects: Hours = 40, dpo: Hours = 1) -> list[dict]:
    out = []
    if dpo is not None:
        out.append(notice("dpo", "notification", aware + dpo * H))
    if authority is not None:
        out.append(notice("authority", "notification", aware + authority * H, "DPA-2026-0815"))
    if subjects is not None:
        out.append(notice("data_subjects", "notification", aware + subjects * H))
    return out


def nis2_notices(aware: datetime, resolved: datetime | None, early: Hours = 6, notif: Hours = 48, final: float | None = 20,
                 to: str = "csirt") -> list[dict]:
    """Early warning, notification and final report; the final counts from the later of notification and resolution."""
    out = []
    if early is not None:
        out.append(notice(to, "early_warning", aware + early * H))
    if notif is not None:
        out.append(notice(to, "notification", aware + notif * H))
    if final is not None:
        starts = [t for t in (aware + notif * H if notif is not None else None, resolved) if t is not None]
        out.append(notice(to, "final_report", max(starts) + final * D))
    return out


def dora_notices(classified: datetime, initial: Hours = 2, intermediate: Hours = 48, final: float | None = 20,
                 kind: str = "initial_notification") -> list[dict]:
    """Initial from classification, intermediate from the initial, final from the intermediate."""
    out: list[dict] = []
    if initial is None:
        return out
    first = classified + initial * H
    out.append(notice("authority", kind, first))
    if intermediate is None:
        return out
    second = first + intermediate * H
    out.append(notice("authority", "intermediate_report", second))
    if final is not None:
        out.append(notice("authority", "final_report", second + final * D))
    return out


def breach(number: str, opened_at: datetime = T0, **overrides: Any) -> dict[str, Any]:
    """A closed, complete, high personal data breach; notifications are set by the caller."""
    base: dict[str, Any] = dict(
        number=number, opened_at=opened_at, category="data_breach", subcategory="personal_data", personal_data_breach=True,
        title="Customer export sent to the wrong mailing list", affected_ci="crm-01", business_unit="Retail Banking",
        description="A CSV of 1,200 customers (names, emails, IBANs) was emailed to an external distribution list.",
        root_cause="An analyst picked the wrong distribution list from address autocomplete when sending a customer export.",
        resolution_notes="Recipients asked to delete; 41 of 43 confirmed; export access restricted to the secure transfer portal.",
        lessons_learned="Customer exports only through the secure transfer portal; autocomplete off for external lists.",
    )
    base.update(overrides)
    return well_handled(**base)


def _gdpr_case(n: int, title: str, must: set[str], why: str, inc: dict[str, Any], overlays: tuple[str, ...] = GDPR,
               may: frozenset[str] = frozenset(), **clock: Any) -> Case:
    inc["notifications"] = gdpr_notices(_aware(inc), **clock)
    return Case(f"AC-{n:03d}", title, inc, must=must, may=may, overlays=overlays, why=why)


def _nis2_case(n: int, title: str, must: set[str], why: str, inc: dict[str, Any], **clock: Any) -> Case:
    inc["notifications"] = nis2_notices(_aware(inc), inc["resolved_at"], **clock)
    return Case(f"AC-{n:03d}", title, inc, must=must, overlays=NIS2, why=why)


def _major(number: str, opened_at: datetime = OLD, declared: Hours = 1, **overrides: Any) -> dict[str, Any]:
    """A closed, complete, critical major security incident, escalated to management."""
    base: dict[str, Any] = dict(
        number=number, opened_at=opened_at, severity="critical", category="malware", subcategory="ransomware",
        title="Ransomware on the payments platform", affected_ci="pay-core-01", major_incident=True,
        major_declared_at=opened_at + declared * H if declared is not None else None,
        escalations=[escalation("management", opened_at + 45 * M, "major incident")],
    )
    base.update(overrides)
    return well_handled(**base)


def _dora_case(n: int, title: str, must: set[str], why: str, inc: dict[str, Any], **clock: Any) -> Case:
    inc["notifications"] = dora_notices(inc["major_declared_at"] or inc["opened_at"], **clock)
    return Case(f"AC-{n:03d}", title, inc, must=must, overlays=DORA, why=why)


def _notified(inc: dict[str, Any], *lists: list[dict]) -> dict[str, Any]:
    """The record with the notifications of several regimes (built from its own clock starts)."""
    inc["notifications"] = [item for items in lists for item in items]
    return inc


def _n(n: int) -> str:
    return f"INCAC{n:03d}"


_AUTH = {"A.5.5", "A.5.34"}
_ART33 = "GDPR Art. 33: the supervisory authority within 72 h of awareness; that is contact with an authority (A.5.5) about PII (A.5.34). "
_ART34 = "GDPR Art. 34: a high-risk (critical/high) breach is told to the data subjects without undue delay, taken as 72 h (A.5.34). "
_NIS2 = "NIS2 Art. 23 for a significant incident: early warning in 24 h, notification in 72 h, final report a month later (A.5.5). "
_DORA = "DORA Art. 19 for a major ICT incident: initial 4 h from classification and 24 h from detection, intermediate 72 h, final a month (A.5.5). "

CASES: list[Case] = [
    # --- GDPR -------------------------------------------------------------------------------
    _gdpr_case(501, "GDPR: complete high breach, closed", set(), _ART33 + _ART34 + "DPO told in 1 h, authority at 30 h, "
               "data subjects at 40 h, breach record complete.", breach(_n(501))),
    _gdpr_case(502, "GDPR: authority notified 71 h after awareness", set(), _ART33 + "One hour to spare.",
               breach(_n(502)), authority=71, subjects=60),
    _gdpr_case(503, "GDPR: authority notified 73 h after awareness", _AUTH, _ART33 + "One hour late.",
               breach(_n(503)), authority=73, subjects=60),
    _gdpr_case(504, "GDPR: closed breach, authority never notified", _AUTH, _ART33 + "Closed without ever notifying; "
               "data subjects were told, which does not replace the authority.", breach(_n(504)), authority=None),
    _gdpr_case(505, "GDPR: open breach, aware 10 h ago, nothing notified yet", set(), "The 72 h clocks are pending and "
               "the ticket is only triaged, so the DPO is not owed yet; a clock fails only when due (findings rule 5).",
               breach(_n(505), opened_at=NOW - 10 * H - 30 * M, state="triaged", resolved_at=None, closed_at=None,
                      contained_at=None, root_cause=None, lessons_learned=None, resolution_notes=None, updated_at=NOW - 10 * H,
                      evidence=[]),
               authority=None, subjects=None, dpo=None),
    _gdpr_case(506, "GDPR: open breach, aware 73 h ago, authority and subjects not notified", _AUTH,
               _ART33 + _ART34 + "Both fell due an hour ago while the ticket is open; the DPO was told.",
               breach(_n(506), opened_at=NOW - 73 * H - 30 * M, state="in_progress", resolved_at=None, closed_at=None,
                      root_cause=None, lessons_learned=None, resolution_notes=None, updated_at=NOW - 5 * H),
               authority=None, subjects=None),
    _gdpr_case(507, "GDPR: data subjects told 73 h after awareness", {"A.5.34"}, _ART34 + "Authority in time; the "
               "subjects an hour late. Data subjects are A.5.34 only.", breach(_n(507)), subjects=73),
    _gdpr_case(508, "GDPR: medium breach, data subjects not told", set(), "A medium breach is notified to the authority "
               "(done) but is not high-risk, so Art. 34 does not apply.",
               breach(_n(508), severity="medium", contained_at=T0 + 6 * H), subjects=None),
    _gdpr_case(509, "GDPR: critical breach, data subjects never told", {"A.5.34"}, _ART34 + "Never done.",
               breach(_n(509), severity="critical", escalations=[escalation("ciso", T0 + 40 * M)]), subjects=None),
    _gdpr_case(510, "GDPR: breach in progress, DPO not informed", {"A.5.34"}, "The DPO is involved in every personal "
               "data breach (Art. 38-39) once the response is under way; the authority clock is still pending. There is no DPO "
               "clock: being in progress without the DPO is the gap.",
               breach(_n(510), opened_at=NOW - 5 * H - 30 * M, state="in_progress", resolved_at=None, closed_at=None,
                      root_cause=None, lessons_learned=None, resolution_notes=None, updated_at=NOW - 2 * H),
               authority=None, subjects=None, dpo=None),
    _gdpr_case(511, "GDPR: open breach aware 71 h ago, DPO told, authority not yet", set(), _ART33 + "An hour left: pending.",
               breach(_n(511), opened_at=NOW - 71 * H - 30 * M, state="in_progress", resolved_at=None, closed_at=None,
                      root_cause=None, lessons_learned=None, resolution_notes=None, updated_at=NOW - 5 * H),
               authority=None, subjects=None),
    _gdpr_case(512, "GDPR: resolved breach with no description", {"A.5.34"}, "Art. 33(5): the breach record documents the "
               "facts; a resolved breach with no description has no record of what happened. Not closed, so no A.5.26 or A.5.27.",
               breach(_n(512), state="resolved", closed_at=None, description=None, root_cause=None, lessons_learned=None,
                      updated_at=T0 + D)),
    _gdpr_case(513, "GDPR: resolved breach with no remedial action recorded", {"A.5.34"}, "Art. 33(5): the breach record "
               "documents the remedial action taken; not closed, so CLOSE-001 (A.5.26) is not raised.",
               breach(_n(513), state="resolved", closed_at=None, resolution_notes=None, root_cause=None, lessons_learned=None,
                      updated_at=T0 + D)),
    _gdpr_case(514, "GDPR: closed breach with no resolution notes", {"A.5.26", "A.5.34"}, "Two requirements, two owners: "
               "formal closure of the incident (CLOSE-001, A.5.26) and the Art. 33(5) breach record the GDPR overlay adds "
               "(GDPR-003, A.5.34; findings' owner table names it beside LEARN-001). Unsure: 'one missing thing, one control' "
               "could argue for A.5.26 alone, but the breach record is a separate legal duty, so both are labelled must.",
               breach(_n(514), resolution_notes=None)),
    _gdpr_case(515, "GDPR: low breach, nothing notified", set(), "A breach unlikely to result in risk (low) is recorded "
               "but not notified (Art. 33(1)). Whether the DPO should still have been told is arguable, hence may A.5.34.",
               breach(_n(515), severity="low", contained_at=None, evidence=[]), may=frozenset({"A.5.34"}),
               authority=None, subjects=None, dpo=None),
    _gdpr_case(516, "GDPR: closed breach with no decision time, authority at 70 h from opening", {"A.5.25"},
               "The missing decision is ASSESS-001's (A.5.25). The Art. 33 clock starts at opening instead and was met.",
               breach(_n(516), assessed_at=None), authority=70, subjects=60),
    _gdpr_case(517, "GDPR: closed breach with no decision time, authority at 75 h from opening", {"A.5.25", *_AUTH},
               "The clock starts at opening when awareness is not recorded, and 75 h is late: A.5.25 for the decision, "
               "A.5.5 and A.5.34 for the late notification.", breach(_n(517), assessed_at=None), authority=75, subjects=60),
    _gdpr_case(518, "GDPR: open breach, 10 h old, never decided", {"A.5.25"}, "High's 4 h decision clock fell due; "
               "the Art. 33 clock, counted from opening, still has 62 h.",
               breach(_n(518), opened_at=NOW - 10 * H, assessed_at=None, state="in_progress", resolved_at=None, closed_at=None,
                      root_cause=None, lessons_learned=None, resolution_notes=None, updated_at=NOW - H),
               authority=None, subjects=None),
    Case("AC-519", "GDPR overlay, incident with no personal data", well_handled(number=_n(519), opened_at=T0), must=set(),
         overlays=GDPR, why="Not a personal data breach: Art. 33/34 do not apply."),
    # --- NIS2 -------------------------------------------------------------------------------
    _nis2_case(530, "NIS2: complete significant incident, closed 60 days ago", set(), _NIS2 + "All three in time.",
               well_handled(number=_n(530), opened_at=OLD)),
    _nis2_case(531, "NIS2: closed incident, final report not due yet", set(), _NIS2 + "Notified 8 days ago; the final "
               "report is pending although the ticket is closed (findings rule 5).",
               well_handled(number=_n(531), opened_at=T0), final=None),
    _nis2_case(532, "NIS2: closed incident, final report overdue", {"A.5.5"}, _NIS2 + "The month after notification "
               "ended weeks ago with no final report.", well_handled(number=_n(532), opened_at=OLD), final=None),
    _nis2_case(533, "NIS2: final report 29 days after notification", set(), _NIS2 + "Within the month.",
               well_handled(number=_n(533), opened_at=OLD), final=29),
    _nis2_case(534, "NIS2: final report 32 days after notification", {"A.5.5"}, _NIS2 + "Past any month.",
               well_handled(number=_n(534), opened_at=OLD), final=32),
    _nis2_case(535, "NIS2: final report 35 days after notification, 17 after resolution", set(), _NIS2 + "The final "
               "report describes the handled incident, so its month counts from the later of notification and resolution.",
               well_handled(number=_n(535), opened_at=NOW - 90 * D, resolved_at=NOW - 70 * D, closed_at=NOW - 69 * D,
                            updated_at=NOW - 69 * D), final=17),
    _nis2_case(536, "NIS2: early warning 23 h after awareness", set(), _NIS2 + "An hour to spare.",
               well_handled(number=_n(536), opened_at=OLD), early=23),
    _nis2_case(537, "NIS2: early warning 25 h after awareness", {"A.5.5"}, _NIS2 + "An hour late.",
               well_handled(number=_n(537), opened_at=OLD), early=25),
    _nis2_case(538, "NIS2: notification 71 h after awareness", set(), _NIS2 + "An hour to spare.",
               well_handled(number=_n(538), opened_at=OLD), notif=71),
    _nis2_case(539, "NIS2: notification 73 h after awareness", {"A.5.5"}, _NIS2 + "An hour late.",
               well_handled(number=_n(539), opened_at=OLD), notif=73),
    Case("AC-540", "NIS2: one notification at 20 h serves as early warning and notification",
         well_handled(number=_n(540), opened_at=OLD, notifications=[
             notice("authority", "notification", OLD + 30 * M + 20 * H), notice("authority", "final_report", OLD + 12 * D)]),
         must=set(), overlays=NIS2, why=_NIS2 + "A full notification inside 24 h is also the early warning."),
    _nis2_case(541, "NIS2: open incident aware 20 h ago, nothing sent yet", set(), _NIS2 + "Early warning due in 4 h: pending.",
               still_open(number=_n(541), opened_at=NOW - 20 * H - 30 * M), early=None, notif=None, final=None),
    _nis2_case(542, "NIS2: open incident aware 25 h ago, no early warning", {"A.5.5"}, _NIS2 + "Fell due an hour ago.",
               still_open(number=_n(542), opened_at=NOW - 25 * H - 30 * M), early=None, notif=None, final=None),
    _nis2_case(543, "NIS2: medium, not major, nothing sent", set(), "Not a significant incident (medium, not major), so "
               "NIS2 Art. 23 does not apply.", well_handled(number=_n(543), opened_at=OLD, severity="medium", contained_at=OLD + 6 * H),
               early=None, notif=None, final=None),
    _nis2_case(544, "NIS2: medium major incident, nothing sent", {"A.5.5"}, _NIS2 + "Major makes it significant.",
               well_handled(number=_n(544), opened_at=OLD, severity="medium", contained_at=OLD + 6 * H, major_incident=True,
                            major_declared_at=OLD + 2 * H, escalations=[escalation("management", OLD + 2 * H, "major incident")]),
               early=None, notif=None, final=None),
    _nis2_case(545, "NIS2: no decision time, early warning 23 h after opening", {"A.5.25"}, "The missing decision is "
               "A.5.25's; the NIS2 clocks start at opening instead and were met.",
               well_handled(number=_n(545), opened_at=OLD, assessed_at=None), early=23),
    _nis2_case(546, "NIS2: no decision time, early warning 25 h after opening", {"A.5.25", "A.5.5"}, "Counted from "
               "opening (awareness unrecorded), the early warning came an hour late; the missing decision is A.5.25's.",
               well_handled(number=_n(546), opened_at=OLD, assessed_at=None), early=25),
    _nis2_case(547, "NIS2: open incident aware 80 h ago, early warning sent, notification not", {"A.5.5"},
               _NIS2 + "The 72 h notification fell due 8 h ago.",
               still_open(number=_n(547), opened_at=NOW - 80 * H - 30 * M), notif=None, final=None),
    _nis2_case(548, "NIS2: reports sent to the customer, not the CSIRT or authority", {"A.5.5"}, _NIS2 + "Telling a "
               "customer is not reporting to the CSIRT or competent authority.",
               well_handled(number=_n(548), opened_at=OLD), to="customer"),
    _nis2_case(549, "NIS2: open incident notified, unresolved, final report not due", set(), _NIS2 + "The final report "
               "waits for resolution; pending.",
               still_open(number=_n(549), opened_at=NOW - 4 * D), final=None),
    # --- DORA -------------------------------------------------------------------------------
    _dora_case(560, "DORA: complete major incident, closed", set(), _DORA + "All three in time.", _major(_n(560))),
    _dora_case(561, "DORA: initial notification 3 h 50 min after classification", set(), _DORA + "Ten minutes to spare.",
               _major(_n(561)), initial=3 + 50 / 60),
    _dora_case(562, "DORA: initial notification 5 h after classification", {"A.5.5"}, _DORA + "An hour late.",
               _major(_n(562)), initial=5),
    _dora_case(563, "DORA: classified at 22 h, initial 3 h later (25 h after detection)", {"A.5.5"}, _DORA + "In time "
               "from classification but past 24 h from detection: both limits apply.", _major(_n(563), declared=22), initial=3),
    _dora_case(564, "DORA: intermediate report 71 h after the initial", set(), _DORA + "An hour to spare.",
               _major(_n(564)), intermediate=71),
    _dora_case(565, "DORA: intermediate report 73 h after the initial", {"A.5.5"}, _DORA + "An hour late.",
               _major(_n(565)), intermediate=73),
    _dora_case(566, "DORA: final report 29 days after the intermediate", set(), _DORA + "Within the month.",
               _major(_n(566)), final=29),
    _dora_case(567, "DORA: final report 32 days after the intermediate", {"A.5.5"}, _DORA + "Past any month.",
               _major(_n(567)), final=32),
    _dora_case(568, "DORA: closed major incident, final report not due yet", set(), _DORA + "Intermediate sent 7 days "
               "ago; final pending although closed.", _major(_n(568), opened_at=T0), final=None),
    _dora_case(569, "DORA: open major incident classified 2 h ago, nothing sent", set(), _DORA + "2 h left: pending.",
               still_open(number=_n(569), opened_at=NOW - 3 * H, severity="critical", category="malware", major_incident=True,
                          major_declared_at=NOW - 2 * H, contained_at=None,
                          escalations=[escalation("management", NOW - 2 * H, "major incident")]), initial=None),
    _dora_case(570, "DORA: open major incident classified 5 h ago, nothing sent", {"A.5.5"}, _DORA + "Fell due an hour ago.",
               still_open(number=_n(570), opened_at=NOW - 6 * H, severity="critical", category="malware", major_incident=True,
                          major_declared_at=NOW - 5 * H,
                          escalations=[escalation("management", NOW - 5 * H, "major incident")]), initial=None),
    _dora_case(571, "DORA: major with no declaration time, initial 3 h after opening", {"A.5.26"}, "The missing "
               "declaration is A.5.26's; the DORA clock starts at opening instead and was met.",
               _major(_n(571), declared=None), initial=3),
    _dora_case(572, "DORA: major with no declaration time, initial 5 h after opening", {"A.5.26", "A.5.5"}, "Counted "
               "from opening, the initial notification is an hour late; the missing declaration is A.5.26's.",
               _major(_n(572), declared=None), initial=5),
    Case("AC-573", "DORA overlay, high incident that is not major", well_handled(number=_n(573), opened_at=OLD), must=set(),
         overlays=DORA, why="DORA reporting is for major ICT-related incidents only."),
    _dora_case(574, "DORA: initial report filed as a plain notification", set(), _DORA + "A notification to the authority "
               "in time is the initial notification.", _major(_n(574)), kind="notification"),
    Case("AC-575", "DORA: major non-security ICT outage, nothing reported",
         it_incident(number=_n(575), opened_at=OLD, severity="critical", category="network", subcategory="core",
                     title="Core banking unreachable from all branches", assignment_group="Network Operations",
                     affected_ci="core-bank-01", major_incident=True, major_declared_at=OLD + H, assessed_at=OLD + 30 * M,
                     escalations=[escalation("management", OLD + H, "major incident")],
                     root_cause="A carrier routing change withdrew the data centre's prefixes.",
                     resolution_notes="Traffic moved to the second carrier; carrier reverted the change.",
                     lessons_learned="Active-active carriers for the core banking data centre."),
         must={"A.5.5"}, overlays=DORA,
         why="DORA Art. 19 covers major ICT-related incidents, not only security ones; the authority was never told (A.5.5). "
         "If the DORA checks apply only to security incidents, the engine is wrong: the brief and the regulation say major incident."),
    # --- overlays combined ------------------------------------------------------------------
    Case("AC-580", "GDPR + NIS2: complete high breach",
         _notified(b580 := breach(_n(580), opened_at=OLD), gdpr_notices(_aware(b580)), nis2_notices(_aware(b580), b580["resolved_at"])),
         must=set(), overlays=("gdpr", "nis2"), why=_ART33 + _NIS2 + "Every clock met."),
    Case("AC-581", "GDPR + NIS2: CSIRT in time, supervisory authority 80 h late",
         _notified(b581 := breach(_n(581), opened_at=OLD), gdpr_notices(_aware(b581), authority=80),
                   nis2_notices(_aware(b581), b581["resolved_at"])),
         must=set(_AUTH), overlays=("gdpr", "nis2"),
         why=_ART33 + "Reporting to the CSIRT does not notify the data protection authority; NIS2 itself is met."),
    Case("AC-582", "GDPR + NIS2 + DORA: complete critical major breach",
         _notified(m582 := _major(_n(582), category="data_breach", subcategory="personal_data", personal_data_breach=True),
                   gdpr_notices(_aware(m582)), nis2_notices(_aware(m582), m582["resolved_at"]), dora_notices(m582["major_declared_at"])),
         must=set(), overlays=("gdpr", "nis2", "dora"), why="Every regime's clocks met."),
    Case("AC-583", "GDPR + NIS2 + DORA: no DORA intermediate or final report",
         _notified(m583 := _major(_n(583), category="data_breach", subcategory="personal_data", personal_data_breach=True),
                   gdpr_notices(_aware(m583)), nis2_notices(_aware(m583), m583["resolved_at"]),
                   dora_notices(m583["major_declared_at"], intermediate=None)),
         must={"A.5.5"}, overlays=("gdpr", "nis2", "dora"),
         why=_DORA + "The intermediate report fell due weeks ago; GDPR and NIS2 are met."),
    Case("AC-584", "NIS2 + DORA: NIS2 met, DORA initial 6 h after classification",
         _notified(m584 := _major(_n(584)), nis2_notices(_aware(m584), m584["resolved_at"]),
                   dora_notices(m584["major_declared_at"], initial=6)),
         must={"A.5.5"}, overlays=("nis2", "dora"), why=_DORA + "Two hours late for DORA, though NIS2's early warning was in time."),
]
