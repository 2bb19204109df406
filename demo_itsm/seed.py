"""Deterministic demo incidents in ServiceNow column form.

The first ``len(PROFILES)`` incidents are hand-written profiles, each aimed at one or
more check outcomes (see ``PROFILES``), so that a demo of 300 incidents shows every
check, overlays and cross-incident checks included, both passing and failing. The rest
are random but realistic, all driven by ``random.Random(seed)`` and relative to ``now``.

Records are raw, as the Table API stores them: every value a string, datetimes
``YYYY-MM-DD HH:MM:SS`` UTC, reference columns holding the referenced sys_id (names in
``CATALOGUE``), JSON list columns as JSON text with ISO 8601 ``Z`` timestamps.
Seeded incidents have no work notes: every journal entry comes from GapBridge or a test,
so a test can tell what was written back. ``insert()`` with a ``work_notes`` text creates one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

H = timedelta(hours=1)
D = timedelta(days=1)
M = timedelta(minutes=1)

# --- columns -------------------------------------------------------------------------------

COLUMNS: tuple[str, ...] = (
    "sys_id", "number", "short_description", "description", "category", "subcategory", "state", "priority", "impact", "urgency",
    "opened_at", "resolved_at", "closed_at", "sys_created_on", "sys_created_by", "sys_updated_on", "sys_updated_by", "sys_mod_count",
    "active", "assignment_group", "assigned_to", "caller_id", "contact_type", "cmdb_ci", "company", "problem_id", "close_code",
    "close_notes", "work_notes",
    "u_security_incident", "u_root_cause", "u_lessons_learned", "u_assessed_at", "u_acknowledged_at", "u_contained_at",
    "u_major_incident", "u_major_declared_at", "u_personal_data_breach", "u_legal_hold", "u_maintenance_ref", "u_capacity_ref",
    "u_weakness_refs", "u_vulnerability_refs", "u_related_refs", "u_log_refs", "u_evidence", "u_notifications", "u_escalations",
    "u_gapbridge_fingerprint", "u_iso27001_controls", "u_gapbridge_open_gaps",
)
REFERENCES: dict[str, str] = {  # column -> referenced table
    "assignment_group": "sys_user_group", "assigned_to": "sys_user", "caller_id": "sys_user",
    "cmdb_ci": "cmdb_ci", "company": "core_company", "problem_id": "problem",
}
DATETIME_COLUMNS = frozenset({"opened_at", "resolved_at", "closed_at", "sys_created_on", "sys_updated_on", "u_assessed_at",
                              "u_acknowledged_at", "u_contained_at", "u_major_declared_at"})
BOOL_COLUMNS = frozenset({"active", "u_security_incident", "u_major_incident", "u_personal_data_breach", "u_legal_hold"})
JSON_COLUMNS = frozenset({"u_evidence", "u_notifications", "u_escalations"})
LIST_COLUMNS = frozenset({"u_weakness_refs", "u_vulnerability_refs", "u_related_refs", "u_log_refs"})
INTEGER_COLUMNS = frozenset({"state", "priority", "impact", "urgency", "sys_mod_count"})
# (name, columns): the connector's keyset query filters on active and pages over (sys_updated_on, sys_id)
INDEXES = (("number", "number"), ("updated", "sys_updated_on, sys_id"), ("active_updated", "active, sys_updated_on, sys_id"),
           ("state", "state"), ("opened", "opened_at"))

STATES = {"1": "New", "2": "In Progress", "3": "On Hold", "6": "Resolved", "7": "Closed", "8": "Canceled"}
PRIORITIES = {"1": "1 - Critical", "2": "2 - High", "3": "3 - Moderate", "4": "4 - Low", "5": "5 - Planning"}
IMPACT_URGENCY = {"1": "1 - High", "2": "2 - Medium", "3": "3 - Low"}
CONTACT_TYPES = {"phone": "Phone", "email": "Email", "self-service": "Self-service", "walk-in": "Walk-in",
                 "monitoring": "Monitoring", "chat": "Chat"}
CLOSED_STATES = frozenset({"6", "7", "8"})
CHOICE_COLUMNS = frozenset({"state", "priority", "impact", "urgency", "contact_type", "category", "subcategory"})
_IMPACT_URGENCY_OF = {"1": ("1", "1"), "2": ("1", "2"), "3": ("2", "2"), "4": ("2", "3"), "5": ("3", "3"), "": ("", "")}


def choice_label(column: str, value: str) -> str:
    """The display value of a choice column (ServiceNow shows labels, stores codes)."""
    table = {"state": STATES, "priority": PRIORITIES, "impact": IMPACT_URGENCY, "urgency": IMPACT_URGENCY,
             "contact_type": CONTACT_TYPES}.get(column)
    if table is not None:
        return table.get(value, value)
    if column in ("category", "subcategory") and value:
        return value.replace("_", " ").capitalize()
    return value


# --- reference data ------------------------------------------------------------------------

GROUPS = ["Service Desk", "Network Operations", "Server Operations", "Database Administration", "Desktop Support",
          "Application Support", "Facilities", "CSIRT", "Security Incident Response Team", "Security Operations Centre"]
HANDLERS = ["Ana Analyst", "Sam Okafor", "Lena Fischer", "Tom Becker", "Priya Nair", "Jonas Weber", "Maria Rossi", "David Chen"]
CALLERS = ["Rita Reporter", "Paul Meyer", "Eva Novak", "Omar Haddad", "Julia Schmidt", "Kenji Tanaka", "Sofia Martins",
           "Liam O'Brien", "Chloe Dubois", "Noah Jansen"]
SYSTEM_CALLERS = ["SIEM Integration", "Monitoring System"]
COMPANIES = ["Finance", "Retail Banking", "Human Resources", "Operations", "Group IT", "Sales", "Legal"]
PROBLEMS = [f"PRB00{40001 + i}" for i in range(12)]
_CI_KINDS = ["srv-app", "srv-db", "ws-fin", "ws-hr", "lt", "fw-edge", "sw-core", "printer", "mail-gw", "vpn-gw",
             "web-portal", "san-array", "ups", "wifi-ap", "k8s-node", "erp-app"]
CIS = [f"{kind}-{n:02d}" for n in range(1, 17) for kind in _CI_KINDS]  # 256, interleaved so neighbours differ in kind
CATALOGUE: dict[str, list[str]] = {
    "sys_user_group": GROUPS,
    "sys_user": [*HANDLERS, *CALLERS, *SYSTEM_CALLERS, "System Administrator"],
    "cmdb_ci": CIS,
    "core_company": COMPANIES,
    "problem": PROBLEMS,
}


def ref_id(table: str, name: str) -> str:
    """The sys_id of a reference record: stable across runs, so fixtures can name it."""
    return hashlib.md5(f"{table}:{name}".encode()).hexdigest()


def catalogue_rows() -> Iterator[tuple[str, str, str]]:
    """(sys_id, table, display name) of every reference record the seed may use."""
    for table, names in CATALOGUE.items():
        for name in names:
            yield ref_id(table, name), table, name


@functools.cache
def reference_names() -> dict[str, str]:
    """Display name by sys_id of every reference record (a caller reads it, never changes it)."""
    return {ref: name for ref, _, name in catalogue_rows()}


# --- formatting ----------------------------------------------------------------------------


def sn_time(dt: datetime | None) -> str:
    return "" if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S")


def iso_time(dt: datetime | None) -> str | None:
    return None if dt is None else dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_naive(now: datetime | None) -> datetime:
    """``now`` as naive UTC; the default is the current time truncated to the minute."""
    if now is None:
        return datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    return now.replace(microsecond=0)


def json_items(items: list[dict[str, Any]]) -> str:
    def conv(v: Any) -> Any:
        if isinstance(v, datetime):
            return iso_time(v)
        if isinstance(v, list):
            return [{k: conv(x) for k, x in i.items()} for i in v]
        return v
    return json.dumps([{k: conv(v) for k, v in item.items()} for item in items]) if items else ""


def to_record(spec: dict[str, Any], *, sys_id: str, number: str, now: datetime) -> dict[str, str]:
    """A spec (datetimes, bools, lists, reference names) as a raw ServiceNow record."""
    rec = {c: "" for c in COLUMNS}
    priority = spec.get("priority", "3")
    rec["impact"], rec["urgency"] = _IMPACT_URGENCY_OF[priority]
    for key, value in spec.items():
        if key not in rec:
            raise KeyError(f"unknown incident column {key!r}")
        if key in REFERENCES:
            rec[key] = ref_id(REFERENCES[key], value) if value else ""
        elif key in DATETIME_COLUMNS:
            rec[key] = sn_time(value)
        elif key in BOOL_COLUMNS:
            rec[key] = "true" if value else "false"
        elif key in JSON_COLUMNS:
            rec[key] = json_items(value)
        elif key in LIST_COLUMNS:
            rec[key] = ",".join(value)
        else:
            rec[key] = str(value)
    for key in BOOL_COLUMNS:
        rec[key] = rec[key] or "false"
    # the last change is the latest thing that happened to the ticket, never in the future
    moments = [v for k, v in spec.items() if k in DATETIME_COLUMNS and v is not None]
    moments += [i["at"] for k in ("u_notifications", "u_escalations") for i in spec.get(k) or () if i.get("at")]
    updated = min(max(moments), now) if moments else now
    rec.update(sys_id=sys_id, number=number, sys_created_on=rec["opened_at"] or sn_time(updated), sys_updated_on=sn_time(updated),
               sys_created_by=spec.get("sys_created_by", "admin"), sys_updated_by=spec.get("sys_updated_by", "admin"),
               active="false" if rec["state"] in CLOSED_STATES else "true", sys_mod_count=str(spec.get("sys_mod_count", 4)))
    return rec


# --- building blocks for the profiles ------------------------------------------------------


def evidence(collected: datetime, **kw: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"what": "Original email (.eml) with headers", "where": "evidence-store://demo/mail/1",
                            "collected_by": "Ana Analyst", "collected_at": collected,
                            "sha256": hashlib.sha256(f"evidence:{collected}".encode()).hexdigest(),
                            "custody": [{"by": "Ana Analyst", "at": collected, "action": "collected"}]}
    item.update(kw)
    return item


def note(to: str, at: datetime, kind: str | None = None, channel: str = "email") -> dict[str, Any]:
    return {"to": to, "at": at, "channel": channel, "reference": f"{to.upper()}-{at:%Y%m%d%H%M}", "kind": kind or ""}


def esc(to: str, at: datetime, reason: str = "response time exceeded") -> dict[str, Any]:
    return {"to": to, "at": at, "reason": reason}


def complete(now: datetime, opened: datetime, **kw: Any) -> dict[str, Any]:
    """A closed, high-priority security incident that passes every check (NIS2 reporting included)."""
    o = opened
    notes = [note("reporter", o + 2 * D), note("csirt", o + 20 * H, "early_warning", "portal"),
             note("csirt", o + 60 * H, "notification", "portal"), note("csirt", o + 20 * D, "final_report", "portal")]
    spec: dict[str, Any] = dict(
        short_description="Phishing email with credential harvesting link",
        description="User forwarded an email imitating the payroll portal; two colleagues clicked the link.",
        category="phishing", subcategory="email", state="7", priority="2", u_security_incident=True,
        assignment_group="Security Incident Response Team", assigned_to="Ana Analyst", caller_id="Rita Reporter",
        contact_type="email", company="Finance",
        opened_at=o, u_assessed_at=o + H, u_acknowledged_at=o + H, u_contained_at=o + 3 * H, resolved_at=o + D, closed_at=o + 2 * D,
        close_code="Solved (Permanently)", close_notes="Contained by blocking the sender domain; passwords reset; mailbox rules removed.",
        u_root_cause="Missing MFA on webmail", u_lessons_learned="Enforce MFA on webmail; run a phishing awareness session for Finance.",
        u_evidence=[evidence(o + 2 * H)], u_notifications=[n for n in notes if n["at"] <= now],
    )
    spec.update(kw)
    return spec


def still_open(now: datetime, age: timedelta, state: str = "2", **kw: Any) -> dict[str, Any]:
    """A security incident opened ``age`` ago and not resolved yet."""
    o = now - age
    spec = complete(now, o, state=state, u_assessed_at=o + 30 * M, u_acknowledged_at=o + 30 * M, u_contained_at=None,
                    resolved_at=None, closed_at=None, close_code="", close_notes="", u_root_cause="", u_lessons_learned="",
                    u_notifications=[], u_evidence=[evidence(o + 20 * M)])
    spec.update(kw)
    return spec


def breach(now: datetime, opened: datetime, **kw: Any) -> dict[str, Any]:
    """A closed personal data breach, complete for GDPR (and NIS2: it is high priority)."""
    o = opened
    notes = [note("reporter", o + 2 * D), note("dpo", o + 2 * H), note("authority", o + 30 * H, "notification", "portal"),
             note("data_subjects", o + 2 * D, channel="letter"), note("csirt", o + 20 * H, "early_warning", "portal"),
             note("csirt", o + 60 * H, "notification", "portal"), note("csirt", o + 20 * D, "final_report", "portal")]
    spec = complete(now, o, short_description="Customer export sent to the wrong mailing list", category="data_breach",
                    subcategory="personal_data", u_personal_data_breach=True, company="Retail Banking",
                    description="A CSV export with 1,240 customer names and IBANs was emailed to an external distribution list.",
                    u_root_cause="Distribution list auto-completion picked an external list",
                    close_notes="Recipients asked to delete the file and confirmed; export job restricted to internal recipients.",
                    u_notifications=[n for n in notes if n["at"] <= now])
    spec.update(kw)
    return spec


def major(now: datetime, opened: datetime, **kw: Any) -> dict[str, Any]:
    """A closed critical major incident, complete for ISO, GDPR, NIS2 and DORA."""
    o = opened
    notes = [note("reporter", o + 2 * D), note("dpo", o + 2 * H), note("authority", o + 4 * H, "initial_notification", "portal"),
             note("authority", o + 48 * H, "intermediate_report", "portal"), note("authority", o + 25 * D, "final_report", "portal"),
             note("data_subjects", o + 2 * D, channel="letter"), note("csirt", o + 10 * H, "early_warning", "portal"),
             note("csirt", o + 50 * H, "notification", "portal"), note("csirt", o + 25 * D, "final_report", "portal")]
    spec = complete(now, o, short_description="Ransomware encrypted file servers in the Frankfurt data centre", category="malware",
                    subcategory="ransomware", priority="1", u_major_incident=True, u_major_declared_at=o + 2 * H,
                    u_personal_data_breach=True, u_legal_hold=True, company="Operations", caller_id="SIEM Integration",
                    contact_type="monitoring", u_log_refs=["siem:splunk/search/7f3a9c21", "edr:crowdstrike/detection/5521"],
                    description="EDR alerts on mass file renames on srv-app file shares; ransom note found. HR files affected.",
                    u_assessed_at=o + 30 * M, u_acknowledged_at=o + 15 * M, u_contained_at=o + 3 * H, resolved_at=o + 4 * D,
                    closed_at=o + 5 * D, u_root_cause="Unpatched VPN appliance (CVE-2024-3400) used for initial access",
                    u_weakness_refs=["VUL0001187"], u_lessons_learned="Patch edge devices within 72h; segment file servers.",
                    close_notes="Isolated the segment, rebuilt servers from immutable backups, reset all privileged credentials.",
                    u_escalations=[esc("incident_manager", o + H, "critical incident"), esc("ciso", o + 2 * H, "major incident")],
                    u_notifications=[n for n in notes if n["at"] <= now])
    spec.update(kw)
    return spec


def plain(now: datetime, opened: datetime, **kw: Any) -> dict[str, Any]:
    """A closed, complete non-security incident."""
    o = opened
    spec: dict[str, Any] = dict(
        short_description="Password reset for locked account", description="User locked out after holiday.",
        category="inquiry", subcategory="password_reset", state="7", priority="4", u_security_incident=False,
        assignment_group="Service Desk", assigned_to="Tom Becker", caller_id="Paul Meyer", contact_type="phone", company="Sales",
        opened_at=o, u_acknowledged_at=o + 10 * M, resolved_at=o + H, closed_at=o + 3 * D, close_code="Solved (Permanently)",
        close_notes="Password reset after identity check.",
    )
    spec.update(kw)
    return spec


# --- the profiles --------------------------------------------------------------------------
# Each profile: (name, {check id: expected outcome}, builder(now) -> spec). Profile k becomes
# incident number INC{10001 + k:07d}. Outcomes are what GapBridge must find at ``now`` with
# the gdpr, nis2 and dora overlays on; tests/test_demo_itsm.py verifies them with the rule
# engine. Other checks may fail on a profile too (gaps rarely come alone); only the listed
# ones are promised. Every profile gets its own CI unless it names one, so that only the
# deliberate clusters recur.

PASS, FAIL, PENDING = "pass", "fail", "pending"
Builder = Callable[[datetime], dict[str, Any]]


def _number(index: int) -> str:
    return f"INC{10001 + index:07d}"


def _ref(name: str) -> str:
    """The number a profile will get, for weakness references between profiles."""
    return _number(next(i for i, p in enumerate(PROFILES) if p[0] == name))


_ISO_PASSES = ["LOG-002", "LOG-003", "LOG-004", "ASSESS-001", "ASSESS-002", "ROLE-001", "RESP-001", "RESP-002",
               "RESP-006", "LEARN-001", "CLOSE-001", "CLOSE-002", "CLOSE-003", "EVID-001", "EVID-002", "EVID-003", "REPT-001",
               "REPT-003", "NIS2-001", "NIS2-002", "NIS2-003"]
_MAJOR_PASSES = ["RESP-003", "RESP-004", "RESP-005", "GDPR-001", "GDPR-002", "GDPR-003", "GDPR-004", "DORA-001",
                 "DORA-002", "DORA-003", "IMPR-001", "REPT-005"]


def _all(outcome: str, *ids: str) -> dict[str, str]:
    return dict.fromkeys(ids, outcome)


def _vpn_brute_force(k: int) -> Builder:
    return lambda n: complete(n, n - (14 - 5 * k) * D, category="unauthorized_access", subcategory="brute_force", cmdb_ci="vpn-gw-01",
                              problem_id="PRB0040001", short_description="Brute-force logins against the VPN gateway",
                              u_root_cause="Legacy VPN profile without lockout")


def _portal_ddos(k: int) -> Builder:
    return lambda n: complete(n, n - (20 - 6 * k) * D, category="denial_of_service", subcategory="ddos", cmdb_ci="web-portal-01",
                              problem_id="PRB0040002" if k == 2 else "", short_description="DDoS on the customer web portal",
                              u_root_cause="No upstream scrubbing contract")


PROFILES: list[tuple[str, dict[str, str], Builder]] = [
    # --- complete incidents: pass (almost) everything
    ("complete phishing", _all(PASS, *_ISO_PASSES), lambda n: complete(n, n - 40 * D)),
    ("complete major ransomware with breach", _all(PASS, *_MAJOR_PASSES), lambda n: major(n, n - 60 * D)),
    ("complete personal data breach", _all(PASS, "GDPR-001", "GDPR-002", "GDPR-003", "GDPR-004"), lambda n: breach(n, n - 35 * D)),
    ("password reset", _all(PASS, "CLOSE-002", "CLOSE-003"), lambda n: plain(n, n - 9 * D)),
    # --- logging, categorisation, assessment
    ("no category", {"LOG-001": FAIL}, lambda n: plain(n, n - 12 * D, priority="3", category="", subcategory="",
                                                       short_description="Teams calls drop after a few minutes")),
    ("security under a generic category", {"LOG-002": FAIL},
     lambda n: complete(n, n - 38 * D, category="network", subcategory="firewall",
                        short_description="Outbound connections to a known C2 address blocked at the firewall")),
    ("high security incident worked by the service desk", {"LOG-003": FAIL}, lambda n: complete(n, n - 36 * D, assignment_group="Service Desk")),
    ("critical open, not assigned to an IR team", {"LOG-003": FAIL},
     lambda n: still_open(n, 3 * H, priority="1", assignment_group="Server Operations", category="unauthorized_access",
                          subcategory="account_compromise", short_description="Admin account logged in from two countries within minutes")),
    ("decided before opened", {"LOG-004": FAIL}, lambda n: complete(n, n - 34 * D, u_assessed_at=n - 34 * D - 2 * H)),
    ("contained before opened", {"LOG-004": FAIL}, lambda n: complete(n, n - 33 * D, u_contained_at=n - 33 * D - 3 * H)),
    ("decided 6h after opening (high)", {"ASSESS-001": FAIL}, lambda n: complete(n, n - 32 * D, u_assessed_at=n - 32 * D + 6 * H)),
    ("closed without a decision time", {"ASSESS-001": FAIL}, lambda n: complete(n, n - 31 * D, u_assessed_at=None)),
    ("new low event waiting for a decision, in time", {"ASSESS-001": PENDING},
     lambda n: still_open(n, 2 * H, state="1", priority="4", u_assessed_at=None, category="security", subcategory="suspicious_activity",
                          short_description="User reports a USB stick found in the car park")),
    ("new high event undecided for 2 days", {"ASSESS-001": FAIL},
     lambda n: still_open(n, 2 * D, state="1", u_assessed_at=None, category="malware", subcategory="trojan",
                          short_description="EDR flags a suspicious PowerShell download cradle")),
    ("closed security incident without priority", {"ASSESS-002": FAIL}, lambda n: complete(n, n - 30 * D, priority="")),
    ("dismissed as false positive", {"ASSESS-003": PASS},
     lambda n: complete(n, n - 29 * D, state="8", close_code="Not Solved (Not Reproducible)", u_contained_at=None, resolved_at=None,
                        closed_at=n - 29 * D + 3 * H, close_notes="False positive: the login was the user's new phone.",
                        short_description="Impossible-travel alert for a sales user", category="unauthorized_access")),
    ("dismissed without a reason", {"ASSESS-003": FAIL},
     lambda n: complete(n, n - 28 * D, state="8", close_code="", close_notes="", u_contained_at=None, resolved_at=None,
                        closed_at=n - 28 * D + 2 * H, short_description="Suspicious attachment reported", category="phishing")),
    ("no business unit", {"ROLE-001": FAIL}, lambda n: complete(n, n - 27 * D, company="")),
    # --- response, escalation, major incidents
    ("resolved without containment time", {"RESP-001": FAIL}, lambda n: complete(n, n - 26 * D, state="6", closed_at=None, u_contained_at=None)),
    ("contained after 30h, not escalated", {"RESP-002": FAIL, "RESP-003": FAIL},
     lambda n: complete(n, n - 25 * D, u_contained_at=n - 25 * D + 30 * H)),
    ("contained after 30h, escalated", {"RESP-002": FAIL, "RESP-003": PASS},
     lambda n: complete(n, n - 24 * D, u_contained_at=n - 24 * D + 30 * H, u_escalations=[esc("incident_manager", n - 24 * D + 25 * H)])),
    ("open high, within containment time", {"RESP-002": PENDING},
     lambda n: still_open(n, 2 * H, category="malware", subcategory="trojan", short_description="Trojan detected on a finance laptop")),
    ("open high, not contained after 30h", {"RESP-002": FAIL, "RESP-003": FAIL},
     lambda n: still_open(n, 30 * H, category="unauthorized_access", subcategory="account_compromise",
                          short_description="Service account used from an unknown host")),
    ("critical, never escalated", {"RESP-003": FAIL}, lambda n: complete(n, n - 23 * D, priority="1", u_assessed_at=n - 23 * D + 30 * M)),
    ("major incident never declared", {"RESP-004": FAIL}, lambda n: major(n, n - 70 * D, u_major_declared_at=None)),
    ("major escalated only within support", {"RESP-005": FAIL},
     lambda n: major(n, n - 75 * D, u_escalations=[esc("service_desk_l2", n - 75 * D + H)])),
    ("in progress without a handler", {"RESP-006": FAIL},
     lambda n: still_open(n, 5 * H, assigned_to="", category="malware", subcategory="adware",
                          short_description="Browser hijacker on a reception PC")),
    # --- learning and closure
    ("closed high without lessons learned", {"LEARN-001": FAIL}, lambda n: complete(n, n - 22 * D, u_lessons_learned="")),
    ("major outage reviewed", {"LEARN-003": PASS},
     lambda n: plain(n, n - 21 * D - 2 * H, priority="1", u_major_incident=True, u_major_declared_at=n - 21 * D - H, category="network",
                     subcategory="wan", short_description="Branch network down after a carrier fault", assignment_group="Network Operations",
                     u_root_cause="Carrier maintenance on the only uplink", u_lessons_learned="Order a second uplink for branches",
                     u_escalations=[esc("incident_manager", n - 21 * D, "major incident")])),
    ("major outage closed without review", {"LEARN-003": FAIL},
     lambda n: plain(n, n - 21 * D, priority="1", u_major_incident=True, u_major_declared_at=n - 21 * D + H, category="network",
                     subcategory="wan", short_description="Core banking unreachable from all branches", assignment_group="Network Operations",
                     u_escalations=[esc("incident_manager", n - 21 * D + 2 * H, "major incident")])),
    ("closed without resolution notes", {"CLOSE-001": FAIL}, lambda n: complete(n, n - 20 * D, close_notes="")),
    ("closed without close code (not required)", {"CLOSE-001": PASS}, lambda n: complete(n, n - 20 * D - H, close_code="")),
    ("resolved after closed", {"CLOSE-002": FAIL}, lambda n: complete(n, n - 19 * D, resolved_at=n - 19 * D + 3 * D)),
    ("resolved before opened", {"CLOSE-003": FAIL}, lambda n: plain(n, n - 18 * D, resolved_at=n - 18 * D - 2 * H)),
    # --- evidence
    ("high, in progress, no evidence", {"EVID-001": FAIL},
     lambda n: still_open(n, 6 * H, u_evidence=[], category="malware", subcategory="ransomware", u_contained_at=n - 5 * H,
                          short_description="Ransomware note on a shared drive in HR")),
    ("legal hold without evidence", {"EVID-001": FAIL},
     lambda n: plain(n, n - 17 * D, u_legal_hold=True, category="inquiry", subcategory="hr_request",
                     short_description="HR requests mailbox export for a disciplinary case")),
    ("evidence without a SHA-256 hash", {"EVID-002": FAIL},
     lambda n: complete(n, n - 16 * D, u_evidence=[evidence(n - 16 * D + 2 * H, sha256="d41d8cd98f00b204e9800998ecf8427e")])),
    ("evidence collected after closure", {"EVID-003": FAIL}, lambda n: complete(n, n - 15 * D, u_evidence=[evidence(n - 15 * D + 3 * D)])),
    # --- event and weakness reporting
    ("no reporter or channel", {"REPT-001": FAIL}, lambda n: complete(n, n - 14 * D, caller_id="", contact_type="")),
    ("reporter never told", {"REPT-003": FAIL}, lambda n: complete(n, n - 37 * D, u_notifications=[
        x for x in complete(n, n - 37 * D)["u_notifications"] if x["to"] != "reporter"])),
    ("weakness report linked to its record", {"REPT-002": PASS, "REPT-004": PENDING},
     lambda n: still_open(n, 10 * D, priority="4", u_security_incident=False, category="vulnerability", subcategory="missing_patch",
                          u_weakness_refs=["VUL0001203"], assignment_group="Server Operations", u_evidence=[],
                          short_description="Scanner reports OpenSSH 8.2 on srv-app hosts")),
    ("weakness report open 45 days", {"REPT-002": FAIL, "REPT-004": FAIL},
     lambda n: still_open(n, 45 * D, priority="4", u_security_incident=False, category="vulnerability", subcategory="missing_patch",
                          assignment_group="Server Operations", u_evidence=[],
                          short_description="Unsupported Java runtime on the payroll server")),
    ("weakness report fixed", {"REPT-002": PASS, "REPT-004": PASS},
     lambda n: plain(n, n - 50 * D, priority="3", category="vulnerability", subcategory="misconfiguration",
                     u_weakness_refs=["VUL0001154"], assignment_group="Server Operations",
                     short_description="TLS 1.0 still enabled on the customer portal")),
    ("weakness in root cause, tracked; weakness record still open", {"REPT-005": PASS, "REPT-006": FAIL},
     lambda n: complete(n, n - 13 * D, u_root_cause="Unpatched Java runtime on the payroll server",
                        u_weakness_refs=[_ref("weakness report open 45 days")])),
    ("weakness in root cause, tracked; weakness record fixed", {"REPT-005": PASS, "REPT-006": PASS},
     lambda n: complete(n, n - 12 * D, u_root_cause="TLS 1.0 misconfiguration allowed a downgrade",
                        u_weakness_refs=[_ref("weakness report fixed")])),
    ("misconfiguration in root cause, untracked", {"REPT-005": FAIL},
     lambda n: complete(n, n - 11 * D, u_root_cause="Storage bucket misconfigured as public")),
    # --- improvements
    ("monitoring alert with log references", {"IMPR-001": PASS},
     lambda n: plain(n, n - 10 * D, priority="3", category="database", subcategory="performance", caller_id="Monitoring System", contact_type="monitoring",
                     u_log_refs=["zabbix:event/88123"], u_capacity_ref="CAP-2026-07", assignment_group="Database Administration",
                     short_description="Replication lag above 5 minutes on db-prod")),
    ("monitoring alert without logs", {"IMPR-001": FAIL},
     lambda n: plain(n, n - 9 * D, priority="3", category="network", subcategory="lan", caller_id="Monitoring System", contact_type="monitoring",
                     assignment_group="Network Operations", short_description="Core switch port flapping")),
    ("hardware failure with maintenance record", {"IMPR-002": PASS, "LOG-001": PASS},
     lambda n: plain(n, n - 8 * D, priority="3", category="hardware", subcategory="disk", u_maintenance_ref="CHG0031234",
                     assignment_group="Server Operations", short_description="Disk failure in RAID set of the backup server")),
    ("equipment failure without maintenance record", {"IMPR-002": FAIL},
     lambda n: plain(n, n - 7 * D, priority="3", category="facilities", subcategory="equipment", assignment_group="Facilities",
                     short_description="UPS in server room 2 reports battery fault")),
    ("capacity incident with capacity review", {"IMPR-003": PASS},
     lambda n: plain(n, n - 6 * D, priority="3", category="capacity", subcategory="storage", u_capacity_ref="CAP-2026-07",
                     assignment_group="Server Operations", short_description="Mail archive volume at 95%")),
    ("performance incident without review", {"IMPR-003": FAIL},
     lambda n: plain(n, n - 5 * D, priority="3", category="software", subcategory="performance", assignment_group="Application Support",
                     short_description="ERP month-end close runs 4 hours late")),
    # --- GDPR
    ("breach notified to the authority after 80h", {"GDPR-001": FAIL},
     lambda n: breach(n, n - 45 * D, u_notifications=[x if x["to"] != "authority" else note("authority", n - 45 * D + 81 * H, "notification")
                                                       for x in breach(n, n - 45 * D)["u_notifications"]])),
    ("open breach, aware 10h ago", {"GDPR-001": PENDING, "GDPR-002": PENDING},
     lambda n: still_open(n, 12 * H, u_assessed_at=n - 10 * H, u_personal_data_breach=True, category="data_breach",
                          subcategory="personal_data", short_description="Laptop with unencrypted customer list stolen from a car")),
    ("breach, data subjects never told", {"GDPR-002": FAIL},
     lambda n: breach(n, n - 44 * D, u_notifications=[x for x in breach(n, n - 44 * D)["u_notifications"] if x["to"] != "data_subjects"])),
    ("breach resolved without remedial action", {"GDPR-003": FAIL}, lambda n: breach(n, n - 3 * D, state="6", closed_at=None, close_notes="")),
    ("breach, DPO never told", {"GDPR-004": FAIL},
     lambda n: breach(n, n - 43 * D, u_notifications=[x for x in breach(n, n - 43 * D)["u_notifications"] if x["to"] != "dpo"])),
    # --- NIS2
    ("early warning after 30h only", {"NIS2-001": FAIL, "NIS2-002": FAIL, "NIS2-003": FAIL},
     lambda n: complete(n, n - 42 * D, u_notifications=[note("reporter", n - 40 * D), note("csirt", n - 42 * D + 31 * H, "early_warning")])),
    ("open high, aware 10h ago", {"NIS2-001": PENDING, "NIS2-002": PENDING},
     lambda n: still_open(n, 12 * H, u_assessed_at=n - 10 * H, category="denial_of_service", subcategory="ddos",
                          short_description="Volumetric DDoS on the customer portal")),
    # --- DORA
    ("major, initial notification 5h after classification", {"DORA-001": FAIL, "DORA-002": FAIL, "DORA-003": FAIL},
     lambda n: major(n, n - 80 * D, u_notifications=[note("reporter", n - 78 * D), note("dpo", n - 80 * D + 2 * H),
                                                      note("authority", n - 80 * D + 7 * H, "initial_notification")])),
    ("open major, classified 10 days ago", {"DORA-003": PENDING},
     lambda n: major(n, n - 10 * D - H, state="2", u_major_declared_at=n - 10 * D, resolved_at=None, closed_at=None,
                     u_assessed_at=n - 10 * D - 30 * M, u_acknowledged_at=n - 10 * D - 45 * M, u_contained_at=n - 10 * D + 2 * H,
                     u_root_cause="", u_lessons_learned="", close_code="", close_notes="", u_personal_data_breach=False, u_legal_hold=False,
                     short_description="Payment gateway outage after certificate expiry", category="security", subcategory="availability",
                     u_notifications=[note("authority", n - 10 * D + 2 * H, "initial_notification"),
                                      note("authority", n - 8 * D, "intermediate_report"),
                                      note("csirt", n - 10 * D + 2 * H, "notification")])),
    # --- recurrence (LEARN-002): three break-ins on one VPN gateway, each linked to a problem ...
    *[(f"recurring VPN brute force {k + 1}, with problem", {"LEARN-002": PASS}, _vpn_brute_force(k)) for k in range(3)],
    # ... and three DDoS attacks on the web portal, only the last linked to a problem
    *[(f"recurring portal DDoS {k + 1}" + (", with problem" if k == 2 else ""), {"LEARN-002": PASS if k == 2 else FAIL}, _portal_ddos(k))
      for k in range(3)],
]
PROFILE_TARGETS: dict[str, list[tuple[str, str]]] = {}  # check id -> [(outcome, incident number)], built below
for _i, (_name, _targets, _) in enumerate(PROFILES):
    for _cid, _outcome in _targets.items():
        PROFILE_TARGETS.setdefault(_cid, []).append((_outcome, _number(_i)))

# CIs named by the recurrence clusters: random incidents stay off them so the clusters stay as designed
_CLUSTER_CIS = frozenset({"vpn-gw-01", "web-portal-01"})
_FREE_CIS = [c for c in CIS if c not in _CLUSTER_CIS]


# --- random incidents ----------------------------------------------------------------------
# (category, subcategory, security, groups, short descriptions, weight)
TEMPLATES: list[tuple[str, str, bool, list[str], list[str], int]] = [
    ("network", "vpn", False, ["Network Operations", "Service Desk"],
     ["VPN connection drops every few minutes", "Cannot connect to VPN from home office", "VPN client asks for certificate renewal"], 6),
    ("network", "wireless", False, ["Network Operations"], ["Wi-Fi unavailable on the 3rd floor", "Guest Wi-Fi portal does not load"], 4),
    ("network", "lan", False, ["Network Operations"], ["Branch office cannot reach the file share", "Switch stack reboot in building B"], 4),
    ("hardware", "laptop", False, ["Desktop Support"], ["Laptop does not boot after BIOS update", "Docking station does not detect monitors",
                                                          "Laptop battery swollen"], 6),
    ("hardware", "printer", False, ["Desktop Support", "Facilities"], ["Printer on 2nd floor jams on every job", "Label printer offline"], 3),
    ("facilities", "equipment", False, ["Facilities"], ["Air conditioning failure in server room 1", "Badge reader at the main entrance offline"], 2),
    ("software", "email", False, ["Service Desk", "Application Support"], ["Outlook crashes when opening a shared calendar",
                                                                             "Emails to a partner domain bounce"], 6),
    ("software", "application", False, ["Application Support"], ["ERP shows error 500 when posting invoices", "CRM search returns no results"], 5),
    ("software", "performance", False, ["Application Support"], ["Intranet very slow during month-end close"], 2),
    ("database", "oracle", False, ["Database Administration"], ["Nightly batch fails with ORA-01555", "Reporting database refresh failed"], 3),
    ("capacity", "storage", False, ["Server Operations"], ["File server volume at 92%", "Log volume filling up on the SIEM indexer"], 2),
    ("inquiry", "password_reset", False, ["Service Desk"], ["Password reset for locked account", "MFA token lost, new enrolment needed"], 8),
    ("inquiry", "access_request", False, ["Service Desk"], ["Access to the finance share requested", "New starter needs a VPN account"], 4),
    ("phishing", "email", True, ["CSIRT", "Security Incident Response Team", "Service Desk"],
     ["Phishing email imitating the CEO asks for gift cards", "Credential phishing page mimicking the Office 365 login",
      "Invoice email with a macro-enabled attachment"], 7),
    ("malware", "trojan", True, ["CSIRT", "Security Incident Response Team", "Security Operations Centre"],
     ["EDR quarantined a trojan on a finance laptop", "Suspicious PowerShell download cradle on a workstation"], 4),
    ("malware", "ransomware", True, ["Security Incident Response Team", "CSIRT"], ["Ransom note found on a shared drive"], 1),
    ("unauthorized_access", "account_compromise", True, ["Security Incident Response Team", "CSIRT", "Service Desk"],
     ["Impossible-travel sign-in for a sales user", "Mailbox forwarding rule to an external address found"], 4),
    ("denial_of_service", "ddos", True, ["Network Operations", "Security Incident Response Team"], ["Traffic spike from botnet on the API gateway"], 1),
    ("data_breach", "personal_data", True, ["Security Incident Response Team", "CSIRT"],
     ["Payroll report emailed to the wrong recipient", "Customer records visible to other customers in the portal"], 2),
    ("vulnerability", "missing_patch", True, ["Server Operations", "Security Operations Centre"],
     ["Critical patch missing on the edge firewall", "Scanner reports outdated OpenSSL on web servers"], 3),
    ("lost_or_stolen_device", "laptop", True, ["Service Desk", "Security Incident Response Team"], ["Laptop stolen from a parked car",
                                                                                                   "Company phone lost on a business trip"], 2),
    ("policy_violation", "acceptable_use", True, ["Security Operations Centre", "CSIRT"], ["Unapproved file-sharing tool used for customer data"], 1),
    ("network", "firewall", True, ["Network Operations", "Security Operations Centre"], ["Outbound traffic to a known C2 address blocked"], 1),
]
_STATE_WEIGHTS = {"1": 8, "2": 14, "3": 6, "6": 14, "7": 50, "8": 8}
_PRIORITY_WEIGHTS = {"1": 4, "2": 14, "3": 38, "4": 34, "5": 10}
_CLOSE_CODES = ["Solved (Permanently)", "Solved (Permanently)", "Solved (Work Around)", "Not Solved (Not Reproducible)",
                "Closed/Resolved by Caller"]
_DECISION = {"1": H, "2": 4 * H, "3": 24 * H, "4": 72 * H, "5": 72 * H}
_CONTAIN = {"1": 4 * H, "2": 24 * H, "3": 72 * H, "4": 7 * D, "5": 7 * D}


def _random_spec(rng: random.Random, now: datetime) -> dict[str, Any]:
    cat, sub, security, groups, titles, _ = rng.choices(TEMPLATES, weights=[t[5] for t in TEMPLATES])[0]
    state = rng.choices(list(_STATE_WEIGHTS), weights=list(_STATE_WEIGHTS.values()))[0]
    priority = rng.choices(list(_PRIORITY_WEIGHTS), weights=list(_PRIORITY_WEIGHTS.values()))[0]
    p = rng.random  # probability helper: p() < 0.8 reads "in 80% of cases"
    finished = state in CLOSED_STATES
    age = timedelta(minutes=rng.randint(7 * 24 * 60, 180 * 24 * 60) if finished else rng.randint(20, 40 * 24 * 60))
    o = (now - age).replace(second=rng.randint(0, 59))
    monitoring = p() < 0.2
    spec: dict[str, Any] = dict(
        short_description=rng.choice(titles), description=f"{rng.choice(titles)}. Reported {o:%d %b} by the {cat.replace('_', ' ')} desk.",
        category=cat if p() < 0.96 else "", subcategory=sub, state=state, priority=priority if p() < 0.97 else "",
        u_security_incident=security, assignment_group=rng.choice(groups),
        caller_id=rng.choice(SYSTEM_CALLERS) if monitoring else (rng.choice(CALLERS) if p() < 0.95 else ""),
        contact_type="monitoring" if monitoring else rng.choice(["phone", "email", "self-service", "walk-in", "chat", "email", ""]),
        cmdb_ci=rng.choice(_FREE_CIS) if p() < 0.85 else "", company=rng.choice(COMPANIES) if p() < 0.9 else "",
        opened_at=o, u_acknowledged_at=o + timedelta(minutes=rng.randint(2, 240)), sys_mod_count=rng.randint(1, 25),
    )
    if state != "1":
        spec["assigned_to"] = rng.choice(HANDLERS) if p() < 0.9 else ""
    if monitoring and p() < 0.65:
        spec["u_log_refs"] = [f"siem:splunk/search/{rng.getrandbits(32):08x}"] + ([f"zabbix:event/{rng.randint(10000, 99999)}"] if p() < 0.3 else [])
    sev = priority or "3"
    # the decision: in time for most, late for some, missing for a few
    if security and (state != "1" or p() < 0.5) and p() < 0.88:
        late = p() < 0.15
        spec["u_assessed_at"] = o + (_DECISION[sev] * rng.uniform(1.2, 3) if late else _DECISION[sev] * rng.uniform(0.1, 0.9))
    if finished:
        resolved = o + timedelta(minutes=rng.randint(30, 6 * 24 * 60))
        spec["resolved_at"] = resolved if state != "8" else None
        spec["closed_at"] = (resolved + timedelta(hours=rng.randint(1, 72))) if state in ("7", "8") else None
        if state == "8":
            spec["closed_at"] = o + timedelta(hours=rng.randint(1, 48))
        spec["close_code"] = rng.choice(_CLOSE_CODES) if p() < 0.9 else ""
        spec["close_notes"] = rng.choice(["Fixed and confirmed with the caller.", "Workaround applied; permanent fix via change.",
                                          "Could not reproduce; closed after 3 contact attempts.", "Duplicate of an existing ticket."]) \
            if p() < 0.85 else ""
        if p() < 0.02:  # a data entry slip: resolved after closed
            spec["resolved_at"] = (spec["closed_at"] or resolved) + 5 * H
    if security:
        _random_security(rng, spec, now, sev, finished)
    elif cat in ("hardware", "facilities") and finished and p() < 0.6:
        spec["u_maintenance_ref"] = f"CHG00{rng.randint(30000, 39999)}"
    elif (cat == "capacity" or sub == "performance") and finished and p() < 0.5:
        spec["u_capacity_ref"] = f"CAP-{now.year}-{rng.randint(1, 12):02d}"
    if p() < 0.1:
        spec["u_related_refs"] = [f"INC{rng.randint(10001, 10300):07d}"]
    return {k: v for k, v in spec.items() if v is not None}


def _random_security(rng: random.Random, spec: dict[str, Any], now: datetime, sev: str, finished: bool) -> None:
    p, o, state = rng.random, spec["opened_at"], spec["state"]
    done = state in ("6", "7")
    if done or (state in ("2", "3") and p() < 0.5):
        contained = o + _CONTAIN[sev] * (rng.uniform(1.1, 2.5) if p() < 0.2 else rng.uniform(0.05, 0.8))
        if contained < now and p() < 0.8:
            spec["u_contained_at"] = contained
    if done:
        spec["u_root_cause"] = rng.choice(["Missing MFA on the affected account", "User clicked a link in a phishing email",
                                           "Unpatched VPN appliance", "Weak password reused from another site",
                                           "Firewall rule left open after a migration"]) if p() < 0.7 else ""
        if state == "7" and p() < 0.6:
            spec["u_lessons_learned"] = rng.choice(["Extend MFA to all remote access.", "Repeat phishing training for the team.",
                                                    "Add the rule review to the change checklist."])
    if spec["category"] == "vulnerability" and p() < 0.5:
        spec["u_weakness_refs"] = [f"VUL000{rng.randint(1000, 1999)}"]
    if state != "1" and sev in ("1", "2") and p() < 0.6:
        t = o + timedelta(minutes=rng.randint(20, 600))
        item = evidence(t, what=rng.choice(["Firewall logs export", "Memory image of the workstation", "Original email (.eml)",
                                            "Mailbox audit log export"]),
                        where=f"evidence-store://demo/{rng.getrandbits(24):06x}", collected_by=rng.choice(HANDLERS))
        if p() < 0.25:
            item[rng.choice(["sha256", "custody", "collected_by"])] = [] if p() < 0.3 else ""
        spec["u_evidence"] = [item]
    notes = []
    if finished and spec.get("caller_id") and p() < 0.6:
        notes.append(note("reporter", (spec.get("resolved_at") or o) + timedelta(hours=rng.randint(1, 24))))
    aware = spec.get("u_assessed_at") or o
    if sev in ("1", "2") and p() < 0.5:
        notes.append(note("csirt", aware + timedelta(hours=rng.randint(2, 36)), "early_warning", "portal"))
        if p() < 0.6:
            notes.append(note("csirt", aware + timedelta(hours=rng.randint(30, 90)), "notification", "portal"))
    if spec["category"] == "data_breach" and p() < 0.8:
        spec["u_personal_data_breach"] = True
        if p() < 0.6:
            notes.append(note("dpo", aware + timedelta(hours=rng.randint(1, 12))))
        if p() < 0.6:
            notes.append(note("authority", aware + timedelta(hours=rng.randint(12, 100)), "notification", "portal"))
    if sev == "1" and p() < 0.3:
        spec["u_major_incident"] = True
        if p() < 0.8:
            spec["u_major_declared_at"] = o + timedelta(minutes=rng.randint(30, 300))
    if sev == "1" and p() < 0.6:
        spec["u_escalations"] = [esc(rng.choice(["incident_manager", "ciso", "service_desk_l2"]), o + timedelta(minutes=rng.randint(20, 240)))]
    if p() < 0.05:
        spec["u_legal_hold"] = True
    spec["u_notifications"] = [n for n in notes if n["at"] <= now]


# --- public entry points -------------------------------------------------------------------


def generate_incidents(size: int, seed: int = 42, now: datetime | None = None) -> Iterator[dict[str, str]]:
    """``size`` raw incident records, the same for the same size, seed and now."""
    now = utc_naive(now)
    rng = random.Random(seed)
    for i in range(size):
        sys_id = f"{rng.getrandbits(128):032x}"
        if i < len(PROFILES):
            spec = PROFILES[i][2](now)
            spec.setdefault("cmdb_ci", _FREE_CIS[i % len(_FREE_CIS)])
        else:
            spec = _random_spec(rng, now)
        yield to_record(spec, sys_id=sys_id, number=_number(i), now=now)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS incident ({", ".join(f"{c} TEXT NOT NULL DEFAULT ''" if c != "sys_id" else "sys_id TEXT PRIMARY KEY"
                                                 for c in COLUMNS)});
{"".join(f"CREATE INDEX IF NOT EXISTS incident_{name} ON incident ({cols});" for name, cols in INDEXES)}
CREATE TABLE IF NOT EXISTS sys_journal_field (
    sys_id TEXT PRIMARY KEY, element_id TEXT NOT NULL, element TEXT NOT NULL DEFAULT 'work_notes',
    name TEXT NOT NULL DEFAULT 'incident', value TEXT NOT NULL, sys_created_on TEXT NOT NULL, sys_created_by TEXT NOT NULL,
    seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS journal_element ON sys_journal_field (element_id, seq);
CREATE INDEX IF NOT EXISTS journal_seq ON sys_journal_field (seq);
CREATE TABLE IF NOT EXISTS sys_reference (sys_id TEXT PRIMARY KEY, tbl TEXT NOT NULL, name TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reference_name ON sys_reference (tbl, name);
"""
# seq orders journal entries written within the same second; its own index makes the next seq (MAX) cheap


