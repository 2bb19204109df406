"""Benchmark: fetch only vs. the full pipeline, and assessment alone, over the demo ITSM.

    python bench/sync_pipeline.py --incidents 20000 [--tool servicenow|jira]

The demo ITSM runs in its own process on loopback, as a real ITSM would. The last line
printed is ``fetch_per_s=<n> pipeline_per_s=<n> ratio=<pipeline/fetch> assess_per_s=<n>
peak_rss_mb=<n>``:

- fetch: HTTP and JSON parsing of every page through the ServiceNow connector (or, with ``--tool jira``,
  the Jira connector over the demo Jira Cloud stand-in: the same incidents);
- pipeline: fetch, normalize, store and assess (findings written) in one sync;
- assess: the compiled ruleset over stored incidents, one core, no database time;
- peak_rss_mb: the peak resident memory of this process plus that of the sync's worker
  process (pipeline and assessment stream in pages and batches, so it should not grow
  with --incidents).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo_server import free_port, wait_up  # noqa: E402  (bench/ is the script's own folder on sys.path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--incidents", type=int, default=20000)
    parser.add_argument("--page-size", type=int, default=500)
    parser.add_argument("--tool", choices=["servicenow", "jira"], default="servicenow", help="the demo ITSM and connector")
    parser.add_argument("--worker-process", choices=["auto", "always", "never"], default="auto",
                        help="sync.worker_process, as `gapbridge sync` reads it (auto: a worker for this first sync)")
    parser.add_argument("--database-url", help="GapBridge's database (default: a fresh SQLite file); a PostgreSQL "
                        "database given here is emptied first")
    args = parser.parse_args()

    from connectors.base import connector_class
    from connectors.canonical import FIELDS
    from plugin import create_app, db_schema
    from plugin.config import demo_config
    from plugin.extensions import db
    from plugin.models import Incident
    from plugin.services.assess import applicable_outcomes, assess
    from plugin.services.store import canonical_from_row
    from plugin.services.sync import sync_source
    from plugin.state import gapbridge

    work = Path(tempfile.mkdtemp(prefix="gapbridge-bench-"))
    itsm_db = work / "itsm.sqlite"
    port = free_port()
    # the demo ITSM seeds its database itself: generating incidents is not GapBridge's memory
    server = subprocess.Popen([sys.executable, "-m", "demo_itsm", "--db", str(itsm_db), "--size", str(args.incidents),
                               "--port", str(port), "--tool", args.tool], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url, timeout=60 + args.incidents / 1000)
        cfg = demo_config(url, work, args.tool)
        cfg["database_url"] = args.database_url or f"sqlite:///{work / 'gapbridge.db'}"
        cfg["connectors"]["demo"]["page_size"] = args.page_size
        options = cfg["connectors"]["demo"]
        tool_connector = connector_class(options["type"])

        # 1. fetch only: the same pages, HTTP and JSON, nothing else
        connector = tool_connector("demo", options)
        t = time.perf_counter()
        fetched = sum(len(p.records) for p in connector.fetch_pages(None))
        fetch_s = time.perf_counter() - t
        connector.close()
        assert fetched == args.incidents, f"fetched {fetched} of {args.incidents}"

        # 2. the full pipeline: fetch, normalize, store, assess (findings written)
        app = create_app(gapbridge_config=cfg)
        if args.database_url:
            from flask_migrate import downgrade

            with app.app_context():
                downgrade(revision="base")  # start from empty tables
        db_schema.upgrade_under_lock(app, 600)
        with app.app_context():
            ruleset = gapbridge(app).ruleset
            connector = tool_connector("demo", options)
            t = time.perf_counter()
            # as `gapbridge sync` runs it: pages assessed on arrival
            summary = sync_source(connector, ruleset=ruleset, worker_process=args.worker_process)
            sync_s = time.perf_counter() - t
            sync_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            a = assess(ruleset)
            pipeline_s = time.perf_counter() - t
            pipeline_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            connector.close()
            assert summary.stored == args.incidents and summary.assessed + a.assessed >= args.incidents

            # 3. assessment alone: the compiled ruleset over stored incidents, in batches
            t_eval = 0.0
            last = 0
            n = 0
            cols = Incident.__table__.c
            wanted = [cols.id, *(cols[n] for n in FIELDS)]  # what a check reads; not the raw record
            while True:
                rows = db.session.execute(db.select(*wanted).where(cols.id > last).order_by(cols.id).limit(2000)).all()
                if not rows:
                    break
                last = rows[-1].id
                batch = [canonical_from_row(r) for r in rows]
                from plugin.models import utcnow

                now = utcnow()
                t = time.perf_counter()
                for inc in batch:
                    applicable_outcomes(ruleset, inc, now)
                t_eval += time.perf_counter() - t
                n += len(batch)
        # the sync's worker process (joined, so counted under RUSAGE_CHILDREN; the demo ITSM still runs and is not)
        own_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        worker_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        peak_mb = own_mb + worker_mb  # an upper bound: pages the fork shares are counted twice
        fetch_rate = fetched / fetch_s
        pipeline_rate = args.incidents / pipeline_s
        print(f"checks={len(ruleset.checks)} fetch={fetch_s:.2f}s sync(fetch+normalize+store+assess)={sync_s:.2f}s "
              f"pipeline(+assess pass: across checks)={pipeline_s:.2f}s assess-only={t_eval:.2f}s for {n} "
              f"peak rss: this process {own_mb:.0f} MB ({sync_rss_mb:.0f} MB by the end of the sync, "
              f"{pipeline_rss_mb:.0f} MB of the assessment pass), "
              f"sync worker {worker_mb:.0f} MB", file=sys.stderr)
        print(f"fetch_per_s={fetch_rate:.0f} pipeline_per_s={pipeline_rate:.0f} ratio={pipeline_rate / fetch_rate:.2f} "
              f"assess_per_s={n / t_eval:.0f} peak_rss_mb={peak_mb:.0f}")
    finally:
        server.terminate()
        server.wait(10)
        if not os.environ.get("GAPBRIDGE_BENCH_KEEP"):
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
