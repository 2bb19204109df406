"""The Jira demo end to end: the real Jira connector over HTTP against the demo Jira Cloud stand-in (demo_itsm.jira)."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from click.testing import CliRunner

from connectors.jira import JiraConnector
from connectors.servicenow import ServiceNowConnector
from demo_itsm import DemoITSM
from demo_itsm.jira import API_TOKEN, EMAIL, DemoJira
from plugin.cli import main
from plugin.cli.pipeline import run_sync, run_writeback
from plugin.config import demo_config
from plugin.extensions import db
from plugin.models import Finding, OutboxItem
from plugin.rules.model import FAIL, PASS
from plugin.state import gapbridge

pytestmark = pytest.mark.slow
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def _jira_app(app_factory: Any, jira: DemoJira, tmp_path: Path, **options: Any) -> Any:
    cfg = demo_config(jira.url or "", tmp_path, "jira")
    cfg["connectors"]["demo"].update(options)
    return app_factory(connectors=cfg["connectors"], mappings=cfg["mappings"], api=cfg["api"], outbox={})


def test_the_demo_jira_tells_the_same_stories_as_the_demo_servicenow(tmp_path: Path) -> None:
    with DemoITSM(tmp_path / "sn.sqlite", size=300, now=NOW) as sn, DemoJira(tmp_path / "jira.sqlite", size=300, now=NOW) as jira:
        servicenow = ServiceNowConnector("demo", demo_config(sn.url or "", tmp_path)["connectors"]["demo"])
        connector = JiraConnector("demo", demo_config(jira.url or "", tmp_path, "jira")["connectors"]["demo"])
        by_sn = {i["number"]: i for p in servicenow.fetch_pages(None) for i in map(servicenow.normalize, p.records)}
        by_jira = {i["number"]: i for p in connector.fetch_pages(None) for i in map(connector.normalize, p.records)}
    assert len(by_sn) == len(by_jira) == 300
    own = {"source", "external_id", "url", "raw", "number", "enrichment_fingerprint"}
    for number, sn_incident in by_sn.items():
        key = f"INC-{int(number[3:])}"  # INC0010042 is INC-10042
        jira_incident = by_jira[key]
        for name, value in sn_incident.items():
            if name in own:
                continue
            theirs = jira_incident[name]
            if name in ("related_refs", "weakness_refs"):
                theirs = [re.sub(r"^INC-(\d+)$", lambda m: f"INC{int(m.group(1)):07d}", r) for r in theirs]
            assert theirs == value, f"{number} / {key}: {name}: {value!r} in ServiceNow, {theirs!r} in Jira"


def test_sync_assess_and_write_back_over_http_and_a_second_write_back_adds_nothing(app_factory: Any, tmp_path: Path) -> None:
    with DemoJira(tmp_path / "jira.sqlite", size=120) as jira:
        app = _jira_app(app_factory, jira, tmp_path)
        assert run_sync(app, write_back=False, quiet=True) == 0
        with app.app_context():
            ruleset = gapbridge(app).ruleset
            seen: dict[str, set[str]] = defaultdict(set)
            for check_id, status in db.session.execute(sa.select(Finding.check_id, Finding.status).distinct()):
                seen[check_id].add(status)
            assert sum(1 for statuses in seen.values() if {PASS, FAIL} <= statuses) >= len(ruleset.checks) // 2
        assert run_writeback(app, quiet=True) == 0
        with app.app_context():
            sent = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.status == "sent")).all()
            assert sent and all(o.status == "sent" for o in db.session.scalars(sa.select(OutboxItem)))
        for item in sent:
            key = jira.issue(item.external_id)["key"]
            comments = jira.comments(key)
            assert len(comments) == 1 and comments[0]["public"] is False  # internal: the customer never sees it
            assert f"[gapbridge:{item.fingerprint}]" in comments[0]["body"]
            issue = jira.issue(key)["fields"]
            findings = jira.properties(key)["gapbridge.findings"]
            assert findings["fingerprint"] == item.fingerprint and findings["fields"]["open_gaps"] == item.payload["fields"]["open_gaps"]
            controls = [c for c in item.payload["fields"]["controls_2022"].split(",") if c]
            assert {f"iso27001-gap-{c}" for c in controls} <= set(issue["labels"])
            assert set(item.payload["labels"]) <= set(issue["labels"])
            assert issue["customfield_10128"] == float(item.payload["fields"]["open_gaps"])  # "GapBridge open gaps"
        before = {o.external_id: len(jira.comments(jira.issue(o.external_id)["key"])) for o in sent}
        writes_before = {k: v for k, v in jira.stats.items() if k in ("POST", "PUT")}
        # the next pass: the comments moved the issues' updated, so they are read again; nothing is written twice
        assert run_sync(app, quiet=True) == 0
        assert run_writeback(app, quiet=True) == 0
        assert {o.external_id: len(jira.comments(jira.issue(o.external_id)["key"])) for o in sent} == before
        assert {k: v for k, v in jira.stats.items() if k in ("POST", "PUT")} == writes_before


def test_a_control_that_is_no_longer_open_loses_its_label_and_a_persons_label_stays(app_factory: Any, tmp_path: Path) -> None:
    with DemoJira(tmp_path / "jira.sqlite", size=60) as jira:
        app = _jira_app(app_factory, jira, tmp_path)
        assert run_sync(app, quiet=True) == 0
        with app.app_context():
            item = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.status == "sent",
                                                                  OutboxItem.payload["fields"]["open_gaps"].as_integer() > 0)).first()
            assert item is not None
        key = jira.issue(item.external_id)["key"]
        labels = jira.issue(key)["fields"]["labels"]
        gap_labels = [label for label in labels if label.startswith("iso27001-gap-")]
        assert gap_labels
        # the team fixes the ticket's gaps by hand in Jira (here: an agent adds a label of their own too)
        connector = JiraConnector("demo", gapbridge(app).config["connectors"]["demo"])
        from connectors.base import Enrichment

        clean = Enrichment(item.external_id, "clean", "GapBridge: no open gaps. [gapbridge:clean]",
                           {"fingerprint": "clean", "open_gaps": 0, "controls_2022": ""}, ["gapbridge-compliant"])
        jira.update(key, labels=[*labels, "vip-customer"])
        assert connector.write_back(clean).written
        after = jira.issue(key)["fields"]["labels"]
        assert "vip-customer" in after and "gapbridge-compliant" in after
        assert not [label for label in after if label.startswith("iso27001-gap-")] and "gapbridge-gaps" not in after
        assert connector.current_fingerprint(item.external_id) == "clean"


def test_per_issue_write_limits_of_the_stand_in_slow_the_issue_and_every_note_arrives_once(app_factory: Any, tmp_path: Path) -> None:
    with DemoJira(tmp_path / "jira.sqlite", size=40) as jira:
        app = _jira_app(app_factory, jira, tmp_path)
        assert run_sync(app, write_back=False, quiet=True) == 0
        jira.per_issue_writes = (1, 0.5)  # one write per issue each half second: the labels, the comment, the property collide
        assert run_writeback(app, quiet=True) == 0
        assert jira.stats["per_issue_limited"] > 0
        with app.app_context():
            sent = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.status == "sent")).all()
            assert sent and db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem).where(OutboxItem.status != "sent")) == 0
        for item in sent:
            assert len(jira.comments(jira.issue(item.external_id)["key"])) == 1


def test_the_stand_in_answers_like_jira_cloud(tmp_path: Path) -> None:
    with DemoJira(tmp_path / "jira.sqlite", size=5) as jira:
        auth = (EMAIL, API_TOKEN)
        assert requests.get(f"{jira.url}/rest/api/3/myself", timeout=5).status_code == 401
        assert requests.get(f"{jira.url}/rest/api/3/myself", auth=auth, timeout=5).json()["timeZone"] == "Europe/Berlin"
        gone = requests.get(f"{jira.url}/rest/api/3/search", params={"jql": "project = INC"}, auth=auth, timeout=5)
        assert gone.status_code == 410 and "search/jql" in gone.json()["errorMessages"][0]
        bad = requests.get(f"{jira.url}/rest/api/3/search/jql", params={"jql": "project = NOPE"}, auth=auth, timeout=5)
        assert bad.status_code == 400 and "'NOPE' does not exist" in bad.json()["errorMessages"][0]
        first = requests.get(f"{jira.url}/rest/api/3/search/jql", params={"jql": "project = INC ORDER BY updated ASC, key ASC",
                                                                          "maxResults": 2, "fields": "updated"}, auth=auth, timeout=5).json()
        assert len(first["issues"]) == 2 and first["isLast"] is False and set(first["issues"][0]["fields"]) == {"updated"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}", first["issues"][0]["fields"]["updated"])
        rest = requests.get(f"{jira.url}/rest/api/3/search/jql", params={"jql": "project = INC", "maxResults": 10,
                                                                         "nextPageToken": first["nextPageToken"]}, auth=auth, timeout=5).json()
        assert len(rest["issues"]) == 3 and rest["isLast"] is True and "nextPageToken" not in rest


def test_the_demo_command_runs_over_the_jira_stand_in(app_factory: Any, _migrated: str, tmp_path: Path) -> None:
    app_factory()  # empties the shared test database when the test ends
    env = {"GAPBRIDGE_DATABASE_URL": _migrated}
    runner = CliRunner()
    first = runner.invoke(main, ["demo", "--tool", "jira", "--once", "--size", "60", "--workdir", str(tmp_path)], env=env)
    assert first.exit_code == 0, first.output + repr(first.exception)
    assert "Jira Cloud REST API" in first.output and "demo: 60 fetched" in first.output and "0 rejected" in first.output
    written = re.search(r"write-back: \d+ queued, (\d+) written", first.output)
    assert written and int(written.group(1)) > 0
    assert (tmp_path / "demo-jira.sqlite").is_file() and not (tmp_path / "demo-itsm.sqlite").exists()
    second = runner.invoke(main, ["demo", "--tool", "jira", "--once", "--workdir", str(tmp_path)], env=env)
    assert second.exit_code == 0, second.output
    assert "0 queued, 0 written" in second.output
