"""What an operator meets: the schema migrated on start (under a lock, gunicorn too) and reported by /healthz,
and every operator mistake in the CLI as one line with the right exit status (2: configuration, 1: environment)."""

from __future__ import annotations

import importlib.metadata
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from flask import Flask

from plugin import create_app
from plugin.cli import main
from plugin.db_schema import MIGRATION_LOCK_KEY, StartupError, head_revision
from plugin.extensions import db

from .conftest import REPO, make_config

PASSWORD = "hunter2-not-for-logs"
GAPBRIDGE = [sys.executable, "-c", "from plugin.cli import main; main()"]


@pytest.fixture
def fresh_url(tmp_path: Path) -> Iterator[str]:
    """An empty database of the kind the suite runs on: a new SQLite file, or a new PostgreSQL database beside DATABASE_URL's."""
    base = os.environ.get("DATABASE_URL")
    if not base:
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"gb_fresh_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(sa.make_url(base.replace("postgresql://", "postgresql+psycopg://", 1)), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def build(url: str, instance: Path, **overrides: Any) -> Flask:
    app = create_app(gapbridge_config=make_config(url, instance, **overrides))
    app.config["TESTING"] = True
    return app


def dispose(*apps: Flask) -> None:
    for app in apps:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def health(app: Flask) -> tuple[int, dict[str, Any]]:
    response = app.test_client().get("/healthz")
    return response.status_code, response.get_json()


# --- the schema on start -------------------------------------------------------------------


def test_create_app_migrates_a_fresh_database_and_healthz_reports_the_head(fresh_url: str, tmp_path: Path) -> None:
    app = build(fresh_url, tmp_path / "instance")
    try:
        status, body = health(app)
        assert status == 200, body
        assert body["status"] == "ok" and body["schema"] == {"revision": head_revision(), "head": head_revision(), "current": True}
        with app.app_context():
            assert sa.inspect(db.engine).has_table("incidents")  # what the API reads: no "no such table" 500
    finally:
        dispose(app)


def test_a_schema_behind_with_migrate_on_start_off_is_503_and_the_cli_says_to_upgrade(fresh_url: str, tmp_path: Path) -> None:
    from flask_migrate import downgrade

    first = build(fresh_url, tmp_path / "instance")
    with first.app_context():
        downgrade(revision="-1")
        with db.engine.connect() as conn:
            previous = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    dispose(first)
    assert previous != head_revision()

    app = build(fresh_url, tmp_path / "instance", database={"migrate_on_start": False})
    try:
        status, body = health(app)
        assert status == 503
        assert body["status"] == "degraded" and body["database"] == "ok"
        assert body["schema"] == {"revision": previous, "head": head_revision(), "current": False}
    finally:
        dispose(app)

    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: {fresh_url}\ninstance_path: {tmp_path / 'instance'}\ndatabase:\n  migrate_on_start: false\n")
    env = {"DATABASE_URL": None, "GAPBRIDGE_DATABASE_URL": None}
    refused = CliRunner().invoke(main, ["--config", str(config), "report"], env=env)
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (f"gapbridge: the database schema is at revision {previous}, this GapBridge needs "
                                      f"{head_revision()}: run `gapbridge db upgrade`")
    upgraded = CliRunner().invoke(main, ["--config", str(config), "db", "upgrade"], env=env)
    assert upgraded.exit_code == 0, upgraded.output
    app = build(fresh_url, tmp_path / "instance", database={"migrate_on_start": False})
    try:
        assert health(app)[0] == 200
    finally:
        dispose(app)


