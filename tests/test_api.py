"""The auditor API: controls, coverage with its population, gaps, incidents, checks, sync runs and the audit log.

Coverage is checked against a count done here, in Python, over the same stored findings; pages are followed to
their end and must neither skip nor repeat a row, also while a sync writes between pages.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from plugin.extensions import db
from plugin.models import Finding, Incident, RiskAcceptance
from plugin.services.assess import assess
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .apiclient import ApiClient
from .conftest import NOW
from .fakes import FakeConnector, FakeTicketing

UNITS = ("Finance", "Retail", "Engineering")
SEVERITIES = ("critical", "high", "medium", "low")


def varied_tool(count: int) -> FakeTicketing:
    """Tickets across business units, severities, quarters and record types, some missing what checks ask for."""
    tool = FakeTicketing(count)
    for i, t in enumerate(tool.tickets.values()):
        opened = datetime(2026, 1 + (i * 7) % 11, 1 + i % 27, 9, tzinfo=timezone.utc)
        canonical: dict[str, Any] = {
            "business_unit": UNITS[i % 3], "severity": SEVERITIES[i % 4], "opened_at": opened,
            "assessed_at": opened + timedelta(hours=1), "acknowledged_at": opened + timedelta(hours=1),
            "contained_at": opened + timedelta(hours=3), "resolved_at": opened + timedelta(days=1),
            "closed_at": opened + timedelta(days=2 + i % 40), "updated_at": opened + timedelta(days=2),
            "record_type": "weakness" if i % 9 == 4 else "incident",
            "category": "phishing" if i % 2 else "malware", "assignment_group": f"Team {i % 4}",
        }
        if i % 5 == 1:
            canonical["root_cause"] = None
            canonical["lessons_learned"] = None
        t["canonical"] = canonical
    return tool


@pytest.fixture
def api_app(app_factory):
    app = app_factory(mappings={"regulatory": ["gdpr", "nis2"]})
    with app.app_context():
        sync_source(FakeConnector(varied_tool(60)))
        sync_source(FakeConnector(varied_tool(12), name="second"))
        assess(gapbridge().ruleset, now=NOW)
        db.session.remove()
    return app


@pytest.fixture
def api(api_app) -> ApiClient:
    return ApiClient(api_app)


# --- an independent count ---------------------------------------------------------------------


def expected_coverage(app, checks: set[str], scope: dict[str, Any], now: datetime) -> Counter[str]:
    """Per incident in scope: failed > accepted > pending > passed over the control's gap checks, else not applicable."""
    with app.app_context():
        incidents = db.session.execute(sa.select(Incident)).scalars().all()
        findings = db.session.execute(sa.select(Finding.incident_id, Finding.check_id, Finding.status, Finding.kind)).all()
        acceptances = db.session.execute(sa.select(RiskAcceptance)).scalars().all()
        by_incident: dict[int, list[tuple[str, str, str]]] = {}
        for incident_id, check_id, status, kind in findings:
            by_incident.setdefault(incident_id, []).append((check_id, status, kind))
        out: Counter[str] = Counter()
        for inc in incidents:
            when = inc.closed_at if scope.get("by") == "closed_at" else inc.opened_at
            if "start" in scope and (when is None or not scope["start"] <= when < scope["end"]):
                continue
            if any(getattr(inc, k) != v for k, v in scope.items() if k not in ("start", "end", "by")):
                continue
            outcomes = set()
            for check_id, status, kind in by_incident.get(inc.id, []):
                if check_id not in checks or kind != "gap":
                    continue
                if status == "fail":
                    covered = any(a.check_id == check_id and a.revoked_at is None and a.expires_at > now and (
                        a.incident_id == inc.id if a.incident_id is not None else
                        all(w is None or w == h for w, h in ((a.scope_source, inc.source), (a.scope_business_unit, inc.business_unit),
                                                             (a.scope_category, inc.category)))) for a in acceptances)
                    outcomes.add("accepted" if covered else "failed")
                else:
                    outcomes.add({"pass": "passed", "pending": "pending"}[status])
            worst = next((o for o in ("failed", "accepted", "pending", "passed") if o in outcomes), "not_applicable")
            out[worst] += 1
        return out


