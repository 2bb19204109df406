"""Labelled auditor cases and the harness that scores the engine against them.

The labels come from the controls' purposes and docs/findings.md, never from the check
YAML: a case says what an ISO/IEC 27001 lead auditor sampling the ticket would raise.
``must`` is what a gap has to be raised against, ``may`` what a reasonable auditor could
raise either way; any other flag is a false positive. See docs/findings.md, "How the
labelled cases are written".
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from connectors.canonical import FIELDS, RECORD_TYPES, empty_incident

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)

M = timedelta(minutes=1)
H = timedelta(hours=1)
D = timedelta(days=1)

# 2022 Annex A ids ("A.5.28") or management-system clauses ("5.3")
_CONTROL = re.compile(r"^(A\.\d+\.\d+|\d+(\.\d+)*)$")

Ruleset = Any  # plugin.rules.loader's Ruleset; not imported here so the cases load without the engine
RulesetCache = dict[tuple[str, ...], Ruleset]
Failing = list[tuple[str, tuple[str, ...]]]


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    incident: dict
    must: frozenset[str]
    may: frozenset[str] = frozenset()
    overlays: tuple[str, ...] = ()
    now: datetime = NOW
    context: tuple[dict, ...] = ()
    why: str = ""

    def __post_init__(self) -> None:
        # accept any iterable for the label sets, so case modules can write {"A.5.28"}
        object.__setattr__(self, "must", frozenset(self.must))
        object.__setattr__(self, "may", frozenset(self.may))
        object.__setattr__(self, "overlays", tuple(self.overlays))
        object.__setattr__(self, "context", tuple(self.context))
        bad = [c for c in self.must | self.may if not _CONTROL.match(c)]
        if bad:
            raise ValueError(f"{self.id}: not a 2022 control id: {bad}")
        if self.must & self.may:
            raise ValueError(f"{self.id}: in both must and may: {sorted(self.must & self.may)}")
        if self.now.tzinfo is None:
            raise ValueError(f"{self.id}: now must be timezone-aware")
        for rec in (self.incident, *self.context):
            missing = set(FIELDS) - set(rec)
            if missing:
                raise ValueError(f"{self.id}: {rec.get('number')} lacks canonical fields {sorted(missing)}")
            if rec["record_type"] not in RECORD_TYPES:
                raise ValueError(f"{self.id}: {rec.get('number')} has record_type {rec['record_type']!r}")
            late = [name for name, at in _times(rec) if at > self.now]
            if late:  # a record reviewed at `now` cannot hold later times; a case built so would test nothing real
                raise ValueError(f"{self.id}: {rec['number']} has times after now: {late}")


def _times(rec: dict) -> list[tuple[str, datetime]]:
    """Every timestamp in a record, top level and inside list items, as (where, when)."""
    out = [(name, v) for name, v in rec.items() if isinstance(v, datetime)]
    for name in ("evidence", "notifications", "escalations", "timeline"):
        for i, item in enumerate(rec[name]):
            out += [(f"{name}[{i}].{k}", v) for k, v in item.items() if isinstance(v, datetime)]
            for j, ev in enumerate(item.get("custody", []) if name == "evidence" else []):
                out += [(f"{name}[{i}].custody[{j}].{k}", v) for k, v in ev.items() if isinstance(v, datetime)]
    return out


# --- builders ------------------------------------------------------------------------------

def evidence_item(at: datetime, number: str = "INCAC000", n: int = 1, **overrides: Any) -> dict[str, Any]:
    """One complete evidence item: identified, located, collected by someone, hashed, with custody."""
    item: dict[str, Any] = {
        "what": "Original email (.eml) with full headers",
        "where": f"evidence-store://2026/{number}/{n}",
        "collected_by": "Ana Analyst",
        "collected_at": at,
        "sha256": hashlib.sha256(f"{number}/{n}".encode()).hexdigest(),
        "custody": [{"at": at, "by": "Ana Analyst", "action": "collected and sealed"}],
    }
    item.update(overrides)
    return item


def notice(to: str, kind: str, at: datetime, ref: str = "") -> dict[str, Any]:
    """A notification item (GDPR, NIS2, DORA clocks read to, kind and at)."""
    return {"to": to, "kind": kind, "at": at, "channel": "portal", "reference": ref or f"REF-{to}-{kind}"}


def escalation(to: str, at: datetime, reason: str = "severity") -> dict[str, Any]:
    return {"to": to, "at": at, "reason": reason}


def well_handled(**overrides: Any) -> dict[str, Any]:
    """A complete, well-handled, closed, high-severity information security incident.

    ``opened_at`` (default NOW - 10 days) and ``number`` are read first; every other
    timestamp and the identity fields follow from them, then the remaining overrides apply.
    """
    number: str = overrides.pop("number", "INCAC000")
    opened: datetime = overrides.pop("opened_at", NOW - 10 * D)
    inc = empty_incident()
    inc.update(
        source="auditor-cases",
        external_id=hashlib.sha256(number.encode()).hexdigest()[:32],
        number=number,
        url=f"https://itsm.example/incident/{number}",
        title="Credential-harvesting phishing email to the finance team",
        description="Finance clerk reported a spoofed supplier email linking to a fake sign-in page; one user entered a password.",
        category="phishing",
        subcategory="email",
        record_type="incident",
        is_security=True,
        severity="high",
        state="closed",
        business_unit="Finance",
        assignment_group="Security Incident Response Team",
        assignee="Ana Analyst",
        reporter="Rita Reporter",
        reported_via="email",
        affected_ci="mail-gw-01",
        major_incident=False,
        opened_at=opened,
        assessed_at=opened + 30 * M,
        acknowledged_at=opened + 30 * M,
        contained_at=opened + 3 * H,
        major_declared_at=None,
        resolved_at=opened + D,
        closed_at=opened + 2 * D,
        updated_at=opened + 2 * D,
        # a close code is a tool convention, not an ISO requirement (findings.md, rule 1)
        close_code=None,
        # no vulnerability / misconfiguration / unpatched / CVE wording: that would bring A.8.8 in
        root_cause="A user followed a link in a convincing spoofed supplier email and entered a password on a look-alike page.",
        resolution_notes="Sender domain blocked, message purged from all mailboxes, password reset and sessions revoked, sign-ins reviewed.",
        lessons_learned="Targeted awareness session for finance; external-sender banner enabled; purge playbook step added.",
        problem_ref=None,
        maintenance_ref=None,
        capacity_ref=None,
        related_refs=[],
        weakness_refs=[],
        vulnerability_refs=[],
        log_refs=[],
        evidence=[evidence_item(opened + 2 * H, number)],
        # feedback to the reporter is only an improvement (REPT-003), so none here
        notifications=[],
        escalations=[],
        timeline=[],
        personal_data_breach=False,
        legal_hold=False,
        enrichment_fingerprint=None,
        raw={},
    )
    inc.update(overrides)
    return inc


def _variant(overrides: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """A well-handled record changed into another kind by ``defaults``, then the case's own ``overrides``."""
    return well_handled(**{**defaults, **overrides})


