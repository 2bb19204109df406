"""What an operator sees of a run, end to end: sync timings in the metrics, log lines carrying their source, run and
ticket, the metrics address of serve and worker, and what the CLI says of the write-back inside a sync."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from connectors.base import AuthenticationError, Enrichment, WriteResult
from demo_itsm import DemoITSM
from plugin import logs
from plugin.db.leases import acquire_lease
from plugin.services import shutdown
from plugin.services.enrich import plan
from plugin.services.pipeline import PLAN_LEASE
from plugin.services.sync import sync_source
from plugin.state import GapBridge, gapbridge

from .apiclient import token_for
from .fakes import FakeConnector
from .gapbridge_procs import write_config
from .test_api import varied_tool
from .test_metrics import parse, scrape, value
from .test_shutdown import Command, wait_until


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    shutdown.reset()
    logs.configure("INFO", "text", debug=False)


def json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    out = []
    for line in capsys.readouterr().err.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_each_sync_is_timed_by_its_outcome(app_factory: Any) -> None:
    app = app_factory()
    token = token_for(app)
    before = scrape(app, token)
    tool = varied_tool(12)
    with app.app_context():
        sync_source(FakeConnector(tool, name="timed"), ruleset=gapbridge(app).ruleset)
        tool.crash_after_pages = 0
        tool.touch(next(iter(tool.tickets)))
        with pytest.raises(Exception, match="simulated crash"):
            sync_source(FakeConnector(tool, name="timed"), ruleset=gapbridge(app).ruleset)
    after = scrape(app, token)

    def delta(**labels: str) -> float:
        name = "gapbridge_sync_duration_seconds_count"
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta(source="timed", outcome="succeeded") == 1
    assert delta(source="timed", outcome="failed") == 1
    assert delta(source="timed", outcome="stopped") == 0


def test_a_stopped_sync_logs_with_its_source_and_run(app_factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    app = app_factory()
    logs.configure("INFO", "json", force=True)
    with app.app_context():
        shutdown.request()  # after the first page
        summary = sync_source(FakeConnector(varied_tool(20), name="ctx"), ruleset=gapbridge(app).ruleset)
    assert summary.status == "stopped"
    stopped = [r for r in json_lines(capsys) if "stopped as asked" in r["message"]]
    assert len(stopped) == 1, stopped
    assert stopped[0]["source"] == "ctx" and stopped[0]["run_id"] == summary.run_id


class RefusedConnector(FakeConnector):
    def write_back(self, enrichment: Enrichment) -> WriteResult:
        raise AuthenticationError("HTTP 401 from https://acme.example: check the credentials")


def test_a_refused_write_back_logs_with_its_source_and_ticket(app_factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from plugin.services.outbox import drain

    app = app_factory()
    tool = varied_tool(6)
    logs.configure("INFO", "json", force=True)
    with app.app_context():
        ruleset = gapbridge(app).ruleset
        sync_source(FakeConnector(tool, name="desk"), ruleset=ruleset)
        assert plan(ruleset).queued > 0
        drained = drain({"desk": RefusedConnector(tool, name="desk")}, max_attempts=3)
    assert drained.not_attempted > 0
    refused = [r for r in json_lines(capsys) if "the login was refused" in r["message"]]
    assert len(refused) == 1, refused  # said once for the connector, not once per note
    assert refused[0]["source"] == "desk" and refused[0]["incident"] in tool.tickets


def test_the_sync_command_shows_the_write_back_and_writeback_says_when_the_plan_is_elsewhere(
        app_factory: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from plugin.cli.pipeline import run_sync, run_writeback

    app = app_factory(sync={"worker_process": "never"})
    tool = varied_tool(10)
    monkeypatch.setattr(GapBridge, "connector", lambda self, name: FakeConnector(tool, name=name))
    assert run_sync(app, ["fake"], write_back=True) == 0
    err = capsys.readouterr().err
    written = sum(1 for notes in tool.notes.values() for _ in notes)
    assert written > 0
    # stderr is no terminal here: the progress comes as plain lines, the last one when every due item is done
    assert f"write-back: {written}/{written} done" in err, err
    assert f"{written} written" in err

    tool.touch(next(iter(tool.tickets)), evidence=not tool.tickets[next(iter(tool.tickets))]["evidence"])
    with app.app_context():
        assert acquire_lease(PLAN_LEASE, "other-host:4242", 600)
    assert run_writeback(app, ["fake"]) == 0
    err = capsys.readouterr().err
    assert "outbox plan skipped: another process is at it (other-host:4242 until" in err, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
@pytest.mark.parametrize("args", [["serve", "--port", "0", "--no-schedule"], ["worker"]], ids=["serve", "worker"])
def test_serve_and_worker_answer_on_the_metrics_address(args: list[str], app_factory: Any, _migrated: str, tmp_path: Path) -> None:
    app_factory()  # its tables are emptied after the test: what the subprocess stored goes too
    port = _free_port()
    with DemoITSM(tmp_path / "itsm.sqlite", size=15) as itsm:
        config = write_config(tmp_path, _migrated, itsm, schedule={"tick_seconds": 1}, metrics={"bind": f"127.0.0.1:{port}"})
        command = Command(args, config, tmp_path)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            assert wait_until(lambda: url in command.output), command.output

            def scraped() -> dict[Any, float] | None:
                try:
                    r = requests.get(url, timeout=5)
                except requests.ConnectionError:
                    return None
                return parse(r.text) if r.status_code == 200 else None

            assert wait_until(lambda: scraped() is not None), command.output
            samples = scraped()
            assert samples is not None and value(samples, "gapbridge_database_up") == 1
            if args[0] == "worker":  # the worker's own sync, timed in its own process, is in what its address serves
                assert wait_until(lambda: value(scraped() or {}, "gapbridge_sync_duration_seconds_count",
                                                source="demo", outcome="succeeded") == 1), command.output
            command.signal_group(signal.SIGTERM)
            status = command.wait()
            output = command.output
        finally:
            command.close()
    assert status == 0 and "Traceback" not in output, output
    with pytest.raises(requests.ConnectionError):  # closed with the process
        requests.get(url, timeout=2)
