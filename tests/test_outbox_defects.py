"""The outbox under change, concurrency, failure, refused logins and rate limits: what the ticket ends up carrying."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import responses
import sqlalchemy as sa

from connectors.base import AuthenticationError, Enrichment, RateLimitedError, WriteResult
from connectors.servicenow import ServiceNowConnector, ServiceNowOptionsSchema
from plugin.extensions import db
from plugin.models import OutboxBackoff, OutboxItem, utcnow
from plugin.services.assess import assess
from plugin.services.enrich import plan
from plugin.services.outbox import DrainSummary, drain
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .conftest import NOW
from .fakes import FakeConnector, FakeTicketing

SN = "https://acme.service-now.com"
SN_ANY = re.compile(re.escape(SN) + r"/.*")


def rows(*where: Any) -> list[OutboxItem]:
    return list(db.session.scalars(sa.select(OutboxItem).where(*where).order_by(OutboxItem.id)))


def synced(tool: FakeTicketing, name: str = "fake") -> None:
    sync_source(FakeConnector(tool, name=name))
    assess(gapbridge().ruleset)


def run(tool: FakeTicketing, **kw: Any) -> DrainSummary:
    synced(tool)
    plan(gapbridge().ruleset)
    return drain({"fake": FakeConnector(tool)}, **kw)


def gap_tickets(tool: FakeTicketing) -> list[str]:
    return [sid for sid, t in tool.tickets.items() if t["security"] and not t["evidence"]]


def edit(tool: FakeTicketing, sid: str, step: int, **changes: Any) -> None:
    """Change a ticket with an update time of its own, so that every step is synced (``touch`` may repeat one)."""
    tool.tickets[sid].update(changes, updated=(NOW + timedelta(days=2 + step)).isoformat())


def later(seconds: float = 0) -> Any:
    """A whole minute tomorrow, so that every queued item is due and times print exactly."""
    return (utcnow() + timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(seconds=seconds)


# --- 1. what is on the ticket ------------------------------------------------------------


def test_gaps_going_a_b_a_b_leave_the_ticket_with_the_current_gaps(app) -> None:
    tool = FakeTicketing(6)
    sid = gap_tickets(tool)[0]
    with app.app_context():
        seen = []
        for step, evidence in enumerate((False, True, False, True)):
            edit(tool, sid, step, evidence=evidence)
            run(tool)
            seen.append(tool.tickets[sid]["fingerprint"])
        a, b = seen[:2]
        assert a != b and seen == [a, b, a, b]
        assert len(tool.notes[sid]) == 4
        # settled: one more pass writes nothing
        assert plan(gapbridge().ruleset).queued == 0


def test_a_change_undone_before_the_drain_writes_nothing_stale(app) -> None:
    tool = FakeTicketing(6)
    sid = gap_tickets(tool)[0]
    with app.app_context():
        run(tool)
        a = tool.tickets[sid]["fingerprint"]
        edit(tool, sid, 1, evidence=True)
        synced(tool)
        assert plan(gapbridge().ruleset).queued == 1  # B queued, not sent
        edit(tool, sid, 2, evidence=False)
        synced(tool)
        plan(gapbridge().ruleset)  # back to A, which the ticket carries
        assert [r.status for r in rows(OutboxItem.status == "pending")] == []
        assert drain({"fake": FakeConnector(tool)}).written == 0
        assert tool.tickets[sid]["fingerprint"] == a and len(tool.notes[sid]) == 1


# --- 2. two write-backs at once ----------------------------------------------------------


def test_two_plans_at_once_queue_each_note_once_without_crashing(app_factory) -> None:
    first, second = app_factory(), app_factory()
    tool = FakeTicketing(12)
    expected = gap_tickets(tool)
    summaries = []
    with first.app_context():
        synced(tool)
        engine = db.engine

        def the_other_plan_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            # the other instance plans and commits between our read of the outbox and our first insert
            if not summaries and re.match(r"\s*INSERT INTO \"?outbox\"? ", statement):
                with second.app_context():
                    summaries.append(plan(gapbridge().ruleset))
                    db.session.remove()

        sa.event.listen(engine, "before_cursor_execute", the_other_plan_first)
        try:
            mine = plan(gapbridge().ruleset)
        finally:
            sa.event.remove(engine, "before_cursor_execute", the_other_plan_first)
        assert summaries and summaries[0].queued == len(expected)
        assert mine.queued == 0 and mine.unchanged == 12
        assert sorted(r.external_id for r in rows()) == sorted(expected)
        drain({"fake": FakeConnector(tool)})
    with second.app_context():
        assert drain({"fake": FakeConnector(tool)}).written == 0
    assert sorted(tool.notes) == sorted(expected) and all(len(n) == 1 for n in tool.notes.values())


# --- 3. failed is terminal ---------------------------------------------------------------


def test_a_failed_item_stays_failed_until_retried_or_its_gaps_change(app) -> None:
    tool = FakeTicketing(6)
    tool.fail_writes = 10_000
    expected = gap_tickets(tool)
    with app.app_context():
        synced(tool)
        plan(gapbridge().ruleset)
        when = later()
        for _ in range(10):
            if not rows(OutboxItem.status == "pending"):
                break
            when += timedelta(days=1)
            drain({"fake": FakeConnector(tool)}, max_attempts=2, now=when)
        failed = rows(OutboxItem.status == "failed")
        assert len(failed) == len(expected) and {f.attempts for f in failed} == {2}
        # plan runs again and again: the failures stay failed, reported, and nothing is tried
        for _ in range(2):
            again = plan(gapbridge().ruleset)
            assert (again.queued, again.failed) == (0, len(expected))
        db.session.expire_all()
        assert [(r.status, r.attempts) for r in rows()] == [("failed", 2)] * len(expected)
        requests = tool.requests
        assert drain({"fake": FakeConnector(tool)}, max_attempts=2, now=when + timedelta(days=1)).written == 0
        assert tool.requests == requests
        # a new set of gaps replaces a failed note
        changed = expected[0]
        tool.fail_writes = 0
        edit(tool, changed, 1, canonical={"business_unit": None})  # one more finding: an improvement
        synced(tool)
        assert plan(gapbridge().ruleset).queued == 1
        db.session.expire_all()
        assert {r.external_id: r.status for r in rows()} == {changed: "superseded", expected[1]: "failed",
                                                            **{r.external_id: "pending" for r in rows(OutboxItem.status == "pending")}}
        assert len(rows(OutboxItem.status == "pending")) == 1
        # --retry-failed sends the rest
        retried = drain({"fake": FakeConnector(tool)}, retry_failed=True, now=when + timedelta(days=2))
        assert retried.written == 2 and retried.already_current == 0  # the new note, and the failed one retried
        assert set(tool.notes) == set(expected) and rows(OutboxItem.status == "failed") == []


# --- 4. a refused login stops the drain --------------------------------------------------


class RefusedLogin(FakeConnector):
    """A tool that refuses the integration account's login on every request."""

    refuse = True

    def current_fingerprint(self, external_id: str) -> str | None:
        if self.refuse:
            self.tool.requests += 1
            raise AuthenticationError("GET /api/now/table/incident: HTTP 401 Unauthorized: check the credentials")
        return super().current_fingerprint(external_id)

    def write_back(self, enrichment: Enrichment) -> WriteResult:
        assert not self.refuse
        return super().write_back(enrichment)


