"""Benchmark: the coverage, gaps and population endpoints over a million findings in PostgreSQL.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/gb_bench python bench/coverage.py --findings 1000000

The database named by DATABASE_URL is emptied, then filled in SQL (generate_series): incidents spread over
2026, each with a finding of every shipped check (about 15% failing, 3% pending), and a few risk acceptances.
Each endpoint is called through the Flask test client and over HTTP under gunicorn (2 workers), the same
requests, after a warm-up. Nothing is cached between calls: every answer is computed from the tables as they are.
The last line is ``coverage_p50_ms=.. coverage_p95_ms=.. gaps_p95_ms=.. population_p95_ms=..`` over HTTP.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUERIES = {
    "coverage": "/api/v1/coverage/controls?period=2026-Q3",
    "gaps": "/api/v1/gaps?period=2026-Q3&limit=100",
    "population": "/api/v1/coverage/controls/A.5.28/population?period=2026-Q3&outcome=failed&limit=100",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def timed(call: Callable[[str], int], url: str, rounds: int) -> list[float]:
    for _ in range(6):  # warm-up: every gunicorn worker's first request (its ruleset, compiled statements), the database's cache
        call(url)
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        status = call(url)
        out.append((time.perf_counter() - started) * 1000)
        if status != 200:
            raise SystemExit(f"{url} answered {status}")
    return out


def load(app, findings: int) -> int:
    """Fill the tables in SQL; returns the number of incidents."""
    import sqlalchemy as sa

    from plugin.extensions import db
    from plugin.models import RiskAcceptance, utcnow
    from plugin.state import gapbridge

    ruleset = gapbridge(app).ruleset
    checks = [c for c in ruleset.checks if not c.across]
    n = max(1, findings // len(checks))
    with app.app_context():
        conn = db.session.connection()
        for table in ("outbox", "findings", "risk_acceptances", "rejected_records", "incidents", "sync_runs", "api_token_use", "api_tokens"):
            conn.execute(sa.text(f"TRUNCATE {table} CASCADE"))
        conn.execute(sa.text("TRUNCATE audit_log"))
        conn.execute(sa.text("""
            INSERT INTO incidents (id, source, external_id, number, url, title, category, record_type, is_security, severity, state,
                                   business_unit, assignment_group, opened_at, closed_at, updated_at, related_refs, weakness_refs,
                                   vulnerability_refs, log_refs, evidence, notifications, escalations, timeline, raw, content_hash,
                                   revision, first_seen_at, last_synced_at, assessed_revision, assessed_ruleset)
            SELECT i, CASE WHEN i % 5 = 0 THEN 'jira' ELSE 'servicenow' END, 'ext' || i, 'INC' || lpad(i::text, 8, '0'),
                   'https://itsm.example/INC' || i, 'Incident ' || i, (ARRAY['phishing','malware','dos','loss'])[1 + i % 4],
                   CASE WHEN i % 9 = 0 THEN 'weakness' ELSE 'incident' END, true,
                   (ARRAY['critical','high','medium','low'])[1 + i % 4], 'closed', (ARRAY['Finance','Retail','Engineering'])[1 + i % 3],
                   'Team ' || (i % 7), timestamptz '2026-01-01' + (i * interval '1 second' * (31536000.0 / :n)),
                   timestamptz '2026-01-02' + (i * interval '1 second' * (31536000.0 / :n)), now(), '[]', '[]', '[]', '[]', '[]', '[]',
                   '[]', '[]', '{}', md5(i::text), 1, now(), now(), 1, :ruleset
            FROM generate_series(1, :n) AS i"""), {"n": n, "ruleset": ruleset.hash})
        for c in checks:
            conn.execute(sa.text("""
                INSERT INTO findings (incident_id, check_id, status, severity, subprocess, relation, kind, controls_2022, controls_2013,
                                      details, ruleset_hash, evaluated_at, first_failed_at, due_at)
                SELECT i, :check, s, :severity, :subprocess, :relation, :kind, CAST(:c22 AS jsonb), CAST(:c13 AS jsonb),
                       CASE WHEN s = 'fail' THEN '["something missing"]'::jsonb ELSE '[]'::jsonb END, :ruleset, now(),
                       CASE WHEN s = 'fail' THEN now() - (i % 90) * interval '1 day' END,
                       CASE WHEN s = 'pending' THEN now() + interval '1 day' END
                FROM (SELECT i, CASE WHEN r < 0.15 THEN 'fail' WHEN r < 0.18 THEN 'pending' ELSE 'pass' END AS s
                      FROM (SELECT i, random() AS r FROM generate_series(1, :n) AS i) AS x) AS y"""),
                {"n": n, "check": c.id, "severity": c.severity, "subprocess": c.subprocess, "relation": c.relation, "kind": c.kind,
                 "c22": __import__("json").dumps(list(c.controls_2022)), "c13": __import__("json").dumps(list(c.controls_2013)),
                 "ruleset": ruleset.hash})
        conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('incidents', 'id'), :n)"), {"n": n})
        db.session.commit()
        # what an assessment writes beside the findings: each incident's outcome per control and sub-process
        from plugin.services.assess import refresh_outcome_masks

        refresh_outcome_masks(ruleset, list(range(1, n + 1)))
        db.session.commit()
        for k, check in enumerate(c for c in checks if c.kind == "gap"):
            if k % 4 == 0:
                db.session.add(RiskAcceptance(check_id=check.id, scope_business_unit="Retail", justification="benchmark acceptance",
                                              approver="CISO", created_by="bench", expires_at=utcnow() + timedelta(days=90)))
        db.session.commit()
        # what autovacuum does for a table in use: statistics, and the visibility map index-only scans rely on
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as maintenance:
            for table in ("incidents", "findings", "risk_acceptances"):
                maintenance.execute(sa.text(f"VACUUM ANALYZE {table}"))
        total = db.session.scalar(sa.text("SELECT count(*) FROM findings"))
    print(f"loaded {n} incidents and {total} findings", file=sys.stderr)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--findings", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--no-load", action="store_true", help="measure what the database holds already")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgresql://", "postgres://")):
        raise SystemExit("set DATABASE_URL to a PostgreSQL database this benchmark may empty")

    from flask_migrate import upgrade

    from plugin import create_app
    from plugin.config import load_config
    from plugin.extensions import db
    from plugin.models import utcnow
    from plugin.services import tokens

    workdir = Path(tempfile.mkdtemp(prefix="gapbridge-bench-"))
    config = workdir / "gapbridge.yaml"
    config.write_text(f"database_url: {url}\ninstance_path: {workdir}\nmappings:\n  regulatory: [gdpr, nis2]\n"
                      "api:\n  rate_limit_per_minute: 1000000\n  rate_limit_burst: 1000000\n")
    app = create_app(gapbridge_config=load_config(config))
    with app.app_context():
        upgrade()
    if not args.no_load:
        load(app, args.findings)
    with app.app_context():
        _, token = tokens.create(f"bench-{os.getpid()}", "auditor", utcnow() + timedelta(days=1), "bench")
        db.session.remove()
    headers = {"Authorization": f"Bearer {token}"}

    client = app.test_client()
    in_process = {name: timed(lambda u: client.get(u, headers=headers).status_code, q, args.rounds) for name, q in QUERIES.items()}
    for name, ms in in_process.items():
        print(f"test client  {name:<11} p50={statistics.median(ms):7.1f} ms  p95={percentile(ms, 0.95):7.1f} ms", file=sys.stderr)

    port = free_port()
    env = {**os.environ, "GAPBRIDGE_CONFIG": str(config)}
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                               "plugin:create_app()"], cwd=ROOT, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                requests.get(base + "/healthz", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        session = requests.Session()
        over_http = {name: timed(lambda u: session.get(base + u, headers=headers, timeout=60).status_code, q, args.rounds)
                     for name, q in QUERIES.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)
    for name, ms in over_http.items():
        print(f"gunicorn     {name:<11} p50={statistics.median(ms):7.1f} ms  p95={percentile(ms, 0.95):7.1f} ms", file=sys.stderr)
    cov = over_http["coverage"]
    print(f"coverage_p50_ms={statistics.median(cov):.1f} coverage_p95_ms={percentile(cov, 0.95):.1f} "
          f"gaps_p95_ms={percentile(over_http['gaps'], 0.95):.1f} population_p95_ms={percentile(over_http['population'], 0.95):.1f}")


if __name__ == "__main__":
    main()
