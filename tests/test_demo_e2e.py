"""End to end over the demo ITSM: the real ServiceNow connector over HTTP on loopback.

These start servers and, for the kill test, a `gapbridge sync` subprocess.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from connectors.canonical import FIELDS
from connectors.servicenow import ServiceNowConnector
from demo_itsm import DemoITSM
from plugin.cli import main
from plugin.cli.pipeline import run_sync, run_writeback
from plugin.config import demo_config
from plugin.extensions import db
from plugin.models import Finding, Incident, OutboxItem, SyncBookmark, SyncRun
from plugin.rules.model import FAIL, NOT_APPLICABLE, PASS
from plugin.services.assess import assess
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .conftest import REPO
from .gapbridge_procs import processes_with_env

pytestmark = pytest.mark.slow


def _demo_app(app_factory: Any, itsm: DemoITSM, tmp_path: Path, outbox: dict[str, Any] | None = None, **demo_options: Any) -> Any:
    cfg = demo_config(itsm.url, tmp_path)
    cfg["connectors"]["demo"].update(demo_options)
    return app_factory(connectors=cfg["connectors"], mappings=cfg["mappings"], api=cfg["api"], outbox=outbox or {})


def _notes(itsm: DemoITSM, sys_ids: list[str]) -> dict[str, int]:
    return {s: len(itsm.journal(s)) for s in sys_ids}


def test_demo_data_exercises_every_check_both_ways(app_factory: Any, tmp_path: Path) -> None:
    with DemoITSM(tmp_path / "itsm.sqlite", size=300) as itsm:
        app = _demo_app(app_factory, itsm, tmp_path)
        with app.app_context():
            ruleset = gapbridge(app).ruleset
            summary = sync_source(ServiceNowConnector("demo", gapbridge(app).config["connectors"]["demo"]))
            assert summary.stored == 300 and summary.rejected == 0
            assess(ruleset)
            seen: dict[str, set[str]] = defaultdict(set)
            for check_id, status in db.session.execute(sa.select(Finding.check_id, Finding.status).distinct()):
                seen[check_id].add(status)
    ids = [c.id for c in ruleset.checks]
    assert {"GDPR-001", "NIS2-001", "DORA-001"} <= set(ids)  # the overlays are on in the demo
    not_both = {cid: sorted(seen.get(cid, ())) for cid in ids if not {PASS, FAIL} <= seen.get(cid, set())}
    assert not not_both, f"checks the demo data does not exercise both ways: {not_both}"


def test_checks_across_incidents_stream_in_batches_with_the_outcomes_of_one_pass(app_factory: Any, tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from plugin.rules.across import evaluate_across_detailed
    from plugin.services import assess as assess_module
    from plugin.services.store import canonical_from_row

    monkeypatch.setattr(assess_module, "ACROSS_BATCH", 4)  # batches far smaller than groups and reference chains
    now = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
    with DemoITSM(tmp_path / "itsm.sqlite", size=300) as itsm:
        app = _demo_app(app_factory, itsm, tmp_path)
        with app.app_context():
            ruleset = gapbridge(app).ruleset
            sync_source(ServiceNowConnector("demo", gapbridge(app).config["connectors"]["demo"]), ruleset=ruleset)
            assess(ruleset, now=now)
            across = {c.id: c for c in ruleset.across_checks}
            stored = {(f.incident_id, f.check_id): (f.status, f.details) for f in db.session.scalars(
                sa.select(Finding).where(Finding.check_id.in_(list(across))))}
            # the reference: every incident in memory at once
            t = Incident.__table__.c
            rows = db.session.execute(sa.select(t.id, *(getattr(t, n) for n in FIELDS)).order_by(t.id)).all()
            incidents = [canonical_from_row(r) for r in rows]
    expected = {(r.id, cid): outcome for cid, check in across.items()
                for r, outcome in zip(rows, evaluate_across_detailed(check, incidents, now), strict=True) if outcome[0] != NOT_APPLICABLE}
    assert {s for s, _ in expected.values()} == {PASS, FAIL}
    assert stored == expected


def test_demo_once_end_to_end_and_a_second_run_writes_nothing(app_factory: Any, _migrated: str, tmp_path: Path) -> None:
    app_factory()  # empties the shared test database when the test ends
    env = {"GAPBRIDGE_DATABASE_URL": _migrated}
    runner = CliRunner()
    first = runner.invoke(main, ["demo", "--once", "--size", "120", "--workdir", str(tmp_path)], env=env)
    assert first.exit_code == 0, first.output + repr(first.exception)
    out = first.output
    assert "demo: 120 fetched" in out and "0 rejected" in out
    assert "Open gaps by Annex A control" in out and "Open gaps by ITIL sub-process" in out
    # the summary line; the progress lines before it ("write-back: 40/120 done") say how far it got
    summary = re.search(r"write-back: \d+ queued, (\d+) written", out)
    assert summary, out
    written = int(summary.group(1))
    assert written > 0

    with DemoITSM(tmp_path / "demo-itsm.sqlite") as itsm:
        records = [itsm.record(s) for s in itsm.sys_ids()]
        noted = [r for r in records if itsm.journal(r["sys_id"])]
        assert len(noted) == written
        for r in noted:
            note = itsm.journal(r["sys_id"])[-1]["value"]
            fp = r["u_gapbridge_fingerprint"]
            assert fp and f"[gapbridge:{fp}]" in note
            if fp != "clean" and int(r["u_gapbridge_open_gaps"]) >= 1:
                assert "What to do:" in note and "Control: ISO 27001:2022 " in note and " | ISO 27001:2013 " in note
                assert "ITIL sub-process: " in note and r["u_iso27001_controls"]
            elif fp != "clean":  # no open gap: deadlines still running, or improvements only
                assert "no open gaps" in note and not r["u_iso27001_controls"]
                assert "Deadlines still running" in note or "Suggested improvements" in note
        before = _notes(itsm, [r["sys_id"] for r in records])

    second = runner.invoke(main, ["demo", "--once", "--size", "120", "--workdir", str(tmp_path)], env=env)
    assert second.exit_code == 0, second.output
    assert "0 queued, 0 written" in second.output
    with DemoITSM(tmp_path / "demo-itsm.sqlite") as itsm:
        assert _notes(itsm, list(before)) == before


def test_outbox_waits_out_an_itsm_outage_and_delivers_each_note_once(app_factory: Any, tmp_path: Path) -> None:
    with DemoITSM(tmp_path / "itsm.sqlite", size=60) as itsm:
        app = _demo_app(app_factory, itsm, tmp_path, outbox={"backoff_base_seconds": 0}, max_attempts=1)
        assert run_sync(app, write_back=False, quiet=True) == 0
        # the incident endpoints fail: the reads of what the tickets carry (fifty to a list request) and the PATCHes
        itsm.fail_next(10_000, status=503, retry_after=0, path_prefix="/api/now/table/incident")
        assert run_writeback(app, quiet=True) == 1
        with app.app_context():
            pending = db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem).where(OutboxItem.status == "pending"))
            assert pending > 0
        assert itsm.stats.get("PATCH", 0) == 0  # nothing reached a ticket
        assert all(not itsm.journal(s) for s in itsm.sys_ids())
        # the tool is back; the next run delivers every pending item, once
        itsm.fail_next(0)
        with app.app_context():
            db.session.execute(sa.update(OutboxItem).values(next_attempt_at=OutboxItem.created_at))
            db.session.commit()
        assert run_writeback(app, quiet=True) == 0
        assert run_writeback(app, quiet=True) == 0
        with app.app_context():
            assert db.session.scalar(sa.select(sa.func.count()).select_from(OutboxItem).where(OutboxItem.status != "sent")) == 0
        journals = [itsm.journal(s) for s in itsm.sys_ids()]
        assert sum(1 for j in journals if j) == pending
        assert all(len(j) <= 1 for j in journals)


def test_sync_killed_at_any_moment_resumes_from_the_bookmark(app_factory: Any, _migrated: str, tmp_path: Path) -> None:
    size = 240
    app = app_factory()
    with DemoITSM(tmp_path / "itsm.sqlite", size=size) as itsm:
        itsm.delay = 0.15  # slow pages, so the kill lands mid-sync
        cfg = {
            "database_url": _migrated,
            "instance_path": str(tmp_path / "instance"),
            "sync": {"write_back_after_sync": False},
            "connectors": {"demo": {
                "type": "servicenow", "instance_url": itsm.url, "auth": {"method": "basic", "username": "admin", "password": "admin"},
                "page_size": 10, "is_security": {"field": "u_security_incident"},
                "write_back": {"fingerprint_field": "u_gapbridge_fingerprint"},
            }},
        }
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(cfg))
        env = {**os.environ, "GAPBRIDGE_CONFIG": str(config)}
        env.pop("DATABASE_URL", None)
        cmd = [str(Path(sys.executable).parent / "gapbridge"), "sync"]
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with app.app_context():
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    db.session.remove()
                    stored = db.session.scalar(sa.select(sa.func.count()).select_from(Incident))
                    if stored >= 60:
                        break
                    time.sleep(0.05)
                running = processes_with_env(f"GAPBRIDGE_CONFIG={config}")
                proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(30)
            proc.stdout.close()
            proc.stderr.close()
        with app.app_context():
            db.session.remove()
            stored = db.session.scalar(sa.select(sa.func.count()).select_from(Incident))
            bookmark = db.session.get(SyncBookmark, "demo").value
            assert 60 <= stored < size, "the kill did not land mid-sync"
            last = db.session.scalars(sa.select(Incident).order_by(Incident.updated_at.desc(), Incident.external_id.desc())).first()
            assert bookmark["sys_id"] == last.external_id  # the bookmark is exactly the last stored page's end
        # a first sync fetches in a worker process (sync.worker_process: auto); orphaned, it stops too
        assert len(running) == 2 and proc.pid in running
        deadline = time.monotonic() + 15
        while processes_with_env(f"GAPBRIDGE_CONFIG={config}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_with_env(f"GAPBRIDGE_CONFIG={config}") == set(), "the worker outlived the killed sync"

        itsm.delay = 0
        itsm.reset_stats()
        rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        with app.app_context():
            db.session.remove()
            ids = db.session.scalars(sa.select(Incident.external_id)).all()
            assert len(ids) == len(set(ids)) == size
            assert set(ids) == set(itsm.sys_ids())
            runs = db.session.scalars(sa.select(SyncRun).order_by(SyncRun.id)).all()
            assert runs[-1].status == "succeeded"
            # resumed, not restarted: the rerun fetched the rest (plus the overlap window), not everything
            assert runs[-1].fetched < size


def test_demo_keeps_its_links_and_data_across_restarts_and_reseeds_on_request(app_factory: Any, _migrated: str,
                                                                             tmp_path: Path) -> None:
    app_factory()  # empties the shared test database when the test ends
    env = {"GAPBRIDGE_DATABASE_URL": _migrated}
    runner = CliRunner()
    first = runner.invoke(main, ["demo", "--once", "--size", "40", "--workdir", str(tmp_path)], env=env)
    assert first.exit_code == 0, first.output
    url = first.output.split("incidents on ")[1].split()[0]
    # a restart: the same port, so no ticket link changes and no incident reads as changed
    second = runner.invoke(main, ["demo", "--once", "--size", "90", "--workdir", str(tmp_path)], env=env)
    assert second.exit_code == 0, second.output
    assert f"with 40 incidents on {url}" in second.output
    assert "keeps the 40 incidents it already holds (--size 90 seeds only an empty one; add --reseed" in second.output
    assert "(0 new or changed)" in second.output and "0 queued, 0 written" in second.output

    third = runner.invoke(main, ["demo", "--once", "--size", "25", "--reseed", "--workdir", str(tmp_path)], env=env)
    assert third.exit_code == 0, third.output
    assert "with 25 incidents on" in third.output and "keeps the" not in third.output
    with DemoITSM(tmp_path / "demo-itsm.sqlite") as itsm:
        assert itsm.count() == 25


def test_a_taken_demo_port_moves_the_demo_itsm_and_says_so(app_factory: Any, _migrated: str, tmp_path: Path) -> None:
    import socket

    app_factory()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        (tmp_path / "demo-itsm.port").write_text(f"{taken.getsockname()[1]}\n")
        result = CliRunner().invoke(main, ["demo", "--once", "--size", "10", "--workdir", str(tmp_path)],
                                    env={"GAPBRIDGE_DATABASE_URL": _migrated})
        assert result.exit_code == 0, result.output
        assert f"Port {taken.getsockname()[1]} of the demo ITSM is taken now" in result.output
        moved = int((tmp_path / "demo-itsm.port").read_text())
        assert moved != taken.getsockname()[1] and f"on http://127.0.0.1:{moved}" in result.output