def test_a_refused_login_stops_the_drain_for_that_connector_and_says_so(app) -> None:
    tool = FakeTicketing(12)
    other = FakeTicketing(12)
    expected = gap_tickets(tool)
    with app.app_context():
        synced(tool)
        synced(other, name="other")
        plan(gapbridge().ruleset)
        queued = len(rows(OutboxItem.status == "pending", OutboxItem.source == "fake"))
        assert queued == len(expected) > 1
        for run_ in range(2):  # one refused login per run, not one per note
            before = tool.requests
            summary = drain({"fake": RefusedLogin(tool), "other": FakeConnector(other, name="other")})
            assert tool.requests == before + 1
            # the other connector carries on
            assert summary.failed == 0 and summary.written == (len(gap_tickets(other)) if run_ == 0 else 0)
            assert summary.errors == [f"fake: the login was refused (GET /api/now/table/incident: HTTP 401 Unauthorized: check the "
                                      f"credentials); write-back stopped for this connector, {queued} notes wait"]
            assert "fake" in summary.unreachable
        db.session.expire_all()
        assert {(r.status, r.attempts) for r in rows(OutboxItem.source == "fake")} == {("pending", 0)}
        fixed = RefusedLogin(tool)
        fixed.refuse = False
        assert drain({"fake": fixed}).written == queued


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def servicenow(name: str = "sn") -> ServiceNowConnector:
    options = ServiceNowOptionsSchema().load({"type": "servicenow", "instance_url": SN + "/",
                                               "auth": {"method": "basic", "username": "gapbridge.integration", "password": "pw"}})
    return ServiceNowConnector(name, options, sleep=lambda _: None)


