"""Exports: CSV and JSON of gaps, coverage and populations, and OSCAL assessment results, from the API and the CLI."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from click.testing import CliRunner

from plugin.cli import main
from plugin.extensions import db
from plugin.models import RiskAcceptance, utcnow

from .apiclient import ApiClient
from .test_api import api_app  # noqa: F401  (the fixture: two synced, assessed sources)
from .test_oscal_export import assert_valid


def _csv(body: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body.decode())))


@pytest.fixture
def api(api_app) -> ApiClient:  # noqa: F811
    return ApiClient(api_app)


def test_gaps_csv_and_json_hold_what_the_api_lists(api) -> None:
    listed = api.pages("/api/v1/gaps?period=2026&limit=50")
    r = api.get("/api/v1/exports/gaps?period=2026")
    assert r.status_code == 200 and r.mimetype == "text/csv" and "attachment" in r.headers["Content-Disposition"]
    rows = _csv(r.data)
    assert [(int(x["incident_id"]), x["check_id"]) for x in rows] == [(g["incident"]["id"], g["check_id"]) for g in listed]
    assert all(x["status"] == "open" and x["url"].startswith("https://") for x in rows)
    doc = api.json("/api/v1/exports/gaps?period=2026&format=json")
    assert doc["dataset"] == "gaps" and len(doc["items"]) == len(rows) and doc["scope"]["period"] == "2026"
    assert api.get("/api/v1/exports/gaps?control=Z.1").status_code == 400


def test_coverage_and_population_exports_match_the_api(api) -> None:
    rows = {x["key"]: x for x in _csv(api.get("/api/v1/exports/coverage?period=2026-Q2").data)}
    for row in api.pages("/api/v1/coverage/controls?period=2026-Q2"):
        assert {k: int(rows[row["key"]][k]) for k in ("in_scope", "passed", "failed", "accepted", "not_applicable")} == \
            {k: row[k] for k in ("in_scope", "passed", "failed", "accepted", "not_applicable")}
    subs = _csv(api.get("/api/v1/exports/coverage?group=subprocess").data)
    assert {x["group"] for x in subs} == {"subprocess"}
    members = _csv(api.get("/api/v1/exports/population?control=A.16.1.7&outcome=failed").data)
    assert {int(m["incident_id"]) for m in members} == {
        m["incident"]["id"] for m in api.pages("/api/v1/coverage/controls/A.5.28/population?outcome=failed")}
    assert api.get("/api/v1/exports/population").status_code == 400  # which control?


def test_a_cell_that_a_spreadsheet_would_run_is_defused(api, api_app) -> None:  # noqa: F811
    from plugin.models import Incident

    with api_app.app_context():
        inc = db.session.get(Incident, api.pages("/api/v1/gaps")[0]["incident"]["id"])
        inc.title = '=HYPERLINK("https://evil.example","click")'
        db.session.commit()
    rows = _csv(api.get("/api/v1/exports/gaps").data)
    titles = [x["title"] for x in rows if "HYPERLINK" in x["title"]]
    assert titles and all(t.startswith("'=") for t in titles)


def test_oscal_results_and_plan_validate_and_agree_with_coverage(api, api_app) -> None:  # noqa: F811
    with api_app.app_context():
        db.session.add(RiskAcceptance(check_id="LEARN-001", scope_business_unit="Retail", justification="Retail reviews quarterly instead",
                                      approver="Head of Retail IT", created_by="test", created_at=utcnow() - timedelta(days=400),
                                      expires_at=utcnow() + timedelta(days=30)))
        db.session.commit()
    plan = api.json("/api/v1/exports/oscal/assessment-plan?period=2026")
    results = api.json("/api/v1/exports/oscal/assessment-results?period=2026")
    assert_valid(plan, results)
    result = results["assessment-results"]["results"][0]
    assert results["assessment-results"]["import-ap"]["href"] == "assessment-plan.json"
    incidents = api.pages("/api/v1/incidents?period=2026&limit=100")
    assert len(result["observations"]) == len(incidents)
    assert {e["href"] for o in result["observations"] for e in o["relevant-evidence"]} == {i["url"] for i in incidents}
    coverage = {r["key"]: r for r in api.pages("/api/v1/coverage/controls?period=2026")}
    states = {f["target"]["target-id"]: f["target"]["status"]["state"] for f in result["findings"]}
    for key, row in coverage.items():
        target = key.lower() + "_obj"
        assert states[target] == ("not-satisfied" if row["failed"] else "satisfied"), key
    (risk,) = result["risks"]
    assert risk["status"] == "deviation-approved" and risk["related-observations"]
    assert risk["deadline"].startswith((utcnow() + timedelta(days=30)).strftime("%Y-%m-%d"))
    r = api.get("/api/v1/exports/oscal/assessment-results")
    assert r.status_code == 400 and "period" in r.get_json()["fields"]
    assert api.get("/api/v1/exports/oscal/ssp?period=2026").status_code == 404


def test_the_cli_writes_every_export(api_app, tmp_path, monkeypatch) -> None:  # noqa: F811
    from plugin.state import gapbridge

    cfg = gapbridge(api_app).config
    cfg_file = tmp_path / "gapbridge.yaml"
    cfg_file.write_text(json.dumps({"database_url": cfg["database_url"], "instance_path": str(tmp_path / "inst"),
                                    "mappings": {"regulatory": ["gdpr", "nis2"]}}))
    runner = CliRunner()
    base = ["--config", str(cfg_file), "export"]
    r = runner.invoke(main, [*base, "oscal", "--period", "2026", "--out", str(tmp_path / "oscal")])
    assert r.exit_code == 0, r.output
    plan = json.loads((tmp_path / "oscal" / "assessment-plan.json").read_text())
    results = json.loads((tmp_path / "oscal" / "assessment-results.json").read_text())
    assert_valid(plan, results)
    r = runner.invoke(main, [*base, "csv", "--period", "2026", "--out", str(tmp_path / "gaps.csv")])
    assert r.exit_code == 0, r.output
    api = ApiClient(api_app)
    assert len(_csv((tmp_path / "gaps.csv").read_bytes())) == len(api.pages("/api/v1/gaps?period=2026&limit=100"))
    r = runner.invoke(main, [*base, "json", "--dataset", "population", "--control", "A.5.28", "--out", str(tmp_path / "pop.json")])
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "pop.json").read_text())["items"]) == api.json("/api/v1/coverage/controls/A.5.28")["in_scope"]
    for bad, says in ([["oscal", "--out", str(tmp_path / "x")], "--period"], [["csv", "--period", "2026-Q9", "--out", "-"], "--period"],
                      [["csv", "--control", "Z.9", "--out", str(tmp_path / "never.csv")], "unknown control"]):
        r = runner.invoke(main, [*base, *bad])
        assert r.exit_code == 2 and says in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "never.csv").exists()
