"""Gaps, improvements and running deadlines: how they are stored, counted and told on the ticket."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from plugin.extensions import db
from plugin.models import Finding, Incident, OutboxItem, utcnow
from plugin.rules.loader import load_ruleset
from plugin.rules.model import FAIL, GAP, IMPROVEMENT, PENDING
from plugin.services.assess import assess
from plugin.services.enrich import CLEAN, TicketFindings, enrichment_fields, fingerprint, plan, render_note
from plugin.services.outbox import drain
from plugin.services.report import format_report, gap_report
from plugin.services.sync import sync_source
from plugin.state import gapbridge

from .conftest import REPO
from .fakes import FakeConnector, FakeTicketing

H = timedelta(hours=1)
AT = datetime(2026, 12, 2, 6, 30, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(REPO / "mappings", overlays=["gdpr", "nis2"])


def test_a_note_keeps_gaps_deadlines_and_improvements_apart(ruleset) -> None:
    findings = TicketFindings(
        gaps=[("EVID-001", ["at least one evidence item recorded"])],
        improvements=[("REPT-003", ["a notification to the reporter recorded"])],
        pending=[("NIS2-001", AT + 3 * H + timedelta(minutes=10))],
    )
    note = render_note(ruleset, "INC0010042", findings, [], fingerprint(findings), AT)
    head, rest = note.split("\n", 1)
    assert head.startswith("GapBridge: ISO/IEC 27001 check of INC0010042 found 1 open gap.")
    assert "1 deadline still running" in head and "1 suggested improvement (not a gap)" in head
    gaps_at, deadlines_at, improvements_at = (rest.index(s) for s in (
        "[HIGH] Evidence collected", "Deadlines still running", "Suggested improvements (not gaps"))
    assert gaps_at < deadlines_at < improvements_at
    assert "- NIS2 early warning to the CSIRT or authority: due in 3 h 10 min, at 2026-12-02 09:40 UTC (NIS2-001)" in note
    # the improvement names its control, but the gap count and status ignore it
    assert "ISO 27001:2022 A.5.24" in note[improvements_at:]
    fields = enrichment_fields(ruleset, findings, fingerprint(findings))
    assert (fields["open_gaps"], fields["improvements"], fields["pending_clocks"]) == (1, 1, 1)
    assert fields["controls_2022"] == "A.5.28" and fields["next_due_at"] == "2026-12-02T09:40:00Z"


def test_a_note_with_no_gaps_but_a_running_deadline_says_so(ruleset) -> None:
    findings = TicketFindings(pending=[("GDPR-001", AT + 2 * timedelta(days=1) + 5 * H)])
    note = render_note(ruleset, "INC0010043", findings, [], fingerprint(findings), AT)
    assert note.startswith("GapBridge: ISO/IEC 27001 check of INC0010043: no open gaps. 1 deadline still running.")
    assert "Notification of the supervisory authority (GDPR Art. 33): due in 2 d 5 h, at 2026-12-04 11:30 UTC" in note
    assert "Thank you" not in note
    fields = enrichment_fields(ruleset, findings, fingerprint(findings))
    assert fields["compliance_status"] == "compliant" and fields["open_gaps"] == 0


def test_improvements_alone_leave_the_ticket_compliant(ruleset) -> None:
    findings = TicketFindings(improvements=[("ROLE-001", ["business unit recorded"])])
    fp = fingerprint(findings)
    assert fp != CLEAN
    fields = enrichment_fields(ruleset, findings, fp)
    assert fields["compliance_status"] == "compliant" and fields["open_gaps"] == 0 and fields["worst_severity"] == ""
    assert render_note(ruleset, None, findings, [], fp, AT).startswith(
        "GapBridge: ISO/IEC 27001 check of this incident: no open gaps. 1 suggested improvement (not a gap).")


def test_the_fingerprint_follows_what_the_note_reports_not_the_time_left() -> None:
    due = AT + 5 * H
    pending = TicketFindings(pending=[("NIS2-001", due)])
    assert fingerprint(pending) == fingerprint(TicketFindings(pending=[("NIS2-001", due)]))
    assert fingerprint(pending) != fingerprint(TicketFindings(pending=[("NIS2-001", due + H)]))
    gap = TicketFindings(gaps=[("NIS2-001", ["late"])])
    assert fingerprint(gap) != fingerprint(TicketFindings(improvements=[("NIS2-001", ["late"])]))
    assert fingerprint(TicketFindings()) == CLEAN


def _breach_ticket(tool: FakeTicketing, opened: datetime) -> str:
    """A medium personal data breach (no data subjects to tell) closed a few hours after it was opened, no authority notified yet."""
    sid = next(iter(tool.tickets))
    tool.tickets[sid].update(security=True, evidence=True)
    tool.tickets[sid]["canonical"] = dict(
        personal_data_breach=True, category="data_breach", severity="medium", opened_at=opened, assessed_at=opened + H,
        acknowledged_at=opened + H, contained_at=opened + 2 * H, resolved_at=opened + 3 * H, closed_at=opened + 4 * H,
        updated_at=opened + 4 * H, notifications=[{"to": "reporter", "at": opened + 4 * H, "channel": "email", "reference": "M-1"},
                                                  {"to": "dpo", "at": opened + 2 * H, "channel": "email", "reference": "M-2"}])
    return sid


def test_a_closed_incident_with_a_clock_running_is_pending_then_fails_when_it_falls_due(app_factory) -> None:
    app = app_factory(mappings={"regulatory": ["gdpr"]})
    tool = FakeTicketing(3)
    opened = utcnow() - 30 * H
    sid = _breach_ticket(tool, opened)
    with app.app_context():
        sync_source(FakeConnector(tool))
        assess(gapbridge().ruleset)
        incident = db.session.execute(sa.select(Incident).where(Incident.external_id == sid)).scalar_one()
        finding = db.session.execute(sa.select(Finding).where(Finding.incident_id == incident.id,
                                                              Finding.check_id == "GDPR-001")).scalar_one()
        assert (finding.status, finding.kind, finding.details) == (PENDING, GAP, [])
        assert finding.due_at == (opened + H + 72 * H).replace(microsecond=finding.due_at.microsecond)
        due = finding.due_at
        ruleset = gapbridge().ruleset
        plan(ruleset)
        drain({"fake": FakeConnector(tool)})
        note = tool.notes[sid][-1]
        assert re.search(r"Notification of the supervisory authority \(GDPR Art\. 33\): due in 1 d (17|18) h, at "
                         + re.escape(f"{due:%Y-%m-%d %H:%M} UTC"), note), note
        assert "no open gaps" in note and gap_report(ruleset).pending == 1
        # nothing changed on the ticket: before the due time it is not re-assessed, after it, it is
        assert assess(ruleset, now=due - timedelta(minutes=1)).assessed == 0
        summary = assess(ruleset, now=due + timedelta(minutes=1))
        assert summary.assessed == 1 and summary.opened >= 1
        db.session.expire_all()
        finding = db.session.execute(sa.select(Finding).where(
            Finding.incident_id == incident.id, Finding.check_id == "GDPR-001")).scalar_one()
        assert finding.status == FAIL and finding.due_at == due
        assert finding.details == [f"Notification of the supervisory authority (GDPR Art. 33): due at {due:%Y-%m-%d %H:%M} UTC, not recorded"]
        queued = plan(ruleset)
        assert queued.queued >= 1
        drain({"fake": FakeConnector(tool)})
        note = tool.notes[sid][-1]
        assert "found 1 open gap" in note and "Deadlines still running" not in note and "not recorded" in note


def test_improvements_are_stored_apart_and_never_counted_as_open_gaps(app_factory) -> None:
    app = app_factory()
    tool = FakeTicketing(4)
    for sid in tool.tickets:  # security incidents complete but for the business unit (an improvement)
        tool.tickets[sid]["canonical"] = dict(business_unit=None)
        tool.tickets[sid]["security"] = True
        tool.tickets[sid]["evidence"] = True
    with app.app_context():
        sync_source(FakeConnector(tool))
        assess(gapbridge().ruleset)
        kinds = dict(db.session.execute(sa.select(Finding.check_id, Finding.kind).where(Finding.status == FAIL)).all())
        assert kinds == {"ROLE-001": IMPROVEMENT}
        report = gap_report(gapbridge().ruleset)
        assert report.with_gaps == 0 and all(n == 0 for *_, n in report.by_control)
        assert ("ROLE-001", "Business unit concerned named on security incidents", 4) in report.improvements
        assert "Suggested improvements (not gaps):" in format_report(report)
        plan(gapbridge().ruleset)
        payloads = [o.payload for o in db.session.scalars(sa.select(OutboxItem))]
        assert len(payloads) == 4
        assert all(p["fields"]["compliance_status"] == "compliant" and p["labels"] == ["gapbridge-compliant"] for p in payloads)


def test_the_api_lists_gaps_improvements_and_deadlines_apart(app_factory) -> None:
    from .apiclient import ApiClient

    app = app_factory(mappings={"regulatory": ["gdpr"]})
    tool = FakeTicketing(3)
    opened = utcnow() - 30 * H
    sid = _breach_ticket(tool, opened)
    tool.tickets[sid]["canonical"]["business_unit"] = None
    client = ApiClient(app)
    with app.app_context():
        sync_source(FakeConnector(tool))
        assess(gapbridge().ruleset)
    deadlines = client.get("/api/v1/deadlines").get_json()["items"]
    assert [(d["check_id"], d["status"], d["what"]) for d in deadlines] == [
        ("GDPR-001", "pending", "Notification of the supervisory authority (GDPR Art. 33)")]
    assert deadlines[0]["due_at"].startswith(f"{opened + 73 * H:%Y-%m-%dT%H:%M}")
    assert client.get("/api/v1/deadlines?due_before=2020-01-01T00:00:00Z").get_json()["items"] == []
    improvements = client.get("/api/v1/gaps?kind=improvement").get_json()["items"]
    assert {i["check_id"] for i in improvements} == {"ROLE-001"} and all(i["kind"] == "improvement" for i in improvements)
    assert all(g["kind"] == "gap" for g in client.get("/api/v1/gaps").get_json()["items"])
    body = client.get(f"/api/v1/incidents/by-number/{tool.tickets[sid]['number']}").get_json()
    assert (body["open_gaps"], body["improvements"], body["pending"]) == (0, 1, 1)
    assert client.get("/api/v1/gaps?kind=opportunity").status_code == 400