def test_two_apps_starting_at_once_both_come_up_and_one_migrates(fresh_url: str, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gapbridge")
    barrier = threading.Barrier(2)
    apps: list[Flask] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            apps.append(build(fresh_url, tmp_path / "instance"))
        except BaseException as exc:  # reported below, with the test's failure
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert errors == [] and len(apps) == 2
        assert [health(app)[0] for app in apps] == [200, 200]
        # without the lock both would migrate, and the second would fail on tables the first created
        assert len([r for r in caplog.records if r.getMessage().startswith("migrating the")]) == 1
    finally:
        dispose(*apps)


def test_an_instance_waits_for_the_migration_lock_and_gives_up_with_a_message(fresh_url: str, tmp_path: Path) -> None:
    url = sa.make_url(fresh_url)
    release = _hold_migration_lock(url)
    try:
        with pytest.raises(StartupError, match=r"gave up after 1 s waiting for another process migrating .*run `gapbridge db upgrade`"):
            build(fresh_url, tmp_path / "instance", database={"migrate_lock_timeout_seconds": 1})
        done: list[Flask] = []
        waiter = threading.Thread(target=lambda: done.append(build(fresh_url, tmp_path / "instance")))
        waiter.start()
        time.sleep(1.0)
        assert done == []  # still waiting for the holder
    finally:
        release()
    waiter.join(60)
    try:
        assert len(done) == 1 and health(done[0])[0] == 200
    finally:
        dispose(*done)


def _hold_migration_lock(url: sa.URL) -> Any:
    """Take the lock another GapBridge process migrating would hold; returns its release."""
    if url.get_backend_name() == "postgresql":
        engine = sa.create_engine(url.set(drivername="postgresql+psycopg"))
        conn = engine.connect()
        conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        conn.commit()

        def release_pg() -> None:
            conn.close()  # a session-level lock ends with its session
            engine.dispose()
        return release_pg
    import fcntl

    fh = open(f"{url.database}.migrate-lock", "a")  # noqa: SIM115 (closed by the release)
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh.close


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_gunicorn_workers_migrate_a_fresh_database_before_serving(fresh_url: str, tmp_path: Path) -> None:
    import requests

    port = _free_port()
    env = {**os.environ, "DATABASE_URL": fresh_url, "PYTHONPATH": str(REPO)}
    env.pop("GAPBRIDGE_CONFIG", None)
    env.pop("GAPBRIDGE_DATABASE_URL", None)
    log_file = tmp_path / "gunicorn.log"
    with log_file.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "3", "-b", f"127.0.0.1:{port}", "plugin:create_app()"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline, response = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=60)  # the first waits for the migration
                break
            except requests.ConnectionError:
                time.sleep(0.2)
        assert response is not None, log_file.read_text()
        assert response.status_code == 200 and response.json()["schema"]["current"] is True, log_file.read_text()
        # every worker answers the same (they all came up)
        assert {requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code for _ in range(12)} == {200}
    finally:
        proc.terminate()
        proc.wait(30)


# --- operator mistakes in the CLI -------------------------------------------------------------


def run(args: list[str], tmp_path: Path, **env: str | None) -> Result:
    base: dict[str, str | None] = {"GAPBRIDGE_CONFIG": None, "DATABASE_URL": None, "GAPBRIDGE_DATABASE_URL": None}
    return CliRunner().invoke(main, args, env={**base, **env})


def not_a_folder(tmp_path: Path) -> Path:
    """A path no one can create, root included: it lies under a regular file."""
    regular = tmp_path / "a-file"
    regular.write_text("")
    return regular / "x"