def checks_of(app, control_2022: str) -> set[str]:
    with app.app_context():
        return {c.id for c in gapbridge(app).ruleset.checks if control_2022 in c.controls_2022 and c.kind == "gap"}


def test_coverage_per_control_equals_an_independent_count_for_both_editions(api, api_app) -> None:
    rows = {r["key"]: r for r in api.pages("/api/v1/coverage/controls?period=2026-Q2&limit=5")}
    assert "A.5.28" in rows and "A.5.27" in rows
    q2 = {"start": datetime(2026, 4, 1, tzinfo=timezone.utc), "end": datetime(2026, 7, 1, tzinfo=timezone.utc)}
    for control, row in rows.items():
        want = expected_coverage(api_app, checks_of(api_app, control), q2, NOW)
        got = {k: row[k] for k in ("passed", "failed", "accepted", "pending", "not_applicable")}
        assert got == {k: want[k] for k in got}, control
        assert row["in_scope"] == row["passed"] + row["failed"] + row["accepted"] + row["pending"]
    assert rows["A.5.28"]["failed"] > 0 and any(r["passed"] for r in rows.values()) and any(r["not_applicable"] for r in rows.values())
    assert rows["A.5.28"]["ids_2013"] == ["A.16.1.7"]
    # the 2013 id of the same control counts the same incidents
    old = api.json("/api/v1/coverage/controls/A.16.1.7?period=2026-Q2")
    assert old["key"] == "A.16.1.7" and old["ids_2022"] == ["A.5.28"]
    assert {k: old[k] for k in ("in_scope", "failed", "passed")} == {k: rows["A.5.28"][k] for k in ("in_scope", "failed", "passed")}


def test_coverage_by_closed_at_and_by_business_unit_and_source(api, api_app) -> None:
    checks = checks_of(api_app, "A.5.27")
    for query, scope in [
        ("period=2026-05&by=closed_at", {"start": datetime(2026, 5, 1, tzinfo=timezone.utc), "end": datetime(2026, 6, 1, tzinfo=timezone.utc),
                                         "by": "closed_at"}),
        ("business_unit=Retail", {"business_unit": "Retail"}),
        ("source=second&severity=high", {"source": "second", "severity": "high"}),
        ("record_type=weakness", {"record_type": "weakness"}),
        ("from=2026-03-01T00:00:00Z&to=2026-03-15T00:00:00Z", {"start": datetime(2026, 3, 1, tzinfo=timezone.utc),
                                                               "end": datetime(2026, 3, 15, tzinfo=timezone.utc)}),
    ]:
        row = api.json(f"/api/v1/coverage/controls/A.5.27?{query}")
        want = expected_coverage(api_app, checks, scope, NOW)
        assert {k: row[k] for k in ("passed", "failed", "not_applicable")} == {k: want[k] for k in ("passed", "failed", "not_applicable")}, query
    assert api.json("/api/v1/coverage/controls/A.5.27?business_unit=Retail")["in_scope"] < api.json("/api/v1/coverage/controls/A.5.27")["in_scope"]


def test_each_number_has_its_population_with_ticket_links(api) -> None:
    row = api.json("/api/v1/coverage/controls/A.5.28?period=2026")
    seen: set[int] = set()
    for outcome in ("passed", "failed", "accepted", "pending", "not_applicable"):
        members = api.pages(f"/api/v1/coverage/controls/A.5.28/population?period=2026&outcome={outcome}&limit=4")
        assert len(members) == row[outcome], outcome
        ids = [m["incident"]["id"] for m in members]
        assert len(set(ids)) == len(ids) and not seen & set(ids)
        seen |= set(ids)
        for m in members:
            assert m["outcome"] == outcome and m["incident"]["url"].startswith("https://")
            if outcome == "failed":
                assert "failed" in m["checks"].values()
    everyone = api.pages("/api/v1/coverage/controls/A.5.28/population?period=2026&limit=50")
    assert len(everyone) == row["in_scope"]