LOGIN_PAGE = ('<html><head><title>Log in | ServiceNow</title></head><body><form action="login.do" method="post">'
              '<input name="user_name"><input name="user_password" type="password"></form></body></html>')


@pytest.mark.parametrize("answer", [
    {"status": 401, "json": {"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}}},
    {"status": 200, "body": LOGIN_PAGE, "content_type": "text/html"},
    {"status": 403, "body": LOGIN_PAGE, "content_type": "text/html"},
], ids=["401", "login-page", "403-login-page"])
def test_servicenow_refusing_the_login_gets_one_request_per_run(app, mocked, answer) -> None:
    tool = FakeTicketing(12)
    with app.app_context():
        synced(tool, name="sn")
        plan(gapbridge().ruleset)
        assert len(rows(OutboxItem.status == "pending")) > 1
        mocked.get(SN_ANY, **answer)
        mocked.patch(SN_ANY, **answer)
        connector = servicenow()
        try:
            summary = drain({"sn": connector})
        finally:
            connector.close()
        assert len(mocked.calls) == 1 and summary.failed == 0
        assert "the login was refused" in summary.errors[0] and "write-back stopped for this connector" in summary.errors[0]


def test_an_html_page_that_is_no_login_stays_an_invalid_response() -> None:
    from connectors.base import InvalidResponseError

    with responses.RequestsMock() as mocked:
        mocked.get(SN_ANY, body="<html><body>Instance Hibernating</body></html>", content_type="text/html")
        with pytest.raises(InvalidResponseError, match="answered text/html, not JSON"):
            servicenow().current_fingerprint("x" * 32)


# --- 5. a back-off the tool asked for holds across runs and instances --------------------


class RateLimited(FakeConnector):
    """A tool that answers 429 Retry-After 300 while ``limited``, as HttpSession reports it after its own retries."""

    limited = True
    tool_name = "Fake"  # what the message calls the tool (else the class name, less "Connector")

    def write_back(self, enrichment: Enrichment) -> WriteResult:
        if self.limited:
            self.tool.requests += 1
            raise RateLimitedError("PATCH /api/now/table/incident: HTTP 429 Too Many Requests (gave up after 5 attempts)", 300.0, 429)
        return super().write_back(enrichment)


def test_a_retry_after_holds_every_later_run_of_every_instance(app_factory) -> None:
    first, second = app_factory(), app_factory()
    tool = FakeTicketing(24)
    expected = gap_tickets(tool)
    at = later()
    with first.app_context():
        synced(tool)
        plan(gapbridge().ruleset)
        before = tool.requests
        summary = drain({"fake": RateLimited(tool)}, now=at)
        asked = "Fake asked to wait 300 s; next attempt after 12:05:00 UTC"
        assert tool.requests == before + 1 and summary.errors == [f"fake: {asked}"] and "gave up" not in summary.errors[0]
        hold = db.session.get(OutboxBackoff, "fake")
        assert hold is not None and hold.until == at + timedelta(seconds=300) and hold.message == asked
        assert "gave up" not in (rows(OutboxItem.attempts > 0)[0].last_error or "")
    requests = tool.requests
    with second.app_context():  # another instance, 2.5 s later, the tool no longer limiting: it still waits
        ok = RateLimited(tool)
        ok.limited = False
        held = drain({"fake": ok}, now=at + timedelta(seconds=2.5))
        assert tool.requests == requests and held.written == 0 and held.errors == [f"fake: {asked}"]
        assert "fake" in held.unreachable
        done = drain({"fake": ok}, now=at + timedelta(seconds=301))
        assert done.written == len(expected) and done.errors == []
        assert db.session.get(OutboxBackoff, "fake") is None  # a wait served is forgotten


def test_servicenow_asking_to_wait_is_reported_as_asked(app, mocked) -> None:
    tool = FakeTicketing(12)
    at = later()
    with app.app_context():
        synced(tool, name="sn")
        plan(gapbridge().ruleset)
        mocked.get(SN_ANY, json={"result": []})
        mocked.patch(SN_ANY, status=429, headers={"Retry-After": "300"}, json={"error": {"message": "Rate limit exceeded"}})
        connector = servicenow()
        try:
            summary = drain({"sn": connector}, now=at)
            again = drain({"sn": connector}, now=at + timedelta(seconds=2.5))
        finally:
            connector.close()
        assert [c.request.method for c in mocked.calls] == ["GET", "PATCH"]
        assert summary.errors == again.errors == ["sn: ServiceNow asked to wait 300 s; next attempt after 12:05:00 UTC"]
