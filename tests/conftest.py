"""Fixtures: a fresh app per test over SQLite, or over PostgreSQL when DATABASE_URL is set."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from connectors.canonical import empty_incident
from plugin import create_app
from plugin.config import load_config

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
NOW = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture(autouse=True)
def _no_developer_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The suite never reads the developer's own GapBridge settings: a CLI test names its config, or gets the defaults.

    Flask reads every GAPBRIDGE_* variable into the app config (from_prefixed_env), so all of them go.
    DATABASE_URL stays: it is how the suite is pointed at PostgreSQL.
    """
    for name in [n for n in os.environ if n.startswith("GAPBRIDGE_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = os.environ.get("DATABASE_URL")
    return url or f"sqlite:///{tmp_path_factory.mktemp('db') / 'gapbridge-test.db'}"


@pytest.fixture(scope="session")
def _migrated(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run the real migrations once per session; tests then start from empty tables."""
    from flask_migrate import downgrade, upgrade

    from plugin.extensions import db

    cfg = load_config(None, env={})
    cfg["database_url"] = database_url
    cfg["instance_path"] = str(tmp_path_factory.mktemp("instance"))
    app = create_app(gapbridge_config=cfg)
    with app.app_context():
        downgrade(revision="base")  # a database left over from an earlier run starts clean
        upgrade()
        db.engine.dispose()
    return database_url


def make_config(database_url: str, instance: Path, **overrides: Any) -> dict[str, Any]:
    cfg = load_config(None, env={})
    cfg["database_url"] = database_url
    cfg["instance_path"] = str(instance)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def app_factory(_migrated: str, tmp_path: Path) -> Iterator[Any]:
    """Build apps over the shared, migrated database; every table is emptied after the test."""
    from plugin.extensions import db

    made: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app(gapbridge_config=make_config(_migrated, tmp_path / "instance", **overrides))
        app.config["TESTING"] = True
        made.append(app)
        return app

    yield build
    for i, app in enumerate(made):
        if i == 0:
            empty_tables(app)
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def empty_tables(app: Flask) -> None:
    """Every row of every table gone: the next test starts from the migrated, empty schema."""
    from plugin.extensions import db

    with app.app_context():
        db.session.remove()
        for table in reversed(db.metadata.sorted_tables):
            if table.name == "audit_log" and db.engine.dialect.name == "postgresql":
                # its trigger refuses DELETE; TRUNCATE is no row operation, so a row-level trigger never sees it
                db.session.execute(sa.text("TRUNCATE audit_log"))
            else:
                db.session.execute(table.delete())
        db.session.commit()
        db.session.remove()


@pytest.fixture
def app(app_factory: Any) -> Flask:
    return app_factory()


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


def create_incident(**overrides: Any) -> dict[str, Any]:
    """A canonical incident: a closed, complete, high-severity security incident unless overridden."""
    opened = overrides.pop("opened_at", NOW - timedelta(days=5))
    inc = empty_incident()
    inc.update(
        source="test", external_id="a" * 32, number="INC0010001", url="https://itsm.example/INC0010001",
        title="Phishing email with credential harvesting link", description="Reported by user",
        category="phishing", subcategory="email", record_type="incident", is_security=True, severity="high", state="closed",
        assignment_group="Security Incident Response Team", assignee="Ana Analyst", reporter="Rita Reporter",
        reported_via="email", affected_ci="mail-gw-01", business_unit="Finance", major_incident=False,
        opened_at=opened, assessed_at=opened + timedelta(hours=1), acknowledged_at=opened + timedelta(hours=1),
        contained_at=opened + timedelta(hours=3), resolved_at=opened + timedelta(days=1),
        closed_at=opened + timedelta(days=2), updated_at=opened + timedelta(days=2),
        close_code="Solved (Permanently)", root_cause="Missing MFA on webmail", resolution_notes="Contained by blocking the sender; passwords reset; mailbox rules removed",
        lessons_learned="Enforce MFA on webmail", personal_data_breach=False, legal_hold=False,
        evidence=[{
            "what": "Original email (.eml)", "where": "evidence-store://2026/INC0010001/1", "collected_by": "Ana Analyst",
            "collected_at": opened + timedelta(hours=2), "sha256": "ab" * 32,
            "custody": [{"at": opened + timedelta(hours=2), "by": "Ana Analyst", "action": "collected"}],
        }],
        notifications=[{"to": "reporter", "at": opened + timedelta(days=2), "channel": "email", "reference": "MSG-1"}],
        raw={"sys_id": "a" * 32},
    )
    inc.update(overrides)
    return inc


@pytest.fixture
def incident_factory() -> Any:
    return create_incident