def test_an_accepted_risk_counts_as_accepted_not_failed(api, api_app) -> None:
    before = api.json("/api/v1/coverage/controls/A.5.27")
    assert before["failed"] > 0
    with api_app.app_context():
        db.session.add(RiskAcceptance(check_id="LEARN-001", scope_business_unit="Retail", justification="Retail closes through the vendor",
                                      approver="CISO", created_by="test", expires_at=NOW + timedelta(days=3650)))
        db.session.commit()
    after = api.json("/api/v1/coverage/controls/A.5.27")
    assert after["accepted"] > 0 and after["failed"] == before["failed"] - after["accepted"]
    assert after["in_scope"] == before["in_scope"]
    want = expected_coverage(api_app, checks_of(api_app, "A.5.27"), {}, datetime.now(timezone.utc))
    assert (after["failed"], after["accepted"]) == (want["failed"], want["accepted"])
    accepted = api.pages("/api/v1/gaps?status=accepted&check=LEARN-001")
    assert len(accepted) > 0 and all(g["incident"]["business_unit"] == "Retail" and g["acceptance"]["approver"] == "CISO" for g in accepted)
    assert not [g for g in api.pages("/api/v1/gaps?check=LEARN-001") if g["incident"]["business_unit"] == "Retail"]


def test_subprocess_coverage_and_population(api) -> None:
    rows = api.pages("/api/v1/coverage/subprocesses")
    keys = [r["key"] for r in rows]
    assert "resolution" in keys and "reporting" in keys
    res = next(r for r in rows if r["key"] == "resolution")
    assert res["failed"] == len(api.pages("/api/v1/coverage/subprocesses/resolution/population?outcome=failed"))
    assert api.get("/api/v1/coverage/subprocesses/triage").status_code == 404


# --- gaps --------------------------------------------------------------------------------------


def test_gaps_by_either_edition_and_filters(api) -> None:
    by_2022 = api.pages("/api/v1/gaps?control=A.5.28")
    assert by_2022 and by_2022 == api.pages("/api/v1/gaps?control=A.16.1.7")
    assert all(g["gap_status"] == "open" and g["status"] == "fail" and "A.5.28" in g["controls_2022"] for g in by_2022)
    retail = api.pages("/api/v1/gaps?business_unit=Retail&assignment_group=Team%201")
    assert retail and all(g["incident"]["business_unit"] == "Retail" and g["incident"]["assignment_group"] == "Team 1" for g in retail)
    q3 = api.pages("/api/v1/gaps?period=2026-Q3")
    assert q3 and all("2026-07" <= g["incident"]["opened_at"][:7] <= "2026-09" for g in q3)
    assert all(g["kind"] == "improvement" for g in api.pages("/api/v1/gaps?kind=improvement"))


@pytest.mark.parametrize("sort", ["severity", "age", "control"])
def test_gap_pages_follow_the_sort_with_no_row_skipped_or_repeated(api, sort: str) -> None:
    everything = api.pages(f"/api/v1/gaps?sort={sort}&limit=1000")
    paged = api.pages(f"/api/v1/gaps?sort={sort}&limit=7")
    keys = [(g["incident"]["id"], g["check_id"]) for g in paged]
    assert len(keys) == len(set(keys)) == len(everything) > 14
    assert keys == [(g["incident"]["id"], g["check_id"]) for g in everything]
    if sort == "severity":
        ranks = [SEVERITIES.index(g["severity"]) for g in paged]
        assert ranks == sorted(ranks)
    if sort == "age":
        ages = [g["first_failed_at"] for g in paged]
        assert ages == sorted(ages)


def test_resolved_gaps_are_listed_apart(api, api_app) -> None:
    open_evidence = api.pages("/api/v1/gaps?check=EVID-001")
    assert open_evidence and api.pages("/api/v1/gaps?check=EVID-001&status=resolved") == []
    with api_app.app_context():
        tool = varied_tool(60)
        for t in tool.tickets.values():
            t["evidence"] = True
            t["updated"] = (NOW + timedelta(days=1)).isoformat()
        sync_source(FakeConnector(tool))
        assess(gapbridge(api_app).ruleset, now=NOW + timedelta(days=1))
        db.session.remove()
    resolved = api.pages("/api/v1/gaps?check=EVID-001&status=resolved")
    assert {g["incident"]["id"] for g in resolved} == {g["incident"]["id"] for g in open_evidence if g["incident"]["source"] == "fake"}
    assert all(g["resolved_at"] and g["status"] == "pass" and g["gap_status"] == "resolved" for g in resolved)


