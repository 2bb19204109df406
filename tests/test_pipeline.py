"""Sync, assessment and write-back through the services, with an in-memory tool."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors.base import NormalizationError, Page
from plugin.db.leases import acquire_lease
from plugin.extensions import db
from plugin.models import AuditEvent, Finding, Incident, Lease, OutboxItem, RejectedRecord, SyncBookmark, SyncRun, utcnow
from plugin.rules.across import evaluate_across
from plugin.rules.model import FAIL, NOT_APPLICABLE, PASS
from plugin.services.assess import _across_batches, assess
from plugin.services.enrich import plan
from plugin.services.outbox import drain
from plugin.services.store import canonical_from_row
from plugin.services.sync import SyncBusyError, sync_source, worker_process_available
from plugin.state import gapbridge

from .conftest import NOW
from .fakes import FakeConnector, FakeTicketing


def count(model: type, *where: object) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0


def test_sync_stores_every_incident_once_and_moves_the_bookmark(app) -> None:
    tool = FakeTicketing(40)
    with app.app_context():
        s = sync_source(FakeConnector(tool))
        assert (s.status, s.fetched, s.stored, s.pages) == ("succeeded", 40, 40, 6)
        assert count(Incident) == 40
        last = max(tool.tickets.values(), key=lambda t: (t["updated"], t["id"]))
        assert db.session.get(SyncBookmark, "fake").value == {"updated_at": last["updated"], "id": last["id"]}
        again = sync_source(FakeConnector(tool))
        assert again.fetched == 0 and count(Incident) == 40


def test_sync_killed_midway_resumes_from_the_bookmark(app) -> None:
    tool = FakeTicketing(50)
    tool.crash_after_pages = 3
    with app.app_context():
        with pytest.raises(Exception, match="simulated crash"):
            sync_source(FakeConnector(tool))
        assert count(Incident) == 21  # three committed pages of seven
        run = db.session.execute(sa.select(SyncRun)).scalar_one()
        assert run.status == "failed" and "simulated crash" in run.error
        tool.crash_after_pages = None
        s = sync_source(FakeConnector(tool))
        assert s.fetched == 29  # only what was not stored before
        numbers = db.session.scalars(sa.select(Incident.external_id)).all()
        assert sorted(numbers) == sorted(tool.tickets) and len(numbers) == len(set(numbers))


def test_a_page_that_fails_to_store_leaves_no_part_of_itself(app, monkeypatch) -> None:
    from plugin.services import sync as sync_module

    tool = FakeTicketing(21)
    real = sync_module.upsert_incidents
    calls = {"n": 0}

    def flaky(source, incidents, now, ruleset_hash=None, masks=None):
        calls["n"] += 1
        result = real(source, incidents, now, ruleset_hash, masks)
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed after writing rows, before the commit
        return result

    monkeypatch.setattr(sync_module, "upsert_incidents", flaky)
    with app.app_context():
        with pytest.raises(KeyboardInterrupt):
            sync_source(FakeConnector(tool))
        assert count(Incident) == 7
        bookmark = db.session.get(SyncBookmark, "fake").value
        assert bookmark["id"] == sorted(tool.tickets.values(), key=lambda t: (t["updated"], t["id"]))[6]["id"]
        monkeypatch.setattr(sync_module, "upsert_incidents", real)
        sync_source(FakeConnector(tool))
        assert count(Incident) == 21


@pytest.mark.parametrize("worker_process", ["never", pytest.param("always", marks=pytest.mark.skipif(
    not worker_process_available(), reason="the worker process needs fork (Linux)"))])
def test_progress_is_reported_and_the_lease_renewed_after_every_page(app, worker_process: str) -> None:
    seen = []

    def progress(summary, total) -> None:
        seen.append((summary.pages, summary.stored, total, db.session.get(Lease, "sync:fake").expires_at))

    with app.app_context():
        sync_source(FakeConnector(FakeTicketing(30)), progress=progress, worker_process=worker_process, lease_seconds=600)
    assert [s[:3] for s in seen] == [(1, 7, 30), (2, 14, 30), (3, 21, 30), (4, 28, 30), (5, 30, 30)]
    expiries = [s[3] for s in seen]
    assert expiries == sorted(expiries) and len(set(expiries)) == 5  # pushed forward on each page


def test_unnormalizable_records_are_rejected_with_reason_and_do_not_stop_the_sync(app) -> None:
    tool = FakeTicketing(10)
    bad = sorted(tool.tickets)[3]
    tool.bad_ids = {bad}
    with app.app_context():
        s = sync_source(FakeConnector(tool))
        assert (s.stored, s.rejected) == (9, 1)
        assert s.rejections == [(bad, "INC0000003: field 'opened_at': not a timestamp: 'yesterday'")]
        rejected = db.session.execute(sa.select(RejectedRecord)).scalar_one()
        assert rejected.external_id == bad and rejected.raw["number"] == "INC0000003"
        tool.bad_ids = set()
        tool.touch(bad)
        sync_source(FakeConnector(tool))
        assert count(RejectedRecord) == 0 and count(Incident) == 10


class _RejectedThenFixed(FakeConnector):
    """Its first page rejects one ticket; its last page brings that ticket again, readable (edited meanwhile)."""

    def fetch_pages(self, bookmark: Any) -> Any:
        pages = list(super().fetch_pages(bookmark))
        first = pages[0]
        yield Page([{**first.records[0], "unreadable": True}, *first.records[1:]], first.bookmark, first.total)
        yield from pages[1:]
        yield Page([dict(first.records[0])], pages[-1].bookmark, first.total)

    def normalize(self, record: Any) -> dict[str, Any]:
        if record.get("unreadable"):
            raise NormalizationError(f"{record['number']}: field 'opened_at': not a timestamp: 'yesterday'")
        return super().normalize(record)


def test_a_record_rejected_and_then_stored_in_one_sync_is_no_longer_rejected(app) -> None:
    # a source with no rejections skips clearing them on every page: until one of its pages rejects a record
    with app.app_context():
        s = sync_source(_RejectedThenFixed(FakeTicketing(10), page_size=4))
        assert (s.pages, s.rejected, s.stored) == (4, 1, 10)
        assert count(RejectedRecord) == 0 and count(Incident) == 10

def test_concurrent_sync_of_the_same_source_is_refused(app) -> None:
    with app.app_context():
        assert acquire_lease("sync:fake", "other-host:1", 600)
        with pytest.raises(SyncBusyError, match="already running by other-host:1"):
            sync_source(FakeConnector(FakeTicketing(3)))


def test_a_lease_held_by_a_dead_process_on_this_host_is_taken_over(app) -> None:
    import subprocess
    import sys

    from plugin.db.leases import worker_id

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # reaped: its pid no longer runs
    host = worker_id().rpartition(":")[0]
    with app.app_context():
        assert acquire_lease("sync:fake", f"{host}:{gone.pid}", 600)
        summary = sync_source(FakeConnector(FakeTicketing(3)))  # a killed sync does not block the next for the lease time
        assert summary.status == "succeeded"
        # a live holder on this host, or any holder elsewhere, still blocks
        assert acquire_lease("sync:fake", f"{host}:1", 600)
        assert not acquire_lease("sync:fake", worker_id(), 600)


def test_assessment_stores_a_finding_per_check_and_reassesses_only_what_is_stale(app, tmp_path: Path) -> None:
    tool = FakeTicketing(12)
    with app.app_context():
        ruleset = gapbridge().ruleset
        sync_source(FakeConnector(tool))
        first = assess(ruleset, now=NOW)
        assert first.assessed == 12
        # every check has an outcome for every incident; pass and fail are rows, not applicable is no row
        assert sum(first.statuses.values()) == 12 * len(ruleset.checks)
        assert count(Finding) == first.statuses[PASS] + first.statuses[FAIL] > 0
        assert count(Finding, Finding.status == NOT_APPLICABLE) == 0
        assert count(Finding, Finding.ruleset_hash != ruleset.hash) == 0
        # closed incidents only: nothing is time-sensitive, so nothing is stale
        assert assess(ruleset, now=NOW + timedelta(days=1)).assessed == 0
        # one incident changes in the tool
        sid = sorted(tool.tickets)[1]
        tool.touch(sid, evidence=not tool.tickets[sid]["evidence"])
        sync_source(FakeConnector(tool))
        assert assess(ruleset, now=NOW).assessed == 1
        # the same record synced again unchanged is not stale
        tool.touch(sid)
        sync_source(FakeConnector(tool))
        assert assess(ruleset, now=NOW).assessed == 0


def test_a_mapping_change_makes_every_finding_stale(app, tmp_path: Path) -> None:
    tool = FakeTicketing(6)
    with app.app_context():
        state = gapbridge()
        sync_source(FakeConnector(tool))
        assess(state.ruleset, now=NOW)
        ov = tmp_path / "overrides.yaml"
        ov.write_text("checks:\n  EVID-001:\n    severity: critical\n")
        state.config["mappings"]["overrides"] = str(ov)
        new = state.reload_ruleset()
        assert assess(new, now=NOW).assessed == 6
        assert {f.severity for f in db.session.scalars(sa.select(Finding).where(Finding.check_id == "EVID-001"))} == {"critical"}


def test_reload_with_a_bad_mapping_keeps_the_last_good_ruleset(app, tmp_path: Path) -> None:
    from plugin.rules.yamlsource import MappingErrors

    with app.app_context():
        state = gapbridge()
        good = state.ruleset
        ov = tmp_path / "overrides.yaml"
        ov.write_text("checks:\n  EVID-001:\n    severity: extreme\n")
        state.config["mappings"]["overrides"] = str(ov)
        with pytest.raises(MappingErrors, match="overrides.yaml:3"):
            state.reload_ruleset()
        assert state.ruleset is good


def _pipeline(tool: FakeTicketing, now=NOW):
    ruleset = gapbridge().ruleset
    connector = FakeConnector(tool)
    sync_source(connector)
    assess(ruleset, now=now)
    planned = plan(ruleset)
    return planned, drain({"fake": connector}, backoff_base=60)


def test_write_back_writes_one_note_per_changed_incident_and_nothing_the_second_time(app) -> None:
    tool = FakeTicketing(12)
    with app.app_context():
        planned, drained = _pipeline(tool)
        with_gaps = {e for e, t in tool.tickets.items() if t["security"] and not t["evidence"]}
        assert with_gaps and set(tool.notes) == with_gaps
        assert drained.written == len(with_gaps) and all(len(n) == 1 for n in tool.notes.values())
        note = next(iter(tool.notes.values()))[0]
        assert "EVID-001" in note and "A.5.28" in note and "A.16.1.7" in note and "Incident Resolution" in note
        assert "What to do:" in note and "[gapbridge:" in note
        # the write-back changed the tickets; a second full pass writes nothing
        planned2, drained2 = _pipeline(tool)
        assert planned2.queued == 0 and drained2.written == 0
        assert all(len(n) == 1 for n in tool.notes.values())
        assert count(AuditEvent, AuditEvent.action == "writeback.written") == len(with_gaps)


def test_fixed_gaps_produce_one_follow_up_note(app) -> None:
    tool = FakeTicketing(6)
    with app.app_context():
        _pipeline(tool)
        sid = next(e for e, t in tool.tickets.items() if t["security"] and not t["evidence"])
        tool.touch(sid, evidence=True)
        planned, drained = _pipeline(tool)
        assert planned.queued == 1 and drained.written == 1
        follow_up = tool.notes[sid][-1]
        assert "no open gaps" in follow_up and "Resolved since the last check: EVID-001" in follow_up


def test_outbox_survives_a_failing_tool_and_delivers_once_later(app) -> None:
    tool = FakeTicketing(9)
    tool.fail_writes = 1000
    with app.app_context():
        started = utcnow()
        planned, drained = _pipeline(tool)
        assert planned.queued > 0 and drained.written == 0 and drained.retrying == 1
        assert "fake" in drained.unreachable  # one failure stops hammering the tool for this run
        pending = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.status == "pending")).all()
        assert len(pending) == planned.queued
        tried = [p for p in pending if p.attempts]
        assert len(tried) == 1 and tried[0].next_attempt_at >= started + timedelta(seconds=1) and "503" in tried[0].last_error
        # the tool comes back; a later run (a restart: fresh session) delivers every item once
        tool.fail_writes = 0
        db.session.remove()
        later = drain({"fake": FakeConnector(tool)}, now=utcnow() + timedelta(days=1))
        assert later.written == planned.queued
        assert count(OutboxItem, OutboxItem.status == "sent") == planned.queued
        assert all(len(n) == 1 for n in tool.notes.values())


def test_a_write_the_tool_accepted_before_a_crash_is_not_repeated(app) -> None:
    tool = FakeTicketing(6)
    with app.app_context():
        _pipeline(tool)
        item = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.status == "sent")).first()
        # as if we crashed after the tool accepted the write but before our commit
        item.status, item.sent_at = "pending", None
        db.session.commit()
        notes_before = sum(len(n) for n in tool.notes.values())
        again = drain({"fake": FakeConnector(tool)})
        assert again.already_current == 1 and again.written == 0
        assert sum(len(n) for n in tool.notes.values()) == notes_before


def test_a_fatal_write_error_is_reported_not_retried_forever(app) -> None:
    tool = FakeTicketing(6)
    tool.fatal_writes = True
    with app.app_context():
        _, drained = _pipeline(tool)
        assert drained.failed >= 1 and drained.written == 0
        failed = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.status == "failed")).all()
        assert failed and "itil role" in failed[0].last_error
        assert count(AuditEvent, AuditEvent.action == "writeback.failed") == len(failed)
        tool.fatal_writes = False
        retried = drain({"fake": FakeConnector(tool)}, retry_failed=True)
        assert retried.written == len(failed) == drained.failed


def test_retries_give_up_after_max_attempts_and_say_so(app) -> None:
    tool = FakeTicketing(3)
    tool.fail_writes = 10_000
    with app.app_context():
        ruleset = gapbridge().ruleset
        sync_source(FakeConnector(tool))
        assess(ruleset, now=NOW)
        plan(ruleset)
        when = utcnow()
        for _ in range(3):
            when += timedelta(days=2)
            drain({"fake": FakeConnector(tool)}, max_attempts=3, now=when)
        failed = db.session.scalars(sa.select(OutboxItem).where(OutboxItem.status == "failed")).all()
        assert failed and failed[0].attempts == 3


def test_sync_with_a_ruleset_assesses_each_page_as_it_is_stored(app) -> None:
    tool = FakeTicketing(15)
    with app.app_context():
        ruleset = gapbridge().ruleset
        summary = sync_source(FakeConnector(tool), ruleset=ruleset)
        assert summary.assessed == 15 and summary.opened == count(Finding, Finding.status == FAIL) > 0
        assert count(Incident, Incident.assessed_ruleset == ruleset.hash) == 15
        # nothing left for the assessment pass but the checks across incidents
        assert assess(ruleset, now=NOW).assessed == 0
        # a changed ticket is re-assessed on arrival; unchanged ones are not
        sid = sorted(tool.tickets)[4]
        tool.touch(sid, evidence=not tool.tickets[sid]["evidence"])
        again = sync_source(FakeConnector(tool), ruleset=ruleset)
        assert again.assessed == 1


def test_prefetched_pages_arrive_in_order_and_a_fetch_error_after_them() -> None:
    from connectors.base import Page, ServerError
    from plugin.services.sync import prefetched

    def pages():
        for i in range(5):
            yield Page([{"n": i}], {"i": i})
        raise ServerError("503 on page 6")

    seen = []
    with pytest.raises(ServerError, match="503 on page 6"):
        for page in prefetched(pages(), depth=2):
            seen.append(page.bookmark["i"])
    assert seen == [0, 1, 2, 3, 4]


def test_a_consumer_that_stops_early_stops_the_fetching() -> None:
    import threading

    from connectors.base import Page
    from plugin.services.sync import prefetched

    fetched = []
    closed = threading.Event()

    def pages():
        try:
            for i in range(1000):
                fetched.append(i)
                yield Page([{"n": i}], {"i": i})
        finally:
            closed.set()

    for page in prefetched(pages(), depth=1):
        if page.bookmark["i"] == 2:
            break
    assert closed.wait(5)
    assert len(fetched) < 10  # bounded read-ahead, not the whole source


def test_gap_report_counts_open_gaps_by_control_in_both_editions_and_by_sub_process(app) -> None:
    from plugin.services.report import format_report, gap_report

    tool = FakeTicketing(12)
    with app.app_context():
        _pipeline(tool)
        report = gap_report(gapbridge().ruleset)
        fails = count(Finding, Finding.status == FAIL)
        evidence_gaps = count(Finding, Finding.status == FAIL, Finding.check_id.like("EVID-%"))
        assert report.incidents == 12 and report.with_gaps == len({e for e, t in tool.tickets.items() if t["security"] and not t["evidence"]})
        by_control = {cid: (olds, n) for cid, olds, _, n in report.by_control}
        assert by_control["A.5.28"] == ("A.16.1.7", evidence_gaps) and evidence_gaps > 0
        catalogue = gapbridge().ruleset.catalogue
        # each control is shown with its own 2013 counterparts, not those of other controls its checks name
        assert all(olds == ", ".join(catalogue.predecessors(cid)) for cid, (olds, _) in by_control.items() if catalogue.predecessors(cid))
        assert sum(n for _, n in report.by_subprocess) == fails
        assert dict(report.by_subprocess)["Incident Resolution"] >= evidence_gaps
        text = format_report(report)
        assert "A.5.28" in text and "A.16.1.7" in text and "Incident Resolution" in text


def _across_findings(ruleset: Any) -> dict[tuple[str, str], str]:
    """(external id, check) -> status of every stored finding of a check across incidents."""
    t, f = Incident.__table__.c, Finding.__table__.c
    across = [c.id for c in ruleset.across_checks]
    return {(r.external_id, r.check_id): r.status for r in db.session.execute(
        sa.select(t.external_id, f.check_id, f.status).select_from(Finding.__table__.join(Incident.__table__, f.incident_id == t.id))
        .where(f.check_id.in_(across)))}


def _across_expected(ruleset: Any) -> dict[tuple[str, str], str]:
    """The same, evaluated in Python over every stored incident at once (no batches, nothing passed over)."""
    rows = db.session.execute(sa.select(Incident.__table__).order_by(Incident.id)).all()
    incidents = [canonical_from_row(r) for r in rows]
    out = {}
    for check in ruleset.across_checks:
        for inc, status in zip(incidents, evaluate_across(check, incidents, NOW), strict=True):
            if status != "not_applicable":
                out[(inc["external_id"], check.id)] = status
    return out


def test_the_pass_across_incidents_reads_only_those_a_check_may_apply_to_and_drops_findings_that_no_longer_apply(app) -> None:
    """The stream skips incidents the check's applies_when or the rule's fields rule out, unless one has a finding stored:
    the findings are those of evaluating every incident at once, before and after incidents leave the check's scope."""
    tool = FakeTicketing(24)
    ids = list(tool.tickets)
    weakness = {"record_type": "weakness", "category": "vulnerability", "state": "in_progress", "resolved_at": None,
                "closed_at": None, "opened_at": NOW - timedelta(days=60), "is_security": True}
    for n, sid in enumerate(ids):
        canonical: dict[str, Any] = {"affected_ci": "mail-gw" if n < 8 else f"ci-{n}", "category": "phishing",
                                     "opened_at": NOW - timedelta(days=5 + n % 4), "problem_ref": None}
        if n in (3, 5):
            canonical["affected_ci"] = None  # in no group
        if n == 20:
            canonical.update(weakness, number="WKN0000020")
        if n in (21, 22):
            canonical["weakness_refs"] = ["WKN0000020"]
        tool.tickets[sid]["canonical"] = canonical
    with app.app_context():
        ruleset = gapbridge().ruleset
        assert {c.rule.type for c in ruleset.across_checks} == {"recurrence", "open_weakness"}
        sync_source(FakeConnector(tool))
        first = assess(ruleset, now=NOW)
        assert sum(first.statuses.values()) == 24 * len(ruleset.checks)  # those passed over count as not applicable
        # the open-weakness stream reads the two incidents naming a weakness; the weakness itself is read by its number
        (open_weakness,) = [c for c in ruleset.across_checks if c.rule.type == "open_weakness"]
        assert sorted(n for ids_read, *_ in _across_batches(open_weakness) for n in ids_read) == sorted(
            r.id for r in db.session.execute(sa.select(Incident.id).where(Incident.external_id.in_([ids[21], ids[22]]))))
        found = _across_findings(ruleset)
        assert found == _across_expected(ruleset)
        assert {s for (_, c), s in found.items() if c == "LEARN-002"} == {"fail"} and len(found) >= 5
        # two of the group leave it (no longer security; no CI) and an incident naming the weakness becomes a request
        for n, change in ((2, {"security": False}), (1, {"canonical": {**tool.tickets[ids[1]]["canonical"], "affected_ci": ""}}),
                          (21, {"canonical": {**tool.tickets[ids[21]]["canonical"], "record_type": "request"}})):
            tool.touch(ids[n], **change)
        sync_source(FakeConnector(tool))
        assess(ruleset, now=NOW)
        after = _across_findings(ruleset)
        assert after == _across_expected(ruleset)
        assert (ids[2], "LEARN-002") in found and (ids[2], "LEARN-002") not in after
        assert (ids[1], "LEARN-002") in found and (ids[1], "LEARN-002") not in after
