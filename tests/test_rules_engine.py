"""The rule engine: every operator, missing and empty values, time zones, and bad rule files."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from plugin.rules.conditions import Scope, compile_condition
from plugin.rules.loader import load_ruleset
from plugin.rules.model import FAIL, NOT_APPLICABLE, PASS
from plugin.rules.yamlsource import Location, MappingError, MappingErrors, load_yaml_text

from .conftest import NOW, REPO, create_incident

INVALID = Path(__file__).parent / "mappings_invalid"


def cond(text: str, **params: Any):
    node = load_yaml_text(text, "test.yaml")
    return compile_condition(node, "c", Location("test.yaml", 1), Scope(params))


def holds(text: str, incident: dict, now: datetime = NOW, **params: Any) -> bool:
    return cond(text, **params)(incident, now)


# --- operators -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("{present: reporter}", True),
    ("{present: problem_ref}", False),
    ("{empty: problem_ref}", True),
    ("{present: [reporter, reported_via]}", True),
    ("{present: [reporter, problem_ref]}", False),
    ("{field: severity, equals: high}", True),
    ("{field: severity, equals: low}", False),
    ("{field: is_security, equals: true}", True),
    ("{field: severity, in: [critical, high]}", True),
    ("{field: severity, in: [medium, low]}", False),
    ("{field: title, matches: '(?i)phishing'}", True),
    ("{field: title, matches: '^Ransom'}", False),
    ("{field: resolved_at, before: closed_at}", True),
    ("{field: closed_at, before: resolved_at}", False),
    ("{field: opened_at, gte: '2026-10-01T00:00:00Z'}", True),
    ("{field: opened_at, lt: '2026-10-01 00:00:00'}", False),
    ("{count: evidence, min: 1}", True),
    ("{count: evidence, min: 2}", False),
    ("{count: evidence, max: 0}", False),
    ("{count: notifications, where: {field: to, equals: reporter}, min: 1}", True),
    ("{count: notifications, where: {field: to, equals: authority}, min: 1}", False),
    ("{every: evidence, where: {present: sha256}}", True),
    ("{every: evidence, where: {field: collected_at, before: incident.closed_at}}", True),
    ("{every: evidence, where: {field: collected_at, before: incident.opened_at}}", False),
    ("{elapsed: {from: opened_at, to: assessed_at}, at_most: 1h}", True),
    ("{elapsed: {from: opened_at, to: assessed_at}, at_most: 59m}", False),
    ("{elapsed: {from: opened_at, to: closed_at}, at_least: 2d}", True),
    ("{since: opened_at, at_most: 6d}", True),
    ("{since: opened_at, at_most: 4d}", False),
    ("{since: opened_at, at_least: 1w}", False),
    ("{all: [{present: reporter}, {present: root_cause}]}", True),
    ("{all: [{present: reporter}, {present: problem_ref}]}", False),
    ("{any: [{present: problem_ref}, {present: root_cause}]}", True),
    ("{any: [{present: problem_ref}, {present: capacity_ref}]}", False),
    ("{not: {present: problem_ref}}", True),
    ("{not: {present: reporter}}", False),
])
def test_operator(text: str, expected: bool) -> None:
    assert holds(text, create_incident()) is expected


def test_missing_values_never_satisfy_a_comparison() -> None:
    inc = create_incident(severity=None, evidence=[])
    inc.update(opened_at=None, assessed_at=None)
    assert not holds("{field: severity, equals: high}", inc)
    assert not holds("{field: severity, in: [high]}", inc)
    assert not holds("{field: opened_at, lt: '2030-01-01T00:00:00Z'}", inc)
    assert not holds("{elapsed: {from: opened_at, to: assessed_at}, at_most: 1w}", inc)
    assert not holds("{since: opened_at, at_most: 1w}", inc)
    assert not holds("{field: resolved_at, before: opened_at}", inc)
    assert holds("{every: evidence, where: {present: sha256}}", inc)  # nothing to violate
    assert not holds("{count: evidence, min: 1}", inc)


@pytest.mark.parametrize("empty", [None, "", []])
def test_empty_string_none_and_empty_list_are_all_missing(empty: Any) -> None:
    inc = create_incident(root_cause=empty)
    assert not holds("{present: root_cause}", inc)
    assert holds("{empty: root_cause}", inc)


def test_false_is_a_recorded_value() -> None:
    inc = create_incident(legal_hold=False)
    assert holds("{present: legal_hold}", inc)
    assert not holds("{field: legal_hold, equals: true}", inc)


def test_in_on_a_list_field_matches_any_item() -> None:
    inc = create_incident(related_refs=["PRB001", "CHG007"])
    assert holds("{field: related_refs, in: [CHG007]}", inc)
    assert not holds("{field: related_refs, in: [CHG999]}", inc)


def test_items_that_are_not_mappings_do_not_count() -> None:
    inc = create_incident(evidence=["just a string", {"sha256": "x"}])
    assert holds("{count: evidence, where: {present: sha256}, min: 1, max: 1}", inc)
    assert not holds("{every: evidence, where: {present: sha256}}", inc)


def test_durations_by_severity_with_default() -> None:
    text = "{elapsed: {from: opened_at, to: assessed_at}, at_most: {by: severity, values: {critical: 1h, high: 4h}, default: 30m}}"
    opened = NOW - timedelta(days=1)
    assert holds(text, create_incident(severity="high", opened_at=opened, assessed_at=opened + timedelta(hours=3)))
    assert not holds(text, create_incident(severity="critical", opened_at=opened, assessed_at=opened + timedelta(hours=3)))
    assert not holds(text, create_incident(severity="low", opened_at=opened, assessed_at=opened + timedelta(minutes=45)))


def test_severity_table_without_default_has_no_limit_for_other_values() -> None:
    text = "{since: opened_at, at_most: {by: severity, values: {critical: 1h}}}"
    assert holds(text, create_incident(severity="low", opened_at=NOW - timedelta(days=300)))
    assert not holds(text, create_incident(severity="critical", opened_at=NOW - timedelta(hours=2)))


def test_parameters_are_resolved_at_compile_time() -> None:
    assert holds("{field: severity, in: {param: sev}}", create_incident(), sev=["high"])
    assert not holds("{field: severity, in: {param: sev}}", create_incident(), sev=["low"])
    assert holds("{since: opened_at, at_most: {param: limit}}", create_incident(), limit="6d")


def test_time_zones_compare_as_instants() -> None:
    # 10:00 at UTC+02:00 is 08:00 UTC: one hour after 07:00 UTC
    opened = datetime(2026, 5, 1, 7, 0, tzinfo=timezone.utc)
    assessed = datetime(2026, 5, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    inc = create_incident(opened_at=opened, assessed_at=assessed)
    assert holds("{elapsed: {from: opened_at, to: assessed_at}, at_most: 1h}", inc)
    assert not holds("{elapsed: {from: opened_at, to: assessed_at}, at_most: 59m}", inc)
    assert holds("{field: opened_at, equals: '2026-05-01T09:00:00+02:00'}", inc)
    assert holds("{field: opened_at, gte: '2026-05-01 07:00:00'}", inc)  # naive text is UTC


def test_explain_names_each_missing_part() -> None:
    c = cond("{all: [{present: root_cause}, {present: lessons_learned, text: lessons learned written down}, {count: evidence, min: 1}]}")
    inc = create_incident(root_cause=None, lessons_learned="", evidence=[])
    assert c.explain(inc, NOW) == ["root cause recorded", "lessons learned written down", "at least 1 evidence"]
    assert c.explain(create_incident(), NOW) == []


def test_nothing_is_evaluated_as_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text = f"{{field: title, equals: \"__import__('pathlib').Path('{marker}').touch()\"}}"
    assert not holds(text, create_incident())
    assert not marker.exists()


# --- malformed conditions -----------------------------------------------------------------


@pytest.mark.parametrize(("text", "fault"), [
    ("{present: nosuchfield}", "unknown canonical field 'nosuchfield'"),
    ("{field: severity}", "needs exactly one of"),
    ("{field: severity, equals: high, in: [low]}", "needs exactly one of"),
    ("{bogus: 1}", "unknown condition"),
    ("{all: []}", "non-empty list"),
    ("{count: reporter, min: 1}", "'reporter' is not a list field"),
    ("{count: evidence}", "count needs min, max or both"),
    ("{count: evidence, min: -1}", "whole number >= 0"),
    ("{since: opened_at, at_most: soon}", "expected a duration"),
    ("{since: title, at_most: 1h}", "'title' is not a timestamp field"),
    ("{elapsed: {from: opened_at}, at_most: 1h}", "expected a field name"),
    ("{field: title, matches: '(unclosed'}", "invalid regular expression"),
    ("{field: severity, in: {param: nope}}", "unknown parameter 'nope'"),
    ("{field: opened_at, gt: yesterday}", "expected a timestamp"),
    ("{field: title, before: closed_at}", "before compares two timestamp fields"),
    ("{present: reporter, extra: 1}", "unknown key"),
    ("[present, reporter]", "expected a condition mapping"),
])
def test_malformed_condition_is_rejected_with_its_fault(text: str, fault: str) -> None:
    with pytest.raises(MappingError) as exc:
        cond(text)
    assert fault in str(exc.value)
    assert str(exc.value).startswith("test.yaml:1: c")


# --- whole rule files -------------------------------------------------------------------------


def shipped_copy(tmp_path: Path) -> Path:
    root = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", root)
    return root


def invalid_cases() -> list[Path]:
    return sorted(INVALID.glob("*.yaml"))


def _expectations(path: Path) -> tuple[str, int, str]:
    """The header of an invalid file says what must be reported: `# expect: LINE: TEXT`."""
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} lacks its '# expect: LINE: TEXT' header"
    line, text = first[len("# expect: "):].split(": ", 1)
    return path.name, int(line), text


@pytest.mark.parametrize("path", invalid_cases(), ids=lambda p: p.stem)
def test_invalid_mapping_file_is_rejected_naming_file_line_and_fault(path: Path, tmp_path: Path) -> None:
    name, line, fault = _expectations(path)
    root = shipped_copy(tmp_path)
    overrides = None
    if name.startswith("override_"):
        overrides = tmp_path / name
        shutil.copy(path, overrides)
        where = str(overrides)
    else:
        shutil.copy(path, root / "checks" / name)
        where = f"mappings/checks/{name}"
    with pytest.raises(MappingErrors) as exc:
        load_ruleset(root, overrides=overrides)
    messages = [str(e) for e in exc.value.errors]
    assert any(m.startswith(f"{where}:{line}:") and fault in m for m in messages), messages


def test_at_least_twenty_invalid_files_are_kept() -> None:
    assert len(invalid_cases()) >= 20


def test_lint_mode_reports_every_fault_in_one_pass(tmp_path: Path) -> None:
    root = shipped_copy(tmp_path)
    for path in invalid_cases():
        if not path.name.startswith("override_"):
            shutil.copy(path, root / "checks" / path.name)
    with pytest.raises(MappingErrors) as exc:
        load_ruleset(root)
    files = {e.location.file for e in exc.value.errors if isinstance(e.location, Location)}
    expected = {f"mappings/checks/{p.name}" for p in invalid_cases() if not p.name.startswith("override_")}
    assert expected <= files


def test_shipped_mappings_load_and_hash_is_stable(tmp_path: Path) -> None:
    a = load_ruleset(REPO / "mappings")
    b = load_ruleset(shipped_copy(tmp_path))
    assert a.hash == b.hash and len(a.checks) >= 9


def test_a_changed_threshold_changes_the_hash(tmp_path: Path) -> None:
    base = load_ruleset(REPO / "mappings")
    ov = tmp_path / "ov.yaml"
    ov.write_text("checks:\n  ASSESS-001:\n    params:\n      decision_time: {critical: 2h, high: 4h, medium: 24h, low: 72h}\n")
    assert load_ruleset(REPO / "mappings", overrides=ov).hash != base.hash


def test_check_statuses() -> None:
    rs = load_ruleset(REPO / "mappings")
    evid = rs.check("EVID-001")
    assert evid is not None
    assert evid.evaluate(create_incident(), NOW) == PASS
    assert evid.evaluate(create_incident(evidence=[]), NOW) == FAIL
    assert evid.evaluate(create_incident(is_security=False, evidence=[]), NOW) == NOT_APPLICABLE


def test_every_fault_of_one_check_is_reported_in_one_pass(tmp_path: Path) -> None:
    root = shipped_copy(tmp_path)
    (root / "checks" / "many_faults.yaml").write_text(
        "checks:\n"
        "  - id: BAD-040\n"              # 2
        "    title: ''\n"                # 3: empty title
        "    subprocess: triage\n"       # 4: unknown sub-process
        "    controls: [A.16.1.7]\n"     # 5: a 2013 id
        "    severity: urgent\n"         # 6: unknown severity
        "    kind: finding\n"            # 7: unknown kind
        "    applies_when:\n"
        "      all:\n"
        "        - {field: record_type, equals: ticket}\n"      # 10: unknown record type
        "        - {field: colour, equals: red}\n"              # 11: unknown field
        "    requires: {present: evidence_log}\n"               # 12: unknown field
        "    rationale: r\n"
        "    remediation: r\n")
    with pytest.raises(MappingErrors) as exc:
        load_ruleset(root)
    mine = sorted((e.location.line, e.path) for e in exc.value.errors if "many_faults" in str(e.location))
    assert mine == [
        (3, "checks[0](BAD-040).title"), (4, "checks[0](BAD-040).subprocess"), (5, "checks[0](BAD-040).controls[0]"),
        (6, "checks[0](BAD-040).severity"), (7, "checks[0](BAD-040).kind"),
        (10, "checks[0](BAD-040).applies_when.all[0].equals"), (11, "checks[0](BAD-040).applies_when.all[1].field"),
        (12, "checks[0](BAD-040).requires.present"),
    ], [str(e) for e in exc.value.errors]


def test_an_organisation_switches_on_the_close_code_and_reclassifies_a_check(tmp_path: Path) -> None:
    without_code = create_incident(close_code=None)
    shipped = load_ruleset(REPO / "mappings")
    assert shipped.check("CLOSE-001").evaluate(without_code, NOW) == PASS
    ov = tmp_path / "ov.yaml"
    ov.write_text("checks:\n  CLOSE-001:\n    params: {require_close_code: true}\n  ROLE-001:\n    kind: gap\n")
    theirs = load_ruleset(REPO / "mappings", overrides=ov)
    assert theirs.check("CLOSE-001").evaluate(without_code, NOW) == FAIL
    assert theirs.check("CLOSE-001").explain(without_code, NOW) == ["close code recorded"]
    assert (shipped.check("ROLE-001").kind, theirs.check("ROLE-001").kind) == ("improvement", "gap")
    assert theirs.hash != shipped.hash


def test_every_shipped_check_says_which_record_types_it_is_about() -> None:
    rs = load_ruleset(REPO / "mappings", overlays=["gdpr", "nis2", "dora"])
    silent = [c.id for c in rs.checks if "record_type" not in c.fields and not (c.rule and c.rule.type == "open_weakness")]
    assert not silent, f"checks whose applies_when does not name record types: {silent}"
    # a request is never what a shipped check is about
    request = create_incident(record_type="request", is_security=True, severity="critical", state="closed", evidence=[],
                              root_cause=None, lessons_learned=None, reporter=None, contained_at=None, personal_data_breach=True)
    assert [c.id for c in rs.incident_checks if c.evaluate(request, NOW) != NOT_APPLICABLE] == []


def test_every_key_a_shipped_check_reads_is_in_the_canonical_contract() -> None:
    from connectors.canonical import FIELDS, ITEM_KEYS, NOTIFICATION_KINDS

    rs = load_ruleset(REPO / "mappings", overlays=["gdpr", "nis2", "dora"])
    assert all(set(c.fields) <= set(FIELDS) for c in rs.checks)
    kinds_read = set()

    def walk(node: Any, item_of: str | None = None) -> None:
        if isinstance(node, dict):
            if item_of and isinstance(node.get("field"), str) and not node["field"].startswith("incident."):
                assert node["field"] in ITEM_KEYS[item_of], (item_of, node["field"])
                if item_of == "notifications" and node["field"] == "kind":
                    listed = node.get("in") or [node.get("equals")]
                    kinds_read.update(listed if isinstance(listed, list) else [])  # {param: ...}: below
            inner = node.get("count") or node.get("every") or node.get("first")
            for key, value in node.items():
                walk(value, inner if key == "where" and isinstance(inner, str) else item_of)
        elif isinstance(node, list):
            for x in node:
                walk(x, item_of)

    for c in rs.checks:
        walk({k: v for k, v in c.definition.items() if k in ("applies_when", "requires", "clock")}, None)
    for c in rs.checks:  # parameters named by kind conditions are resolved here
        for name, value in c.params.items():
            if name.endswith("kinds"):
                kinds_read.update(value)
    assert kinds_read and kinds_read <= set(NOTIFICATION_KINDS)


def test_the_canonical_contract_is_documented() -> None:
    from connectors.canonical import FIELD_VALUES, FIELDS, ITEM_KEYS, ITEM_VALUES

    text = (REPO / "docs" / "canonical.md").read_text()
    undocumented = [f for f in FIELDS if f"`{f}`" not in text]
    undocumented += [f"{item}.{k}" for item, keys in ITEM_KEYS.items() for k in keys if f"`{k}`" not in text]
    undocumented += [v for values in [*FIELD_VALUES.values(), *ITEM_VALUES.values()] for v in values if f"`{v}`" not in text]
    assert not undocumented, undocumented


def _every_outcome(ruleset: Any, incident: dict, now: datetime) -> list[tuple]:
    """What evaluating every incident check gives, none skipped."""
    return [(c.id, *found) for c in ruleset.incident_checks if (found := c.outcome(incident, now)) is not None]


def test_skipping_the_checks_an_incidents_values_rule_out_gives_the_outcomes_of_every_check() -> None:
    """``incident_checks_for`` drops checks by record type, flags and vocabulary values: the outcomes are those of all checks,
    for every combination of those values, including values outside the vocabulary and numbers for flags."""
    import itertools
    import random

    from plugin.rules.loader import available_overlays
    from plugin.services.assess import applicable_outcomes

    ruleset = load_ruleset(REPO / "mappings", overlays=available_overlays(REPO / "mappings"))
    keyed = ruleset._candidates.fields
    assert {"record_type", "is_security"} <= set(keyed), keyed  # what makes the skipping worth having
    unusual = [None, "", "Incident", 1, 0, 1.0]
    choices = {
        "record_type": ["event", "incident", "weakness", "request", *unusual],
        "severity": ["critical", "high", "medium", "low", *unusual],
        "state": ["new", "in_progress", "resolved", "closed", *unusual],
    }
    rng = random.Random(27001)
    compared = skipped = 0
    for base in (create_incident(), create_incident(state="in_progress", resolved_at=None, closed_at=None, evidence=[],
                                                    lessons_learned=None, major_incident=True, personal_data_breach=True)):
        for values in itertools.product(*(choices.get(f, [True, False, *unusual]) for f in keyed)):
            if rng.random() > 0.02 and compared > 50:  # every combination is too many; a seeded sample of them
                continue
            incident = {**base, **dict(zip(keyed, values, strict=True))}
            assert applicable_outcomes(ruleset, incident, NOW) == _every_outcome(ruleset, incident, NOW), incident
            compared += 1
            skipped += len(ruleset.incident_checks) - len(ruleset.incident_checks_for(incident))
    assert compared > 200 and skipped > 0
    # a list where a vocabulary word belongs (the canonical validation refuses it): no check is skipped for it
    assert ruleset.incident_checks_for({**create_incident(), "record_type": ["incident"]}) == ruleset.incident_checks