def test_pages_stay_consistent_while_a_sync_writes(api, api_app) -> None:
    """Rows that exist throughout are returned once each, though re-assessment replaces finding rows between pages."""
    before = {(g["incident"]["id"], g["check_id"]) for g in api.pages("/api/v1/gaps?limit=1000")}
    seen: list[tuple[int, str]] = []
    cursor = None
    step = 0
    while True:
        body = api.json("/api/v1/gaps?limit=20" + (f"&cursor={cursor}" if cursor else ""))
        seen += [(g["incident"]["id"], g["check_id"]) for g in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        step += 1
        with api_app.app_context():  # a sync between pages: new incidents, and every finding row replaced
            tool = FakeTicketing(3)
            for t in tool.tickets.values():
                t["id"] = f"new{step}-{t['id']}"
            tool.tickets = {t["id"]: t for t in tool.tickets.values()}
            sync_source(FakeConnector(tool, name=f"late{step}"))
            assess(gapbridge(api_app).ruleset, everything=True, now=NOW)
            db.session.remove()
    assert step >= 3
    assert len(seen) == len(set(seen))
    assert before <= set(seen)


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=abc", "limit"), ("gap_severity=urgent", "gap_severity"), ("status=closed", "status"),
    ("control=Z.9.9", "control"), ("subprocess=triage", "subprocess"), ("check=NOPE-1", "check"), ("sort=newest", "sort"),
    ("period=2026-Q5", "period"), ("period=2026-Q1&from=2026-01-01T00:00:00Z", "period"), ("cursor=bm90IGEgY3Vyc29y", "cursor"),
    ("contrl=A.5.28", "contrl"), ("from=2026-01-01", "from"),
])
def test_bad_gap_queries_get_400_naming_the_parameter(api, query: str, field: str) -> None:
    r = api.get(f"/api/v1/gaps?{query}")
    assert r.status_code == 400, r.get_data(as_text=True)
    body = r.get_json()
    assert field in body["fields"] and body["error"] == "Bad Request"


def test_a_cursor_is_bound_to_its_query(api) -> None:
    body = api.json("/api/v1/gaps?limit=2&sort=severity")
    assert body["next_cursor"]
    r = api.get(f"/api/v1/gaps?limit=2&sort=age&cursor={body['next_cursor']}")
    assert r.status_code == 400 and "other filters" in r.get_json()["fields"]["cursor"][0]
    # the same query with another page size may go on
    assert api.get(f"/api/v1/gaps?limit=5&sort=severity&cursor={body['next_cursor']}").status_code == 200


# --- controls, checks, incidents, runs, audit ------------------------------------------------------


def test_controls_name_both_editions(api) -> None:
    listed = api.pages("/api/v1/controls?kind=annex_a&limit=40")
    assert len(listed) == 93 and all(c["edition"] == "2022" and c["id"] in c["ids_2022"] for c in listed)
    old = api.pages("/api/v1/controls?edition=2013&kind=annex_a")
    assert len(old) == 114
    one = api.json("/api/v1/controls/A.16.1.7")
    assert one["edition"] == "2013" and one["ids_2022"] == ["A.5.28"] and "EVID-001" in [c["id"] for c in one["checks"]]
    new = api.json("/api/v1/controls/5.28")
    assert new["ids_2013"] == ["A.16.1.7"] and {c["id"] for c in new["checks"]} == {c["id"] for c in one["checks"]}
    assert {r["relation"] for r in api.json("/api/v1/controls/A.5.26")["relations"]} <= {"covered", "gap", "improvement"}
    assert api.get("/api/v1/controls/Z.1").status_code == 400


def test_checks_and_one_check(api) -> None:
    checks = api.pages("/api/v1/checks?limit=10")
    assert {"EVID-001", "GDPR-001", "NIS2-001"} <= {c["id"] for c in checks}
    assert {c["id"] for c in api.pages("/api/v1/checks?kind=improvement")} < {c["id"] for c in checks}
    one = api.json("/api/v1/checks/evid-001")
    assert one["controls_2022"] == ["A.5.28"] and one["remediation"]
    assert api.get("/api/v1/checks/NOPE").status_code == 404


