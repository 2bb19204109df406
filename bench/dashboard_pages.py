"""Benchmark: how fast each dashboard page renders over many incidents.

    python bench/dashboard_pages.py --incidents 100000 --database-url postgresql://postgres@127.0.0.1:5432/bench_pages

The demo ITSM (its own process) is synced into GapBridge's database once; a database that already holds that many
incidents is used as it is (``--reuse``), so a second run measures the pages alone. Each page is then requested
``--repeat`` times through the app, signed in as an ISMS manager, unfiltered and with a filter (period and business
unit), and the 95th percentile of the server time is printed, one line a page: ``page=<name> p95_ms=<n>``.
The target is under 300 ms on 100,000 incidents on PostgreSQL.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo_server import free_port, wait_up  # noqa: E402  (bench/ is the script's own folder on sys.path)

PASSWORD = "bench password, long enough"


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20, method="inclusive")[18] if len(samples) > 1 else samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--database-url", help="GapBridge's database (default: a SQLite file in a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="use the database as it is if it already holds --incidents incidents")
    args = parser.parse_args()

    import sqlalchemy as sa

    from plugin import create_app, db_schema
    from plugin.config import demo_config
    from plugin.extensions import db
    from plugin.models import Finding, Incident
    from plugin.services import users
    from plugin.services.pipeline import run_pass
    from plugin.state import gapbridge

    work = Path(tempfile.mkdtemp(prefix="gapbridge-bench-pages-"))
    port = free_port()
    cfg = demo_config(f"http://127.0.0.1:{port}", work)
    cfg["database_url"] = args.database_url or f"sqlite:///{work / 'gapbridge.db'}"
    cfg["connectors"]["demo"]["page_size"] = 1000
    cfg["dashboard"] = {**cfg.get("dashboard", {}), "cookie_secure": False}  # the test client speaks plain http
    app = create_app(gapbridge_config=cfg, manage_schema=False)
    with app.app_context():
        db_schema.upgrade_under_lock(app, 600)
        held = db.session.scalar(sa.select(sa.func.count()).select_from(Incident)) or 0
    if not (args.reuse and held == args.incidents):
        if held:
            from flask_migrate import downgrade

            with app.app_context():
                downgrade(revision="base")
            db_schema.upgrade_under_lock(app, 600)
        server = subprocess.Popen([sys.executable, "-m", "demo_itsm", "--db", str(work / "itsm.sqlite"), "--size", str(args.incidents),
                                   "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_up(f"http://127.0.0.1:{port}", timeout=120 + args.incidents / 500)
            t = time.perf_counter()
            with app.app_context():
                result = run_pass(gapbridge(app), write_back_after=False)
                assert result.ok, result
            print(f"synced {args.incidents} incidents in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(10)
    with app.app_context():
        if users.find("bench") is None:
            users.create("bench", "isms_manager", PASSWORD, "bench")
        incidents = db.session.scalar(sa.select(sa.func.count()).select_from(Incident))
        findings = db.session.scalar(sa.select(sa.func.count()).select_from(Finding))
        unit = db.session.scalar(sa.select(Incident.business_unit).where(Incident.business_unit.is_not(None)).limit(1))
        incident_id = db.session.scalar(sa.select(Finding.incident_id).where(Finding.status == "fail").limit(1))
        worst = db.session.execute(sa.select(Finding.check_id, sa.func.count()).where(Finding.status == "fail")
                                   .group_by(Finding.check_id).order_by(sa.func.count().desc()).limit(1)).first()
        control = db.session.scalar(sa.select(Finding.controls_2022).where(Finding.check_id == worst[0]).limit(1))[0]
        subprocess_id = db.session.scalar(sa.select(Finding.subprocess).where(Finding.check_id == worst[0]).limit(1))
    print(f"{incidents} incidents, {findings} findings; database {db_schema.where(sa.make_url(cfg['database_url']))}", file=sys.stderr)

    client = app.test_client()
    login = client.get("/dashboard/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', login).group(1)  # type: ignore[union-attr]
    signed = client.post("/dashboard/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token})
    assert signed.status_code == 303, signed.text
    filtered = f"period=2026&business_unit={unit}"
    pages = {
        "overview": "/dashboard/", "overview_filtered": f"/dashboard/?{filtered}",
        "heatmap": "/dashboard/heatmap", "heatmap_2013": "/dashboard/heatmap?edition=2013", "heatmap_filtered": f"/dashboard/heatmap?{filtered}",
        "heatmap_cell": f"/dashboard/heatmap/cell?subprocess={subprocess_id}&control={control}&edition=2022&outcome=failed",
        "control": f"/dashboard/controls/{control}", "control_filtered": f"/dashboard/controls/{control}?{filtered}",
        "incident": f"/dashboard/incidents/{incident_id}",
        "kpis": "/dashboard/kpis", "kpis_filtered": f"/dashboard/kpis?{filtered}",
        "maturity": "/dashboard/maturity", "risks": "/dashboard/risks",
    }
    for name, path in pages.items():
        r = client.get(path)  # warm: the first request compiles templates and fills caches
        assert r.status_code == 200, (name, r.status_code, r.text[:300])
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            r = client.get(path)
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200
        print(f"  {name}: median {statistics.median(times):.0f} ms over {args.repeat}", file=sys.stderr)
        print(f"page={name} p95_ms={p95(times):.0f}", flush=True)
    if not os.environ.get("GAPBRIDGE_BENCH_KEEP"):
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