def still_open(**overrides: Any) -> dict[str, Any]:
    """A well-handled security incident still being worked: contained, evidence taken, not resolved."""
    opened: datetime = overrides.pop("opened_at", NOW - 6 * H)
    base = dict(
        opened_at=opened, state="in_progress", resolved_at=None, closed_at=None, updated_at=min(opened + 3 * H, NOW),
        root_cause=None, resolution_notes=None, lessons_learned=None,
    )
    base.update(overrides)
    return well_handled(**base)


def security_event(**overrides: Any) -> dict[str, Any]:
    """A reported information security event, not yet decided (A.5.25 decides it)."""
    opened: datetime = overrides.pop("opened_at", NOW - 20 * M)
    return _variant(overrides, dict(
        opened_at=opened, record_type="event", category="security", subcategory="suspicious_activity",
        title="User reports an unexpected MFA prompt", description="Sales user got an MFA push they did not start.",
        severity=None, state="new", assignment_group="SOC Tier 1", assignee=None, reported_via="phone",
        affected_ci="idp-01", assessed_at=None, acknowledged_at=None, contained_at=None, resolved_at=None,
        closed_at=None, updated_at=opened, root_cause=None, resolution_notes=None, lessons_learned=None, evidence=[],
    ))


def weakness_report(**overrides: Any) -> dict[str, Any]:
    """A reported information security weakness (A.6.8), tracked to its fix (A.8.8); not an incident."""
    opened: datetime = overrides.pop("opened_at", NOW - 5 * D)
    number: str = overrides.get("number", "INCAC000")
    return _variant(overrides, dict(
        opened_at=opened, record_type="weakness", category="vulnerability", subcategory="tls",
        title="Partner portal still accepts TLS 1.0", description="Developer noticed the partner portal negotiates TLS 1.0.",
        severity="medium", state="in_progress", assignment_group="Security Operations", assignee="Vic Vuln",
        reporter="Dev Developer", reported_via="self_service", affected_ci="partner-portal-01",
        assessed_at=None, acknowledged_at=opened + 2 * H, contained_at=None, resolved_at=None, closed_at=None,
        updated_at=opened + D, root_cause=None, resolution_notes=None, lessons_learned=None, evidence=[],
        vulnerability_refs=[f"VUL-{number}"],
    ))


def service_request(**overrides: Any) -> dict[str, Any]:
    """A service request kept in the incident table; no check is about it."""
    opened: datetime = overrides.pop("opened_at", NOW - 3 * D)
    return _variant(overrides, dict(
        opened_at=opened, record_type="request", is_security=False, category="inquiry", subcategory="software_install",
        title="Install a PDF editor", description="User asks for a PDF editor on their laptop.", severity="low",
        state="closed", assignment_group="Service Desk", assignee="Sam Desk", affected_ci="laptop-4411",
        assessed_at=None, acknowledged_at=opened + H, contained_at=None, resolved_at=opened + 4 * H,
        closed_at=opened + D, updated_at=opened + D, root_cause=None, resolution_notes="Installed from the software catalogue.",
        lessons_learned=None, evidence=[],
    ))


