"""Logs: timestamped text or one JSON object a line, with the context's source, run id and incident, and never a secret."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from plugin import logs
from plugin.cli import main
from plugin.logs import log_context

from .conftest import REPO

SECRET = "hunter2-log-secret"
ENV = {"GAPBRIDGE_CONFIG": None, "DATABASE_URL": None, "GAPBRIDGE_DATABASE_URL": None}  # not the developer's own
GAPBRIDGE = [sys.executable, "-c", "from plugin.cli import main; main()"]
API_TOKEN = "gbt_" + "A1b2C3d4" * 5
log = logging.getLogger("gapbridge.test_logs")
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (?P<level>[A-Z]+) (?P<logger>[\w.]+)(?: \[(?P<context>[^\]]*)\])?: (?P<message>.*)$")
# what connectors may put in a message: URL credentials, credential parameters, Authorization headers, tokens
LEAKY = [f"https://integration:{SECRET}@acme.service-now.com/api/now/table/incident",
         f"https://api.example/x?access_token={SECRET}&page=2", f"Authorization: Bearer {SECRET}x", API_TOKEN]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    logs.configure("INFO", "text", debug=False)  # pytest's handlers are there: this takes ours away again


def emitted(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def test_text_lines_are_timestamped_and_carry_the_context(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "text", force=True)
    log.info("before any context")
    with log_context(source="prod"):
        with log_context(run_id=7, incident="INC0010023"):
            log.warning("page %d stored", 3)
        log.info("back in the source")
    log.debug("below the level: not shown")
    lines = emitted(capsys)
    assert len(lines) == 3, lines
    parsed = [TEXT_LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m["level"], m["logger"], m["context"], m["message"]) for m in parsed if m] == [
        ("INFO", "gapbridge.test_logs", None, "before any context"),
        ("WARNING", "gapbridge.test_logs", "source=prod run_id=7 incident=INC0010023", "page 3 stored"),
        ("INFO", "gapbridge.test_logs", "source=prod", "back in the source"),
    ]


def test_json_lines_parse_and_carry_the_context_fields(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json", force=True)
    with log_context(source="prod", run_id=12):
        log.info("synced %s records", 200)
        with log_context(incident="INC0000042"):
            log.error("write-back refused")
    log.info("outside")
    records = [json.loads(line) for line in emitted(capsys)]  # one object a line, each valid JSON
    assert [r["message"] for r in records] == ["synced 200 records", "write-back refused", "outside"]
    assert records[0]["source"] == "prod" and records[0]["run_id"] == 12 and "incident" not in records[0]
    assert records[1]["incident"] == "INC0000042" and records[1]["level"] == "ERROR" and records[1]["logger"] == "gapbridge.test_logs"
    assert not {"source", "run_id", "incident"} & set(records[2])
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00$", r["time"]) for r in records)


def test_a_thread_starts_without_the_context_of_another(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json", force=True)
    with log_context(source="prod"):
        worker = threading.Thread(target=lambda: log.info("from a thread"))
        worker.start()
        worker.join()
    (record,) = [json.loads(line) for line in emitted(capsys)]
    assert "source" not in record


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_reaches_a_log_line(fmt: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    logs.configure("INFO", fmt, force=True)
    caplog.set_level(logging.INFO, logger="gapbridge")
    for text in LEAKY:
        log.warning("the tool answered: %s", text)
    log.warning(LEAKY[0] + " in the message itself")
    log.info("options %s", {"instance_url": "https://acme.service-now.com", "auth": {"password": SECRET}})
    log.info("with extra fields", extra={"client_secret": SECRET, "request": {"token": SECRET}})
    try:
        raise ConnectionError(f"Max retries exceeded with url: {LEAKY[0]}")
    except ConnectionError:
        log.exception("sync failed")
    out = capsys.readouterr().err
    assert out.count("\n") >= 8 and "sync failed" in out and "Traceback" in out
    assert SECRET not in out and API_TOKEN not in out
    assert "acme.service-now.com" in out  # what is not a secret stays readable
    if fmt == "json":
        for line in out.splitlines():
            if line.startswith("{"):
                json.loads(line)
    # the filter cleans the record itself: every other handler (here pytest's) sees it clean too
    assert caplog.records and all(SECRET not in r.getMessage() and API_TOKEN not in r.getMessage() for r in caplog.records)


def test_the_cli_logs_as_configured(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path / 'gb.db'}\ninstance_path: {tmp_path / 'instance'}\n"
                      "log_format: json\nlog_level: INFO\n")
    env = {**{k: v for k, v in os.environ.items() if k not in ENV}, "PYTHONPATH": str(REPO)}
    # a process of its own: under pytest the root logger has pytest's handlers, and GapBridge then adds none
    result = subprocess.run([*GAPBRIDGE, "--config", str(config), "db", "upgrade"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # nothing on stderr but JSON log lines
    assert any(r["message"].startswith("migrating the SQLite database") and r["level"] == "INFO" for r in lines), lines

    (tmp_path / "gb.db").unlink()
    config.write_text(config.read_text().replace("log_format: json", "log_format: text"))
    text = subprocess.run([*GAPBRIDGE, "--config", str(config), "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    (line,) = text.stderr.splitlines()
    m = TEXT_LINE.match(line)
    assert m and m["level"] == "INFO" and m["logger"] == "gapbridge" and m["message"].startswith("migrating the SQLite database")


def test_v_gives_debug_over_the_configured_level(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path / 'gb.db'}\ninstance_path: {tmp_path / 'instance'}\nlog_level: WARNING\n")
    verbose = CliRunner().invoke(main, ["-v", "--config", str(config), "db", "upgrade"], env=ENV)
    assert verbose.exit_code == 0, verbose.output
    # -v wins over log_level, also after create_app applied the configuration
    assert logging.getLogger("gapbridge").getEffectiveLevel() == logging.DEBUG
    again = CliRunner().invoke(main, ["--config", str(config), "db", "upgrade"], env=ENV)
    assert again.exit_code == 0 and logging.getLogger("gapbridge").getEffectiveLevel() == logging.WARNING


def test_a_bad_log_format_is_a_configuration_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("log_format: yaml\n")
    result = CliRunner().invoke(main, ["--config", str(config), "status"], env=ENV)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == f"{config}:1: log_format: Must be one of: text, json."
    assert "Traceback" not in result.output


def test_log_context_accepts_only_its_fields() -> None:
    bad: Any = log_context
    with pytest.raises(TypeError):
        bad(password="x")