def create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)
    conn.executemany("INSERT OR IGNORE INTO sys_reference (sys_id, tbl, name) VALUES (?, ?, ?)", catalogue_rows())
    conn.commit()


def journal_row(element_id: str, value: str, created_on: str, created_by: str = "admin") -> tuple[str, ...]:
    sys_id = hashlib.md5(f"{element_id}:{created_on}:{value}".encode()).hexdigest()
    return sys_id, element_id, value, created_on, created_by


def insert_records(conn: sqlite3.Connection, records: Iterator[dict[str, str]] | list[dict[str, str]]) -> int:
    """Insert raw records; a non-empty work_notes becomes the first journal entry. No commit."""
    rows, notes = [], []
    for rec in records:
        text = rec.get("work_notes", "")
        rows.append(tuple(rec.get(c, "") if c != "work_notes" else "" for c in COLUMNS))
        if text:
            opened = datetime.strptime(rec["sys_created_on"], "%Y-%m-%d %H:%M:%S")
            at = min(opened + 15 * M, datetime.strptime(rec["sys_updated_on"], "%Y-%m-%d %H:%M:%S"))
            notes.append(journal_row(rec["sys_id"], text, sn_time(at), rec.get("sys_created_by") or "admin"))
    conn.executemany(f"INSERT INTO incident ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows)
    seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sys_journal_field").fetchone()[0]
    conn.executemany("INSERT INTO sys_journal_field (sys_id, element_id, value, sys_created_on, sys_created_by, seq) VALUES (?, ?, ?, ?, ?, ?)",
                     [(*n, seq + k + 1) for k, n in enumerate(notes)])
    return len(rows)


def seed_database(path: str | Path, size: int, seed: int = 42, now: datetime | None = None) -> None:
    """Create the schema and insert ``size`` incidents in one transaction."""
    conn = sqlite3.connect(str(path))
    try:
        create_schema(conn)
        with conn:
            insert_records(conn, generate_incidents(size, seed, now))
    finally:
        conn.close()