def test_incident_carries_findings_history_raw_record_and_link(api, api_app) -> None:
    from plugin.services.enrich import plan

    with api_app.app_context():
        plan(gapbridge(api_app).ruleset)
    body = api.json("/api/v1/incidents/by-number/INC0000001")
    assert body["url"].startswith("https://") and body["raw"]["number"] == "INC0000001"
    evid = next(f for f in body["findings"] if f["check_id"] == "EVID-001")
    assert evid["status"] == "fail" and evid["controls_2013"] == ["A.16.1.7"]
    with api_app.app_context():
        every = {ch.id for ch in gapbridge(api_app).ruleset.checks}
    listed = {f["check_id"] for f in body["findings"]}
    assert listed | set(body["not_applicable"]) == every and not listed & set(body["not_applicable"])
    (written,) = body["write_backs"]
    assert written["status"] == "pending" and "EVID-001" in written["note"] and written["fingerprint"]
    assert api.json(f"/api/v1/incidents/{body['id']}")["number"] == "INC0000001"
    for missing in ("/api/v1/incidents/999999", "/api/v1/incidents/2147483648", "/api/v1/incidents/by-number/NOPE"):
        r = api.get(missing)
        assert r.status_code == 404 and r.get_json()["error"] == "Not Found"
    listed_page = api.pages("/api/v1/incidents?business_unit=Retail&limit=9")
    assert listed_page and all(i["business_unit"] == "Retail" for i in listed_page)


def test_sync_runs_and_audit_log(api) -> None:
    runs = api.pages("/api/v1/sync-runs")
    assert [r["source"] for r in runs] == ["second", "fake"] and all(r["status"] == "succeeded" and r["duration_s"] >= 0 for r in runs)
    assert runs[1]["fetched"] == 60
    events = api.pages("/api/v1/audit-log?limit=10")
    assert any(e["action"] == "token.created" for e in events)
    ids = [e["id"] for e in events]
    assert ids == sorted(ids, reverse=True)
    assert all(e["action"] == "token.created" for e in api.pages("/api/v1/audit-log?action=token.created"))


def test_times_are_utc_iso_8601(api) -> None:
    body = api.json("/api/v1/gaps?limit=3")
    for g in body["items"]:
        for key in ("evaluated_at", "first_failed_at"):
            assert g[key].endswith("+00:00") and datetime.fromisoformat(g[key]).utcoffset() == timedelta(0)


def test_coverage_reads_the_outcomes_stored_with_the_findings_and_falls_back_to_them(api, api_app) -> None:
    """Each incident stores its outcome per control; a missing one (assessed before it existed) is read from its findings."""
    before = api.json("/api/v1/coverage/controls/A.5.28")
    from plugin.services.assess import refresh_outcome_masks

    with api_app.app_context():
        masks = db.session.execute(sa.select(Incident.id, Incident.control_outcomes, Incident.subprocess_outcomes)
                                   .order_by(Incident.id)).all()
        assert masks and all(c is not None and s is not None for _, c, s in masks) and any(c for _, c, _ in masks)
        # written in Python by the sync and the assessment; the same as the database computes from the findings
        refresh_outcome_masks(gapbridge(api_app).ruleset, [i for i, _, _ in masks])
        assert db.session.execute(sa.select(Incident.id, Incident.control_outcomes, Incident.subprocess_outcomes)
                                  .order_by(Incident.id)).all() == masks
        some = [i for (i,) in db.session.execute(sa.select(Incident.id).order_by(Incident.id).limit(10))]
        db.session.execute(sa.update(Incident).where(Incident.id.in_(some)).values(control_outcomes=None))
        db.session.commit()
    assert api.json("/api/v1/coverage/controls/A.5.28") == before  # read from the findings instead
    with api_app.app_context():  # a stored outcome that lies shows: the numbers come from it
        db.session.execute(sa.update(Incident).values(control_outcomes=0))
        db.session.commit()
    lying = api.json("/api/v1/coverage/controls/A.5.28")
    assert lying["in_scope"] == 0 and lying["not_applicable"] == before["in_scope"] + before["not_applicable"]
    with api_app.app_context():  # re-assessment writes them again
        assess(gapbridge(api_app).ruleset, everything=True, now=NOW)
        db.session.remove()
    assert api.json("/api/v1/coverage/controls/A.5.28") == before
