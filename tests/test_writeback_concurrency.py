"""The drain with several writers per connector instance: one write a ticket at a time, a pause for all when the
tool asks, sources independent of each other, every due item accounted for, dead claims taken over, a stop that
loses nothing. Events and barriers, not sleeps, decide who goes when."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from marshmallow import ValidationError

from connectors.base import (
    AuthenticationError,
    Enrichment,
    FatalConnectorError,
    HttpSession,
    PausedError,
    RateLimit,
    ServerError,
    WriteResult,
)
from connectors.servicenow import ServiceNowConnector, ServiceNowOptionsSchema
from demo_itsm import DemoITSM
from plugin.config import demo_config
from plugin.extensions import db
from plugin.models import OutboxBackoff, OutboxItem, utcnow
from plugin.services import shutdown
from plugin.services.assess import assess
from plugin.services.enrich import plan
from plugin.services.outbox import STOP_ASKED, DrainSummary, drain
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .fakes import FakeConnector, FakeTicketing

WAIT = 10.0  # the most a test waits for an event that should come at once; reached only when the behaviour is broken


class Writers(FakeConnector):
    """A fake tool written by several threads at once: counts what overlaps, per ticket and in all."""

    def __init__(self, tool: FakeTicketing, name: str = "fake", concurrency: int = 4, per_check: int = 1) -> None:
        super().__init__(tool, name=name)
        self.options = {"write_back": {"concurrency": concurrency}}
        self.fingerprints_per_request = per_check
        self.lock = threading.Lock()
        self.active: Counter[str] = Counter()
        self.overlapping: list[str] = []  # tickets written by two threads at once
        self.in_flight = self.most_at_once = self.writes = 0

    def during(self, enrichment: Enrichment, n: int) -> None:
        """Called inside the n-th write (1-based), with no lock held."""

    def write_back(self, enrichment: Enrichment) -> WriteResult:
        with self.lock:
            self.writes += 1
            n = self.writes
            self.active[enrichment.external_id] += 1
            if self.active[enrichment.external_id] > 1:
                self.overlapping.append(enrichment.external_id)
            self.in_flight += 1
            self.most_at_once = max(self.most_at_once, self.in_flight)
        try:
            self.during(enrichment, n)
            with self.lock:
                return super().write_back(enrichment)
        finally:
            with self.lock:
                self.active[enrichment.external_id] -= 1
                self.in_flight -= 1

    def current_fingerprint(self, external_id: str) -> str | None:
        with self.lock:
            return super().current_fingerprint(external_id)

    def current_fingerprints(self, external_ids: Any) -> dict[str, str | None]:
        with self.lock:
            self.tool.requests += 1
            return {e: self.tool.tickets[e]["fingerprint"] for e in external_ids}


def queued(tool: FakeTicketing, name: str = "fake") -> list[OutboxItem]:
    sync_source(FakeConnector(tool, name=name))
    assess(gapbridge().ruleset)
    plan(gapbridge().ruleset, source=name)
    return pending(name)


def pending(source: str | None = None) -> list[OutboxItem]:
    db.session.expire_all()
    q = sa.select(OutboxItem).where(OutboxItem.status == "pending").order_by(OutboxItem.id)
    return list(db.session.scalars(q.where(OutboxItem.source == source) if source else q))


def statuses(source: str) -> Counter[str]:
    db.session.expire_all()
    return Counter(db.session.scalars(sa.select(OutboxItem.status).where(OutboxItem.source == source)))


def accounted(s: DrainSummary) -> None:
    """Every item due when the drain began is in exactly one count."""
    assert s.due == s.written + s.already_current + s.dry_run + s.retrying + s.failed + s.not_attempted + s.elsewhere == s.accounted


def gap_tickets(tool: FakeTicketing) -> list[str]:
    return [sid for sid, t in tool.tickets.items() if t["security"] and not t["evidence"]]


@pytest.fixture(autouse=True)
def _no_stop_left() -> Iterator[None]:
    shutdown.reset()
    yield
    shutdown.reset()


# --- several writers, one ticket at a time ------------------------------------------------


def test_writes_run_concurrently_up_to_the_configured_number(app) -> None:
    tool = FakeTicketing(60)
    four_at_once = threading.Barrier(4, timeout=WAIT)
    broken: list[int] = []

    class Four(Writers):
        def during(self, enrichment: Enrichment, n: int) -> None:
            if 2 <= n <= 5:  # after the first write, which goes alone: four in flight at once, or the barrier breaks
                try:
                    four_at_once.wait()
                except threading.BrokenBarrierError:
                    broken.append(n)

    with app.app_context():
        expected = len(queued(tool))
        writers = Four(tool)
        summary = drain({"fake": writers})
    assert broken == [] and writers.most_at_once == 4
    assert summary.written == expected == len(gap_tickets(tool)) and writers.overlapping == []
    accounted(summary)


@pytest.mark.parametrize("per_check", [1, 10], ids=["checked-one-by-one", "checked-in-chunks"])
def test_concurrency_never_writes_one_ticket_twice_at_once(app, per_check: int) -> None:
    tool = FakeTicketing(40)
    second_started = threading.Event()

    with app.app_context():
        items = queued(tool)
        last = items[-1]
        ticket = last.external_id  # read here: the threads have no session
        # a second note for the same ticket, next in line: without the guard both go to two threads at once
        db.session.add(OutboxItem(incident_id=last.incident_id, source="fake", external_id=ticket, fingerprint="second",
                                  payload={**last.payload, "note": "the second note"}, status="pending", attempts=0,
                                  next_attempt_at=last.next_attempt_at, created_at=utcnow()))
        db.session.commit()

        class SameTicket(Writers):
            def during(self, enrichment: Enrichment, n: int) -> None:
                if enrichment.external_id != ticket:
                    return
                if enrichment.fingerprint == "second":
                    second_started.set()
                else:  # the first note waits a while for the second to overlap it; with the guard it never does
                    second_started.wait(1.0)

        writers = SameTicket(tool, per_check=per_check)
        summary = drain({"fake": writers})
    assert writers.overlapping == []
    assert tool.notes[ticket][-1] == "the second note" and len(tool.notes[ticket]) == 2
    assert summary.written == len(items) + 1 and summary.due == len(items) + 1
    accounted(summary)


# --- a pause for the whole instance --------------------------------------------------------


def test_a_pause_the_tool_asks_of_one_thread_holds_every_thread() -> None:
    now = [1000.0]
    sleeping: list[tuple[str, float]] = []
    everyone = threading.Barrier(3, timeout=WAIT)

    def sleep(seconds: float) -> None:
        sleeping.append((threading.current_thread().name, seconds))
        everyone.wait()  # the one told and the two others, all waiting at once

    pace = RateLimit(clock=lambda: now[0], sleep=sleep)
    until = pace.pause(30)

    def told() -> None:
        sleep(30)  # as HttpSession does for the thread that got the 429: it sleeps what it was told
        pace.acquire("PATCH", served=until)  # then goes on without a second wait

    threads = [threading.Thread(target=told, name="told")] + [
        threading.Thread(target=pace.acquire, args=("PATCH",), name=f"other-{i}") for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert sorted(sleeping) == [("other-0", 30.0), ("other-1", 30.0), ("told", 30.0)]


def test_a_pause_longer_than_a_request_waits_is_not_sent_at_all() -> None:
    pace = RateLimit(clock=lambda: 50.0, sleep=lambda _: pytest.fail("must not sleep"))
    pace.pause(300)
    with pytest.raises(PausedError) as raised:
        pace.acquire("PATCH /api/now/table/incident", max_wait=120)
    assert raised.value.retry_after == 300 and "not sent" in str(raised.value)


def test_a_steady_rate_spaces_the_writes_evenly() -> None:
    clock = [0.0]
    starts: list[float] = []

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    pace = RateLimit(4, clock=lambda: clock[0], sleep=sleep)
    for _ in range(5):
        pace.acquire()
        starts.append(clock[0])
    assert starts == [0.0, 0.25, 0.5, 0.75, 1.0]
    with pytest.raises(ValueError, match="above 0"):
        RateLimit(0)


def _demo_writeback(app_factory: Any, tmp_path: Path, itsm: DemoITSM, **write_back: Any) -> tuple[Any, dict[str, Any]]:
    cfg = demo_config(itsm.url, tmp_path)
    options = cfg["connectors"]["demo"]
    options["write_back"].update(write_back)
    app = app_factory(connectors=cfg["connectors"], mappings=cfg["mappings"])
    with app.app_context():
        connector = ServiceNowConnector("demo", options)
        try:
            sync_source(connector)
        finally:
            connector.close()
        assess(gapbridge(app).ruleset)
        plan(gapbridge(app).ruleset)
    return app, options


@pytest.mark.slow
def test_a_429_on_one_thread_slows_the_whole_instance(app_factory: Any, tmp_path: Path) -> None:
    with DemoITSM(tmp_path / "itsm.sqlite", size=240) as itsm:
        app, options = _demo_writeback(app_factory, tmp_path, itsm, concurrency=4)
        sleepers: set[str] = set()
        lock = threading.Lock()
        all_waiting = threading.Event()

        def sleep(seconds: float) -> None:
            with lock:
                sleepers.add(threading.current_thread().name)
                if len(sleepers) >= 4:
                    all_waiting.set()
            all_waiting.wait(WAIT)  # released once all four writers wait; if they do not, the assert below says so

        with app.app_context():
            items = pending("demo")
            tickets = [i.external_id for i in items]
            assert len(items) > 40
            # the 20th note's PATCH is told to wait 30 s, while the other threads are busy with theirs
            itsm.fail_next(1, status=429, retry_after=30, methods=["PATCH"], path_prefix=f"/api/now/table/incident/{items[20].external_id}")
            connector = ServiceNowConnector("demo", options, sleep=sleep)
            try:
                summary = drain({"demo": connector})
            finally:
                connector.close()
        writers = {n for n in sleepers if n.startswith("writeback-demo")}
        assert len(writers) >= 4, sleepers  # the one told and the three others waited
        assert summary.written == len(items) and summary.errors == []
        assert all(len(itsm.journal(t)) == 1 for t in tickets)


@pytest.mark.slow
def test_servicenow_reads_fifty_fingerprints_in_one_request(app_factory: Any, tmp_path: Path) -> None:
    with DemoITSM(tmp_path / "itsm.sqlite", size=240) as itsm:
        app, options = _demo_writeback(app_factory, tmp_path, itsm, concurrency=2)
        with app.app_context():
            items = pending("demo")
            itsm.reset_stats()
            connector = ServiceNowConnector("demo", options)
            try:
                summary = drain({"demo": connector})
            finally:
                connector.close()
        chunks = -(-len(items) // 50)
        assert summary.written == len(items) and itsm.stats["PATCH"] == len(items) and itsm.stats["GET"] == chunks


# --- sources are independent ----------------------------------------------------------------


@pytest.mark.parametrize("per_check", [1, 10], ids=["checked-one-by-one", "checked-in-chunks"])
@pytest.mark.parametrize("trouble", ["down", "refused", "held"])
def test_one_source_down_does_not_stop_another(app, trouble: str, per_check: int) -> None:
    bad_tool, good_tool = FakeTicketing(24), FakeTicketing(24)
    good_done = threading.Event()
    too_soon: list[str] = []

    class Good(Writers):
        def write_back(self, enrichment: Enrichment) -> WriteResult:
            result = super().write_back(enrichment)
            with self.lock:
                if self.writes == expected_good:
                    good_done.set()
            return result

    class Bad(Writers):
        def current_fingerprint(self, external_id: str) -> str | None:
            self.refuse()
            return None

        def current_fingerprints(self, external_ids: Any) -> dict[str, str | None]:
            self.refuse()
            return {}

        def refuse(self) -> None:
            # answers only once the other source is done: one source at a time would never get there
            if not good_done.wait(WAIT):
                too_soon.append(self.name)
            with self.lock:
                self.tool.requests += 1
            if trouble == "refused":
                raise AuthenticationError("GET /api/now/table/incident: HTTP 401 Unauthorized: check the credentials")
            raise ServerError("GET /api/now/table/incident: HTTP 503 Service Unavailable")

    with app.app_context():
        bad_items = queued(bad_tool, "bad")
        expected_good = len(queued(good_tool, "good"))
        if trouble == "held":
            db.session.add(OutboxBackoff(source="bad", until=utcnow() + timedelta(minutes=5), asked_seconds=300,
                                         message="Fake asked to wait 300 s; next attempt after 12:05:00 UTC", set_at=utcnow()))
            db.session.commit()
            good_done.set()
        before = bad_tool.requests
        summary = drain({"bad": Bad(bad_tool, name="bad", per_check=per_check),
                         "good": Good(good_tool, name="good", per_check=per_check)})
        assert too_soon == []
        assert statuses("good") == {"sent": expected_good} and summary.written == expected_good
        assert "bad" in summary.unreachable and "good" not in summary.unreachable
        assert bad_tool.requests - before == (0 if trouble == "held" else 1)  # one request, not one a note or a thread
        wait = summary.waiting_by_source["bad"]
        # a note whose write failed is retried later; a chunk whose read failed was not attempted at all
        tried = 1 if trouble == "down" and per_check == 1 else 0
        assert (wait.retrying, wait.not_attempted) == (tried, len(bad_items) - tried) and wait.reason
        assert statuses("bad") == {"pending": len(bad_items)}
        if trouble == "down":
            assert "503" in wait.reason and (wait.until is not None and wait.until > utcnow()) == bool(tried)
        elif trouble == "refused":
            assert "the login was refused" in wait.reason
        else:
            assert wait.reason.startswith("Fake asked to wait 300 s")
        accounted(summary)


# --- every item accounted for ------------------------------------------------------------------


def test_every_due_item_is_accounted_for(app) -> None:
    tool = FakeTicketing(60)
    fatal_ticket: list[str] = []

    class Mixed(Writers):
        def write_back(self, enrichment: Enrichment) -> WriteResult:
            if enrichment.external_id in fatal_ticket:
                raise FatalConnectorError("PATCH /api/now/table/incident: HTTP 403 Forbidden: the account lacks a role")
            return super().write_back(enrichment)

    with app.app_context():
        items = queued(tool)
        assert len(items) >= 6
        current, failing, elsewhere, later = items[1], items[2], items[3], items[4]
        tool.tickets[current.external_id]["fingerprint"] = current.fingerprint  # written before a crash, say
        fatal_ticket.append(failing.external_id)
        other = OutboxItem.__table__
        db.session.execute(other.update().where(other.c.id == elsewhere.id)
                           .values(claimed_by="another-host:4242", claimed_until=utcnow() + timedelta(minutes=5)))
        db.session.execute(other.update().where(other.c.id == later.id).values(next_attempt_at=utcnow() + timedelta(hours=1)))
        db.session.commit()
        summary = drain({"fake": Mixed(tool)})
        assert summary.due == len(items) - 1  # the one not due yet is not this run's
        assert (summary.already_current, summary.failed, summary.elsewhere) == (1, 1, 1)
        assert summary.written == len(items) - 4 and summary.waiting == 0
        assert any(failing.external_id in e and "403" in e for e in summary.errors)
        accounted(summary)
        assert statuses("fake") == {"sent": len(items) - 3, "failed": 1, "pending": 2}


# --- claims of a killed write-back -----------------------------------------------------------


def test_claims_of_a_dead_process_on_this_host_are_taken_over_at_once_and_counted(app) -> None:
    tool = FakeTicketing(30)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}"
    alive = f"{socket.gethostname()}:{os.getppid()}"  # our parent runs: its claims stand
    with app.app_context():
        items = queued(tool)
        ot = OutboxItem.__table__
        until = utcnow() + timedelta(minutes=5)
        db.session.execute(ot.update().where(ot.c.id.in_([i.id for i in items[:3]])).values(claimed_by=dead, claimed_until=until))
        db.session.execute(ot.update().where(ot.c.id == items[3].id).values(claimed_by=alive, claimed_until=until))
        db.session.commit()
        summary = drain({"fake": Writers(tool)})
        assert summary.taken_over == 3 and summary.elsewhere == 1
        assert summary.written == len(items) - 1
        accounted(summary)
        assert [i.id for i in pending("fake")] == [items[3].id]


# --- a stop asked for mid-drain ----------------------------------------------------------------


@pytest.mark.parametrize("per_check", [1, 10], ids=["checked-one-by-one", "checked-in-chunks"])
def test_a_stop_asked_mid_drain_loses_nothing(app, per_check: int) -> None:
    tool = FakeTicketing(90)

    class StopAfterSix(Writers):
        def during(self, enrichment: Enrichment, n: int) -> None:
            if n == 6:
                shutdown.request()  # SIGTERM, as the worker's handler asks

    with app.app_context():
        items = queued(tool)
        assert len(items) > 20
        summary = drain({"fake": StopAfterSix(tool, per_check=per_check)})
        assert summary.stopped and 6 <= summary.written < len(items)
        sent = {i.external_id for i in db.session.scalars(sa.select(OutboxItem).where(OutboxItem.status == "sent"))}
        left = pending("fake")
        # each item is either written (and says so) or pending untouched, claimed by no one
        assert sent == set(tool.notes) and len(sent) == summary.written
        assert len(left) == len(items) - summary.written == summary.not_attempted
        assert all(i.claimed_by is None and i.claimed_until is None and i.attempts == 0 for i in left)
        assert summary.waiting_by_source["fake"].reason == STOP_ASKED and "fake" not in summary.unreachable
        accounted(summary)
        shutdown.reset()
        rest = drain({"fake": Writers(tool)})
        assert rest.written == len(left) and all(len(n) == 1 for n in tool.notes.values())


# --- configuration and the shared HTTP session ----------------------------------------------------


def _options(**write_back: Any) -> dict[str, Any]:
    return ServiceNowOptionsSchema().load({"type": "servicenow", "instance_url": "https://acme.service-now.com/",
                                           "auth": {"method": "basic", "username": "u", "password": "p"},
                                           "write_back": write_back})


def test_write_back_concurrency_and_rate_are_validated() -> None:
    assert _options()["write_back"]["concurrency"] == 4 and _options()["write_back"]["max_per_second"] is None
    assert _options(concurrency=32, max_per_second=2.5)["write_back"]["concurrency"] == 32
    for bad, says in (({"concurrency": 0}, "greater than or equal to 1"), ({"concurrency": 33}, "less than or equal to 32"),
                      ({"concurrency": "many"}, "Not a valid integer"), ({"max_per_second": 0}, "must be above 0")):
        with pytest.raises(ValidationError) as raised:
            _options(**bad)
        assert says in str(raised.value.messages["write_back"])


def test_each_thread_gets_its_own_http_session_and_close_closes_them_all() -> None:
    http = HttpSession("https://acme.service-now.com", auth=("u", "p"))
    seen: list[Any] = []
    threads = [threading.Thread(target=lambda: seen.append(http.session)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len({id(s) for s in [http.session, *seen]}) == 4
    assert all(s.auth == ("u", "p") and s.headers["User-Agent"] == "GapBridge" for s in seen)
    main = http.session
    http.close()
    assert http.session is main  # closed, and still usable: it reconnects


# --- what the operator sees -------------------------------------------------------------------


def test_progress_rewrites_one_line_on_a_terminal_and_prints_a_line_every_five_seconds_otherwise() -> None:
    import io

    from plugin.cli.progress import ProgressLine

    clock = [100.0]
    plain, term = io.StringIO(), io.StringIO()
    lines = [ProgressLine(stream=plain, clock=lambda: clock[0], tty=False),
             ProgressLine(stream=term, clock=lambda: clock[0], tty=True)]
    for done in range(0, 101, 10):  # one item a second from t=100
        for line in lines:
            line.update(done, 100, f"write-back: {done}/100 done")
        clock[0] += 10
    lines[1].end()
    printed = plain.getvalue().splitlines()
    assert printed[0] == "write-back: 0/100 done"
    assert printed[1] == "write-back: 10/100 done, 1.0/s, about 1 min 30 s left"
    assert len(printed) == 11 and printed[-1] == "write-back: 100/100 done, 1.0/s"  # 10 s apart: each one shown
    shown = term.getvalue()
    assert shown.count("\r") == 11 and shown.endswith("write-back: 100/100 done, 1.0/s\n") and shown.count("\n") == 1


def test_plain_progress_lines_come_every_five_seconds_not_every_item() -> None:
    import io

    from plugin.cli.progress import ProgressLine

    clock = [0.0]
    out = io.StringIO()
    line = ProgressLine(stream=out, clock=lambda: clock[0], tty=False)
    for done in range(1, 101):
        line.update(done, 100, f"{done} done")
        clock[0] += 0.125  # eight items a second (a step that adds up exactly)
    assert [row.split(",")[0] for row in out.getvalue().splitlines()] == ["1 done", "41 done", "81 done"]


def test_the_writeback_summary_says_counts_time_rate_and_what_waits(capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import datetime, timezone

    from plugin.cli.pipeline import _say_writeback
    from plugin.services.enrich import PlanSummary
    from plugin.services.outbox import SourceWait
    from plugin.services.pipeline import WritebackResult

    d = DrainSummary(due=12, written=6, already_current=1, retrying=1, not_attempted=3, failed=1, taken_over=2, seconds=3.5,
                     errors=["sn: ServiceNow asked to wait 300 s; next attempt after 12:05:00 UTC"])
    d.waiting_by_source["sn"] = SourceWait(retrying=1, not_attempted=3, until=datetime(2026, 12, 2, 12, 5, tzinfo=timezone.utc),
                                           reason="ServiceNow asked to wait 300 s; next attempt after 12:05:00 UTC")
    result = WritebackResult(PlanSummary(queued=12), d)
    _say_writeback(result)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("write-back: 12 queued, 6 written, 1 already current, 0 dry-run, 4 waiting to retry, 1 failed, "
                      "2 taken over from a dead run (12 due, in 4 s, 2.6/s)")
    assert err[1] == ("  sn: 4 waiting (1 to retry, 3 not attempted, the first again after 2026-12-02 12:05:00 UTC): "
                      "ServiceNow asked to wait 300 s; next attempt after 12:05:00 UTC")
    assert not result.ok


def test_a_429_with_only_x_ratelimit_reset_waits_until_the_reset() -> None:
    import responses

    from connectors.base import parse_rate_limit_reset

    assert parse_rate_limit_reset("1900000030", now=1900000000.0) == 30.0  # epoch seconds, as ServiceNow sends
    assert parse_rate_limit_reset("12") == 12.0 and parse_rate_limit_reset("soon") is None
    waits: list[float] = []
    http = HttpSession("https://acme.service-now.com", sleep=waits.append)
    with responses.RequestsMock() as mocked:
        mocked.get("https://acme.service-now.com/x", status=429, headers={"X-RateLimit-Reset": "7"})
        mocked.get("https://acme.service-now.com/x", json={})
        http.request("GET", "x")
    assert waits == [7.0]


def test_an_answer_that_spends_the_budget_holds_the_next_request_until_the_reset() -> None:
    import responses

    clock = [500.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    http = HttpSession("https://acme.service-now.com", sleep=sleep, clock=lambda: clock[0])
    with responses.RequestsMock() as mocked:
        mocked.get("https://acme.service-now.com/x", json={}, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "20"})
        mocked.get("https://acme.service-now.com/x", json={})
        http.request("GET", "x")
        assert waits == []
        http.request("GET", "x")  # any thread's next request waits for the reset
    assert waits == [20.0]


def test_threads_sharing_an_oauth_token_fetch_it_once() -> None:
    import responses

    from connectors.base import OAuth2TokenAuth

    auth = OAuth2TokenAuth("https://acme.service-now.com/oauth_token.do", "client_credentials", "id", "secret")
    first_in = threading.Event()
    go = threading.Event()
    tokens: list[str] = []

    def token_endpoint(request: Any) -> tuple[int, dict[str, str], str]:
        first_in.set()
        go.wait(WAIT)  # the other threads ask meanwhile
        return 200, {}, '{"access_token": "t-1", "expires_in": 1800}'

    with responses.RequestsMock() as mocked:
        mocked.add_callback(responses.POST, "https://acme.service-now.com/oauth_token.do", callback=token_endpoint)
        threads = [threading.Thread(target=lambda: tokens.append(auth.token())) for _ in range(3)]
        for t in threads:
            t.start()
        assert first_in.wait(WAIT)
        go.set()
        for t in threads:
            t.join(WAIT)
        assert tokens == ["t-1"] * 3 and len(mocked.calls) == 1
