"""The OSCAL export: an assessment plan and the assessment results importing it, checked twice.

Once through compliance-trestle's pydantic models, once against NIST's JSON schemas of the same OSCAL version
(tests/fixtures/oscal/, see .source.txt there). The schemas' regular expressions use \\p{L} (OSCAL tokens), which
Python's ``re`` cannot compile, so the schema check runs on jsonschema-rs, whose Draft 7 validator has Unicode
classes and checks the formats (date-time, uri, uri-reference) too.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import trestle.oscal
from trestle.oscal.assessment_plan import AssessmentPlan
from trestle.oscal.assessment_results import AssessmentResults

from plugin.exports import oscal
from plugin.exports.assessment import AcceptedRisk, Assessment, ControlResult, ObservedFinding, ObservedIncident

SCHEMAS = Path(__file__).parent / "fixtures" / "oscal"
UTC = timezone.utc
T0 = datetime(2026, 7, 1, tzinfo=UTC)
T1 = datetime(2026, 10, 1, tzinfo=UTC)
GENERATED = datetime(2026, 10, 2, 8, 30, tzinfo=UTC)
URL1 = "https://acme.service-now.com/nav_to.do?uri=incident.do%3Fsys_id%3Dabc123"
URL2 = "https://acme.atlassian.net/browse/SEC-42"


def finding(check: str, status: str, *controls: str, details: tuple[str, ...] = (), risk_ids: tuple[int, ...] = ()) -> ObservedFinding:
    return ObservedFinding(check_id=check, check_title=check.replace("-", " ").capitalize(), status=status, controls_2022=controls,
                           details=details, risk_ids=risk_ids)


def sample() -> Assessment:
    """Three controls: A.5.26 fails outright, A.5.28 fails only under an accepted risk, A.5.24 passes."""
    incidents = (
        ObservedIncident(
            id=1, source="servicenow", number="INC0010001", url=URL1, title="Phishing mail\nreported by finance",
            severity="high", opened_at=datetime(2026, 7, 3, 9, tzinfo=UTC), closed_at=datetime(2026, 7, 9, 17, tzinfo=UTC),
            findings=(
                finding("closure-recorded", "fail", "A.5.26", details=("close_code", "resolution_notes")),
                finding("evidence-preserved", "accepted", "A.5.28", details=("evidence",), risk_ids=(7,)),
                finding("plan-referenced", "pass", "A.5.24"),
            ),
        ),
        ObservedIncident(
            id=2, source="jira", number="SEC-42", url=URL2, title="Lost laptop", severity="medium",
            opened_at=datetime(2026, 8, 1, tzinfo=UTC), closed_at=None,
            findings=(
                finding("closure-recorded", "pass", "A.5.26"),
                finding("evidence-preserved", "pass", "A.5.28"),
                finding("plan-referenced", "pass", "A.5.24"),
            ),
        ),
        # No number, no URL: the evidence must still point somewhere that resolves.
        ObservedIncident(
            id=3, source="rt", number=None, url=None, title=None, severity=None,
            opened_at=datetime(2026, 9, 30, 23, tzinfo=UTC), closed_at=None,
            findings=(finding("closure-recorded", "pending", "A.5.26"),),
        ),
    )
    controls = (
        ControlResult("A.5.26", "Response to information security incidents", ("A.16.1.5",), in_scope=3, passed=1, failed=1,
                      accepted=0, pending=1, not_applicable=0, incident_ids=(1, 2, 3)),
        ControlResult("A.5.28", "Collection of evidence", ("A.16.1.7",), in_scope=2, passed=1, failed=0,
                      accepted=1, pending=0, not_applicable=0, incident_ids=(1, 2)),
        ControlResult("A.5.24", "Information security incident management planning and preparation", ("A.16.1.1",),
                      in_scope=2, passed=2, failed=0, accepted=0, pending=0, not_applicable=1, incident_ids=(1, 2)),
    )
    risks = (
        AcceptedRisk(
            id=7, check_id="evidence-preserved", check_title="Evidence preserved", controls_2022=("A.5.28",), incident_id=1,
            scope={}, justification="Mail server logs are kept by the provider for 90 days; a copy is requested.",
            approver="Dana Scully", created_at=datetime(2026, 7, 10, tzinfo=UTC), expires_at=datetime(2026, 12, 31, tzinfo=UTC),
            status="active", revoked_at=None,
        ),
        AcceptedRisk(
            id=8, check_id="closure-recorded", check_title="Closure recorded", controls_2022=("A.5.26",), incident_id=None,
            scope={"source": "servicenow"}, justification="Close codes arrive with the ServiceNow upgrade in July.",
            approver="Fox Mulder", created_at=datetime(2026, 3, 1, tzinfo=UTC), expires_at=datetime(2026, 8, 1, tzinfo=UTC),
            status="expired", revoked_at=None,
        ),
    )
    return Assessment(
        title="GapBridge assessment 2026-Q3", period_start=T0, period_end=T1, period_by="opened_at", generated_at=GENERATED,
        ruleset_hash="9f2c1e", overlays=("nis2",), gapbridge_version="0.1.0", controls=controls, incidents=incidents, risks=risks,
    )


@cache
def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / f"oscal_{name}_schema.json").read_text(encoding="utf-8"))
    return loaded


@cache
def validator(name: str) -> Any:
    s = schema(name)
    assert s["$schema"] == "http://json-schema.org/draft-07/schema#"  # the validator follows what the schema declares
    return jsonschema_rs.validator_for(s, validate_formats=True)


def schema_errors(name: str, doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message[:300]}" for e in validator(name).iter_errors(doc)]


def schema_version(name: str) -> str:
    found = re.search(r"/oscal/(\d+\.\d+\.\d+)/", schema(name)["$id"])
    assert found, schema(name)["$id"]
    return found.group(1)


def assert_valid(plan: dict[str, Any], results: dict[str, Any]) -> tuple[AssessmentPlan, AssessmentResults]:
    assert schema_errors("assessment-plan", plan) == [], f"against the OSCAL {schema_version('assessment-plan')} schema"
    assert schema_errors("assessment-results", results) == [], f"against the OSCAL {schema_version('assessment-results')} schema"
    return AssessmentPlan.model_validate(plan["assessment-plan"]), AssessmentResults.model_validate(results["assessment-results"])


def props(obj: dict[str, Any], name: str) -> list[str]:
    return [p["value"] for p in obj.get("props", ()) if p["name"] == name]


def by_prop(items: list[dict[str, Any]], name: str) -> dict[str, dict[str, Any]]:
    return {props(i, name)[0]: i for i in items}


@pytest.fixture(scope="module")
def docs() -> tuple[dict[str, Any], dict[str, Any]]:
    a = sample()
    return oscal.assessment_plan(a), oscal.assessment_results(a)


# --- the versions and the schema files ---------------------------------------------------------------------------

def test_one_oscal_version_everywhere() -> None:
    assert oscal.OSCAL_VERSION == trestle.oscal.OSCAL_VERSION == "1.2.1"
    assert schema_version("assessment-plan") == schema_version("assessment-results") == oscal.OSCAL_VERSION


@pytest.mark.parametrize("name", ["assessment-plan", "assessment-results"])
def test_schema_files_are_the_recorded_ones(name: str) -> None:
    digest = hashlib.sha256((SCHEMAS / f"oscal_{name}_schema.json").read_bytes()).hexdigest()
    assert digest in (SCHEMAS / ".source.txt").read_text(encoding="utf-8")


# --- both documents validate ---------------------------------------------------------------------------------------

def test_both_documents_validate(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    plan, results = docs
    ap, ar = assert_valid(plan, results)
    # trestle reads every field back as written (it writes "+00:00" where the export writes "Z")
    for model, doc in ((ap, plan["assessment-plan"]), (ar, results["assessment-results"])):
        assert json.loads(model.model_dump_json(by_alias=True, exclude_none=True).replace("+00:00", "Z")) == doc


@pytest.mark.parametrize(("where", "bad"), [
    (("results", 0, "reviewed-controls", "control-selections", 0, "include-controls", 0, "control-id"), "5.26"),
    (("metadata", "last-modified"), "2026-10-02T08:30:00"),
    (("results", 0, "observations", 0, "relevant-evidence", 0, "href"), "https://acme.example/a ticket"),
    (("results", 0, "findings", 0, "target", "status", "state"), "partially-satisfied"),
    (("results", 0, "observations", 0, "uuid"), "not-a-uuid"),
])
def test_the_schema_check_catches_what_it_should(docs: tuple[dict[str, Any], dict[str, Any]], where: tuple[Any, ...], bad: str) -> None:
    """Without this a validator that accepted anything would pass every test above."""
    results = copy.deepcopy(docs[1])
    node: Any = results["assessment-results"]
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = bad
    assert schema_errors("assessment-results", results)


@pytest.mark.parametrize(("where", "bad"), [
    (("results", 0, "observations", 0, "methods"), []),
    (("results", 0, "findings", 0, "target", "type"), "control-id"),
    (("results", 0, "risks", 0, "accepted"), True),  # an unknown key: trestle forbids extra fields
])
def test_trestle_catches_what_it_should(docs: tuple[dict[str, Any], dict[str, Any]], where: tuple[Any, ...], bad: Any) -> None:
    results = copy.deepcopy(docs[1])
    node: Any = results["assessment-results"]
    for step in where[:-1]:
        node = node[step]
    node[where[-1]] = bad
    with pytest.raises(ValueError):
        AssessmentResults.model_validate(results["assessment-results"])


def test_an_assessment_without_incidents_or_risks_still_validates() -> None:
    a = replace(sample(), incidents=(), risks=(), controls=tuple(
        replace(c, in_scope=0, passed=0, failed=0, accepted=0, pending=0, not_applicable=0, incident_ids=()) for c in sample().controls))
    plan, results = oscal.assessment_plan(a), oscal.assessment_results(a)
    assert_valid(plan, results)
    result = results["assessment-results"]["results"][0]
    assert "observations" not in result and "risks" not in result and "back-matter" not in results["assessment-results"]
    assert [f["target"]["status"] for f in result["findings"]] == [{"state": "satisfied", "reason": "other"}] * 3
    assert all("related-observations" not in f for f in result["findings"])


# --- the plan ------------------------------------------------------------------------------------------------------

def test_reviewed_controls_by_2022_id_with_both_editions(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    plan, results = (d[k] for d, k in zip(docs, ("assessment-plan", "assessment-results"), strict=True))
    selected = [c["control-id"] for c in plan["reviewed-controls"]["control-selections"][0]["include-controls"]]
    assert selected == ["a.5.26", "a.5.28", "a.5.24"]
    assert results["results"][0]["reviewed-controls"] == plan["reviewed-controls"]
    objectives = {o["control-id"]: o for o in plan["local-definitions"]["objectives-and-methods"]}
    assert props(objectives["a.5.28"], "iso27001-2022") == ["A.5.28"]
    assert props(objectives["a.5.28"], "iso27001-2013") == ["A.16.1.7"]
    assert objectives["a.5.28"]["parts"][0]["id"] == "a.5.28_obj"


def test_plan_names_its_placeholder_ssp_and_the_tool(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    plan = docs[0]["assessment-plan"]
    assert plan["import-ssp"]["href"] == oscal.DEFAULT_SSP_HREF and "placeholder" in plan["import-ssp"]["remarks"]
    tool = plan["assessment-assets"]["components"][0]
    assert (tool["title"], tool["type"], props(tool, "version") or [p["value"] for p in tool["props"]]) == ("GapBridge", "software", ["0.1.0"])
    subject = plan["assessment-subjects"][0]
    assert sorted(props(subject, "source")) == ["jira", "rt", "servicenow"] and "3 records" in subject["description"]
    assert props(plan["metadata"], "ruleset-hash") == ["9f2c1e"] and props(plan["metadata"], "overlay") == ["nis2"]


# --- the results ---------------------------------------------------------------------------------------------------

def test_results_import_the_plan_and_cover_the_period(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    plan, results = docs[0]["assessment-plan"], docs[1]["assessment-results"]
    assert results["import-ap"] == {"href": "assessment-plan.json"}
    other = oscal.assessment_results(sample(), plan_href="https://grc.acme.example/oscal/ap-2026q3.json")
    assert other["assessment-results"]["import-ap"]["href"] == "https://grc.acme.example/oscal/ap-2026q3.json"
    result = results["results"][0]
    assert (result["start"], result["end"]) == ("2026-07-01T00:00:00Z", "2026-10-01T00:00:00Z")
    assert len(results["results"]) == 1
    tool = plan["assessment-assets"]["components"][0]["uuid"]
    actors = {a["actor-uuid"] for o in result["observations"] for origin in o["origins"] for a in origin["actors"]}
    assert actors == {tool}


def test_one_observation_per_incident_with_the_ticket_as_evidence(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    results = docs[1]["assessment-results"]
    observations = by_prop(results["results"][0]["observations"], "incident-id")
    assert sorted(observations) == ["1", "2", "3"] and len(results["results"][0]["observations"]) == 3
    assert [e["href"] for e in observations["1"]["relevant-evidence"]] == [URL1]
    assert [e["href"] for e in observations["2"]["relevant-evidence"]] == [URL2]
    resources = {r["uuid"]: r for r in results["back-matter"]["resources"]}
    for o in observations.values():
        assert o["methods"] == ["EXAMINE"] and o["collected"] == "2026-10-02T08:30:00Z"
        assert o["subjects"][0]["type"] == "resource" and o["subjects"][0]["subject-uuid"] in resources
    # No URL: the evidence points at the ticket's own resource in the back matter.
    assert observations["3"]["relevant-evidence"][0]["href"] == "#" + observations["3"]["subjects"][0]["subject-uuid"]
    assert resources[observations["1"]["subjects"][0]["subject-uuid"]]["rlinks"] == [{"href": URL1}]
    assert observations["1"]["title"] == "INC0010001: Phishing mail reported by finance"
    assert observations["3"]["title"] == "Incident #3"
    checks = {(p["value"], p.get("class")) for p in observations["1"]["props"] if p["name"] == "check"}
    assert checks == {("closure-recorded", "fail"), ("evidence-preserved", "accepted"), ("plan-referenced", "pass")}
    assert "close_code; resolution_notes" in observations["1"]["description"]


def test_a_control_with_an_unaccepted_failure_is_not_satisfied(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    findings = by_prop(docs[1]["assessment-results"]["results"][0]["findings"], "iso27001-2022")
    target = findings["A.5.26"]["target"]
    assert (target["type"], target["target-id"], target["status"]) == ("objective-id", "a.5.26_obj", {"state": "not-satisfied", "reason": "fail"})
    assert "closure-recorded (1)" in findings["A.5.26"]["remarks"]


def test_a_control_failing_only_under_accepted_risk_is_satisfied_with_its_risk(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    result = docs[1]["assessment-results"]["results"][0]
    findings = by_prop(result["findings"], "iso27001-2022")
    risks = by_prop(result["risks"], "acceptance-id")
    assert findings["A.5.28"]["target"]["status"]["state"] == "satisfied"
    assert [r["risk-uuid"] for r in findings["A.5.28"]["related-risks"]] == [risks["7"]["uuid"]]
    assert "accepted risk" in findings["A.5.28"]["remarks"]
    assert findings["A.5.24"]["target"]["status"] == {"state": "satisfied", "reason": "pass"} and "related-risks" not in findings["A.5.24"]
    # The expired acceptance of a closure check is related to the control it no longer excuses.
    assert [r["risk-uuid"] for r in findings["A.5.26"]["related-risks"]] == [risks["8"]["uuid"]]


def test_findings_relate_the_observations_of_their_population(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    result = docs[1]["assessment-results"]["results"][0]
    observation_of = {props(o, "incident-id")[0]: o["uuid"] for o in result["observations"]}
    for control in sample().controls:
        f = by_prop(result["findings"], "iso27001-2022")[control.control_2022]
        assert [r["observation-uuid"] for r in f["related-observations"]] == [observation_of[str(i)] for i in control.incident_ids]
        assert props(f, "in-scope") == [str(control.in_scope)] and props(f, "accepted") == [str(control.accepted)]
    assert len(result["findings"]) == len(sample().controls)


def test_accepted_risks_with_status_deadline_and_approval(docs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    results = docs[1]["assessment-results"]
    result = results["results"][0]
    risks = by_prop(result["risks"], "acceptance-id")
    assert sorted(risks) == ["7", "8"]
    active, expired = risks["7"], risks["8"]
    assert (active["status"], active["deadline"]) == ("deviation-approved", "2026-12-31T00:00:00Z")
    assert (expired["status"], expired["deadline"]) == ("open", "2026-08-01T00:00:00Z")
    parties = {p["name"]: p["uuid"] for p in results["metadata"]["parties"]}
    assert sorted(parties) == ["Dana Scully", "Fox Mulder"]
    assert results["metadata"]["responsible-parties"] == [{"role-id": "risk-owner", "party-uuids": list(parties.values())}]
    accepted = active["risk-log"]["entries"][0]
    assert accepted["logged-by"] == [{"party-uuid": parties["Dana Scully"], "role-id": "risk-owner"}]
    assert accepted["remarks"] == sample().risks[0].justification and accepted["start"] == "2026-07-10T00:00:00Z"
    assert active["remediations"][0]["description"] == sample().risks[0].justification
    assert active["remediations"][0]["props"] == [{"name": "type", "value": "accept"}]
    assert [(e["status-change"], e["start"]) for e in expired["risk-log"]["entries"]] == [
        ("deviation-approved", "2026-03-01T00:00:00Z"), ("open", "2026-08-01T00:00:00Z")]
    # The active acceptance is evidenced by incident 1's accepted finding; the expired one excuses nothing now.
    observation_of = {props(o, "incident-id")[0]: o["uuid"] for o in result["observations"]}
    assert active["related-observations"] == [{"observation-uuid": observation_of["1"]}]
    assert "related-observations" not in expired
    assert props(expired, "scope-source") == ["servicenow"]


def test_a_revoked_acceptance_is_open_again_from_its_revocation() -> None:
    revoked_at = datetime(2026, 9, 15, 10, tzinfo=UTC)
    risk = replace(sample().risks[0], status="revoked", revoked_at=revoked_at)
    a = replace(sample(), risks=(risk,))
    plan, results = oscal.assessment_plan(a), oscal.assessment_results(a)
    assert_valid(plan, results)
    out = results["assessment-results"]["results"][0]["risks"][0]
    assert out["status"] == "open"
    assert out["risk-log"]["entries"][-1]["start"] == "2026-09-15T10:00:00Z" and out["risk-log"]["entries"][-1]["status-change"] == "open"
    assert "related-observations" not in out  # only an acceptance in force covers an accepted finding


def test_an_accepted_finding_is_linked_to_the_acceptances_that_cover_it() -> None:
    """The query layer knows which acceptance covers a finding; the export links those and no other of the same check."""
    base = sample()
    wide = AcceptedRisk(
        id=9, check_id="evidence-preserved", check_title="Evidence preserved", controls_2022=("A.5.28",), incident_id=None,
        scope={"source": "jira"}, justification="j", approver="Dana Scully", created_at=T0, expires_at=T1 + timedelta(days=30),
        status="active", revoked_at=None)
    results = oscal.assessment_results(replace(base, risks=(*base.risks, wide)))
    risks = by_prop(results["assessment-results"]["results"][0]["risks"], "acceptance-id")
    assert "related-observations" not in risks["9"]  # it covers no accepted finding here
    assert len(risks["7"]["related-observations"]) == 1
    both = replace(base.incidents[0], findings=tuple(replace(f, risk_ids=(7, 9)) if f.status == "accepted" else f
                                                     for f in base.incidents[0].findings))
    results = oscal.assessment_results(replace(base, incidents=(both, *base.incidents[1:]), risks=(*base.risks, wide)))
    risks = by_prop(results["assessment-results"]["results"][0]["risks"], "acceptance-id")
    assert len(risks["9"]["related-observations"]) == len(risks["7"]["related-observations"]) == 1


# --- identifiers and timestamps -------------------------------------------------------------------------------------

def uuids(doc: Any) -> dict[str, str]:
    """Every uuid in a document by the path it sits at."""
    found: dict[str, str] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "uuid":
                    found[path] = v
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}/{i}")

    walk(doc, "")
    return found


def test_uuids_are_derived_so_re_exports_diff() -> None:
    first = oscal.assessment_results(sample())
    assert oscal.assessment_results(sample()) == first
    again = uuids(oscal.assessment_results(replace(sample(), generated_at=GENERATED + timedelta(days=1))))
    before = uuids(first)
    changed = {path for path in before if before[path] != again[path]}
    assert changed == {"/assessment-results"}  # a new revision; every subject keeps its uuid
    other_period = uuids(oscal.assessment_results(replace(sample(), period_start=T1, period_end=T1 + timedelta(days=92))))
    assert other_period["/assessment-results/results/0/observations/0"] != before["/assessment-results/results/0/observations/0"]
    assert other_period["/assessment-results/results/0/risks/0"] == before["/assessment-results/results/0/risks/0"]
    elsewhere = uuids(oscal.assessment_results(sample(), namespace=uuid.uuid4()))
    assert not set(elsewhere.values()) & set(before.values())
    assert len(set(before.values())) == len(before)  # no two objects share a uuid


def test_timestamps_are_utc_with_z_and_naive_ones_are_refused() -> None:
    plus_two = timezone(timedelta(hours=2))
    a = replace(sample(), generated_at=datetime(2026, 10, 2, 10, 30, tzinfo=plus_two))
    assert oscal.assessment_results(a)["assessment-results"]["metadata"]["last-modified"] == "2026-10-02T08:30:00Z"
    with pytest.raises(ValueError, match="naive"):
        oscal.assessment_plan(replace(sample(), period_start=datetime(2026, 7, 1)))


def test_odd_ticket_urls_and_text_still_validate() -> None:
    inc = replace(sample().incidents[1], url="https://itsm.example/tickets/Über 42", title="  ", number=" SEC 42\t")
    a = replace(sample(), incidents=(inc,), risks=())
    plan, results = oscal.assessment_plan(a), oscal.assessment_results(a)
    assert_valid(plan, results)
    observation = results["assessment-results"]["results"][0]["observations"][0]
    assert observation["relevant-evidence"][0]["href"] == "https://itsm.example/tickets/%C3%9Cber%2042"
    assert observation["title"] == "Incident SEC 42"


@pytest.mark.parametrize(("change", "message"), [
    ({"controls": ()}, "at least one control"),
    ({"period_end": T0 - timedelta(days=1)}, "before it starts"),
    ({"incidents": (replace(sample().incidents[0], findings=(finding("x", "skipped", "A.5.26"),)),)}, "unknown status"),
    ({"controls": (replace(sample().controls[0], control_2022="5.26"),)}, "control-id"),
])
def test_bad_input_is_refused_not_exported(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        oscal.assessment_results(replace(sample(), **change))
