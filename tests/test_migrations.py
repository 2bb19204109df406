"""Schema migrations keep what is stored: 0002 (record types, finding kinds, pending deadlines) on data written under 0001."""

from __future__ import annotations

import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from plugin.extensions import db


def test_0002_derives_record_types_and_finding_kinds_from_what_0001_stored(app) -> None:
    with app.app_context():
        db.session.remove()
        downgrade(revision="0001")
        try:
            conn = db.session.connection()
            for i, (category, subcategory) in enumerate([("vulnerability", None), ("phishing", "weakness"), ("network", None)]):
                conn.execute(sa.text(
                    "INSERT INTO incidents (id, source, external_id, number, category, subcategory, related_refs, weakness_refs, "
                    "log_refs, evidence, notifications, escalations, timeline, raw, content_hash, revision, first_seen_at, "
                    "last_synced_at) VALUES (:id, 'sn', :ext, :num, :cat, :sub, '[]', '[]', '[]', '[]', '[]', '[]', '[]', '{}', "
                    "'h', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"id": i + 1, "ext": f"e{i}", "num": f"INC{i}", "cat": category, "sub": subcategory})
            for i, relation in enumerate(["improvement", "gap"]):
                conn.execute(sa.text(
                    "INSERT INTO findings (incident_id, check_id, status, severity, subprocess, relation, controls_2022, controls_2013, "
                    "details, ruleset_hash, evaluated_at) VALUES (1, :check, 'fail', 'low', 'monitoring', :rel, '[]', '[]', '[]', 'r', "
                    "CURRENT_TIMESTAMP)"), {"check": f"X-{i}", "rel": relation})
            db.session.commit()
        finally:
            upgrade()
        types = dict(db.session.execute(sa.text("SELECT number, record_type FROM incidents")).all())
        assert types == {"INC0": "weakness", "INC1": "weakness", "INC2": "incident"}
        kinds = dict(db.session.execute(sa.text("SELECT check_id, kind FROM findings")).all())
        assert kinds == {"X-0": "improvement", "X-1": "gap"}
        refs = db.session.execute(sa.text("SELECT vulnerability_refs FROM incidents WHERE number = 'INC2'")).scalar()
        assert refs in ([], "[]")
        # a pending finding with its due time is accepted now
        db.session.execute(sa.text(
            "INSERT INTO findings (incident_id, check_id, status, kind, severity, subprocess, relation, controls_2022, controls_2013, "
            "details, ruleset_hash, evaluated_at, due_at) VALUES (2, 'NIS2-001', 'pending', 'gap', 'critical', 'reporting', 'gap', "
            "'[]', '[]', '[]', 'r', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        db.session.commit()


def test_migrations_build_the_schema_the_models_describe(app) -> None:
    """A model changed without its migration (or the reverse) shows up here, on SQLite and PostgreSQL."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from plugin.db_schema import of_this_dialect

    with app.app_context():
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": False, "include_object": of_this_dialect(conn.dialect.name)})
            diff = compare_metadata(context, db.metadata)
    assert diff == []


def test_0005_scrubs_credentials_stored_before_they_were_refused(app) -> None:
    with app.app_context():
        db.session.remove()
        downgrade(revision="0004")
        try:
            conn = db.session.connection()
            conn.execute(sa.text(
                "INSERT INTO incidents (id, source, external_id, number, url, related_refs, weakness_refs, vulnerability_refs, log_refs, "
                "evidence, notifications, escalations, timeline, raw, content_hash, revision, first_seen_at, last_synced_at) VALUES "
                "(1, 'sn', 'e1', 'INC1', 'https://admin:hunter2@sn.example/nav_to.do?uri=incident.do', '[]', '[]', '[]', '[]', '[]', "
                "'[]', '[]', '[]', '{}', 'h', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            conn.execute(sa.text(
                "INSERT INTO sync_runs (id, source, \"full\", status, started_at, pages, fetched, stored, changed, rejected, error) VALUES "
                "(1, 'sn', false, 'failed', CURRENT_TIMESTAMP, 0, 0, 0, 0, 0, "
                "'HTTPSConnectionPool: Max retries exceeded with url: https://admin:hunter2@sn.example/api?access_token=abc123')"))
            db.session.commit()
        finally:
            upgrade()
        url = db.session.execute(sa.text("SELECT url FROM incidents WHERE id = 1")).scalar()
        error = db.session.execute(sa.text("SELECT error FROM sync_runs WHERE id = 1")).scalar()
        assert "hunter2" not in url and url.startswith("https://") and "sn.example/nav_to.do" in url
        assert "hunter2" not in error and "abc123" not in error and "Max retries exceeded" in error