def one_line(result: Result) -> str:
    """The one line saying what is wrong; a configuration error comes under its heading line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and PASSWORD not in result.output
    lines = result.stderr.strip().splitlines()
    if lines[:1] == ["gapbridge: configuration error:"]:
        lines = lines[1:]
    assert len(lines) == 1, result.stderr
    return lines[0]


COMMANDS = [["sync"], ["serve", "--port", "0"], ["db", "upgrade"], ["report"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize(("url", "expected"), [
    (f"mysql+nope://gb:{PASSWORD}@db.example/gb", "unsupported database 'mysql'"),
    (f"postgresql+nope://gb:{PASSWORD}@db.example/gb", "unknown database driver 'postgresql+nope'"),
    (f"garbage {PASSWORD}", "not a database URL"),
], ids=["unknown-scheme", "unknown-driver", "garbage"])
def test_a_bad_database_url_is_a_configuration_error(command: list[str], url: str, expected: str, tmp_path: Path) -> None:
    result = run(command, tmp_path, DATABASE_URL=url)
    assert result.exit_code == 2
    line = one_line(result)
    assert line.startswith("environment variable DATABASE_URL: ") and expected in line
    assert "expected sqlite:///PATH or postgresql://" in line


def test_a_bad_database_url_in_the_file_names_its_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"log_level: INFO\ndatabase_url: mysql+nope://gb:{PASSWORD}@db/gb\n")
    result = run(["--config", str(config), "report"], tmp_path)
    assert result.exit_code == 2
    assert one_line(result) == (f"{config}:2: database_url: unsupported database 'mysql' "
                                "(expected sqlite:///PATH or postgresql://user:password@host:port/database)")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unreachable_database_exits_1_saying_where(command: list[str], tmp_path: Path) -> None:
    result = run(command, tmp_path, DATABASE_URL=f"postgresql://gb:{PASSWORD}@127.0.0.1:1/gb")
    assert result.exit_code == 1
    line = one_line(result)
    assert line.startswith("gapbridge: cannot use the database: connection failed: ") and "refused" in line
    assert line.endswith("(at postgresql+psycopg://127.0.0.1:1/gb)")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_sqlite_folder_that_cannot_be_written_exits_1_saying_where(command: list[str], tmp_path: Path) -> None:
    folder = not_a_folder(tmp_path)
    result = run(command, tmp_path, DATABASE_URL=f"sqlite:///{folder}/gb.db")
    assert result.exit_code == 1
    line = one_line(result)
    assert line == (f"gapbridge: cannot use the database: unable to open database file (SQLite file {folder}/gb.db; "
                    f"folder {folder} does not exist)")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_instance_folder_that_cannot_be_created_exits_1_saying_where(command: list[str], tmp_path: Path) -> None:
    folder = not_a_folder(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(f"instance_path: {folder}\n")
    result = run(["--config", str(config), *command], tmp_path)
    assert result.exit_code == 1
    assert one_line(result) == f"gapbridge: cannot create the instance folder {folder} (instance_path): Not a directory"


def test_verbose_adds_the_traceback_still_without_the_password(tmp_path: Path) -> None:
    result = run(["-v", "report"], tmp_path, DATABASE_URL=f"postgresql://gb:{PASSWORD}@127.0.0.1:1/gb")
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and PASSWORD not in result.output
    assert result.stderr.strip().splitlines()[-1].endswith("(at postgresql+psycopg://127.0.0.1:1/gb)")


def test_real_exit_status_and_stderr_of_a_bad_url_and_an_unreachable_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GAPBRIDGE_CONFIG", "GAPBRIDGE_DATABASE_URL")}
    bad = subprocess.run([*GAPBRIDGE, "report"], env={**env, "DATABASE_URL": "mysql+nope://x"}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert (bad.returncode, bad.stdout) == (2, "") and bad.stderr.startswith("gapbridge: configuration error:\n")
    assert len(bad.stderr.strip().splitlines()) == 2 and "environment variable DATABASE_URL: unsupported database" in bad.stderr
    down = subprocess.run([*GAPBRIDGE, "db", "upgrade"], env={**env, "DATABASE_URL": f"postgresql://gb:{PASSWORD}@127.0.0.1:1/gb"},
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and down.stdout == "" and PASSWORD not in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1 and "127.0.0.1:1" in down.stderr


# --- serve and --version ---------------------------------------------------------------------


def test_serve_refuses_a_port_out_of_range(tmp_path: Path) -> None:
    result = run(["serve", "--port", "70000"], tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'gb.db'}")
    assert result.exit_code == 2 and "'--port': 70000 is not in the range 0<=x<=65535" in result.output


def test_serve_on_a_port_in_use_exits_1_saying_which(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k not in ("GAPBRIDGE_CONFIG", "GAPBRIDGE_DATABASE_URL")}
        proc = subprocess.run([*GAPBRIDGE, "serve", "--port", str(port)], env={**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'gb.db'}"},
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    # the line before it, if any, is the INFO line of the migration this first use of the database ran
    assert proc.stderr.strip().splitlines()[-1] == f"gapbridge: cannot listen on 127.0.0.1:{port}: Address already in use"


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"gapbridge, version {importlib.metadata.version('gapbridge')}\n"


def test_an_app_started_while_the_database_is_down_serves_503_not_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = build(f"postgresql://gb:{PASSWORD}@127.0.0.1:1/gb", tmp_path / "instance")
    try:
        status, body = health(app)
        assert status == 503 and body["database"] == "unavailable"
        assert body["schema"] == {"revision": None, "head": head_revision(), "current": False}
        assert any("(at postgresql+psycopg://127.0.0.1:1/gb)" in r.getMessage() for r in caplog.records)
        assert PASSWORD not in caplog.text
    finally:
        dispose(app)


def test_any_gapbridge_error_reaching_the_cli_is_one_line_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Errors share one root (plugin.errors.GapBridgeError): one the command did not expect still prints its words only."""
    from plugin.errors import GapBridgeError
    from plugin.services import report

    def refuses(*_: object, **__: object) -> None:
        raise GapBridgeError("the report cannot be made: the ruleset changed while reading")

    monkeypatch.setattr(report, "gap_report", refuses)
    result = run(["report"], tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/gb.db")
    assert result.exit_code == 1
    assert one_line(result) == "gapbridge: the report cannot be made: the ruleset changed while reading"
    verbose = run(["-v", "report"], tmp_path, DATABASE_URL=f"sqlite:///{tmp_path}/gb.db")
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr
