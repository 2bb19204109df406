"""Benchmark: draining the outbox onto the demo ITSM, with a latency added to every answer.

    python bench/writeback.py --notes 5000 --latency-ms 200 --concurrency 4

The demo ITSM runs in its own process on loopback, answering each request ``--latency-ms`` late,
as a remote instance would. Incidents are seeded, synced and assessed with write-back off
(``plugin.services.pipeline``), the notes planned, and then only the drain of the queued notes is
timed. A note costs one PATCH, and a fiftieth of the list request that reads what fifty tickets carry
(the demo's connector has a fingerprint column), so with ``--concurrency`` writers at most
``bound_per_s = concurrency / latency`` notes a second can be written. The last line printed is
``notes_per_s=<n> bound_per_s=<n> ratio=<notes/bound>`` (the bound is ``inf`` and the ratio 0 at no
latency, where only GapBridge and the demo bound the rate).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo_server import free_port, wait_up  # noqa: E402  (bench/ is the script's own folder on sys.path)

# about a third of the demo incidents have something to report: seed a margin
SEED_MARGIN = 3.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--notes", type=int, default=5000, help="notes to drain (incidents are seeded to give this many)")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="added to every answer of the demo ITSM")
    parser.add_argument("--concurrency", type=int, default=4, help="write_back.concurrency of the connector")
    parser.add_argument("--database-url", help="GapBridge's database (default: a fresh SQLite file); a PostgreSQL "
                        "database given here is emptied first")
    args = parser.parse_args()
    if args.notes < 1 or args.concurrency < 1 or args.latency_ms < 0:
        parser.error("--notes and --concurrency must be at least 1, --latency-ms at least 0")

    import sqlalchemy as sa

    from plugin import create_app, db_schema
    from plugin.config import demo_config
    from plugin.extensions import db
    from plugin.models import OutboxItem
    from plugin.services import pipeline
    from plugin.services.enrich import plan
    from plugin.services.outbox import drain
    from plugin.state import gapbridge

    work = Path(tempfile.mkdtemp(prefix="gapbridge-bench-"))
    port = free_port()
    size = int(args.notes * SEED_MARGIN) + 10
    server = subprocess.Popen([sys.executable, "-m", "demo_itsm", "--db", str(work / "itsm.sqlite"), "--size", str(size),
                               "--port", str(port), "--latency-ms", str(args.latency_ms)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_up(url, timeout=60 + size / 1000)
        cfg = demo_config(url, work)
        cfg["database_url"] = args.database_url or f"sqlite:///{work / 'gapbridge.db'}"
        cfg["sync"]["write_back_after_sync"] = False
        cfg["connectors"]["demo"]["write_back"]["concurrency"] = args.concurrency
        app = create_app(gapbridge_config=cfg)
        if args.database_url:
            from flask_migrate import downgrade

            with app.app_context():
                downgrade(revision="base")  # start from empty tables
        db_schema.upgrade_under_lock(app, 600)
        with app.app_context():
            state = gapbridge(app)
            t = time.perf_counter()
            synced = pipeline.run_pass(state, write_back_after=False)
            assert all(s.ok for s in synced.synced), [s.error for s in synced.synced]
            queued = plan(state.ruleset).queued
            prepare_s = time.perf_counter() - t
            if queued < args.notes:
                raise SystemExit(f"only {queued} notes queued from {size} incidents; raise SEED_MARGIN")
            ot = OutboxItem.__table__
            # exactly --notes: the rest is set aside, as if written already
            keep = sa.select(ot.c.id).where(ot.c.status == "pending").order_by(ot.c.id).limit(args.notes).scalar_subquery()
            db.session.execute(ot.update().where(ot.c.status == "pending", ot.c.id.not_in(keep)).values(status="superseded"))
            db.session.commit()
            connector = state.connector("demo")
            try:
                t, cpu = time.perf_counter(), time.process_time()
                summary = drain({"demo": connector})
                drain_s, cpu_s = time.perf_counter() - t, time.process_time() - cpu
            finally:
                connector.close()
        assert summary.written == args.notes, f"wrote {summary.written} of {args.notes}: {summary.errors[:3]}"
        rate = args.notes / drain_s
        bound = args.concurrency / (args.latency_ms / 1000) if args.latency_ms else float("inf")
        print(f"seeded {size} incidents, synced and planned {queued} notes in {prepare_s:.1f}s; drained {args.notes} notes "
              f"in {drain_s:.2f}s at {args.latency_ms:g} ms latency, concurrency {args.concurrency} "
              f"(GapBridge's own CPU: {cpu_s:.1f}s; the demo ITSM's is the rest of the bound at no latency)", file=sys.stderr)
        print(f"notes_per_s={rate:.1f} bound_per_s={bound:.1f} ratio={rate / bound if bound != float('inf') else 0:.2f}")
    finally:
        server.terminate()
        server.wait(10)
        if not os.environ.get("GAPBRIDGE_BENCH_KEEP"):
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