def it_incident(**overrides: Any) -> dict[str, Any]:
    """A complete, closed, non-security IT incident (low printer jam unless overridden)."""
    opened: datetime = overrides.pop("opened_at", NOW - 4 * D)
    return _variant(overrides, dict(
        opened_at=opened, is_security=False, category="hardware", subcategory="printer",
        title="Printer on floor 2 jams on every job", description="Shared printer PRN-2F jams.", severity="low",
        assignment_group="Desktop Support", assignee="Pat Printer", affected_ci="prn-2f-01", business_unit="Operations",
        reported_via="phone", assessed_at=opened + H, acknowledged_at=opened + H, contained_at=None,
        resolved_at=opened + 5 * H, closed_at=opened + D, updated_at=opened + D,
        root_cause="Worn pickup roller.", resolution_notes="Pickup roller replaced; test pages fine.", lessons_learned=None, evidence=[],
    ))


# --- collecting ----------------------------------------------------------------------------

def all_cases() -> list[Case]:
    """CASES from every ``cases_*`` module, in module order; ids and record numbers must be unique."""
    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("cases_"):
            cases.extend(importlib.import_module(f"{__name__}.{info.name}").CASES)
    _check_unique(cases)
    return cases


def _check_unique(cases: Iterable[Case]) -> None:
    ids: set[str] = set()
    numbers: dict[str, str] = {}
    external: dict[str, str] = {}
    for case in cases:
        if case.id in ids:
            raise ValueError(f"duplicate case id {case.id}")
        ids.add(case.id)
        for rec in (case.incident, *case.context):
            for seen, key in ((numbers, "number"), (external, "external_id")):
                if rec[key] in seen:
                    raise ValueError(f"{case.id}: {key} {rec[key]} already used by {seen[rec[key]]}")
                seen[rec[key]] = case.id


# --- running the engine --------------------------------------------------------------------

def ruleset_for(overlays: tuple[str, ...], cache: RulesetCache) -> Ruleset:
    if overlays not in cache:
        from plugin.rules.loader import load_ruleset

        cache[overlays] = load_ruleset(REPO / "mappings", overlays=overlays)
    return cache[overlays]


def failing_checks(case: Case, cache: RulesetCache) -> Failing:
    """(check id, 2022 controls) of every gap check that fails on the case's own record."""
    from plugin.rules.across import evaluate_across

    ruleset = ruleset_for(case.overlays, cache)
    failed: Failing = []
    for check in ruleset.incident_checks:
        if check.kind == "gap" and check.evaluate(case.incident, case.now) == "fail":
            failed.append((check.id, tuple(check.controls_2022)))
    for check in ruleset.across_checks:
        # the first outcome is the case's record; context records are only there to be counted
        if check.kind == "gap" and evaluate_across(check, [case.incident, *case.context], case.now)[0] == "fail":
            failed.append((check.id, tuple(check.controls_2022)))
    return failed


def flags(case: Case, ruleset_cache: RulesetCache) -> set[str]:
    return {c for _, controls in failing_checks(case, ruleset_cache) for c in controls}


@dataclass
class Disagreement:
    case: Case
    missed: set[str]
    unexpected: set[str]
    failing: Failing = field(default_factory=list)

    def checks_behind(self, control: str) -> list[str]:
        return [cid for cid, controls in self.failing if control in controls]


def score(cases: Iterable[Case], cache: RulesetCache | None = None) -> tuple[float, float, list[Disagreement]]:
    """(recall, precision, disagreements) over all cases; see docs/findings.md for the definitions."""
    cache = {} if cache is None else cache
    must_total = must_found = flag_total = flag_ok = 0
    out: list[Disagreement] = []
    for case in cases:
        failing = failing_checks(case, cache)
        got = {c for _, controls in failing for c in controls}
        must_total += len(case.must)
        must_found += len(case.must & got)
        flag_total += len(got)
        flag_ok += len(got & (case.must | case.may))
        missed, unexpected = case.must - got, got - case.must - case.may
        if missed or unexpected:
            out.append(Disagreement(case, missed, unexpected, failing))
    recall = must_found / must_total if must_total else 1.0
    precision = flag_ok / flag_total if flag_total else 1.0
    return recall, precision, out


def describe(d: Disagreement) -> str:
    lines = [f"{d.case.id}  {d.case.title}"]
    if d.missed:
        lines.append(f"  missed:     {', '.join(sorted(d.missed))}")
    for control in sorted(d.unexpected):
        lines.append(f"  unexpected: {control}  (from {', '.join(d.checks_behind(control))})")
    if d.case.why:
        lines.append(f"  why:        {d.case.why}")
    return "\n".join(lines)
